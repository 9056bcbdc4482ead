# syntax=docker/dockerfile:1
# The member image: PostgreSQL + Node + pgha. The agent (`pgha agent`) is the
# entrypoint; it runs postgres as its child in the same container, as user postgres.
# Build from the repository root:
#   docker build -f deploy/member.Dockerfile --build-arg PG_MAJOR=17 -t ghcr.io/pgha/member:17 .
# (Written, not built in this repository's CI: no container engine there.)
ARG PG_MAJOR=17
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
RUN corepack enable && corepack prepare pnpm@12.4.2 --activate
COPY . .
RUN pnpm install --frozen-lockfile \
 && pnpm --filter @pgha/core --filter @pgha/controller run build \
 && pnpm --filter @pgha/controller deploy --prod --legacy /opt/pgha

FROM node:${NODE_VERSION}-bookworm-slim AS node

FROM postgres:${PG_MAJOR}-bookworm
# Node from the official image (same Debian release, so the same glibc).
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=build /opt/pgha /opt/pgha
RUN printf '#!/bin/sh\nexec /usr/local/bin/node /opt/pgha/dist/cli.js "$@"\n' > /usr/local/bin/pgha \
 && chmod 0755 /usr/local/bin/pgha \
 && install -d -o postgres -g postgres -m 0700 /var/lib/pgha
# util-linux (setpriv --pdeathsig, used to tie postgres to its agent) is in the base image.
ENV PGHA_PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin
# Non-root: postgres, uid and gid 999 in the official image, given as numbers so
# that the kubelet can verify runAsNonRoot from the image alone (the pod sets
# runAsUser 999 too). Kubernetes runs it with a read-only root file system: the
# agent and postgres write only to /var/lib/pgha (the member's PVC), /tmp and
# /var/run/postgresql (emptyDirs).
USER 999:999
WORKDIR /var/lib/pgha
EXPOSE 5432
ENTRYPOINT ["pgha"]
CMD ["agent", "--help"]
