# syntax=docker/dockerfile:1
# The operator image: Node + pgha, no PostgreSQL. Entrypoint `pgha`; the Deployment
# passes `operator`. Build from the repository root:
#   docker build -f deploy/operator.Dockerfile -t ghcr.io/pgha/operator:0.1.0 .
# (Written, not built in this repository's CI: no container engine there.)
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
RUN corepack enable && corepack prepare pnpm@12.4.2 --activate
COPY . .
RUN pnpm install --frozen-lockfile \
 && pnpm --filter @pgha/core --filter @pgha/controller run build \
 && pnpm --filter @pgha/controller deploy --prod --legacy /opt/pgha

FROM gcr.io/distroless/nodejs20-debian12:nonroot
COPY --from=build /opt/pgha /opt/pgha
USER 65532:65532
ENTRYPOINT ["/nodejs/bin/node", "/opt/pgha/dist/cli.js"]
CMD ["operator"]
