/**
 * A Kubernetes API server for tests: plain HTTP on loopback, in one process, with
 * the semantics an operator and `kubectl` rely on (discovery, CRDs, namespaced CRUD,
 * list and watch with resourceVersion and bookmarks, selectors, status and scale
 * subresources, the patch types, generation, cascading deletion, finalizers, Status
 * error bodies). No authentication, authorization, admission webhooks, controllers
 * (nothing creates a StatefulSet's pods) or kubelet. Not shipped; tests only.
 *
 * @example
 *   const api = await KubeApiServer.start();
 *   const kubeconfig = api.writeKubeconfig(dir);
 *   // kubectl --kubeconfig <kubeconfig> apply -f crd.yaml
 *   await api.close();
 */
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { applySchema, type Cause, type Schema, structuralViolations } from './crd-schema.js';
import { validateLease } from './lease.js';
import { jsonPatch, mergePatch, strategicMergePatch } from './patch.js';
import { builtinResources, type PrinterColumn, type ResourceType, readPath, writePath } from './resources.js';
import { type KubeObject, parseFieldSelector, parseLabelSelector } from './selectors.js';
import { ApiError, alreadyExists, badRequest, conflict, invalid, notFound } from './status.js';
import { ObjectStore, typeKey } from './store.js';

export interface KubeApiServerOptions {
  /** How many change events watches can replay (older resourceVersions answer 410). Default 10 000. */
  historyLimit?: number;
  /** Interval of BOOKMARK events on watches that allow them. Default 1000 ms. */
  bookmarkIntervalMillis?: number;
  /** The address to listen on. Default 127.0.0.1 (the simulated cluster listens where its pods reach it). */
  host?: string;
  /** The n-th Service's ClusterIP (n from 1). Default 10.96.x.y; the simulated cluster uses addresses it can serve. */
  clusterIpOf?: (n: number) => string;
}

/** One request as the server saw it (for tests asserting what a client sent). */
export interface RequestRecord {
  method: string;
  path: string;
  query: string;
  contentType?: string;
  /** The bearer token sent, if any (kubeconfigs from `writeKubeconfig` send `test`; a bare fetch none). */
  token?: string;
  status: number;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** StatefulSet spec fields an update may change; every other one is immutable. */
const statefulSetMutable = new Set([
  'replicas',
  'template',
  'updateStrategy',
  'persistentVolumeClaimRetentionPolicy',
  'minReadySeconds',
  'ordinals',
  'revisionHistoryLimit',
]);

export class KubeApiServer {
  readonly store: ObjectStore;
  readonly requests: RequestRecord[] = [];
  private readonly types = new Map<string, ResourceType>(); // typeKey → type
  private readonly streams = new Set<ServerResponse>();
  private readonly bookmarkTimers = new Set<() => void>();
  private readonly bookmarkIntervalMillis: number;
  private clusterIp = 1;
  private readonly clusterIpOf: (n: number) => string;
  private readonly host: string;

  private constructor(
    private readonly server: Server,
    options: KubeApiServerOptions,
  ) {
    this.store = new ObjectStore(options.historyLimit ?? 10_000);
    this.bookmarkIntervalMillis = options.bookmarkIntervalMillis ?? 1000;
    this.host = options.host ?? '127.0.0.1';
    this.clusterIpOf = options.clusterIpOf ?? ((n) => `10.96.${Math.floor(n / 250)}.${(n % 250) + 1}`);
    for (const t of builtinResources()) this.types.set(typeKey(t), t);
    this.store.onRemoved = (key, object) => {
      if (key === 'apiextensions.k8s.io/customresourcedefinitions') this.unregister(object);
      if (key === '/namespaces') this.store.dropNamespace(object.metadata.name);
    };
    // Graceful pod deletion, as the real API server: a pod bound to a node (its kubelet
    // must stop it) is only marked, with the request's grace period or the pod's
    // terminationGracePeriodSeconds (default 30); its kubelet deletes it again with
    // gracePeriodSeconds=0 once stopped. Unbound pods, and grace 0, go at once.
    this.store.gracePeriodOf = (key, o, requested) => {
      const spec = o.spec as { nodeName?: string; terminationGracePeriodSeconds?: number } | undefined;
      if (key !== '/pods' || !spec?.nodeName) return 0;
      return Math.max(0, requested ?? spec.terminationGracePeriodSeconds ?? 30);
    };
    for (const name of ['default', 'kube-system', 'kube-public'])
      this.store.insert('/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name }, spec: {} });
  }

  /** Starts on a free loopback port. */
  static async start(options: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const server = createServer();
    const api = new KubeApiServer(server, options);
    server.on('request', (req, res) => void api.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, api.host, resolve));
    return api;
  }

  get url(): string {
    return `http://${this.host}:${(this.server.address() as AddressInfo).port}`;
  }

