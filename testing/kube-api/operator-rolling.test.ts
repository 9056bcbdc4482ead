/**
 * The operator's rolling update against the test API server. The test plays the
 * StatefulSet controller (OnDelete: it publishes `updateRevision` for the current
 * template and re-creates a deleted pod from it) and the kubelet (the pod turns
 * ready a little later), and the pgha controller (a requested switchover moves the
 * leader record a little later). It checks that a change of the postgres
 * parameters, then of the image, restarts every pod exactly once, replicas first,
 * the primary after a switchover, never two pods down and never the pod of the
 * member that leads.
 */
import { createHash } from 'node:crypto';
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
let leader: { member: string; term: number } | null = { member: 'demo-0', term: 1 };
const switchovers: { from: string; to: string; at: number }[] = [];
const logs: string[] = [];
const call = apiCaller(() => api.url);
const ns = '/api/v1/namespaces/db';
const stsPath = '/apis/apps/v1/namespaces/db/statefulsets/demo';
const clusterPath = '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters/demo';

type Pod = {
  metadata: { name: string; uid: string; labels: Record<string, string>; deletionTimestamp?: string };
  status?: { conditions?: { type: string; status: string }[] };
};
const isReady = (p: Pod) => (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/** What the simulated StatefulSet controller saw go wrong, and what it did. */
const sim = {
  running: true,
  /** Most pods missing or not ready at once (of the StatefulSet's replicas), after the cluster first became ready. */
  maxDown: 0,
  armed: false,
  /** Pods the operator deleted, in order, with the revision they ran. */
  deleted: [] as { pod: string; revision: string; leader: string | null }[],
  /** Pods deleted while the leader record named them. */
  deletedLeaders: [] as string[],
};
const readyAt = new Map<string, number>();
const known = new Map<string, { uid: string; revision: string }>();

const revisionOf = (template: unknown) =>
  `demo-${createHash('sha256').update(JSON.stringify(template)).digest('hex').slice(0, 10)}`;

/** One pass of the fake StatefulSet controller and kubelet. */
async function simulate(): Promise<void> {
  const sts = await call('GET', stsPath);
  if (sts.status !== 200) return;
  const { metadata, spec } = sts.body;
  const updateRevision = revisionOf(spec.template);
  if (sts.body.status?.updateRevision !== updateRevision || sts.body.status?.observedGeneration !== metadata.generation)
    await call('PUT', `${stsPath}/status`, {
      ...sts.body,
      status: { replicas: spec.replicas, observedGeneration: metadata.generation, updateRevision },
    });
  const pods = (await call('GET', `${ns}/pods`)).body.items as Pod[];
  let down = 0;
  for (let i = 0; i < spec.replicas; i++) {
    const name = `demo-${i}`;
    const pod = pods.find((p) => p.metadata.name === name);
    const before = known.get(name);
    if (pod === undefined) {
      down++;
      if (before !== undefined) {
        // The operator deleted it (nothing else deletes pods here).
        sim.deleted.push({ pod: name, revision: before.revision, leader: leader?.member ?? null });
        if (leader?.member === name) sim.deletedLeaders.push(name);
        known.delete(name);
      }
      const created = await call('POST', `${ns}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          labels: { ...spec.template.metadata.labels, 'controller-revision-hash': updateRevision },
        },
        spec: { containers: [{ name: 'postgres', image: 'x' }] },
      });
      known.set(name, { uid: created.body.metadata.uid, revision: updateRevision });
      readyAt.set(name, Date.now() + 150);
    } else if (!isReady(pod)) {
      down++;
      if (Date.now() >= (readyAt.get(name) ?? 0))
        await call('PUT', `${ns}/pods/${name}/status`, {
          ...pod,
          status: { conditions: [{ type: 'Ready', status: 'True' }] },
        });
    }
  }
  if (sim.armed) sim.maxDown = Math.max(sim.maxDown, down);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-operator-rolling-'));
  api = await KubeApiServer.start();
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
    // The pgha controller's part: the switchover happens a little later, in a new term.
    requestSwitchover: async (_c, from, candidates) => {
      if (switchovers.some((s) => s.from === from && leader?.member === from)) return; // pending (create-if-absent)
      const to = candidates[0]!;
      switchovers.push({ from, to, at: Date.now() });
      const term = leader!.term;
      leader = null; // the step-down
      setTimeout(() => {
        leader = { member: to, term: term + 1 };
      }, 100);
    },
    log: { info: (m) => logs.push(m), warn: (m) => logs.push(`WARN ${m}`) },
    resyncIntervalMillis: 100,
    retryDelayMillis: 20,
  });
  await operator.start();
  void (async () => {
    while (sim.running) {
      await simulate().catch((error) => logs.push(`SIM ${(error as Error).message}`));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
});

afterAll(async () => {
  sim.running = false;
  await operator?.stop();
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

const until = <T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, millis = 20_000): Promise<T> =>
  pollUntil(what, read, ok, { millis, context: () => logs.slice(-30).join('\n') });
const cluster = () => call('GET', clusterPath).then((r) => r.body);
const updatedCondition = (c: { status?: { conditions?: { type: string; status: string; reason: string }[] } }) =>
  c.status?.conditions?.find((x) => x.type === 'Updated');
const podRevisions = async () =>
  ((await call('GET', `${ns}/pods`)).body.items as Pod[])
    .map((p) => `${p.metadata.name}=${p.metadata.labels['controller-revision-hash']}${isReady(p) ? '' : '(not ready)'}`)
    .sort();

describe('the operator rolls pods one at a time', () => {
  it('creates the cluster; its pods come up on the first revision and it reports Updated', async () => {
    await call('POST', '/apis/pgha.dev/v1alpha1/namespaces/db/pghaclusters', {
      apiVersion: 'pgha.dev/v1alpha1',
      kind: 'PgHaCluster',
      metadata: { name: 'demo' },
      spec: { etcd: { endpoints: ['http://etcd:2379'] } },
    });
    const healthy = await until(
      'Healthy and Updated',
      cluster,
      (c) => c.status?.phase === 'Healthy' && updatedCondition(c)?.status === 'True',
    );
    expect(updatedCondition(healthy)).toMatchObject({ reason: 'UpToDate' });
    expect(sim.deleted).toEqual([]);
  });

  for (const [what, patch] of [
    ['a postgres parameter', { spec: { postgresParameters: { max_locks_per_transaction: '256' } } }],
    ['the image', { spec: { image: 'example.com/pgha/member:17.9' } }],
  ] as const) {
    it(`restarts every pod once for ${what}: replicas first, the primary after a switchover`, async () => {
      sim.armed = true;
      sim.deleted.length = 0;
      const primaryBefore = leader!.member;
      const switchoversBefore = switchovers.length;
      const before = (await call('GET', stsPath)).body.status.updateRevision as string;
      await call('PATCH', clusterPath, patch, 'application/merge-patch+json');
      const sts = await until(
        'a new update revision',
        () => call('GET', stsPath),
        (r) =>
          r.body.status?.updateRevision !== before && r.body.status?.observedGeneration === r.body.metadata.generation,
      );
      const after = sts.body.status.updateRevision as string;
      await until(
        'every pod on the new revision, ready, Updated True',
        async () => ({ pods: await podRevisions(), updated: updatedCondition(await cluster())?.status }),
        (v) => v.updated === 'True' && v.pods.every((p) => p.endsWith(`=${after}`)) && v.pods.length === 3,
      );
      expect(sim.deletedLeaders).toEqual([]);
      expect(sim.maxDown).toBe(1);
      // Each pod exactly once, from the old revision; the old primary last, after the switchover.
      expect(sim.deleted.map((d) => d.revision)).toEqual([before, before, before]);
      expect(new Set(sim.deleted.map((d) => d.pod)).size).toBe(3);
      expect(sim.deleted.at(-1)!.pod).toBe(primaryBefore);
      expect(switchovers.length).toBe(switchoversBefore + 1);
      expect(switchovers.at(-1)!.from).toBe(primaryBefore);
      expect(leader!.member).not.toBe(primaryBefore);
      const events = (await call('GET', `${ns}/events`)).body.items as { reason: string; message: string }[];
      for (const d of sim.deleted)
        expect(events.map((e) => `${e.reason}: ${e.message}`)).toContain(
          `RollingUpdate: deleting pod ${d.pod} (revision ${before} → ${after})`,
        );
      expect(events.map((e) => `${e.reason}: ${e.message}`)).toContain(
        `SwitchoverRequested: Switchover requested to ${switchovers.at(-1)!.to} to update the primary`,
      );
    });
  }
});

describe("deploy/rbac.yaml covers the operator's requests", () => {
  it('grants every request the operator sent in this file (its kubeconfig sends a token; the test’s own calls none)', () => {
    const sent = api.requests.filter((r) => r.token !== undefined);
    expect(sent.length).toBeGreaterThan(0);
    expect(deniedRequests(deployedRbac(), operatorServiceAccount, sent)).toEqual([]);
  });
});
