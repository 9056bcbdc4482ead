/**
 * `pgha operator` as a process, with a real etcd and the Kubernetes test API server:
 * it reads each cluster's leader record from etcd, labels the primary's pod, reports
 * it in the status, and asks for a switchover in etcd before a scale-down would
 * remove the primary. It also runs each cluster's failover controller: its
 * `controller` key appears in etcd, a real local cluster (agents and postgres, no
 * `pgha controller`) fails over when its primary's agent is killed, an unreachable
 * etcd is reported in the status, and a deleted cluster's or a stopped operator's
 * controllers release their keys. Synchronous replication: a cluster with
 * `spec.synchronous.mode: quorum` gets its config record in etcd, and its
 * `Synchronous` condition and events follow the primary's claim (degraded by a count
 * the standbys left cannot reach, restored when it is lowered again).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  ConfigRecord,
  ControllerRecord,
  clusterKeys,
  LeaderRecord,
  RemovedMemberRecord,
  recordVersion,
  SwitchoverRecord,
} from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findFreePortRange } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { KubeApiServer } from '../../../testing/kube-api/api-server.js';
import { apiCaller, pollUntil, prepareNamespace } from '../../../testing/kube-api/test-client.js';
import { findFreePort } from '../src/adapters/ports.js';
import { createLogger } from '../src/log.js';
import { type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const repo = resolve(import.meta.dirname, '../../..');
let etcdServer: TestEtcd;
let etcd: Etcd3;
let api: KubeApiServer;
let operator: ChildProcess;
let dir: string;
let output = '';
const keyRoot = uniqueKeyRoot();
const resyncIntervalMillis = 60_000;
const keys = clusterKeys('demo', keyRoot);
interface StatusCondition {
  type: string;
  status: string;
  reason: string;
  message: string;
}
interface KubeEvent {
  type: string;
  reason: string;
  message?: string;
  metadata: { name: string; resourceVersion: string };
  involvedObject?: { name?: string };
}
/** A real cluster (three agents with postgres, no controller process) whose failover is the operator's. */
let local: LocalCluster | undefined;
let haStateDir: string | undefined;
const haKeyRoot = uniqueKeyRoot();
const haKeys = clusterKeys('ha', haKeyRoot);
const controllerOf = async (k: typeof keys) => {
  const text = await etcd.get(k.controller).string();
  return text === null ? null : ControllerRecord.decode(text);
};

const call = apiCaller(() => api.url);

const synchronousCondition = async (name: string): Promise<StatusCondition | undefined> => {
  const r = await call('GET', `/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/${name}`);
  return (r.body.status?.conditions ?? []).find((c: StatusCondition) => c.type === 'Synchronous');
};
/** The cluster's Synchronous* events, oldest first (by resourceVersion: the list is in name order). */
const synchronousEvents = async (name: string): Promise<KubeEvent[]> =>
  (await call('GET', '/api/v1/namespaces/db/events')).body.items
    .filter((e: KubeEvent) => e.involvedObject?.name === name && e.reason.startsWith('Synchronous'))
    .sort((a: KubeEvent, b: KubeEvent) => Number(a.metadata.resourceVersion) - Number(b.metadata.resourceVersion));
const setSynchronous = (name: string, synchronous: Record<string, unknown>) =>
  call(
    'PATCH',
    `/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/${name}`,
    { spec: { synchronous } },
    'application/merge-patch+json',
  );

