// The controller's writes against a real etcd (no postgres: the member and leader
// records an agent would write are written by the test, which plays the agents).
// (a) a target lives under the active controller's lease and dies with it; (b) a
// controller that lost the `controller` key writes neither a target nor history;
// (c) `pgha failover --to M` is refused for a member behind a clean last-primary
// record unless --accept-data-loss, and the history then names the old primary
// from that record; (d) the lag bound comes from the stored cluster settings when
// there are some. Every wait is a deadline on a condition.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  type ClusterKeys,
  ControllerRecord,
  clusterKeys,
  defaultConfig,
  HistoryRecord,
  LastPrimaryRecord as LastPrimaryCodec,
  type LastPrimaryRecord,
  LeaderRecord,
  MemberRecord,
  recordVersion,
  SwitchoverRecord,
  TargetRecord,
  TermRecord,
} from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { createClusterConfigIfAbsent, updateClusterConfig } from '../src/adapters/cluster-config.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { Controller } from '../src/controller/controller.js';
import { createLogger } from '../src/log.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const cluster = 'demo';

let etcdServer: TestEtcd;
let etcd: Etcd3;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  etcdServer = await startTestEtcd();
  etcd = createEtcdClient({ endpoints: etcdServer.endpoint });
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  etcd?.close();
  await etcdServer?.stop();
});

/** A member record as a running agent would publish it, reported now. */
function member(name: string, overrides: Partial<MemberRecord> = {}): MemberRecord {
  return {
    v: recordVersion,
    name,
    role: 'replica',
    state: 'running',
    host: '127.0.0.1',
    port: 5433,
    term: 3,
    timeline: 1,
    receivedLsn: '0/4F00000',
    replayedLsn: '0/4F00000',
    lagBytes: 0,
    lagSeconds: 0,
    streaming: false,
    postgresVersion: '16.4',
    systemId: '7365048203312345678',
    healthy: true,
    problem: null,
    tags: {},
    updatedAt: new Date().toISOString(),
    ...overrides,
  };
}

function leader(term: number, name: string): LeaderRecord {
  return {
    v: recordVersion,
    term,
    member: name,
    host: '127.0.0.1',
    port: 5433,
    timeline: 2,
    since: new Date().toISOString(),
    writable: true,
  };
}

/** Writes what the agents of a cluster that led term `term` would have left (no leases: no agent runs). */
async function seed(
  keys: ClusterKeys,
  state: {
    term: number;
    members: MemberRecord[];
    leader?: LeaderRecord;
    lastPrimary?: LastPrimaryRecord;
    historyUpTo?: number;
  },
): Promise<void> {
  await etcd.put(keys.term).value(TermRecord.encode({ v: recordVersion, term: state.term }));
  for (const m of state.members) await etcd.put(keys.member(m.name)).value(MemberRecord.encode(m));
  if (state.leader !== undefined) await etcd.put(keys.leader).value(LeaderRecord.encode(state.leader));
  if (state.lastPrimary !== undefined)
    await etcd.put(keys.lastPrimary).value(LastPrimaryCodec.encode(state.lastPrimary));
  for (let t = 1; t <= (state.historyUpTo ?? 0); t++) {
    await etcd.put(keys.history(t)).value(
      HistoryRecord.encode({
        v: recordVersion,
        term: t,
        oldPrimary: null,
        newPrimary: 'demo-0',
        timeline: 1,
        reason: 'bootstrap',
        detectedAt: null,
        promotedAt: new Date().toISOString(),
        lastKnownLsn: {},
      }),
    );
  }
}

/** Starts a controller in this process below `keyRoot`; its log lines are collected. */
async function startController(keyRoot: string): Promise<{ controller: Controller; lines: string[] }> {
  const lines: string[] = [];
  const controller = new Controller({
    cluster,
    etcd: { endpoints: etcdServer.endpoint },
    keyRoot,
    lease: { ttlMillis: 2000, keepaliveIntervalMillis: 250, fencingMarginMillis: 500 },
    policy: {
      maximumLagOnFailoverBytes: 16 * 1024 * 1024,
      freshReportWaitMillis: 1000,
      targetInstallTimeoutMillis: 60_000,
      lastPrimaryWaitMillis: 30_000,
      maximumReportAgeMillis: 3000,
    },
    intervalMillis: 100,
    log: createLogger('controller', (line) => lines.push(line)),
  });
  await controller.start();
  cleanups.push(() => controller.stop());
  return { controller, lines };
}

