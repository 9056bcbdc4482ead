/**
 * The operator shell against the test API server: it creates a cluster's objects,
 * moves the role label as the leader changes (never two primaries), resumes its
 * watch, starts over with a list after 410, and re-reads after a 409.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Operator } from '../../packages/controller/src/runtime/kubernetes/operator.js';
import { KubeApiServer } from './api-server.js';
import { deniedRequests, deployedRbac, operatorServiceAccount } from './rbac.js';
import { apiCaller, pollUntil } from './test-client.js';

const repo = resolve(import.meta.dirname, '../..');
let api: KubeApiServer;
let operator: Operator;
let dir: string;
let leader: { member: string; term: number } | null = null;
const switchovers: string[] = [];
const logs: string[] = [];

const call = apiCaller(() => api.url);

const until = <T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, millis = 8000): Promise<T> =>
  pollUntil(what, read, ok, { millis });

const cluster = () => call('GET', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo').then((r) => r.body);
const pods = () =>
  call('GET', '/api/v1/namespaces/db/pods').then(
    (r) => r.body.items as { metadata: { name: string; labels: Record<string, string> } }[],
  );
const primaries = (items: { metadata: { name: string; labels: Record<string, string> } }[]) =>
  items.filter((p) => p.metadata.labels['pgha.dev/role'] === 'primary').map((p) => p.metadata.name);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-operator-'));
  // No bookmarks: the operator's resourceVersion stays that of the last PgHaCluster event.
  api = await KubeApiServer.start({ bookmarkIntervalMillis: 60_000 });
  const kubeConfig = api.writeKubeconfig(dir);
  await call(
    'POST',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
    parse(readFileSync(join(repo, 'deploy/crd.yaml'), 'utf8')),
  );
  await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'db' } });
  operator = new Operator({
    kubeConfig,
    readLeader: async () => leader,
    requestSwitchover: async (_c, from) => {
      switchovers.push(from);
    },
    log: { info: (m) => logs.push(m), warn: (m) => logs.push(`WARN ${m}`) },
    resyncIntervalMillis: 150,
    retryDelayMillis: 20,
  });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the operator against the test API server', () => {
  it('reports a missing Secret the spec names, then creates the objects once it exists', async () => {
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'demo' },
      spec: { etcd: { endpoints: ['http://etcd:2379'] }, credentialsSecret: 'demo-credentials' },
    });
    const pending = await until('Pending', cluster, (c) => c.status?.phase === 'Pending');
    expect(pending.status.conditions).toContainEqual(
      expect.objectContaining({ type: 'CredentialsReady', reason: 'SecretMissing' }),
    );
    expect((await call('GET', '/apis/apps/v1/namespaces/db/statefulsets')).body.items).toEqual([]);
    await call('POST', '/api/v1/namespaces/db/secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'demo-credentials' },
      data: { 'superuser-password': 'YQ==', 'replication-password': 'Yg==' },
    });
    await until(
      'the StatefulSet',
      () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo'),
      (r) => r.status === 200,
    );
    const services = await until(
      '3 Services',
      () => call('GET', '/api/v1/namespaces/db/services'),
      (r) => r.body.items.length === 3,
    );
    expect(services.body.items.map((s: { metadata: { name: string } }) => s.metadata.name).sort()).toEqual([
      'demo',
      'demo-ro',
      'demo-rw',
    ]);
    await until('Creating', cluster, (c) => c.status?.phase === 'Creating');
  });

  it('generates <name>-credentials for a cluster whose spec names no Secret, unowned, and never rewrites it', async () => {
    await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'apps' } });
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/apps/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'gen' },
      spec: { etcd: { endpoints: ['http://etcd:2379'] } },
    });
    const secret = await until(
      'the generated Secret',
      () => call('GET', '/api/v1/namespaces/apps/secrets/gen-credentials'),
      (r) => r.status === 200,
    );
    expect(secret.body.metadata.ownerReferences ?? []).toEqual([]);
    expect(secret.body.metadata.labels).toMatchObject({
      'pgha.dev/generated': 'credentials',
      'pgha.dev/cluster': 'gen',
    });
    expect(Object.keys(secret.body.data).sort()).toEqual([
      'app-password',
      'app-username',
      'replication-password',
      'superuser-password',
    ]);
    await until(
      'the StatefulSet',
      () => call('GET', '/apis/apps/v1/namespaces/apps/statefulsets/gen'),
      (r) => r.status === 200,
    );
    const ready = await until(
      'CredentialsReady',
      () => call('GET', '/apis/pgha.dev/v1alpha1/namespaces/apps/pghaclusters/gen').then((r) => r.body),
      (c) => c.status?.conditions?.some((x: { type: string; reason: string }) => x.reason === 'SecretFound'),
    );
    expect(ready.status.phase).toBe('Creating');
    // Later rounds read it and leave it as it is; its passwords never appear in the log.
    const again = await call('GET', '/api/v1/namespaces/apps/secrets/gen-credentials');
    expect(again.body.metadata.resourceVersion).toBe(secret.body.metadata.resourceVersion);
    const password = Buffer.from(secret.body.data['superuser-password'], 'base64').toString('utf8');
    expect(logs.join('\n')).not.toContain(password);
    expect(logs.join('\n')).not.toContain(secret.body.data['superuser-password']);
  });

  it('labels pods by role and moves the primary label without ever labelling two pods', async () => {
    for (const i of [0, 1, 2]) {
      await call('POST', '/api/v1/namespaces/db/pods', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `demo-${i}`, labels: { 'pgha.dev/cluster': 'demo' } },
        spec: { containers: [{ name: 'postgres', image: 'x' }] },
      });
      const p = (await call('GET', `/api/v1/namespaces/db/pods/demo-${i}`)).body;
      await call('PUT', `/api/v1/namespaces/db/pods/demo-${i}/status`, {
        ...p,
        status: { conditions: [{ type: 'Ready', status: 'True' }] },
      });
    }
    // every change to pods, as a watcher sees it
    const seen: string[][] = [];
    const controller = new AbortController();
    const rv = (await call('GET', '/api/v1/namespaces/db/pods')).body.metadata.resourceVersion;
    const current = new Map<string, Record<string, string>>();
    void fetch(`${api.url}/api/v1/namespaces/db/pods?watch=true&resourceVersion=${rv}`, { signal: controller.signal })
      .then(async (res) => {
        let buffer = '';
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += Buffer.from(chunk).toString();
          for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
            const e = JSON.parse(buffer.slice(0, nl));
            buffer = buffer.slice(nl + 1);
            current.set(e.object.metadata.name, e.object.metadata.labels ?? {});
            seen.push([...current].filter(([, l]) => l['pgha.dev/role'] === 'primary').map(([n]) => n));
          }
        }
      })
      .catch(() => undefined);

    leader = { member: 'demo-0', term: 1 };
    await until('demo-0 primary', pods, (items) => primaries(items).join() === 'demo-0');
    const healthy = await until('Healthy', cluster, (c) => c.status?.phase === 'Healthy');
    expect(healthy.status).toMatchObject({ primary: 'demo-0', term: 1, ready: '3/3' });
    leader = { member: 'demo-2', term: 2 };
    await until('demo-2 primary', pods, (items) => primaries(items).join() === 'demo-2');
    controller.abort();
    expect(seen.length).toBeGreaterThan(3);
    expect(seen.every((p) => p.length <= 1)).toBe(true);
  });

  it('resumes a closed watch, and lists again after a 410', async () => {
    api.endWatches();
    await call(
      'PATCH',
      '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo',
      { spec: { instances: 4 } },
      'application/merge-patch+json',
    );
    await until(
      '4 replicas',
      () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo'),
      (r) => r.body.spec.replicas === 4,
    );
    const relists = operator.relists;
    // history moves past the operator's resourceVersion and is compacted: its resumed watch gets 410
    await call('POST', '/api/v1/namespaces/db/configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'bump' },
    });
    api.store.compact();
    api.endWatches();
    await until(
      'a re-list',
      async () => operator.relists,
      (n) => n > relists,
    );
    await call(
      'PATCH',
      '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo',
      { spec: { instances: 3 } },
      'application/merge-patch+json',
    );
    await until(
      '3 replicas',
      () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo'),
      (r) => r.body.spec.replicas === 3,
    );
  });

  it('reads again after a 409 and gets its write through', async () => {
    api.injectFailure({ method: 'PUT', path: /\/statefulsets\/demo$/, code: 409 });
    await call(
      'PATCH',
      '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo',
      { spec: { image: 'ghcr.io/pgha/member:17.2' } },
      'application/merge-patch+json',
    );
    const sts = await until(
      'the new image',
      () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo'),
      (r) => r.body.spec.template.spec.containers[0].image === 'ghcr.io/pgha/member:17.2',
    );
    expect(sts.status).toBe(200);
    expect(logs.some((l) => l.includes('conflict (someone wrote first): reading again'))).toBe(true);
  });
});

/**
 * Bad input on a running cluster (issue 11, item 6). The CRD's schema already refuses
 * both an unknown PostgreSQL version and a negative or zero instance count (422), as a
 * real API server does; a CRD whose schema admits them (a newer release's CRD applied
 * before the operator is upgraded, or one edited by hand) lets them reach the operator,
 * which must report them and leave everything running as it is.
 */
