/**
 * `pgha operator` as a process, with a real etcd and the Kubernetes test API server:
 * it reads each cluster's leader record from etcd, labels the primary's pod, reports
 * it in the status, and asks for a switchover in etcd before a scale-down would
 * remove the primary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { clusterKeys, LeaderRecord, recordVersion, SwitchoverRecord } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { KubeApiServer } from '../../../testing/kube-api/api-server.js';

const repo = resolve(import.meta.dirname, '../../..');
let etcdServer: TestEtcd;
let etcd: Etcd3;
let api: KubeApiServer;
let operator: ChildProcess;
let dir: string;
let output = '';
const keyRoot = uniqueKeyRoot();
const keys = clusterKeys('demo', keyRoot);

async function call(method: string, path: string, body?: unknown, contentType = 'application/json') {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: JSON read by path in assertions
  return { status: res.status, body: (await res.json()) as any };
}

async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, millis = 15_000): Promise<T> {
  const deadline = Date.now() + millis;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}: last saw ${JSON.stringify(v).slice(0, 300)}\noperator:\n${output}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-operator-cli-'));
  etcdServer = await startTestEtcd();
  etcd = new Etcd3({ hosts: etcdServer.endpoint });
  api = await KubeApiServer.start();
  await call(
    'POST',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
    parse(readFileSync(join(repo, 'deploy/crd.yaml'), 'utf8')),
  );
  await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'db' } });
  await call('POST', '/api/v1/namespaces/db/secrets', {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'demo-credentials' },
    data: { 'superuser-password': 'YQ==', 'replication-password': 'Yg==' },
  });
  operator = spawn(
    process.execPath,
    [
      join(repo, 'packages/controller/dist/cli.js'),
      'operator',
      '--kubeconfig',
      api.writeKubeconfig(dir),
      '--resync-interval-millis',
      '200',
      // any free port for /healthz and /readyz: 8081 may be taken on a shared machine
      '--health-port',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  operator.stdout!.on('data', (d) => {
    output += d;
  });
  operator.stderr!.on('data', (d) => {
    output += d;
  });
  // the process takes seconds to load @kubernetes/client-node on a busy machine
  await until(
    'the operator to watch',
    async () => output,
    (o) => o.includes('watching PgHaClusters'),
    90_000,
  );
});

afterAll(async () => {
  if (operator && operator.exitCode === null) {
    const exited = new Promise((r) => operator.once('exit', r));
    operator.kill('SIGTERM');
    await exited;
  }
  etcd?.close();
  await api?.close();
  await etcdServer?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('pgha operator', () => {
  it('follows the leader record in etcd and switches over before a scale-down would remove the primary', async () => {
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'demo' },
      spec: { etcd: { endpoints: [etcdServer.endpoint], keyRoot } },
    });
    await until(
      'the StatefulSet',
      () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo'),
      (r) => r.status === 200,
    );
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
    const leader: LeaderRecord = {
      v: recordVersion,
      term: 1,
      member: 'demo-2',
      host: 'demo-2.demo.db.svc',
      port: 5432,
      timeline: 1,
      since: new Date().toISOString(),
      writable: true,
    };
    await etcd.put(keys.leader).value(LeaderRecord.encode(leader));
    const status = await until(
      'demo-2 as primary in the status',
      () => call('GET', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo'),
      (r) => r.body.status?.primary === 'demo-2' && r.body.status?.phase === 'Healthy',
    );
    expect(status.body.status).toMatchObject({ term: 1, ready: '3/3' });
    const pod = (await call('GET', '/api/v1/namespaces/db/pods/demo-2')).body;
    expect(pod.metadata.labels['pgha.dev/role']).toBe('primary');

    await call(
      'PATCH',
      '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo',
      { spec: { instances: 1 } },
      'application/merge-patch+json',
    );
    const request = await until(
      'a switchover request',
      () => etcd.get(keys.switchover).string(),
      (t) => t !== null,
    );
    expect(SwitchoverRecord.decode(request!)).toMatchObject({ from: 'demo-2', to: 'demo-0' });
    const sts = (await call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo')).body;
    expect(sts.spec.replicas).toBe(3); // the primary's pod stays until the switchover
  });
});
