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

const repo = resolve(import.meta.dirname, '../..');
let api: KubeApiServer;
let operator: Operator;
let dir: string;
let leader: { member: string; term: number } | null = null;
const switchovers: string[] = [];
const logs: string[] = [];

async function call(method: string, path: string, body?: unknown, contentType = 'application/json') {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: JSON read by path in assertions
  return { status: res.status, body: (await res.json()) as any };
}

async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, millis = 8000): Promise<T> {
  const deadline = Date.now() + millis;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}: last saw ${JSON.stringify(v).slice(0, 400)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

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
  it('reports a missing Secret, then creates the objects once it exists', async () => {
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'demo' },
      spec: { etcd: { endpoints: ['http://etcd:2379'] } },
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
