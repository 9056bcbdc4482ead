// End to end on the simulated Kubernetes cluster (testing/kube-sim): the operator
// installed from deploy/ runs as pods, `kubectl apply -f deploy/examples/pghacluster.yaml`
// creates the cluster, and its members run as pods (agent + postgres processes in
// their own network namespaces). Each scenario has two writers recording every
// acknowledgement: one through @pgha/client (etcd discovery), one through the
// `demo-rw` Service's ClusterIP, as an in-cluster client would connect.
//
// Needs root (network namespaces), kubectl and the built CLI (`pnpm test` builds).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clusterKeys, defaultConfig, LeaderRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../testing/cluster.js';
import { apiCaller } from '../../../testing/kube-api/test-client.js';
import { type Simulation, startSimulation } from '../../../testing/kube-sim/simulation.js';
import {
  type Ack,
  bytesPast,
  createAckTable,
  lsnBytes,
  missingAcks,
  startWriter,
  switchPoint,
  type Writer,
} from '../../../testing/writer.js';
import { Pool } from '../../client/src/index.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { cliPath } from '../src/runtime/local/local-cluster.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const hasKubectl = (() => {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const unavailable = !isRoot
  ? 'needs root (network namespaces)'
  : !hasKubectl
    ? 'needs kubectl'
    : !existsSync(cliPath())
      ? 'needs the built CLI (pnpm build)'
      : null;
// CI runs as root with kubectl: there, a missing prerequisite fails instead of skipping.
if (unavailable !== null && process.env.CI) throw new Error(`kube-sim end-to-end tests: ${unavailable}`);

const ns = 'default';
const name = 'demo';
const keys = clusterKeys(name, '/pgha/');

let sim: Simulation;
let etcd: Etcd3;
let call: ReturnType<typeof apiCaller>;
let password = '';
let rwAddress = '';
const simLog: string[] = [];
const writers: { stop(): Promise<void> }[] = [];
const pools: Pool[] = [];
let nextId = 1;

const context = () => simLog.slice(-40).join('\n');
// The simulation's files (every container's log, the volumes): kept when a test fails.
const stateDir = mkdtempSync(join(tmpdir(), 'pgha-kube-sim-test-'));
let failed = false;

async function leader(): Promise<LeaderRecord | null> {
  const text = await etcd.get(keys.leader).string();
  return text === null ? null : LeaderRecord.decode(text);
}

async function newLeader(old: LeaderRecord, timeoutMillis = 60_000): Promise<LeaderRecord> {
  return waitFor(
    `a new writable leader after ${old.member} (term ${old.term})`,
    async () => {
      const l = await leader();
      return l !== null && l.term > old.term && l.writable ? l : undefined;
    },
    timeoutMillis,
    20,
  );
}

async function healthyLeader(timeoutMillis = 120_000): Promise<LeaderRecord> {
  await waitFor(
    `${name} Healthy with 3/3 ready`,
    async () => {
      const r = await call('GET', `/apis/pgha.dev/v1alpha1/namespaces/${ns}/pghaclusters/${name}`);
      return r.body.status?.phase === 'Healthy' && r.body.status?.readyInstances === 3;
    },
    timeoutMillis,
    200,
  ).catch((error) => {
    throw new Error(`${(error as Error).message}\n${context()}`);
  });
  const l = await leader();
  if (l === null || !l.writable) throw new Error('Healthy without a writable leader');
  return l;
}

async function pod(podName: string) {
  const r = await call('GET', `/api/v1/namespaces/${ns}/pods/${podName}`);
  return r.status === 200 ? r.body : null;
}

const podReady = (p: { status?: { conditions?: { type: string; status: string }[] } } | null) =>
  p !== null && (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/**
 * A pg.Client whose connection errors fail its own calls instead of crashing the
 * file: a failover can end a connection while it is idle (between a query and end()).
 */
function pgClient(config: pg.ClientConfig): pg.Client {
  const c = new pg.Client(config);
  c.on('error', () => undefined);
  return c;
}

/** The standbys the primary `member` streams to (application_name), read through -rw. */
async function streamingReplicas(): Promise<string[]> {
  const c = pgClient({ connectionString: rwUrl(), connectionTimeoutMillis: 2000 });
  await c.connect();
  try {
    const { rows } = await c.query("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'");
    return rows.map((r) => r.application_name as string).sort();
  } finally {
    await c.end();
  }
}

const rwUrl = () => `postgres://postgres:${encodeURIComponent(password)}@${rwAddress}:5432/postgres`;

/** Writes through @pgha/client (discovery from etcd), one at a time, every 10 ms. */
function clientWriter(): Writer {
  const pool = new Pool({
    etcd: { endpoints: sim.etcdEndpoint },
    cluster: name,
    user: 'postgres',
    password,
    database: 'postgres',
    max: 2,
    connectionTimeoutMillis: 2000,
    primaryWaitTimeoutMillis: 30_000,
  });
  pool.on('error', () => undefined);
  pools.push(pool);
  const acks: Ack[] = [];
  const errors = new Map<string, number>();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const id = nextId++;
      const sentAt = Date.now();
      try {
        const { rows } = await pool.query(
          `INSERT INTO acks (id, member) VALUES ($1, current_setting('cluster_name')) RETURNING member, pg_current_wal_insert_lsn()::text AS lsn`,
          [id],
        );
        acks.push({ id, member: rows[0].member, at: Date.now(), sentAt, lsn: rows[0].lsn });
      } catch (error) {
        const key = (error as Error).message.split('\n')[0]!.slice(0, 120);
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const w: Writer = {
    acks,
    errors,
    target: () => null,
    firstAckAfter: (since, notBy) => acks.find((a) => a.at >= since && (notBy === undefined || a.member !== notBy)),
    async stop() {
      stopped = true;
      await loop;
      await pool.end().catch(() => undefined);
    },
  };
  writers.push(w);
  return w;
}

/** Writes through the demo-rw Service's ClusterIP (a plain pg.Client, reconnecting). */
let serviceIds = 1_000_000_000;
function serviceWriter(): Writer {
  serviceIds += 1_000_000;
  const w = startWriter({
    members: [{ name: 'rw', connectionString: rwUrl() }],
    follow: { pinned: 'rw' },
    firstId: serviceIds,
  });
  writers.push(w);
  return w;
}

async function stopWriters(): Promise<void> {
  await Promise.all(writers.splice(0).map((w) => w.stop()));
}

interface Outcome {
  next: LeaderRecord;
  viaClientMillis: number;
  viaServiceMillis: number;
  missing: Ack[];
  lateByOld: Ack[];
  lostBytes: bigint;
  total: number;
}

/**
 * After a fault at `faultAt` on the primary `old`: waits for the new leader and the
 * first write through each writer acknowledged by another member, stops the writers,
 * and checks every acknowledgement against the new primary.
 */
async function outcome(old: LeaderRecord, faultAt: number, client: Writer, service: Writer): Promise<Outcome> {
  const next = await newLeader(old);
  const since = Date.parse(next.since);
  // The old primary may win the new term itself: its agent restarts, reports the most
  // WAL, and is elected (the operator's failover controller may be down meanwhile).
  // What it acknowledges from then on is the new term's, not a late acknowledgement.
  const rewon = next.member === old.member;
  const firstBy = async (w: Writer, what: string) =>
    waitFor(
      `a write through ${what} acknowledged in term ${next.term} (${rewon ? `by ${old.member} again` : `by a member other than ${old.member}`})`,
      () => (rewon ? w.firstAckAfter(since) : w.firstAckAfter(faultAt, old.member)),
      60_000,
      20,
    ).catch((error) => {
      throw new Error(`${(error as Error).message}; its errors: ${JSON.stringify([...w.errors])}\n${context()}`);
    });
  const [viaClient, viaService] = await Promise.all([firstBy(client, '@pgha/client'), firstBy(service, 'demo-rw')]);
  await stopWriters();
  const all = [...client.acks, ...service.acks];
  const conn = rwUrl();
  const missingIds = new Set(await missingAcks(conn, all));
  const sp = await switchPoint(conn, next.timeline);
  // An acknowledgement of the old term: by the old primary, and, when it won again,
  // before the new term began or at a position of the old timeline.
  const oldTerm = (a: Ack) => a.member === old.member && (!rewon || a.at < since || lsnBytes(a.lsn) <= sp);
  return {
    next,
    viaClientMillis: viaClient.at - faultAt,
    viaServiceMillis: viaService.at - faultAt,
    missing: all.filter((a) => missingIds.has(a.id)),
    lateByOld: all.filter((a) => oldTerm(a) && a.at >= since),
    lostBytes: bytesPast(all.filter(oldTerm), old.member, sp),
    total: all.length,
  };
}

async function writing(): Promise<{ client: Writer; service: Writer }> {
  const client = clientWriter();
  const service = serviceWriter();
  await waitFor('both writers acknowledged', () => client.acks.length > 10 && service.acks.length > 10, 30_000);
  return { client, service };
}

describe.skipIf(unavailable !== null)('pgha on a simulated Kubernetes cluster', () => {
  beforeAll(async () => {
    const started = Date.now();
    sim = await startSimulation({ stateDir, log: (line) => simLog.push(`${new Date().toISOString()} ${line}`) });
    call = apiCaller(() => sim.api.url);
    etcd = createEtcdClient({ endpoints: sim.etcdEndpoint }, 2000);
    await sim.kubectl('apply', '-f', 'deploy/examples/pghacluster.yaml');
    const secret = await waitFor(
      'the generated demo-credentials Secret',
      async () => {
        const r = await call('GET', `/api/v1/namespaces/${ns}/secrets/demo-credentials`);
        return r.status === 200 ? r.body : undefined;
      },
      60_000,
    );
    password = Buffer.from(secret.data['superuser-password'], 'base64').toString('utf8');
    // The operator creates the generated Secret before the Services: wait for -rw too.
    const rw = await waitFor(
      `the ${name}-rw Service`,
      async () => {
        const r = await call('GET', `/api/v1/namespaces/${ns}/services/${name}-rw`);
        return r.status === 200 ? r.body : undefined;
      },
      60_000,
    );
    rwAddress = rw.spec.clusterIP;
    await healthyLeader(180_000);
    await createAckTable(rwUrl());
    console.log(`kube-sim up and ${name} Healthy ${Date.now() - started} ms after the start`);
  }, 240_000);

  afterEach(async (context) => {
    if (context.task.result?.state !== 'fail' || etcd === undefined) return;
    failed = true;
    // What moved the primary, in order: enough to tell a failover from a switchover.
    const history = await etcd
      .getAll()
      .prefix(keys.historyPrefix)
      .strings()
      .catch(() => ({}));
    console.log(
      `history after the failed test:\n${Object.values(history).join('\n')}\n${simLog.slice(-80).join('\n')}`,
    );
  });

  afterAll(async () => {
    await stopWriters().catch(() => undefined);
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    etcd?.close();
    await sim?.stop();
    if (failed)
      console.log(`kube-sim: a test failed; its files (containers' logs under logs/) are kept in ${stateDir}`);
    else rmSync(stateDir, { recursive: true, force: true });
  }, 60_000);

  it('kubectl shows the cluster; -rw selects the leader pod only; the PVCs are bound', async () => {
    const l = await healthyLeader();
    const text = await sim.kubectl('get', 'pghaclusters');
    expect(text).toMatch(/demo\s/);
    const endpoints = await call('GET', `/api/v1/namespaces/${ns}/endpoints/${name}-rw`);
    const addresses = endpoints.body.subsets?.[0]?.addresses ?? [];
    expect(addresses.map((a: { targetRef: { name: string } }) => a.targetRef.name)).toEqual([l.member]);
    const pvcs = await call('GET', `/api/v1/namespaces/${ns}/persistentvolumeclaims`);
    expect(pvcs.body.items.map((p: { metadata: { name: string } }) => p.metadata.name).sort()).toEqual([
      'data-demo-0',
      'data-demo-1',
      'data-demo-2',
    ]);
    expect(await streamingReplicas()).toHaveLength(2);
  });

  it("deleting the primary's pod: a new primary, -rw follows, the pod comes back with its PVC and rejoins, nothing acknowledged is lost", async () => {
    const old = await healthyLeader();
    const before = await pod(old.member);
    const pvcBefore = await call('GET', `/api/v1/namespaces/${ns}/persistentvolumeclaims/data-${old.member}`);
    const { client, service } = await writing();
    const faultAt = Date.now();
    await sim.kubectl('delete', 'pod', old.member, '--wait=false');
    const o = await outcome(old, faultAt, client, service);
    console.log(
      `pod ${old.member} deleted: new primary ${o.next.member} (term ${o.next.term}); first write through @pgha/client after ${o.viaClientMillis} ms, through ${name}-rw after ${o.viaServiceMillis} ms; ${o.total} acknowledged, ${o.missing.length} lost, ${o.lateByOld.length} acknowledged by the old primary after the new one led`,
    );
    expect(o.missing).toEqual([]);
    expect(o.lateByOld).toEqual([]);

    const next = (await leader())!;
    // The pod comes back (a new pod object, the same claim) and rejoins as a replica.
    await waitFor(
      `${old.member} re-created and ready`,
      async () => {
        const p = await pod(old.member);
        return p !== null && p.metadata.uid !== before.metadata.uid && podReady(p);
      },
      120_000,
      200,
    );
    const pvcAfter = await call('GET', `/api/v1/namespaces/${ns}/persistentvolumeclaims/data-${old.member}`);
    expect(pvcAfter.body.metadata.uid).toBe(pvcBefore.body.metadata.uid);
    await waitFor(
      `${old.member} streaming from ${next.member}`,
      async () => (await streamingReplicas()).includes(old.member),
      60_000,
    );
    const status = await healthyLeader();
    expect(status.member).toBe(next.member);
    const labels = (await pod(next.member)).metadata.labels;
    expect(labels['pgha.dev/role']).toBe('primary');
    expect((await pod(old.member)).metadata.labels['pgha.dev/role']).toBe('replica');
    const cluster = await call('GET', `/apis/pgha.dev/v1alpha1/namespaces/${ns}/pghaclusters/${name}`);
    expect(cluster.body.status.primary).toBe(next.member);
    // The cluster's events tell the story.
    const events = await call('GET', `/api/v1/namespaces/${ns}/events`);
    const told = events.body.items
      .filter((e: { involvedObject?: { kind?: string; name?: string } }) => e.involvedObject?.kind === 'PgHaCluster')
      .map((e: { reason: string; message: string }) => `${e.reason}: ${e.message}`);
    // Moved directly, or lost and then elected (when a round saw no leader in between).
    expect(told).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          new RegExp(
            `^(PrimaryChanged: the primary moved from ${old.member} to ${next.member}|PrimaryElected: ${next.member} is the primary) \\(term ${next.term}\\)$`,
          ),
        ),
      ]),
    );
  });

  it("kill -9 of the primary pod's processes: the kubelet restarts the container, a new primary is elected and the old one rejoins", async () => {
    const old = await healthyLeader();
    const { client, service } = await writing();
    const restartsBefore = (await pod(old.member)).status.containerStatuses[0].restartCount as number;
    const pids = sim.kubelet.podPids(ns, old.member);
    expect(pids.length).toBeGreaterThan(1); // the agent, its watchdog and postgres
    const faultAt = Date.now();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    const o = await outcome(old, faultAt, client, service);
    console.log(
      `${old.member}'s processes killed: new primary ${o.next.member} (term ${o.next.term}); first write through @pgha/client after ${o.viaClientMillis} ms, through ${name}-rw after ${o.viaServiceMillis} ms; ${o.total} acknowledged, ${o.missing.length} lost (${o.lostBytes} bytes past the switch point), ${o.lateByOld.length} acknowledged by the old primary after the new one led`,
    );
    // Asynchronous replication: a crash may lose what had not reached a replica, within
    // the lag bound; a superseded primary never acknowledges anything.
    expect(o.lateByOld).toEqual([]);
    expect(o.lostBytes).toBeLessThanOrEqual(BigInt(defaultConfig.maximumLagOnFailoverBytes));
    await waitFor(
      `${old.member}'s container restarted and ready`,
      async () => {
        const p = await pod(old.member);
        return p !== null && p.status.containerStatuses[0].restartCount > restartsBefore && podReady(p);
      },
      120_000,
      200,
    );
    await waitFor(
      `${old.member} streaming again`,
      async () => (await streamingReplicas()).includes(old.member),
      60_000,
    );
    await healthyLeader();
  });

  it('a rolling update (a restart-only postgres parameter and the image tag): replicas first, one switchover, nothing lost', async () => {
    const old = await healthyLeader();
    const stsBefore = await call('GET', `/apis/apps/v1/namespaces/${ns}/statefulsets/${name}`);
    const { client, service } = await writing();
    const startedAt = Date.now();
    await call(
      'PATCH',
      `/apis/pgha.dev/v1alpha1/namespaces/${ns}/pghaclusters/${name}`,
      { spec: { image: 'ghcr.io/pgha/member:17-rolled', postgresParameters: { max_locks_per_transaction: '128' } } },
      'application/merge-patch+json',
    );
    const updateRevision = await waitFor(
      'a new update revision',
      async () => {
        const sts = await call('GET', `/apis/apps/v1/namespaces/${ns}/statefulsets/${name}`);
        const r = sts.body.status?.updateRevision;
        return r !== undefined && r !== stsBefore.body.status.updateRevision ? (r as string) : undefined;
      },
      30_000,
    );
    await waitFor(
      `every pod on revision ${updateRevision}, ready`,
      async () => {
        const pods = await call('GET', `/api/v1/namespaces/${ns}/pods?labelSelector=pgha.dev/cluster%3D${name}`);
        return (
          pods.body.items.length === 3 &&
          pods.body.items.every(
            (p: { metadata: { labels: Record<string, string> } }) =>
              p.metadata.labels['controller-revision-hash'] === updateRevision && podReady(p as never),
          )
        );
      },
      300_000,
      250,
    ).catch((error) => {
      throw new Error(`${(error as Error).message}\n${context()}`);
    });
    const after = await healthyLeader();
    const doneAt = Date.now();
    await stopWriters();
    const all = [...client.acks, ...service.acks];
    const missing = await missingAcks(rwUrl(), all);
    const pause = (w: Writer) => {
      let worst = 0;
      const during = w.acks.filter((a) => a.at >= startedAt && a.at <= doneAt);
      for (let i = 1; i < during.length; i++) worst = Math.max(worst, during[i]!.at - during[i - 1]!.at);
      return worst;
    };
    console.log(
      `rolling update to ${updateRevision} in ${doneAt - startedAt} ms: primary ${old.member} (term ${old.term}) -> ${after.member} (term ${after.term}); longest write pause ${pause(client)} ms through @pgha/client, ${pause(service)} ms through ${name}-rw; ${all.length} acknowledged, ${missing.length} lost`,
    );
    expect(missing).toEqual([]);
    expect(after.term - old.term).toBeLessThanOrEqual(1); // at most one switchover
    for (const member of ['demo-0', 'demo-1', 'demo-2']) {
      const p = await pod(member);
      const c = pgClient({
        connectionString: `postgres://postgres:${encodeURIComponent(password)}@${p.status.podIP}:5432/postgres`,
      });
      await c.connect();
      const { rows } = await c.query('SHOW max_locks_per_transaction');
      await c.end();
      expect(rows[0].max_locks_per_transaction).toBe('128');
    }
  });

  it('scale 3 -> 5 -> 3: the new members clone and stream; scaling down removes replicas only and drops their slots', async () => {
    const patch = (instances: number) =>
      call(
        'PATCH',
        `/apis/pgha.dev/v1alpha1/namespaces/${ns}/pghaclusters/${name}`,
        { spec: { instances } },
        'application/merge-patch+json',
      );
    const slots = async () => {
      const c = pgClient({ connectionString: rwUrl() });
      await c.connect();
      const { rows } = await c.query('SELECT slot_name FROM pg_replication_slots ORDER BY 1');
      await c.end();
      return rows.map((r) => r.slot_name as string);
    };
    const before = await healthyLeader();
    await patch(5);
    await waitFor(
      'demo-3 and demo-4 streaming',
      async () => {
        const streaming = await streamingReplicas();
        return streaming.includes('demo-3') && streaming.includes('demo-4');
      },
      180_000,
      500,
    ).catch((error) => {
      throw new Error(`${(error as Error).message}\n${context()}`);
    });
    expect((await slots()).length).toBe(4);
    await patch(3);
    await waitFor(
      'demo-3 and demo-4 gone and their slots dropped',
      async () => {
        const [p3, p4] = await Promise.all([pod('demo-3'), pod('demo-4')]);
        const s = await slots();
        return p3 === null && p4 === null && s.length === 2;
      },
      120_000,
      500,
    ).catch((error) => {
      throw new Error(`${(error as Error).message}\n${context()}`);
    });
    const after = await healthyLeader();
    expect(['demo-0', 'demo-1', 'demo-2']).toContain(after.member);
    expect(after.member).toBe(before.member); // the primary was one that stays: no switchover needed
  });

  it('the active operator killed (its pod force-deleted): another operator takes the Lease, and a failover during the takeover completes', async () => {
    const leasePath = '/apis/coordination.k8s.io/v1/namespaces/pgha-system/leases/pgha-operator';
    const holder = (await call('GET', leasePath)).body.spec.holderIdentity as string;
    const old = await healthyLeader();
    const { client, service } = await writing();
    const killedAt = Date.now();
    // Gone at once, as a node loss would take it: its processes are killed and the
    // Deployment replaces the pod under a new name; the Lease is left to expire.
    await sim.kubectl('delete', 'pod', '-n', 'pgha-system', holder, '--grace-period=0', '--force');
    // The primary fails while no operator runs its failover controller.
    for (const pid of sim.kubelet.podPids(ns, old.member)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const o = await outcome(old, killedAt, client, service);
    const after = (await call('GET', leasePath)).body.spec;
    console.log(
      `operator ${holder} and primary ${old.member} killed: ${after.holderIdentity} leads the operator; new primary ${o.next.member} (term ${o.next.term}); first write through @pgha/client after ${o.viaClientMillis} ms, through ${name}-rw after ${o.viaServiceMillis} ms; ${o.missing.length} of ${o.total} lost (${o.lostBytes} bytes)`,
    );
    expect(after.holderIdentity).not.toBe(holder);
    expect(o.lateByOld).toEqual([]);
    expect(o.lostBytes).toBeLessThanOrEqual(BigInt(defaultConfig.maximumLagOnFailoverBytes));
    await healthyLeader();
  });

  it('deleting the PgHaCluster removes what it owns and keeps the PVCs; re-creating it finds the data', async () => {
    const c = pgClient({ connectionString: rwUrl() });
    await c.connect();
    const rows = Number((await c.query('SELECT count(*) AS n FROM acks')).rows[0].n);
    await c.end();
    expect(rows).toBeGreaterThan(0);
    const claimsBefore = (await call('GET', `/api/v1/namespaces/${ns}/persistentvolumeclaims`)).body.items
      .map((p: { metadata: { uid: string } }) => p.metadata.uid)
      .sort();
    await sim.kubectl('delete', 'pghacluster', name, '--wait=false');
    await waitFor(
      "the cluster's StatefulSet, Services and pods gone",
      async () => {
        const [sts, svc, pods] = await Promise.all([
          call('GET', `/apis/apps/v1/namespaces/${ns}/statefulsets/${name}`),
          call('GET', `/api/v1/namespaces/${ns}/services/${name}-rw`),
          call('GET', `/api/v1/namespaces/${ns}/pods?labelSelector=pgha.dev/cluster%3D${name}`),
        ]);
        return sts.status === 404 && svc.status === 404 && pods.body.items.length === 0;
      },
      120_000,
      200,
    );
    const pvcs = await call('GET', `/api/v1/namespaces/${ns}/persistentvolumeclaims`);
    // Retain, the default: every claim stays, the scaled-away members' too.
    expect(pvcs.body.items.map((p: { metadata: { uid: string } }) => p.metadata.uid).sort()).toEqual(claimsBefore);
    await sim.kubectl('apply', '-f', 'deploy/examples/pghacluster.yaml');
    rwAddress = (
      await waitFor(
        'the new demo-rw Service',
        async () => {
          const r = await call('GET', `/api/v1/namespaces/${ns}/services/${name}-rw`);
          return r.status === 200 ? r.body : undefined;
        },
        60_000,
      )
    ).spec.clusterIP;
    await healthyLeader(180_000);
    const again = pgClient({ connectionString: rwUrl() });
    await again.connect();
    const rowsAgain = Number((await again.query('SELECT count(*) AS n FROM acks')).rows[0].n);
    await again.end();
    expect(rowsAgain).toBe(rows);
  }, 300_000);
});