const until = <T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, millis = 15_000): Promise<T> =>
  pollUntil(what, read, ok, { millis, intervalMillis: 100, context: () => `operator:\n${output}` });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-operator-cli-'));
  etcdServer = await startTestEtcd();
  etcd = new Etcd3({ hosts: etcdServer.endpoint });
  api = await KubeApiServer.start();
  await prepareNamespace(call, 'db', 'demo');
  operator = spawn(
    process.execPath,
    [
      join(repo, 'packages/controller/dist/cli.js'),
      'operator',
      '--kubeconfig',
      api.writeKubeconfig(dir),
      // Long enough that only the leader watch (and Kubernetes events) can explain a
      // reconcile that follows a change of the leader record within the test's deadlines.
      '--resync-interval-millis',
      String(resyncIntervalMillis),
      // any free port for /healthz and /readyz: 8081 may be taken on a shared machine
      '--health-port',
      '0',
      // A settings change the primary's claim does not reach is Degraded after 1 s, not 5.
      '--synchronous-grace-millis',
      '1000',
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
  await local?.stop();
  if (operator && operator.exitCode === null) {
    const exited = new Promise((r) => operator.once('exit', r));
    operator.kill('SIGTERM');
    await exited;
  }
  etcd?.close();
  await api?.close();
  await etcdServer?.stop();
  rmSync(dir, { recursive: true, force: true });
  if (haStateDir) rmSync(haStateDir, { recursive: true, force: true });
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
    // spec.synchronous defaults to off: no config record is written (none means off).
    expect(status.body.status.conditions).toContainEqual(
      expect.objectContaining({ type: 'Synchronous', status: 'False', reason: 'Off' }),
    );
    expect(await etcd.get(keys.config).string()).toBeNull();
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

  it('moves the primary label within moments of a leader record change (the etcd watch), old pod first', async () => {
    const podLabels = async () => {
      const list = (await call('GET', '/api/v1/namespaces/db/pods?labelSelector=pgha.dev%2Fcluster%3Ddemo')).body;
      return Object.fromEntries(
        list.items.map((p: { metadata: { name: string; labels: Record<string, string> } }) => [
          p.metadata.name,
          p.metadata.labels['pgha.dev/role'],
        ]),
      ) as Record<string, string | undefined>;
    };
    expect((await podLabels())['demo-2']).toBe('primary');
    // Watch the pods: never two primaries at once, and when each label moved.
    const primaries: { at: number; pods: string[] }[] = [];
    let watching = true;
    const sampler = (async () => {
      while (watching) {
        const labels = await podLabels();
        primaries.push({ at: Date.now(), pods: Object.keys(labels).filter((p) => labels[p] === 'primary') });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    // A failover as the agents would write it: demo-0 holds the record with a newer term.
    const changedAt = Date.now();
    const leader: LeaderRecord = {
      v: recordVersion,
      term: 2,
      member: 'demo-0',
      host: 'demo-0.demo.db.svc',
      port: 5432,
      timeline: 2,
      since: new Date().toISOString(),
      writable: true,
    };
    await etcd.put(keys.leader).value(LeaderRecord.encode(leader));
    try {
      await until(
        'demo-0 labelled primary, demo-2 not',
        podLabels,
        (l) => l['demo-0'] === 'primary' && l['demo-2'] !== 'primary',
        resyncIntervalMillis / 4,
      );
    } finally {
      watching = false;
      await sampler;
    }
    const movedMillis = Date.now() - changedAt;
    const removedAt = primaries.find((s) => !s.pods.includes('demo-2'))?.at;
    console.log(
      `primary label moved demo-2 -> demo-0 ${movedMillis} ms after the leader record changed (removed from demo-2 after ${
        removedAt === undefined ? '?' : removedAt - changedAt
      } ms; resync interval ${resyncIntervalMillis} ms)`,
    );
    expect(movedMillis).toBeLessThan(resyncIntervalMillis / 4);
    expect(primaries.every((s) => s.pods.length <= 1)).toBe(true);
    const status = await until(
      'demo-0 as primary in the status',
      () => call('GET', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo'),
      (r) => r.body.status?.primary === 'demo-0' && r.body.status?.term === 2,
    );
    expect(status.body.status.primary).toBe('demo-0');

    // The record deleted (no writable primary): the label comes off at once too.
    const deletedAt = Date.now();
    await etcd.delete().key(keys.leader);
    await until('no primary label', podLabels, (l) => !Object.values(l).includes('primary'), resyncIntervalMillis / 4);
    console.log(`primary label removed ${Date.now() - deletedAt} ms after the leader record was deleted`);
    await etcd.put(keys.leader).value(LeaderRecord.encode(leader));
    await until('demo-0 primary again', podLabels, (l) => l['demo-0'] === 'primary', resyncIntervalMillis / 4);
  });

  it('marks the members a scale-down removes (removed/<name> in etcd) and unmarks them before scaling back up', async () => {
    const marks = async () => (await etcd.getAll().prefix(keys.removedPrefix).strings()) as Record<string, string>;
    const sts = () => call('GET', '/apis/apps/v1/namespaces/db/statefulsets/demo').then((r) => r.body);
    // The scale to 1 asked for in the first test goes ahead now that demo-0 leads.
    await until('the StatefulSet at 1 replica', sts, (b) => b.spec.replicas === 1);
    const marked = await marks();
    expect(Object.keys(marked).sort()).toEqual([keys.removed('demo-1'), keys.removed('demo-2')]);
    expect(RemovedMemberRecord.decode(marked[keys.removed('demo-2')]!)).toMatchObject({
      member: 'demo-2',
      reason: 'scaled down from 3 to 1 instances',
    });
    await call(
      'PATCH',
      '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo',
      { spec: { instances: 3 } },
      'application/merge-patch+json',
    );
    await until('the StatefulSet at 3 replicas', sts, (b) => b.spec.replicas === 3);
    // Unmarked in the round that grew the StatefulSet, before the update.
    expect(await marks()).toEqual({});
  });

  it("runs the cluster's failover controller: its controller key appears in the cluster's etcd", async () => {
    const record = await until(
      "demo's controller key",
      () => controllerOf(keys),
      (r) => r !== null,
    );
    expect(record!.pid).toBe(operator.pid); // the operator process holds it: no pgha controller runs here
  });

  it('reports a cluster whose etcd cannot be reached (condition and Warning event) and goes on', async () => {
    const closedPort = await findFreePort(); // nothing listens there
    const started = Date.now();
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'lost' },
      spec: { etcd: { endpoints: [`http://127.0.0.1:${closedPort}`] } },
    });
    const status = await until(
      'FailoverControllerReady False/EtcdUnreachable on lost',
      () => call('GET', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/lost'),
      (r) =>
        (r.body.status?.conditions ?? []).some(
          (c: StatusCondition) =>
            c.type === 'FailoverControllerReady' && c.status === 'False' && c.reason === 'EtcdUnreachable',
        ),
    );
    const condition = status.body.status.conditions.find((c: StatusCondition) => c.type === 'FailoverControllerReady');
    expect(condition.message).toContain(`127.0.0.1:${closedPort}`);
    const events = await until(
      'an EtcdUnreachable event for lost',
      () => call('GET', '/api/v1/namespaces/db/events'),
      (r) => r.body.items.some((e: KubeEvent) => e.involvedObject?.name === 'lost' && e.reason === 'EtcdUnreachable'),
    );
    // Other events about lost (Normal ones, e.g. for the objects it created) may come first.
    const unreachable = events.body.items.filter(
      (e: KubeEvent) => e.involvedObject?.name === 'lost' && e.reason === 'EtcdUnreachable',
    );
    expect(unreachable.map((e: KubeEvent) => e.type)).toEqual(unreachable.map(() => 'Warning'));
    console.log(`unreachable etcd reported after ${Date.now() - started} ms: ${condition.message}`);
    // The operator goes on: demo's controller still holds its key, and demo is still reconciled.
    expect(await controllerOf(keys)).not.toBeNull();
    await call('DELETE', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/lost');
  });

  it('fails over a real cluster (agents and postgres, no pgha controller) when its primary agent is killed', async () => {
    // Its own directory under /tmp: postgres runs as another user when the test runs as
    // root, and cannot enter the test's private (mode 700) directory.
    haStateDir = mkdtempSync(join(tmpdir(), 'pgha-operator-ha-'));
    const stateDir = haStateDir;
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'ha' },
      spec: {
        etcd: { endpoints: [etcdServer.endpoint], keyRoot: haKeyRoot },
        leaseTtlMillis: 3000,
        synchronous: { mode: 'quorum' },
      },
    });
    // The operator writes spec.synchronous into the cluster's config record (created:
    // the agents start in quorum mode), its other fields from what the spec gives them.
    const config = await until(
      "ha's config record",
      async () => {
        const text = await etcd.get(haKeys.config).string();
        return text === null ? null : ConfigRecord.decode(text);
      },
      (r) => r !== null,
    );
    expect(config).toMatchObject({
      version: 1,
      synchronousMode: 'quorum',
      synchronousCount: 1,
      synchronousStrict: false,
      leaseTtlMillis: 3000,
      updatedBy: 'pgha operator',
    });
    const startedAt = Date.now();
    local = await startLocalCluster({
      cluster: 'ha',
      stateDir,
      basePort: await findFreePortRange(3), // other tests may run on this machine: no fixed ports
      etcd: etcdServer.endpoint,
      keyRoot: haKeyRoot,
      members: 3,
      controllers: 0, // failover is the operator's
      leaseTtlMillis: 3000,
      supervise: false, // a killed agent stays down
      log: createLogger('test', () => undefined),
      readyTimeoutMillis: 120_000,
    });
    console.log(`local cluster ready in ${Date.now() - startedAt} ms`);
    const active = await until(
      "ha's controller key",
      () => controllerOf(haKeys),
      (r) => r !== null,
    );
    expect(active!.pid).toBe(operator.pid);
    // The primary claims its commits are on one of the two standbys: Synchronous True.
    const readyAt = Date.now();
    const synchronous = await until(
      'Synchronous True on ha',
      () => synchronousCondition('ha'),
      (c) => c?.status === 'True',
      30_000,
    );
    console.log(
      `Synchronous True on ha ${Date.now() - readyAt} ms after the cluster was ready: ${synchronous!.message}`,
    );
    const before = LeaderRecord.decode((await etcd.get(haKeys.leader).string())!);
    const primary = local.members.find((m) => m.name === before.member)!;
    const killedAt = Date.now();
    process.kill(primary.agentPid()!, 'SIGKILL'); // postgres dies with it (pdeathsig)
    const after = await until(
      'a new writable primary of a newer term',
      async () => {
        const text = await etcd.get(haKeys.leader).string();
        return text === null ? null : LeaderRecord.decode(text);
      },
      (l) => l !== null && l.term > before.term && l.writable && l.member !== before.member,
      60_000,
    );
    console.log(
      `failover ${before.member} -> ${after!.member} (term ${after!.term}) in ${Date.now() - killedAt} ms after the kill`,
    );
    const history = await until(
      'the history record of the failover',
      () => etcd.get(haKeys.history(after!.term)).string(),
      (t) => t !== null,
    );
    expect(JSON.parse(history!)).toMatchObject({ oldPrimary: before.member, newPrimary: after!.member });
  });

  it('reports degraded synchronous replication (condition, Warning event once) and its recovery (Normal event)', async () => {
    // After the failover, one standby is left (the killed member stays down).
    const leader = LeaderRecord.decode((await etcd.get(haKeys.leader).string())!);
    await until(
      "Synchronous True on ha under the new primary's claim",
      () => synchronousCondition('ha'),
      (c) => c?.status === 'True' && c.message.includes(`primary ${leader.member} (term ${leader.term})`),
      30_000,
    );
    const eventsBefore = (await synchronousEvents('ha')).length;
    const before = ConfigRecord.decode((await etcd.get(haKeys.config).string())!);
    // Two confirmations asked of one streaming standby: degraded (not strict: commits go on).
    const patchedAt = Date.now();
    await setSynchronous('ha', { mode: 'quorum', count: 2 });
    const degraded = await until(
      'Synchronous False/Degraded on ha',
      () => synchronousCondition('ha'),
      (c) => c?.status === 'False' && c.reason === 'Degraded',
      30_000,
    );
    console.log(`degraded reported ${Date.now() - patchedAt} ms after the patch: ${degraded!.message}`);
    expect(degraded!.message).toContain('spec.synchronous.count is 2');
    const after = ConfigRecord.decode((await etcd.get(haKeys.config).string())!);
    // Only the synchronous fields changed, version + 1.
    expect(after).toEqual({
      ...before,
      version: before.version + 1,
      synchronousCount: 2,
      updatedAt: after.updatedAt,
      updatedBy: 'pgha operator',
    });
    const warned = await until(
      'a SynchronousDegraded event',
      () => synchronousEvents('ha'),
      (e) => e.slice(eventsBefore).some((x) => x.reason === 'SynchronousDegraded'),
    );
    expect(warned.slice(eventsBefore).map((e) => `${e.type} ${e.reason}`)).toEqual(['Warning SynchronousDegraded']);

    const loweredAt = Date.now();
    await setSynchronous('ha', { mode: 'quorum', count: 1 });
    await until(
      'Synchronous True on ha again',
      () => synchronousCondition('ha'),
      (c) => c?.status === 'True',
      30_000,
    );
    console.log(`restored reported ${Date.now() - loweredAt} ms after the patch`);
    const restored = await until(
      'a SynchronousRestored event',
      () => synchronousEvents('ha'),
      (e) => e.slice(eventsBefore).some((x) => x.reason === 'SynchronousRestored'),
    );
    expect(restored.slice(eventsBefore).map((e) => `${e.type} ${e.reason}`)).toEqual([
      'Warning SynchronousDegraded',
      'Normal SynchronousRestored',
    ]);
    expect(ConfigRecord.decode((await etcd.get(haKeys.config).string())!)).toMatchObject({
      version: before.version + 2,
      synchronousCount: 1,
    });
  });

  it("stops a deleted cluster's controller: its controller key goes", async () => {
    expect(await controllerOf(keys)).not.toBeNull();
    const deletedAt = Date.now();
    await call('DELETE', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo');
    await until(
      "demo's controller key to go",
      () => controllerOf(keys),
      (r) => r === null,
    );
    console.log(`controller key released ${Date.now() - deletedAt} ms after the delete`);
    expect(await controllerOf(haKeys)).not.toBeNull(); // the other cluster's controller runs on
  });

  it('stops every controller when the operator stops (SIGTERM): the keys go before it exits', async () => {
    expect(await controllerOf(haKeys)).not.toBeNull();
    const exited = new Promise((r) => operator.once('exit', r));
    const stoppedAt = Date.now();
    operator.kill('SIGTERM');
    await exited;
    console.log(`operator exited ${Date.now() - stoppedAt} ms after SIGTERM`);
    // Revoked before the exit (the lease would otherwise hold the key for its TTL).
    expect(await controllerOf(haKeys)).toBeNull();
  });
});