async function readTarget(keys: ClusterKeys): Promise<{ record: TargetRecord; lease: string } | null> {
  const res = await etcd.get(keys.target).exec();
  const kv = res.kvs[0];
  return kv === undefined ? null : { record: TargetRecord.decode(kv.value.toString()), lease: String(kv.lease) };
}

/** Runs the built CLI; resolves with its exit once it ends, killing it at the deadline. */
function runCli(
  args: string[],
  deadlineMillis = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      killGroup(child);
      reject(new Error(`pgha ${args.join(' ')} did not exit within ${deadlineMillis} ms; stderr:\n${stderr}`));
    }, deadlineMillis);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // already gone
  }
}

describe('controller targets and leases', () => {
  it('writes the target under its lease, so the target disappears when the controller dies', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys(cluster, keyRoot);
    // Term 3's leader is gone; demo-1 is a running replica: the controller elects it.
    await seed(keys, { term: 3, members: [member('demo-1')], historyUpTo: 3 });
    const child = spawn(
      process.execPath,
      [cli, 'controller', '--cluster', cluster, '--etcd', etcdServer.endpoint, '--key-root', keyRoot],
      { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
    );
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    cleanups.push(() => killGroup(child));

    const written = await waitFor(
      'a target for term 4',
      async () => (await readTarget(keys)) ?? undefined,
      20_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\ncontroller log:\n${stderr}`);
    });
    expect(written.record).toMatchObject({ term: 4, member: 'demo-1', reason: 'failover' });
    expect(written.lease).not.toBe('0');
    // Its log is JSON lines, and the election is one of them, with the facts it was made from.
    const decided = await waitFor(
      'the election in the controller log',
      () => stderr.split('\n').find((l) => l.includes('target for term 4: demo-1 (failover)')),
      5000,
      20,
    );
    expect(JSON.parse(decided)).toMatchObject({
      level: 'info',
      component: 'controller',
      cluster,
      msg: 'target for term 4: demo-1 (failover)',
      decision: 'set-target',
      reason: 'failover',
      term: 3,
      leader: null,
      target: { member: 'demo-1', term: 4, reason: 'failover' },
      candidates: [{ member: 'demo-1', role: 'replica', state: 'running', lsn: '0/4F00000', timeline: 1 }],
    });
    for (const line of stderr.split('\n').filter((l) => l !== '')) expect(() => JSON.parse(line)).not.toThrow();

    killGroup(child); // kill -9: no revoke, the lease has to expire
    // TTL 2 s, plus etcd's expiry check: gone well within 15 s.
    await waitFor('the dead controller’s target to disappear', async () => (await readTarget(keys)) === null, 15_000);
  });
});

describe('a controller that lost the controller key', () => {
  /** Takes the controller key from under the running controller, as a newer controller would. */
  async function stealControllerKey(keys: ClusterKeys): Promise<void> {
    const other = etcd.lease(10); // kept alive: the key stays someone else's
    const otherId = await other.grant();
    cleanups.push(() => other.revoke().catch(() => undefined));
    await etcd.delete().key(keys.controller);
    await etcd
      .put(keys.controller)
      .value(ControllerRecord.encode({ v: recordVersion, id: 'someone-else', pid: 1, since: new Date().toISOString() }))
      .lease(otherId);
  }

  it('writes no target when the leader vanishes after it lost the key', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys(cluster, keyRoot);
    await seed(keys, {
      term: 3,
      leader: leader(3, 'demo-0'),
      members: [member('demo-0', { role: 'primary' }), member('demo-1')],
      historyUpTo: 3,
    });
    const { controller, lines } = await startController(keyRoot);
    await waitFor('the controller to be active', () => controller.isActive, 10_000);
    await stealControllerKey(keys);

    // The leader and its member record vanish; demo-1 has reported since, so the
    // first thing the controller decides is a target (no wait to publish first).
    const later = new Date(Date.now() + 5000).toISOString();
    await etcd
      .if(keys.leader, 'Create', '>', 0)
      .then(
        etcd.delete().key(keys.leader),
        etcd.delete().key(keys.member('demo-0')),
        etcd.put(keys.member('demo-1')).value(MemberRecord.encode(member('demo-1', { updatedAt: later }))),
      )
      .commit();
    const outcome = await waitFor(
      'the controller to try to write a target',
      async () =>
        lines.find((l) => l.includes('not writing a target')) ??
        ((await readTarget(keys)) !== null ? 'a target was written' : undefined),
      15_000,
    );
    expect(await readTarget(keys)).toBeNull();
    expect(outcome).toContain('the controller key is no longer held under our lease');
    expect(controller.isActive).toBe(false);
  });

  it('writes no history for a new leader after it lost the key', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys(cluster, keyRoot);
    await seed(keys, {
      term: 3,
      leader: leader(3, 'demo-0'),
      members: [member('demo-0', { role: 'primary' }), member('demo-1')],
      historyUpTo: 3,
    });
    const { controller, lines } = await startController(keyRoot);
    await waitFor('the controller to be active', () => controller.isActive, 10_000);
    await stealControllerKey(keys);

    await etcd
      .if(keys.leader, 'Create', '>', 0)
      .then(
        etcd.put(keys.leader).value(LeaderRecord.encode(leader(4, 'demo-1'))),
        etcd.put(keys.term).value(TermRecord.encode({ v: recordVersion, term: 4 })),
      )
      .commit();
    const outcome = await waitFor(
      'the controller to try to write history',
      async () =>
        lines.find((l) => l.includes('not writing history')) ??
        ((await etcd.get(keys.history(4)).string()) !== null ? 'history was written' : undefined),
      15_000,
    );
    expect(await etcd.get(keys.history(4)).string()).toBeNull();
    expect(outcome).toContain('the controller key is no longer held under our lease');
  });
});

describe('pgha failover --to behind a clean last-primary record', () => {
  it('is refused without --accept-data-loss, accepted with it, and the history names the old primary', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys(cluster, keyRoot);
    const flags = ['--cluster', cluster, '--etcd', etcdServer.endpoint, '--key-root', keyRoot];
    // demo-0 led term 3 and shut down cleanly at 0/5000000; demo-1 has 0/4F00000 only.
    await seed(keys, {
      term: 3,
      members: [member('demo-1')],
      historyUpTo: 3,
      lastPrimary: {
        v: recordVersion,
        term: 3,
        member: 'demo-0',
        timeline: 1,
        lsn: '0/5000000',
        clean: true,
        at: new Date().toISOString(),
      },
    });
    const { controller } = await startController(keyRoot);
    await waitFor('the controller to be active', () => controller.isActive, 10_000);

    // The election waits for a member holding the clean position, and status says so.
    const status = await waitFor(
      'pgha status --json to show what the election waits for',
      async () => {
        const run = await runCli(['status', ...flags, '--json']);
        const parsed = JSON.parse(run.stdout) as { controller: { waiting: { reason: string } | null } | null };
        return parsed.controller?.waiting?.reason.includes('waiting for a member holding 0/5000000')
          ? parsed
          : undefined;
      },
      15_000,
      200,
    );
    expect(status.controller?.waiting?.reason).toContain('where demo-0 (primary of term 3) shut down cleanly');
    expect(await readTarget(keys)).toBeNull();

    const refused = await runCli(['failover', ...flags, '--to', 'demo-1', '--timeout-millis', '20000']);
    expect(refused.code, refused.stderr).not.toBe(0);
    expect(refused.stderr).toContain(
      "the controller rejected the request: demo-1 cannot be promoted without risking acknowledged writes: demo-1 holds 0/4F00000, short of the last primary's clean shutdown position 0/5000000",
    );
    expect(refused.stderr).toContain('--accept-data-loss');
    expect(await readTarget(keys)).toBeNull();
    expect(await etcd.get(keys.switchover).string()).toBeNull();

    const accepted = runCli([
      'failover',
      ...flags,
      '--to',
      'demo-1',
      '--accept-data-loss',
      '--timeout-millis',
      '20000',
    ]);
    // Play demo-1's agent: take the leader record the target offers, as the agent would.
    const offered = await waitFor(
      'a manual-failover target naming demo-1',
      async () => {
        const t = await readTarget(keys);
        return t?.record.term === 4 ? t.record : undefined;
      },
      15_000,
    );
    expect(offered).toMatchObject({ member: 'demo-1', reason: 'manual-failover', from: 'demo-0' });
    await etcd
      .put(keys.member('demo-1'))
      .value(
        MemberRecord.encode(member('demo-1', { role: 'primary', term: 4, timeline: 2, receivedLsn: '0/4F00100' })),
      );
    await etcd
      .if(keys.leader, 'Create', '==', 0)
      .then(
        etcd.put(keys.leader).value(LeaderRecord.encode(leader(4, 'demo-1'))),
        etcd.put(keys.term).value(TermRecord.encode({ v: recordVersion, term: 4 })),
      )
      .commit();
    const run = await accepted;
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('demo-1 is the primary (term 4');

    const history = await waitFor(
      'the history of term 4',
      async () => {
        const text = await etcd.get(keys.history(4)).string();
        return text === null ? undefined : HistoryRecord.decode(text);
      },
      15_000,
    );
    expect(history).toMatchObject({
      oldPrimary: 'demo-0',
      newPrimary: 'demo-1',
      reason: 'manual-failover',
      lostBytes: 0x100000,
      lastKnownLsn: { 'demo-0': '0/5000000', 'demo-1': '0/4F00000' },
    });
  });
});

describe('the cluster settings', () => {
  it("judges candidates by the stored maximumLagOnFailoverBytes, not its flag's, re-read on every pass", async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys(cluster, keyRoot);
    // demo-1 streams 1 MiB behind the primary: eligible under the flag's 16 MiB.
    const members = () => [
      member('demo-0', { role: 'primary', receivedLsn: '0/5000000', replayedLsn: '0/5000000' }),
      member('demo-1', { streaming: true }),
    ];
    await seed(keys, { term: 3, historyUpTo: 3, leader: leader(3, 'demo-0'), members: members() });
    await createClusterConfigIfAbsent(etcd, keys, { ...defaultConfig, maximumLagOnFailoverBytes: 1024 });
    const { lines } = await startController(keyRoot);
    const request = () =>
      etcd.put(keys.switchover).value(
        SwitchoverRecord.encode({
          v: recordVersion,
          from: null,
          to: 'demo-1',
          at: null,
          requestedAt: new Date().toISOString(),
        }),
      );
    await request();
    const rejected = await waitFor(
      'the switchover to be rejected',
      async () => {
        const text = await etcd.get(keys.switchover).string();
        return (text === null ? null : SwitchoverRecord.decode(text).rejected) ?? undefined;
      },
      15_000,
    );
    expect(rejected).toBe(
      'no eligible replica demo-1: demo-1 1048576 bytes behind, over maximumLagOnFailoverBytes 1024',
    );
    expect(lines.join('')).toMatch(/failover lag bound: 1024 B \(cluster settings, version 1\)/);

    // Raised in the record: the next request is carried out with the new bound.
    await updateClusterConfig(etcd, keys, (c) => ({ ...c, maximumLagOnFailoverBytes: 2 * 1024 * 1024 }), {
      base: defaultConfig,
      updatedBy: 'test',
    });
    for (const m of members()) await etcd.put(keys.member(m.name)).value(MemberRecord.encode(m));
    await etcd.delete().key(keys.switchover);
    await request();
    const written = await waitFor('a target for term 4', async () => (await readTarget(keys)) ?? undefined, 15_000);
    expect(written.record).toMatchObject({ term: 4, member: 'demo-1', reason: 'switchover' });
    expect(lines.join('')).toMatch(/failover lag bound: 2097152 B \(cluster settings, version 2\)/);
  });
});