  /** Writes a kubeconfig for this server into `dir` and returns its path. */
  writeKubeconfig(dir: string, namespace = 'default'): string {
    const path = join(dir, 'kubeconfig');
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      // @kubernetes/client-node refuses plain HTTP unless TLS verification is skipped
      clusters: [{ name: 'test', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'test', user: { token: 'test' } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'test', namespace } }],
      'current-context': 'test',
    };
    writeFileSync(path, JSON.stringify(config, null, 2));
    return path;
  }

  private readonly failures: { method: string; path: RegExp; code: number; times: number }[] = [];

  /**
   * Makes the next `times` requests matching method and path fail with `code` (and
   * a Status body) before they touch anything: a 409 as if someone wrote first, a
   * 500, a 410.
   */
  injectFailure(failure: { method: string; path: RegExp; code: number; times?: number }): void {
    this.failures.push({ times: 1, ...failure });
  }

  /** Ends every open watch stream (as an API server restart or a load balancer would). */
  endWatches(): void {
    for (const res of this.streams) res.end();
  }

  /** Sends a BOOKMARK now on every watch that allows them. */
  bookmark(): void {
    for (const send of this.bookmarkTimers) send();
  }

  async close(): Promise<void> {
    for (const res of this.streams) res.end();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- types ---------------------------------------------------------------------------

  private register(crd: KubeObject): void {
    const spec = crd.spec as {
      group: string;
      scope: string;
      names: { kind: string; plural: string; singular?: string; shortNames?: string[]; categories?: string[] };
      versions: {
        name: string;
        served: boolean;
        storage: boolean;
        schema?: { openAPIV3Schema?: Schema };
        subresources?: {
          status?: object;
          scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath?: string };
        };
        additionalPrinterColumns?: PrinterColumn[];
      }[];
    };
    const served = spec.versions.filter((v) => v.served);
    const storage = spec.versions.find((v) => v.storage) ?? served[0]!;
    this.types.set(`${spec.group}/${spec.names.plural}`, {
      group: spec.group,
      versions: served.map((v) => v.name),
      kind: spec.names.kind,
      plural: spec.names.plural,
      singular: spec.names.singular ?? spec.names.kind.toLowerCase(),
      namespaced: spec.scope === 'Namespaced',
      shortNames: spec.names.shortNames,
      categories: spec.names.categories,
      status: storage.subresources?.status !== undefined,
      scale: storage.subresources?.scale,
      schemas: Object.fromEntries(served.map((v) => [v.name, v.schema?.openAPIV3Schema ?? {}])),
      printerColumns: Object.fromEntries(served.map((v) => [v.name, v.additionalPrinterColumns ?? []])),
    });
  }

  private unregister(crd: KubeObject): void {
    const spec = crd.spec as { group: string; names: { plural: string } };
    const key = `${spec.group}/${spec.names.plural}`;
    this.types.delete(key);
    this.store.dropType(key);
  }

  private groups(): Map<string, Set<string>> {
    const groups = new Map<string, Set<string>>();
    for (const t of this.types.values()) {
      if (t.group === '') continue;
      const versions = groups.get(t.group) ?? new Set();
      for (const v of t.versions) versions.add(v);
      groups.set(t.group, versions);
    }
    return groups;
  }

  // ---- HTTP ----------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search,
      contentType: req.headers['content-type'],
      ...(req.headers.authorization?.startsWith('Bearer ')
        ? { token: req.headers.authorization.slice('Bearer '.length) }
        : {}),
      status: 200,
    };
    this.requests.push(record);
    try {
      const body = await readBody(req);
      const failure = this.failures.find((f) => f.times > 0 && f.method === record.method && f.path.test(url.pathname));
      if (failure) {
        failure.times--;
        const reason = failure.code === 409 ? 'Conflict' : failure.code === 410 ? 'Expired' : 'BadRequest';
        throw new ApiError(failure.code, reason, `injected failure ${failure.code}`);
      }
      const result = this.route(req, res, url, body);
      if (result === undefined) return; // a stream
      record.status = result.code;
      send(res, result.code, result.body);
    } catch (error) {
      const e =
        error instanceof ApiError
          ? error
          : new ApiError(500, 'BadRequest', `internal error: ${(error as Error).stack}`);
      record.status = e.code;
      send(res, e.code, e.body());
    }
  }

  private route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    rawBody: string,
  ): { code: number; body: unknown } | undefined {
    const method = req.method ?? 'GET';
    const segments = url.pathname.split('/').filter((s) => s !== '');
    const q = url.searchParams;
    if (url.pathname === '/version')
      return {
        code: 200,
        body: { major: '1', minor: '32', gitVersion: 'v1.32.0-pgha-test', platform: 'linux/amd64' },
      };
    if (url.pathname === '/healthz' || url.pathname === '/readyz' || url.pathname === '/livez')
      return { code: 200, body: 'ok' };
    if (url.pathname === '/openapi/v3') return { code: 200, body: this.openApiIndex() };
    if (url.pathname.startsWith('/openapi/v3/'))
      return { code: 200, body: this.openApi(url.pathname.slice('/openapi/v3/'.length)) };
    if (url.pathname === '/api')
      return {
        code: 200,
        body: {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: url.host }],
        },
      };
    if (url.pathname === '/apis')
      return {
        code: 200,
        body: {
          kind: 'APIGroupList',
          apiVersion: 'v1',
          groups: [...this.groups()].map(([name, versions]) => ({
            name,
            versions: [...versions].map((version) => ({ groupVersion: `${name}/${version}`, version })),
            preferredVersion: { groupVersion: `${name}/${[...versions][0]}`, version: [...versions][0] },
          })),
        },
      };
    let group: string;
    let version: string;
    let rest: string[];
    if (segments[0] === 'api' && segments.length >= 2) {
      group = '';
      version = segments[1]!;
      rest = segments.slice(2);
    } else if (segments[0] === 'apis' && segments.length >= 3) {
      group = segments[1]!;
      version = segments[2]!;
      rest = segments.slice(3);
    } else if (segments[0] === 'apis' && segments.length === 2) {
      const versions = this.groups().get(segments[1]!);
      if (!versions) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      return {
        code: 200,
        body: {
          kind: 'APIGroup',
          apiVersion: 'v1',
          name: segments[1],
          versions: [...versions].map((v) => ({ groupVersion: `${segments[1]}/${v}`, version: v })),
          preferredVersion: { groupVersion: `${segments[1]}/${[...versions][0]}`, version: [...versions][0] },
        },
      };
    } else throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');

    if (rest.length === 0) return { code: 200, body: this.resourceList(group, version) };

    // /namespaces/{ns}/{plural}/... vs the namespaces resource itself
    let namespace: string | undefined;
    if (group === '' && rest[0] === 'namespaces' && rest.length >= 3 && !['status', 'finalize'].includes(rest[2]!)) {
      namespace = rest[1];
      rest = rest.slice(2);
    } else if (rest[0] === 'namespaces' && rest.length >= 3 && group !== '') {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [plural, name, subresource] = rest as [string, string | undefined, string | undefined];
    const type = this.types.get(`${group}/${plural}`);
    if (!type || !type.versions.includes(version))
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (type.namespaced && name !== undefined && namespace === undefined)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (!type.namespaced) namespace = undefined;
    const ctx: Ctx = {
      type,
      version,
      namespace,
      q,
      accept: req.headers.accept ?? '',
      contentType: req.headers['content-type'] ?? '',
    };
    const body = () => parseBody(rawBody, ctx.contentType);

    if (name === undefined) {
      if (method === 'GET' && (q.get('watch') === 'true' || q.get('watch') === '1')) {
        this.watch(ctx, res);
        return undefined;
      }
      if (method === 'GET') return { code: 200, body: this.list(ctx) };
      if (method === 'POST') return { code: 201, body: this.create(ctx, body()) };
      if (method === 'DELETE') {
        for (const o of this.store.list(typeKey(type), namespace, selector(q))) this.remove(ctx, o.metadata.name, {});
        return { code: 200, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' } };
      }
      throw new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
    }
    if (
      subresource !== undefined &&
      !(subresource === 'status' && type.status) &&
      !(subresource === 'scale' && type.scale)
    )
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (subresource === 'scale') return this.scale(ctx, name, method, rawBody);
    switch (method) {
      case 'GET':
        return { code: 200, body: this.present(ctx, this.read(ctx, name)) };
      case 'PUT':
        return { code: 200, body: this.update(ctx, name, body() as KubeObject, subresource === 'status') };
      case 'PATCH':
        return this.patch(ctx, name, rawBody, subresource === 'status');
      case 'DELETE': {
        const options = rawBody.trim() === '' ? {} : (JSON.parse(rawBody) as DeleteOptions);
        if (q.get('propagationPolicy'))
          options.propagationPolicy = q.get('propagationPolicy') as DeleteOptions['propagationPolicy'];
        return { code: 200, body: this.present(ctx, this.remove(ctx, name, options)) };
      }
      default:
        throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  /**
   * OpenAPI v3, only as far as kubectl reads it: the index of group-versions, and per
   * group-version one PATCH operation per kind that declares the `fieldValidation`
   * query parameter. kubectl then leaves validation to this server
   * (`fieldValidation=Strict`) instead of validating against schemas it would
   * download. No schemas are served, so kubectl computes strategic merge patches
   * from its compiled-in types and merge patches for custom resources.
   */
  private openApiIndex(): unknown {
    const gvs = new Set<string>();
    for (const t of this.types.values())
      for (const v of t.versions) gvs.add(t.group === '' ? `api/${v}` : `apis/${t.group}/${v}`);
    return {
      paths: Object.fromEntries(
        [...gvs].map((gv) => [gv, { serverRelativeURL: `/openapi/v3/${gv}?hash=${this.store.resourceVersion}` }]),
      ),
    };
  }

  private openApi(gv: string): unknown {
    const parts = gv.split('/');
    const [group, version] = parts[0] === 'api' ? ['', parts[1]] : [parts[1], parts[2]];
    const types = [...this.types.values()].filter((t) => t.group === group && t.versions.includes(version ?? ''));
    if (types.length === 0) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const prefix = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
    return {
      openapi: '3.0.0',
      info: { title: 'Kubernetes (pgha test API server)', version: 'v1.32.0' },
      paths: Object.fromEntries(
        types.map((t) => [
          `${prefix}${t.namespaced ? '/namespaces/{namespace}' : ''}/${t.plural}/{name}`,
          {
            patch: {
              'x-kubernetes-group-version-kind': { group: t.group, version, kind: t.kind },
              parameters: [{ name: 'fieldValidation', in: 'query', schema: { type: 'string', uniqueItems: true } }],
              responses: {},
            },
          },
        ]),
      ),
      components: { schemas: {} },
    };
  }

  private resourceList(group: string, version: string): unknown {
    const types = [...this.types.values()].filter((t) => t.group === group && t.versions.includes(version));
    if (types.length === 0) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const verbs = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: group === '' ? version : `${group}/${version}`,
      resources: types.flatMap((t) => [
        {
          name: t.plural,
          singularName: t.singular,
          namespaced: t.namespaced,
          kind: t.kind,
          verbs,
          ...(t.shortNames ? { shortNames: t.shortNames } : {}),
          ...(t.categories ? { categories: t.categories } : {}),
        },
        ...(t.status
          ? [
              {
                name: `${t.plural}/status`,
                singularName: '',
                namespaced: t.namespaced,
                kind: t.kind,
                verbs: ['get', 'patch', 'update'],
              },
            ]
          : []),
        ...(t.scale
          ? [
              {
                name: `${t.plural}/scale`,
                singularName: '',
                namespaced: t.namespaced,
                group: 'autoscaling',
                version: 'v1',
                kind: 'Scale',
                verbs: ['get', 'patch', 'update'],
              },
            ]
          : []),
      ]),
    };
  }

  // ---- reads ---------------------------------------------------------------------------

  private read(ctx: Ctx, name: string): KubeObject {
    const o = this.store.get(typeKey(ctx.type), ctx.namespace ?? '', name);
    if (!o) throw notFound(ctx.type.plural, ctx.type.group, name);
    return this.asVersion(ctx, o);
  }

  /** Custom resources are stored once and served in every version (conversion strategy None). */
  private asVersion(ctx: Ctx, o: KubeObject): KubeObject {
    o.apiVersion = ctx.type.group === '' ? ctx.version : `${ctx.type.group}/${ctx.version}`;
    o.kind = ctx.type.kind;
    return o;
  }

  private list(ctx: Ctx): unknown {
    const items = this.store.list(typeKey(ctx.type), ctx.namespace, selector(ctx.q)).map((o) => this.asVersion(ctx, o));
    const rv = String(this.store.resourceVersion);
    if (wantsTable(ctx.accept)) return this.table(ctx, items, rv);
    return {
      kind: `${ctx.type.kind}List`,
      apiVersion: ctx.type.group === '' ? ctx.version : `${ctx.type.group}/${ctx.version}`,
      metadata: { resourceVersion: rv },
      items,
    };
  }

  private present(ctx: Ctx, o: KubeObject): unknown {
    return wantsTable(ctx.accept) ? this.table(ctx, [o], o.metadata.resourceVersion ?? '') : o;
  }

  /** The meta.k8s.io Table kubectl prints: Name, the CRD's printer columns, Age. */
  private table(ctx: Ctx, items: KubeObject[], rv: string): unknown {
    const columns = ctx.type.printerColumns?.[ctx.version] ?? [];
    const include = ctx.q.get('includeObject') ?? 'Metadata';
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: { resourceVersion: rv },
      columnDefinitions: [
        { name: 'Name', type: 'string', format: 'name', description: 'Name', priority: 0 },
        ...columns.map((c) => ({
          name: c.name,
          type: c.type,
          format: '',
          description: c.description ?? '',
          priority: c.priority ?? 0,
        })),
        // A CRD with printer columns lists Age itself; everything else gets it here.
        ...(columns.length === 0 ? [{ name: 'Age', type: 'date', format: '', description: 'Age', priority: 0 }] : []),
      ],
      rows: items.map((o) => ({
        cells: [
          o.metadata.name,
          ...columns.map((c) => {
            const v = readPath(o, c.jsonPath);
            if (c.type === 'date' && typeof v === 'string') return age(v);
            return v === undefined ? '<none>' : v;
          }),
          ...(columns.length === 0 ? [age(o.metadata.creationTimestamp)] : []),
        ],
        object:
          include === 'None'
            ? undefined
            : include === 'Object'
              ? o
              : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
      })),
    };
  }

  private watch(ctx: Ctx, res: ServerResponse): void {
    const rvParam = ctx.q.get('resourceVersion');
    const from = rvParam === null || rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    const table = wantsTable(ctx.accept);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders(); // a client's watch call returns once the headers arrive, events or not
    this.streams.add(res);
    const write = (type: string, object: unknown) => res.write(`${JSON.stringify({ type, object })}\n`);
    let stop = () => undefined as unknown;
    try {
      stop = this.store.watch(
        {
          key: typeKey(ctx.type),
          namespace: ctx.namespace,
          selects: selector(ctx.q),
          send: (type, o) => {
            const object = this.asVersion(ctx, o);
            write(type, table ? this.table(ctx, [object], object.metadata.resourceVersion ?? '') : object);
          },
        },
        from,
      );
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      write('ERROR', error.body()); // a watch reports 410 as an event, as the real server does
      res.end();
      this.streams.delete(res);
      return;
    }
    const bookmark = () =>
      write('BOOKMARK', {
        kind: ctx.type.kind,
        apiVersion: ctx.type.group === '' ? ctx.version : `${ctx.type.group}/${ctx.version}`,
        metadata: { resourceVersion: String(this.store.resourceVersion) },
      });
    const bookmarks = ctx.q.get('allowWatchBookmarks') === 'true';
    const timer = bookmarks ? setInterval(bookmark, this.bookmarkIntervalMillis) : undefined;
    if (bookmarks) this.bookmarkTimers.add(bookmark);
    const seconds = Number(ctx.q.get('timeoutSeconds') ?? '1800');
    const timeout = setTimeout(() => res.end(), seconds * 1000);
    res.on('close', () => {
      stop();
      clearInterval(timer);
      clearTimeout(timeout);
      this.bookmarkTimers.delete(bookmark);
      this.streams.delete(res);
    });
  }

  // ---- writes --------------------------------------------------------------------------

  private checkKind(ctx: Ctx, o: KubeObject): void {
    const apiVersion = ctx.type.group === '' ? ctx.version : `${ctx.type.group}/${ctx.version}`;
    if (o === null || typeof o !== 'object' || typeof o.metadata !== 'object' || o.metadata === null)
      throw badRequest('the body of the request is not an object with metadata');
    if (o.kind !== undefined && o.kind !== ctx.type.kind)
      throw badRequest(`the kind of the body (${o.kind}) does not match the resource (${ctx.type.kind})`);
    if (o.apiVersion !== undefined && o.apiVersion !== apiVersion)
      throw badRequest(`the API version of the body (${o.apiVersion}) does not match the request (${apiVersion})`);
    if (ctx.namespace !== undefined && o.metadata.namespace !== undefined && o.metadata.namespace !== ctx.namespace)
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
  }

  /** Validation the API server does for every kind, plus the CRD's schema for custom resources. */
  private validate(ctx: Ctx, o: KubeObject, previous?: KubeObject): KubeObject {
    const causes: Cause[] = [];
    const { name } = o.metadata;
    const t = ctx.type;
    const rbac = t.group === 'rbac.authorization.k8s.io';
    const labelNamed = t.group === '' && (t.plural === 'namespaces' || t.plural === 'services');
    if (typeof name !== 'string' || name === '')
      causes.push({ field: 'metadata.name', message: 'Required value: name or generateName is required' });
    else if (
      rbac
        ? /[/%]/.test(name)
        : labelNamed
          ? !(DNS_LABEL.test(name) && name.length <= 63)
          : !(DNS_SUBDOMAIN.test(name) && name.length <= 253)
    )
      causes.push({
        field: 'metadata.name',
        message: `Invalid value: ${JSON.stringify(name)}: a lowercase RFC 1123 ${labelNamed ? 'label' : 'subdomain'} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
      });
    for (const [k, v] of Object.entries(o.metadata.labels ?? {})) {
      const [prefix, base] = k.includes('/') ? (k.split('/', 2) as [string, string]) : ['', k];
      if (!LABEL_NAME.test(base) || base.length > 63 || (prefix !== '' && !DNS_SUBDOMAIN.test(prefix)))
        causes.push({
          field: 'metadata.labels',
          message: `Invalid value: ${JSON.stringify(k)}: not a valid label key`,
        });
      if (typeof v !== 'string' || !LABEL_VALUE.test(v) || v.length > 63)
        causes.push({
          field: 'metadata.labels',
          message: `Invalid value: ${JSON.stringify(v)}: not a valid label value`,
        });
    }
    if (previous?.metadata.deletionTimestamp) {
      const added = (o.metadata.finalizers ?? []).filter((f) => !(previous.metadata.finalizers ?? []).includes(f));
      if (added.length > 0)
        causes.push({
          field: 'metadata.finalizers',
          message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
        });
    }
    let result = o;
    const schema = t.schemas?.[ctx.version] as Schema | undefined;
    if (schema) {
      const pruned: string[] = [];
      result = applySchema(o, schema, '', causes, true, pruned) as KubeObject;
      if (ctx.q.get('fieldValidation') === 'Strict' && pruned.length > 0)
        throw badRequest(
          `strict decoding error: ${pruned.map((p) => `unknown field "${p.replace(/^\./, '')}"`).join(', ')}`,
        );
    }
    if (t.group === 'apiextensions.k8s.io') this.validateCrd(o, causes);
    if (t.group === 'coordination.k8s.io') validateLease(o, causes);
    if (t.group === 'apps' && t.plural === 'statefulsets' && previous) {
      const changed = Object.keys({ ...(o.spec as object), ...(previous.spec as object) }).filter(
        (k) =>
          !statefulSetMutable.has(k) &&
          JSON.stringify((o.spec as Record<string, unknown>)?.[k]) !==
            JSON.stringify((previous.spec as Record<string, unknown>)?.[k]),
      );
      if (changed.length > 0)
        causes.push({
          field: 'spec',
          message: `Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden (changed: ${changed.join(', ')})`,
        });
    }
    if (
      t.group === 'apps' &&
      previous &&
      JSON.stringify((o.spec as { selector?: unknown })?.selector) !==
        JSON.stringify((previous.spec as { selector?: unknown })?.selector)
    )
      causes.push({ field: 'spec.selector', message: 'Invalid value: field is immutable' });
    if (causes.length > 0)
      throw invalid(
        t.kind,
        t.group,
        String(name),
        causes.map((c) => ({ ...c, field: c.field.replace(/^\./, '') })),
      );
    return result;
  }

  private validateCrd(o: KubeObject, causes: Cause[]): void {
    const spec = o.spec as {
      group?: string;
      names?: { plural?: string; kind?: string };
      scope?: string;
      versions?: { name: string; served: boolean; storage: boolean; schema?: { openAPIV3Schema?: Schema } }[];
    };
    if (!spec?.group || !spec.names?.plural || !spec.names.kind)
      causes.push({ field: 'spec', message: 'Required value: group, names.plural and names.kind' });
    else if (o.metadata.name !== `${spec.names.plural}.${spec.group}`)
      causes.push({ field: 'metadata.name', message: `Invalid value: must be spec.names.plural+"."+spec.group` });
    if (spec?.scope !== 'Namespaced' && spec?.scope !== 'Cluster')
      causes.push({ field: 'spec.scope', message: 'Unsupported value: supported values: "Cluster", "Namespaced"' });
    const versions = spec?.versions ?? [];
    if (versions.filter((v) => v.storage).length !== 1)
      causes.push({
        field: 'spec.versions',
        message: 'Invalid value: must have exactly one version marked as storage version',
      });
    for (const v of versions) {
      const s = v.schema?.openAPIV3Schema;
      if (!s)
        causes.push({
          field: `spec.versions[${v.name}].schema.openAPIV3Schema`,
          message: 'Required value: schemas are required',
        });
      else
        for (const m of structuralViolations(s, `spec.versions[${v.name}].schema.openAPIV3Schema`))
          causes.push({ field: 'spec.versions', message: m });
    }
  }

  private create(ctx: Ctx, raw: unknown): KubeObject {
    const o = raw as KubeObject;
    this.checkKind(ctx, o);
    if (ctx.type.namespaced) {
      const ns = ctx.namespace ?? o.metadata.namespace;
      if (ns === undefined) throw badRequest('a namespaced object needs a namespace');
      if (!this.store.get('/namespaces', '', ns)) throw notFound('namespaces', '', ns);
      o.metadata.namespace = ns;
    } else delete o.metadata.namespace;
    if (!o.metadata.name && o.metadata.generateName)
      o.metadata.name = `${o.metadata.generateName}${Math.random().toString(36).slice(2, 7)}`;
    o.apiVersion = ctx.type.group === '' ? ctx.version : `${ctx.type.group}/${ctx.version}`;
    o.kind = ctx.type.kind;
    if (ctx.type.status) delete (o as { status?: unknown }).status; // status is written through /status
    const validated = this.validate(ctx, o);
    const key = typeKey(ctx.type);
    if (this.store.get(key, o.metadata.namespace ?? '', o.metadata.name))
      throw alreadyExists(ctx.type.plural, ctx.type.group, o.metadata.name);
    this.defaults(ctx, validated);
    if (ctx.q.get('dryRun') === 'All') return validated;
    let stored = this.store.insert(key, validated);
    if (ctx.type.plural === 'customresourcedefinitions') {
      this.register(stored);
      stored = this.store.replace(key, { ...stored, status: crdStatus(stored) }, true);
    }
    return this.asVersion(ctx, stored);
  }

  /** The few defaults the operator's tests look at. */
  private defaults(ctx: Ctx, o: KubeObject): void {
    if (ctx.type.group === '' && ctx.type.plural === 'services') {
      o.spec ??= {};
      const spec = o.spec as { clusterIP?: string; type?: string };
      spec.type ??= 'ClusterIP';
      if (spec.clusterIP === undefined) spec.clusterIP = this.clusterIpOf(this.clusterIp++);
    }
    if (ctx.type.group === 'apps' && ctx.type.plural === 'statefulsets') {
      o.spec ??= {};
      const spec = o.spec as { replicas?: number; podManagementPolicy?: string; updateStrategy?: unknown };
      spec.replicas ??= 1;
      spec.podManagementPolicy ??= 'OrderedReady';
      spec.updateStrategy ??= { type: 'RollingUpdate', rollingUpdate: { partition: 0 } };
    }
  }

  private update(ctx: Ctx, name: string, raw: KubeObject, statusOnly: boolean): KubeObject {
    this.checkKind(ctx, raw);
    if (raw.metadata.name !== undefined && raw.metadata.name !== name)
      throw badRequest(`the name of the object (${raw.metadata.name}) does not match the name on the URL (${name})`);
    const current = this.read(ctx, name);
    if (raw.metadata.resourceVersion !== undefined && raw.metadata.resourceVersion !== current.metadata.resourceVersion)
      throw conflict(
        ctx.type.plural,
        ctx.type.group,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    let next: KubeObject;
    if (statusOnly) next = { ...current, status: (raw as { status?: unknown }).status } as KubeObject;
    else {
      next = { ...raw, metadata: { ...raw.metadata, name, namespace: current.metadata.namespace } };
      if (ctx.type.status) (next as { status?: unknown }).status = (current as { status?: unknown }).status;
      if ((next as { status?: unknown }).status === undefined) delete (next as { status?: unknown }).status;
    }
    next.apiVersion = current.apiVersion;
    next.kind = current.kind;
    next = statusOnly ? next : this.validate(ctx, next, current);
    if (ctx.q.get('dryRun') === 'All') return next;
    const key = typeKey(ctx.type);
    let stored = this.store.replace(key, next, ctx.type.status);
    if (
      ctx.type.plural === 'customresourcedefinitions' &&
      !stored.metadata.deletionTimestamp &&
      this.store.get(key, '', name)
    ) {
      this.register(stored);
      stored = this.store.replace(key, { ...stored, status: crdStatus(stored) }, true);
    }
    return this.asVersion(ctx, stored);
  }

  private patch(ctx: Ctx, name: string, rawBody: string, statusOnly: boolean): { code: number; body: unknown } {
    const type = ctx.contentType.split(';')[0]!.trim();
    const key = typeKey(ctx.type);
    const existing = this.store.get(key, ctx.namespace ?? '', name);
    if (type === 'application/apply-patch+yaml') {
      // Server-side apply, approximated: create when absent, else a merge of the applied
      // configuration (no managed fields, so fields a manager stops applying are kept).
      const applied = parseYaml(rawBody) as KubeObject;
      if (!existing) return { code: 201, body: this.create(ctx, applied) };
      const merged = mergePatch(this.asVersion(ctx, existing), applied) as KubeObject;
      delete merged.metadata.resourceVersion;
      return { code: 200, body: this.update(ctx, name, merged, statusOnly) };
    }
    if (!existing) throw notFound(ctx.type.plural, ctx.type.group, name);
    const current = this.asVersion(ctx, existing);
    let patch: unknown;
    try {
      patch = JSON.parse(rawBody);
    } catch {
      throw badRequest('the patch is not JSON');
    }
    let next: unknown;
    if (type === 'application/merge-patch+json') next = mergePatch(current, patch);
    else if (type === 'application/json-patch+json') next = jsonPatch(current, patch);
    else if (type === 'application/strategic-merge-patch+json') {
      if (ctx.type.schemas)
        throw new ApiError(415, 'UnsupportedMediaType', 'strategic merge patch is not supported for custom resources');
      next = strategicMergePatch(current, patch);
    } else throw new ApiError(415, 'UnsupportedMediaType', `the patch type ${JSON.stringify(type)} is not supported`);
    const patched = next as KubeObject;
    // A patch carrying a resourceVersion is a precondition; without one it applies to the latest.
    if (
      patched.metadata?.resourceVersion === current.metadata.resourceVersion ||
      (patch as { metadata?: { resourceVersion?: string } })?.metadata?.resourceVersion === undefined
    )
      patched.metadata.resourceVersion = current.metadata.resourceVersion;
    return { code: 200, body: this.update(ctx, name, patched, statusOnly) };
  }

  private scale(ctx: Ctx, name: string, method: string, rawBody: string): { code: number; body: unknown } {
    const scaleSpec = ctx.type.scale!;
    const current = this.read(ctx, name);
    const view = (o: KubeObject) => {
      const selectorValue = scaleSpec.labelSelectorPath ? readPath(o, scaleSpec.labelSelectorPath) : undefined;
      return {
        kind: 'Scale',
        apiVersion: 'autoscaling/v1',
        metadata: {
          name: o.metadata.name,
          namespace: o.metadata.namespace,
          uid: o.metadata.uid,
          resourceVersion: o.metadata.resourceVersion,
          creationTimestamp: o.metadata.creationTimestamp,
        },
        spec: { replicas: readPath(o, scaleSpec.specReplicasPath) ?? 0 },
        status: {
          replicas: readPath(o, scaleSpec.statusReplicasPath) ?? 0,
          ...(typeof selectorValue === 'string' ? { selector: selectorValue } : {}),
        },
      };
    };
    if (method === 'GET') return { code: 200, body: view(current) };
    let desired: { spec?: { replicas?: unknown }; metadata?: { resourceVersion?: string } };
    const body = JSON.parse(rawBody) as unknown;
    const type = ctx.contentType.split(';')[0]!.trim();
    if (method === 'PUT') desired = body as typeof desired;
    else if (method === 'PATCH')
      desired = (
        type === 'application/json-patch+json' ? jsonPatch(view(current), body) : mergePatch(view(current), body)
      ) as typeof desired;
    else throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    const replicas = desired.spec?.replicas;
    if (!Number.isInteger(replicas) || (replicas as number) < 0)
      throw invalid('Scale', 'autoscaling', name, [
        {
          field: 'spec.replicas',
          message: `Invalid value: ${JSON.stringify(replicas)}: must be greater than or equal to 0`,
        },
      ]);
    if (
      method === 'PUT' &&
      desired.metadata?.resourceVersion &&
      desired.metadata.resourceVersion !== current.metadata.resourceVersion
    )
      throw conflict(
        ctx.type.plural,
        ctx.type.group,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    const next = structuredClone(current);
    writePath(next as Record<string, unknown>, scaleSpec.specReplicasPath, replicas);
    return { code: 200, body: view(this.update(ctx, name, next, false)) };
  }

  private remove(ctx: Ctx, name: string, options: DeleteOptions): KubeObject {
    const current = this.read(ctx, name);
    const pre = options.preconditions;
    if (pre?.uid && pre.uid !== current.metadata.uid)
      throw conflict(
        ctx.type.plural,
        ctx.type.group,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`,
      );
    if (pre?.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion)
      throw conflict(
        ctx.type.plural,
        ctx.type.group,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    if (ctx.q.get('dryRun') === 'All') return current;
    const propagation = options.propagationPolicy ?? (options.orphanDependents ? 'Orphan' : 'Background');
    const grace = ctx.q.get('gracePeriodSeconds') ?? options.gracePeriodSeconds;
    return this.asVersion(
      ctx,
      this.store.delete(
        typeKey(ctx.type),
        ctx.namespace ?? '',
        name,
        propagation,
        grace === undefined || grace === null ? undefined : Number(grace),
      ),
    );
  }
}

interface Ctx {
  type: ResourceType;
  version: string;
  namespace: string | undefined;
  q: URLSearchParams;
  accept: string;
  contentType: string;
}

interface DeleteOptions {
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  orphanDependents?: boolean;
  preconditions?: { uid?: string; resourceVersion?: string };
  gracePeriodSeconds?: number;
}

function crdStatus(crd: KubeObject): unknown {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const spec = crd.spec as { names: object; versions: { name: string; storage: boolean }[] };
  return {
    acceptedNames: spec.names,
    storedVersions: spec.versions.filter((v) => v.storage).map((v) => v.name),
    conditions: [
      {
        type: 'NamesAccepted',
        status: 'True',
        reason: 'NoConflicts',
        message: 'no conflicts found',
        lastTransitionTime: now,
      },
      {
        type: 'Established',
        status: 'True',
        reason: 'InitialNamesAccepted',
        message: 'the initial names have been accepted',
        lastTransitionTime: now,
      },
    ],
  };
}

const selector = (q: URLSearchParams) => {
  const labels = parseLabelSelector(q.get('labelSelector'));
  const fields = parseFieldSelector(q.get('fieldSelector'));
  return (o: KubeObject) => labels(o) && fields(o);
};

const wantsTable = (accept: string) => /as=Table/.test(accept);

function age(timestamp: string | undefined): string {
  if (!timestamp) return '<unknown>';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  return `${Math.floor(s / 3600)}h`;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(raw: string, contentType: string): unknown {
  try {
    return contentType.includes('yaml') ? parseYaml(raw) : JSON.parse(raw);
  } catch {
    throw badRequest('the request body is not valid JSON');
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' });
  res.end(text);
}