describe('bad input on a running cluster', () => {
  const crdPath = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/pghaclusters.pgha.dev';
  const clusterPath = '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo';
  const mergePatch = (path: string, body: unknown) => call('PATCH', path, body, 'application/merge-patch+json');
  // biome-ignore lint/suspicious/noExplicitAny: the CRD's schema, edited by path
  const editCrd = async (edit: (specProperties: any) => void) => {
    const crd = (await call('GET', crdPath)).body;
    for (const version of crd.spec.versions) edit(version.schema.openAPIV3Schema.properties.spec.properties);
    const r = await call('PUT', crdPath, crd);
    expect(r.status).toBe(200);
  };
  let originalCrd: unknown;

  /** What must not change: the StatefulSet, the Services, the pods. */
  const runningObjects = async () => {
    const sts = (await call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo')).body;
    const services = (await call('GET', '/api/v1/namespaces/db/services')).body.items as {
      metadata: { name: string; resourceVersion: string };
      spec: unknown;
    }[];
    const podItems = (await call('GET', '/api/v1/namespaces/db/pods')).body.items as {
      metadata: { name: string; uid: string; deletionTimestamp?: string };
    }[];
    return {
      statefulSet: {
        resourceVersion: sts.metadata.resourceVersion,
        generation: sts.metadata.generation,
        replicas: sts.spec.replicas,
        template: JSON.stringify(sts.spec.template),
      },
      services: services.map((s) => [s.metadata.name, s.metadata.resourceVersion, JSON.stringify(s.spec)]),
      pods: podItems.map((p) => [p.metadata.name, p.metadata.uid, p.metadata.deletionTimestamp ?? null]),
    };
  };
  /** Bounded: a few reconciles of everything after the bad spec was seen, so a change would have been made. */
  const afterSomeReconciles = async () => {
    const from = operator.reconciles;
    await until(
      'three more reconciles',
      async () => operator.reconciles,
      (n) => n >= from + 3,
    );
  };
  const warnings = async (reason: string, contains: string) =>
    (await call('GET', '/api/v1/namespaces/db/events')).body.items.filter(
      (e: { type: string; reason: string; message: string; involvedObject: { name: string } }) =>
        e.involvedObject.name === 'demo' && e.type === 'Warning' && e.reason === reason && e.message.includes(contains),
    );

  beforeAll(async () => {
    originalCrd = (await call('GET', crdPath)).body;
  });
  afterAll(async () => {
    const crd = (await call('GET', crdPath)).body;
    // biome-ignore lint/suspicious/noExplicitAny: restoring the spec of the CRD read first
    await call('PUT', crdPath, { ...crd, spec: (originalCrd as any).spec });
  });

  it('an unknown PostgreSQL version: 422 from the CRD; past a schema that admits it, a condition and a Warning event, and nothing running changes', async () => {
    await until('demo Healthy', cluster, (c) => c.status?.phase === 'Healthy');
    const before = await runningObjects();
    const refused = await mergePatch(clusterPath, { spec: { postgresVersion: 18 } });
    expect(refused.status).toBe(422);
    expect(JSON.stringify(refused.body)).toContain('postgresVersion');

    // A newer release's CRD (it knows 18) applied before the operator is upgraded.
    await editCrd((p) => {
      p.postgresVersion.enum = [15, 16, 17, 18];
    });
    expect((await mergePatch(clusterPath, { spec: { postgresVersion: 18 } })).status).toBe(200);
    const failed = await until('SpecValid False', cluster, (c) =>
      c.status?.conditions?.some(
        (x: { type: string; status: string }) => x.type === 'SpecValid' && x.status === 'False',
      ),
    );
    const specValid = failed.status.conditions.find((x: { type: string }) => x.type === 'SpecValid');
    expect(specValid).toMatchObject({ reason: 'InvalidSpec', observedGeneration: failed.metadata.generation });
    expect(specValid.message).toContain('postgresVersion 18 is not supported');
    expect(failed.status.phase).toBe('Failed');
    const events = await until(
      'a Warning event InvalidSpec',
      () => warnings('InvalidSpec', 'postgresVersion'),
      (e) => e.length > 0,
    );
    expect(events).toHaveLength(1);
    await afterSomeReconciles();
    expect(await runningObjects()).toEqual(before);
    expect(await warnings('InvalidSpec', 'postgresVersion')).toHaveLength(1); // once per transition, not per round

    // A failover meanwhile: the role label still follows the leader record, so -rw
    // keeps pointing at the writable primary while the spec waits for a fix.
    leader = { member: 'demo-1', term: 3 };
    await until('demo-1 primary', pods, (items) => primaries(items).join() === 'demo-1');
    const stillFailed = await until('the new primary in the status', cluster, (c) => c.status?.primary === 'demo-1');
    expect(stillFailed.status).toMatchObject({ phase: 'Failed', term: 3 });

    expect((await mergePatch(clusterPath, { spec: { postgresVersion: 17 } })).status).toBe(200);
    await until('Healthy again', cluster, (c) => c.status?.phase === 'Healthy');
    const after = await runningObjects();
    expect(after.statefulSet).toEqual(before.statefulSet); // same desired objects: nothing rewritten
    expect(after.pods).toEqual(before.pods);
  });

  it('negative or zero instances: 422 from the CRD and the scale subresource; past a schema that admits them, a condition and nothing deleted', async () => {
    const before = await runningObjects();
    expect(before.statefulSet.replicas).toBe(3);
    const created = await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'negative' },
      spec: { instances: -1, etcd: { endpoints: ['http://etcd:2379'] } },
    });
    expect(created.status).toBe(422);
    expect(JSON.stringify(created.body)).toContain('spec.instances');
    expect((await mergePatch(clusterPath, { spec: { instances: -1 } })).status).toBe(422);
    // kubectl scale pgha demo --replicas=-1 / =0
    expect((await mergePatch(`${clusterPath}/scale`, { spec: { replicas: -1 } })).status).toBe(422);
    expect((await mergePatch(`${clusterPath}/scale`, { spec: { replicas: 0 } })).status).toBe(422);
    expect((await cluster()).spec.instances).toBe(3);

    // A CRD edited by hand that dropped the bounds.
    await editCrd((p) => {
      delete p.instances.minimum;
    });
    expect((await mergePatch(clusterPath, { spec: { instances: -1 } })).status).toBe(200);
    const failed = await until('SpecValid False on instances', cluster, (c) =>
      c.status?.conditions?.some(
        (x: { type: string; status: string; message: string }) =>
          x.type === 'SpecValid' && x.status === 'False' && x.message.includes('instances'),
      ),
    );
    expect(failed.status.phase).toBe('Failed');
    await until(
      'a Warning event about instances',
      () => warnings('InvalidSpec', 'instances'),
      (e) => e.length === 1,
    );
    await afterSomeReconciles();
    const after = await runningObjects();
    expect(after).toEqual(before); // replicas still 3, no pod deleted, Services untouched
    expect(switchovers.filter((s) => s !== 'demo-2')).toEqual([]); // no scale-down switchover asked

    // Through the scale subresource too (the schema no longer bounds it): -1 is refused
    // by the Scale's own validation, 0 reaches the operator and is reported.
    expect((await mergePatch(`${clusterPath}/scale`, { spec: { replicas: -1 } })).status).toBe(422);
    expect((await mergePatch(`${clusterPath}/scale`, { spec: { replicas: 0 } })).status).toBe(200);
    await until(
      'SpecValid False on 0 instances',
      cluster,
      (c) =>
        c.status?.conditions?.some(
          (x: { type: string; status: string; message: string }) =>
            x.type === 'SpecValid' && x.status === 'False' && x.message.includes('instances'),
        ) && c.metadata.generation === c.status?.observedGeneration,
    );
    await afterSomeReconciles();
    expect(await runningObjects()).toEqual(before);

    expect((await mergePatch(clusterPath, { spec: { instances: 3 } })).status).toBe(200);
    await until('Healthy again', cluster, (c) => c.status?.phase === 'Healthy');
  });
});

describe("deploy/rbac.yaml covers the operator's requests", () => {
  it('grants every request the operator sent in this file (its kubeconfig sends a token; the test’s own calls none)', () => {
    const sent = api.requests.filter((r) => r.token !== undefined);
    expect(sent.length).toBeGreaterThan(0);
    expect(deniedRequests(deployedRbac(), operatorServiceAccount, sent)).toEqual([]);
  });
});
