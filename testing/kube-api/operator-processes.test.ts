/**
 * Two `pgha operator` processes (the built CLI) against one test API server and a
 * real etcd: one holds the Lease and reconciles, the other stands by; both answer
 * /healthz and /readyz; after a SIGKILL of the leader (no release: its Lease must
 * expire) the other takes over within the lease duration and reconciles.
 * Needs `pnpm run build` first (it runs packages/controller/dist/cli.js).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../etcd.js';
import { KubeApiServer } from './api-server.js';
import { apiCaller, pollUntil } from './test-client.js';

const repo = resolve(import.meta.dirname, '../..');
const leaseDurationSeconds = 3;
let etcd: TestEtcd;
let api: KubeApiServer;
let dir: string;
const operators = new Map<string, { process: ChildProcess; output: string; healthPort?: number }>();

const call = apiCaller(() => api.url);

const outputs = () => [...operators].map(([id, o]) => `--- ${id}\n${o.output.slice(-3000)}`).join('\n');

const until = <T>(what: string, read: () => Promise<T> | T, ok: (v: T) => boolean, millis: number): Promise<T> =>
  pollUntil(what, read, ok, { millis, context: outputs });

const holder = async () =>
  (await call('GET', '/apis/coordination.k8s.io/v1/namespaces/pgha-system/leases/pgha-operator')).body.spec
    ?.holderIdentity as string | undefined;

async function probe(identity: string, path: '/healthz' | '/readyz') {
  const res = await fetch(`http://127.0.0.1:${operators.get(identity)!.healthPort}${path}`);
  return { status: res.status, text: await res.text() };
}

function start(identity: string, kubeconfig: string): void {
  const child = spawn(
    process.execPath,
    [
      join(repo, 'packages/controller/dist/cli.js'),
      'operator',
      '--kubeconfig',
      kubeconfig,
      '--resync-interval-millis',
      '200',
      '--health-port',
      '0',
      '--lease-namespace',
      'pgha-system',
      '--lease-duration-seconds',
      String(leaseDurationSeconds),
      '--renew-deadline-millis',
      '2000',
      '--retry-period-millis',
      '250',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POD_NAME: identity } },
  );
  const entry: { process: ChildProcess; output: string; healthPort?: number } = { process: child, output: '' };
  const read = (d: Buffer) => {
    entry.output += d;
    const port = /health endpoints on port (\d+)/.exec(entry.output);
    if (port) entry.healthPort = Number(port[1]);
  };
  child.stdout!.on('data', read);
  child.stderr!.on('data', read);
  operators.set(identity, entry);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-operator-processes-'));
  etcd = await startTestEtcd();
  api = await KubeApiServer.start();
  await call(
    'POST',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
    parse(readFileSync(join(repo, 'deploy/crd.yaml'), 'utf8')),
  );
  for (const name of ['pgha-system', 'db'])
    await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  await call('POST', '/api/v1/namespaces/db/secrets', {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'demo-credentials' },
    data: { 'superuser-password': 'YQ==', 'replication-password': 'Yg==' },
  });
  const kubeconfig = api.writeKubeconfig(dir);
  start('op-1', kubeconfig);
  start('op-2', kubeconfig);
  // each process takes seconds to load @kubernetes/client-node on a busy machine
  for (const id of ['op-1', 'op-2'])
    await until(
      `${id} to serve its health endpoints`,
      () => operators.get(id)!.healthPort,
      (p) => p !== undefined,
      90_000,
    );
}, 120_000);

afterAll(async () => {
  for (const { process: child } of operators.values())
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  await api?.close();
  await etcd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('two pgha operator processes', () => {
  it('one reconciles and both are ready; after a SIGKILL of the leader the other takes over within the lease duration and reconciles', async () => {
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'demo' },
      spec: { etcd: { endpoints: [etcd.endpoint], keyRoot: uniqueKeyRoot() } },
    });
    await until(
      'the StatefulSet',
      () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo'),
      (r) => r.status === 200,
      30_000,
    );
    const leader = (await holder())!;
    const standby = leader === 'op-1' ? 'op-2' : 'op-1';
    expect(['op-1', 'op-2']).toContain(leader);
    expect(operators.get(leader)!.output).toContain('create StatefulSet/demo');
    expect(operators.get(standby)!.output).not.toContain('db/demo:');
    for (const id of [leader, standby]) expect((await probe(id, '/healthz')).status).toBe(200);
    expect(await probe(leader, '/readyz')).toMatchObject({ status: 200, text: expect.stringContaining('op') });
    expect((await probe(leader, '/readyz')).text).toContain(`${leader} leader`);
    // The standby names the holder once it has read the Lease (every retry period).
    const ready = await until(
      'the standby to name the leader',
      () => probe(standby, '/readyz'),
      (r) => r.text.includes(`(leader: ${leader})`),
      10_000,
    );
    expect(ready.status).toBe(200);
    expect(ready.text).toContain(`${standby} standby (leader: ${leader})`);
    expect((await fetch(`http://127.0.0.1:${operators.get(standby)!.healthPort}/metrics`)).status).toBe(404);

    operators.get(leader)!.process.kill('SIGKILL');
    const killed = Date.now();
    // no release: the standby waits until it has seen the Lease unchanged for its whole duration
    await until('the standby to take the Lease', holder, (h) => h === standby, leaseDurationSeconds * 1000 + 5000);
    const tookMillis = Date.now() - killed;
    // one lease duration after the last renewal it saw, plus up to one retry period and a loaded machine's delays
    expect(tookMillis).toBeLessThan(leaseDurationSeconds * 1000 + 5000);
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
      30_000,
    );
    expect(operators.get(standby)!.output).toContain('db/demo: update StatefulSet/demo');
    expect(operators.get(standby)!.output).toMatch(/acquired Lease pgha-system\/pgha-operator \(expired from op-/);
    expect((await probe(standby, '/readyz')).text).toContain(`${standby} leader`);
  }, 120_000);
});
