// Fault tests on a real local cluster (etcd, three agents with postgres, two
// controllers). Each fault is real: kill -9, SIGSTOP. Every test waits for the
// cluster to be healthy first, is bounded in time, and leaves the cluster healthy
// (or the next test's health wait fails it). Writers record every acknowledged
// write and the member that acknowledged it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clusterKeys, HistoryRecord, LeaderRecord, MemberRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { alive, childPids, commandLine, findFreePortRange, postmasterPid, waitFor } from '../../../testing/cluster.js';
import { createAckTable, missingAcks, startWriter, type Writer } from '../../../testing/writer.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { livingGroupMembers } from '../src/adapters/postgres-server.js';
import { createLogger } from '../src/log.js';
import { type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const cluster = 'faults';
const keys = clusterKeys(cluster);
let stateDir: string;
let c: LocalCluster;
let etcd: Etcd3;
const writers: Writer[] = [];
const frozen = new Set<number>();

async function leader(): Promise<LeaderRecord | null> {
  const text = await etcd.get(keys.leader).string();
  return text === null ? null : LeaderRecord.decode(text);
}

async function members(): Promise<Map<string, MemberRecord>> {
  const all = await etcd.getAll().prefix(keys.membersPrefix).strings();
  return new Map(Object.values(all).map((v) => [MemberRecord.decode(v).name, MemberRecord.decode(v)]));
}

/** Waits until there is a writable leader and every member runs, replicas streaming on its timeline. */
async function healthy(timeoutMillis = 60_000): Promise<LeaderRecord> {
  // Only reports written after this call count: a record from before a fault can
  // still say "running" while the fault is being handled.
  const since = Date.now();
  return waitFor(
    'a healthy cluster',
    async () => {
      const l = await leader();
      if (l === null || !l.writable) return undefined;
      const ms = await members();
      const ok = c.members.every((m) => {
        const r = ms.get(m.name);
        if (r === undefined || r.state !== 'running' || r.timeline !== l.timeline || Date.parse(r.updatedAt) < since)
          return false;
        return m.name === l.member ? r.role === 'primary' : r.role === 'replica' && r.streaming;
      });
      return ok ? l : undefined;
    },
    timeoutMillis,
    100,
  );
}

function conn(member: string): string {
  return c.connectionString(member);
}

function writer(follow: 'leader' | string, firstId: number): Writer {
  const w = startWriter({
    members: c.members.map((m) => ({ name: m.name, connectionString: conn(m.name) })),
    follow: follow === 'leader' ? { etcd, cluster } : { pinned: follow },
    firstId,
  });
  writers.push(w);
  return w;
}

async function stopWriters(): Promise<void> {
  await Promise.all(writers.splice(0).map((w) => w.stop()));
}

function member(name: string) {
  return c.members.find((m) => m.name === name)!;
}

function watchdogOf(agentPid: number): number | undefined {
  return childPids(agentPid).find((p) => /watchdog/.test(commandLine(p)));
}

/** Waits for a new writable leader of a newer term than `old`. */
async function newLeader(old: LeaderRecord, timeoutMillis = 30_000): Promise<LeaderRecord> {
  return waitFor(
    'a new writable leader',
    async () => {
      const l = await leader();
      return l !== null && l.term > old.term && l.writable ? l : undefined;
    },
    timeoutMillis,
    20,
  );
}

/**
 * Two writers: one pinned to the old primary (it keeps trying it whatever etcd
 * says, to catch any write it acknowledges too late) and one following the leader.
 */
async function pinnedAndFollower(oldPrimary: string): Promise<{ pinned: Writer; follower: Writer }> {
  const pinned = writer(oldPrimary, ids());
  const follower = writer('leader', ids());
  await waitFor('writes flowing', () => pinned.acks.length > 20, 10_000);
  return { pinned, follower };
}

/** Waits until `follower` has a write acknowledged by the new leader `next` (not by `oldMember`). */
async function writingOn(next: LeaderRecord, follower: Writer, oldMember: string): Promise<void> {
  await waitFor(
    'a write on the new primary',
    () => follower.firstAckAfter(Date.parse(next.since), oldMember),
    15_000,
    20,
  );
}

/** The writes `member` acknowledged at or after `since` (wall-clock ms). */
function acksAfter(w: Writer, member: string, since: number) {
  return w.acks.filter((a) => a.member === member && a.at >= since);
}

let nextId = 1;
function ids(): number {
  const first = nextId;
  nextId += 1_000_000;
  return first;
}

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), 'pgha-faults-'));
  const base = await findFreePortRange(5);
  c = await startLocalCluster({
    cluster,
    stateDir,
    basePort: base,
    etcdPort: base + 3,
    members: 3,
    controllers: 2,
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 90_000,
  });
  etcd = createEtcdClient({ endpoints: c.etcdEndpoint });
  const l = await healthy();
  await createAckTable(conn(l.member));
});

afterAll(async () => {
  for (const pid of frozen) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  }
  await stopWriters();
  etcd?.close();
  await c?.stop();
  if (process.env.PGHA_KEEP_TEST_STATE) console.log(`state kept in ${stateDir}`);
  else rmSync(stateDir, { recursive: true, force: true });
}, 120_000);

const only = process.env.PGHA_FAULTS?.split(',');
const fault = (name: string, body: () => Promise<void>, timeout?: number) =>
  (only === undefined || only.some((o) => name.startsWith(`(${o})`)) ? test : test.skip)(name, body, timeout);

describe('failover', () => {
  fault(
    '(a) kill -9 of the primary agent and postgres: a new primary takes writes and the old one rejoins as a replica',
    async () => {
      const old = await healthy();
      const w = writer('leader', ids());
      await waitFor('writes flowing', () => w.acks.length > 20, 10_000);
      const m = member(old.member);
      const agentPid = m.agentPid()!;
      const pgPid = postmasterPid(m.memberDir)!;
      // The host stays down until a new primary is elected (without the hold, the
      // supervisor restarts it within 0.5 s and it may be re-elected, losslessly).
      c.hold(old.member);
      const faultAt = Date.now();
      process.kill(agentPid, 'SIGKILL');
      process.kill(pgPid, 'SIGKILL');
      const next = await newLeader(old);
      expect(next.member).not.toBe(old.member);
      c.startMember(old.member);
      const first = await waitFor(
        'a write acknowledged by the new primary',
        () => w.firstAckAfter(faultAt, old.member),
        15_000,
        20,
      );
      const after = await healthy(60_000);
      expect(after.member).toBe(next.member);
      const rejoined = (await members()).get(old.member);
      expect(rejoined).toMatchObject({ role: 'replica', streaming: true, timeline: after.timeline });
      await stopWriters();
      const missing = await missingAcks(conn(next.member), w.acks);
      console.log(
        `(a) fault -> first write on new primary: ${((first.at - faultAt) / 1000).toFixed(2)} s; acknowledged writes lost: ${missing.length} of ${w.acks.length}`,
      );
      const history = (await etcd.getAll().prefix(keys.historyPrefix).strings()) as Record<string, string>;
      const record = Object.values(history)
        .map((v) => HistoryRecord.decode(v))
        .find((h) => h.term === next.term);
      expect(record).toMatchObject({ oldPrimary: old.member, newPrimary: next.member, reason: 'failover' });
    },
  );

  fault(
    '(b) kill -9 of the primary agent alone: its postgres acknowledges nothing after the new primary is promoted',
    async () => {
      const old = await healthy();
      const { pinned, follower } = await pinnedAndFollower(old.member);
      const m = member(old.member);
      const pgPid = postmasterPid(m.memberDir)!;
      process.kill(m.agentPid()!, 'SIGKILL');
      await waitFor('postgres to die with its agent', () => livingGroupMembers(pgPid).length === 0, 5_000, 10);
      const next = await newLeader(old);
      await writingOn(next, follower, old.member);
      await stopWriters();
      const late = acksAfter(pinned, old.member, Date.parse(next.since));
      expect(late).toEqual([]);
      await healthy();
    },
  );

  fault(
    '(c) SIGSTOP of the primary agent alone: the watchdog fences postgres before a new primary is promoted',
    async () => {
      const old = await healthy();
      const { pinned, follower } = await pinnedAndFollower(old.member);
      const m = member(old.member);
      const agentPid = m.agentPid()!;
      const pgPid = postmasterPid(m.memberDir)!;
      process.kill(agentPid, 'SIGSTOP');
      frozen.add(agentPid);
      const stoppedAt = Date.now();
      try {
        await waitFor('the watchdog to kill postgres', () => livingGroupMembers(pgPid).length === 0, 5_000, 10);
        const fencedAfter = Date.now() - stoppedAt;
        const next = await newLeader(old);
        await writingOn(next, follower, old.member);
        const late = acksAfter(pinned, old.member, Date.parse(next.since));
        const lastOld = pinned.acks.filter((a) => a.member === old.member).at(-1);
        console.log(
          `(c) fenced ${fencedAfter} ms after SIGSTOP; last old-primary ack ${lastOld ? Date.parse(next.since) - lastOld.at : '-'} ms before the new leader record`,
        );
        expect(late).toEqual([]);
      } finally {
        process.kill(agentPid, 'SIGCONT');
        frozen.delete(agentPid);
      }
      await stopWriters();
      await healthy();
    },
  );

  fault(
    '(c2) SIGSTOP of the primary host (agent, watchdog, postgres): a new primary; on SIGCONT the old one fences at once and rejoins',
    async () => {
      const old = await healthy();
      const { pinned, follower } = await pinnedAndFollower(old.member);
      const m = member(old.member);
      const agentPid = m.agentPid()!;
      const pgPid = postmasterPid(m.memberDir)!;
      const host = [agentPid, watchdogOf(agentPid), ...livingGroupMembers(pgPid)].filter(
        (p): p is number => p !== undefined,
      );
      for (const pid of host) {
        process.kill(pid, 'SIGSTOP');
        frozen.add(pid);
      }
      let resumedAt = 0;
      try {
        const next = await newLeader(old);
        await writingOn(next, follower, old.member);
        resumedAt = Date.now();
        for (const pid of host) {
          process.kill(pid, 'SIGCONT');
          frozen.delete(pid);
        }
        await waitFor('the old primary to be fenced', () => livingGroupMembers(pgPid).length === 0, 5_000, 10);
        const fencedIn = Date.now() - resumedAt;
        const late = acksAfter(pinned, old.member, resumedAt);
        console.log(
          `(c2) old primary fenced ${fencedIn} ms after SIGCONT; writes it acknowledged after resuming: ${late.length}`,
        );
        expect(fencedIn).toBeLessThan(5_000);
      } finally {
        for (const pid of host) {
          try {
            process.kill(pid, 'SIGCONT');
          } catch {
            /* gone */
          }
          frozen.delete(pid);
        }
      }
      await stopWriters();
      await healthy();
    },
  );

  fault(
    '(h) switchover: zero acknowledged writes lost, a short write pause, the old primary streams again',
    async () => {
      const old = await healthy();
      const w = writer('leader', ids());
      await waitFor('writes flowing', () => w.acks.length > 20, 10_000);
      const replicas = c.members.map((x) => x.name).filter((n) => n !== old.member);
      const to = replicas[0]!;
      const { execFile } = await import('node:child_process');
      const { promisify } = await import('node:util');
      const { cliPath } = await import('../src/runtime/local/local-cluster.js');
      const { stdout } = await promisify(execFile)(process.execPath, [
        cliPath(),
        'switchover',
        '--etcd',
        c.etcdEndpoint,
        '--cluster',
        cluster,
        '--to',
        to,
      ]);
      expect(stdout).toMatch(new RegExp(`${to} is the primary`));
      const next = await newLeader(old, 5_000);
      expect(next.member).toBe(to);
      await waitFor('writes on the new primary', () => w.acks.some((a) => a.member === to), 10_000, 20);
      await healthy();
      await stopWriters();
      const byOld = w.acks.filter((a) => a.member === old.member);
      const firstNew = w.acks.find((a) => a.member === to)!;
      const pause = firstNew.at - byOld.at(-1)!.at;
      const missing = await missingAcks(conn(to), w.acks);
      console.log(
        `(h) switchover write pause ${pause} ms; acknowledged writes lost: ${missing.length} of ${w.acks.length}`,
      );
      expect(missing).toEqual([]);
    },
  );

  fault(
    '(e) a lagging replica is not chosen; with no qualified candidate the cluster stays without a primary and says why',
    async () => {
      const old = await healthy();
      const [laggard, other] = c.members.map((x) => x.name).filter((n) => n !== old.member) as [string, string];
      // Freeze the laggard's WAL receiver, then write more WAL than maximumLagOnFailoverBytes (16 MiB).
      const lagConn = new pg.Client({ connectionString: conn(laggard) });
      await lagConn.connect();
      const { rows } = await lagConn.query('SELECT pid FROM pg_stat_wal_receiver');
      await lagConn.end();
      const receiverPid = Number(rows[0].pid);
      process.kill(receiverPid, 'SIGSTOP');
      frozen.add(receiverPid);
      try {
        const p = new pg.Client({ connectionString: conn(old.member) });
        await p.connect();
        await p.query(
          "CREATE TABLE IF NOT EXISTS bulk AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 60000) g",
        );
        await p.end();
        await waitFor(
          'the laggard to report lag over 16 MiB',
          async () => ((await members()).get(laggard)?.lagBytes ?? 0) > 16 * 1024 * 1024,
          20_000,
        );
        // Host loss of the primary and of the good replica: only the laggard remains.
        for (const name of [old.member, other]) {
          c.hold(name);
          const m = member(name);
          const pgPid = postmasterPid(m.memberDir);
          process.kill(m.agentPid()!, 'SIGKILL');
          if (pgPid !== null) process.kill(pgPid, 'SIGKILL');
        }
        await waitFor('the leader record to expire', async () => (await leader()) === null, 10_000, 50);
        // The controllers refuse the laggard: no leader appears, and the log says why.
        const logs = () =>
          [0, 1].map((i) => readFileSync(join(stateDir, 'logs', `controller-${i}.log`), 'utf8')).join('\n');
        await waitFor(
          'the controller to say why nobody qualifies',
          () => /NO CANDIDATE.*bytes behind/.test(logs()),
          10_000,
        );
        expect(await leader()).toBeNull();
      } finally {
        process.kill(receiverPid, 'SIGCONT');
        frozen.delete(receiverPid);
      }
      try {
        // Bring the good replica back first: it is elected, not the laggard.
        c.startMember(other);
        const next = await newLeader(old, 60_000);
        expect(next.member).not.toBe(laggard);
      } finally {
        c.startMember(other);
        c.startMember(old.member);
      }
      await healthy(90_000);
    },
  );

  fault('(f) the active controller killed in the middle of a failover: the standby finishes it', async () => {
    const old = await healthy();
    const pids = c.controllerPids();
    const holder = JSON.parse((await etcd.get(keys.controller).string())!);
    const activeIndex = pids.indexOf(holder.pid);
    expect(activeIndex).toBeGreaterThanOrEqual(0);
    const active = pids[activeIndex]!;
    // Freeze the active controller first, so that the failover cannot finish before
    // it dies (it reacts within milliseconds), then lose the primary's host, then
    // kill the controller while the cluster has no primary.
    process.kill(active, 'SIGSTOP');
    frozen.add(active);
    c.hold(old.member);
    try {
      const m = member(old.member);
      const pgPid = postmasterPid(m.memberDir)!;
      process.kill(m.agentPid()!, 'SIGKILL');
      process.kill(pgPid, 'SIGKILL');
      await waitFor('the leader record to expire', async () => (await leader()) === null, 10_000, 10);
      process.kill(active, 'SIGKILL');
      frozen.delete(active);
      const next = await newLeader(old, 30_000);
      expect(next.member).not.toBe(old.member);
      const newHolder = JSON.parse((await etcd.get(keys.controller).string())!);
      expect(newHolder.pid).not.toBe(active);
      // The standby that finished the failover also accounts for it.
      const record = await waitFor(
        'the history record of the new term',
        async () =>
          Object.values(await etcd.getAll().prefix(keys.historyPrefix).strings())
            .map((v) => HistoryRecord.decode(v))
            .find((h) => h.term === next.term),
        5_000,
      );
      expect(record).toMatchObject({ oldPrimary: old.member, newPrimary: next.member, reason: 'failover' });
    } finally {
      if (frozen.delete(active)) process.kill(active, 'SIGKILL');
      c.startMember(old.member);
    }
    await healthy(60_000);
    expect(alive([active])).toEqual([]);
  });

  fault(
    '(i) SIGTERM to the primary agent (a pod deletion) hands over with a switchover: no acknowledged write lost',
    async () => {
      const old = await healthy();
      const w = writer('leader', ids());
      await waitFor('writes flowing', () => w.acks.length > 20, 10_000);
      await c.stopMember(old.member);
      const next = await newLeader(old, 15_000);
      expect(next.member).not.toBe(old.member);
      const target = JSON.parse((await etcd.get(keys.target).string())!);
      expect(target).toMatchObject({ term: next.term, member: next.member, reason: 'switchover', from: old.member });
      await waitFor('writes on the new primary', () => w.acks.some((a) => a.member === next.member), 10_000, 20);
      await stopWriters();
      expect(await missingAcks(conn(next.member), w.acks)).toEqual([]);
      c.startMember(old.member);
      await healthy();
    },
  );

  fault('(j) a postgres crash under a live agent is restarted in place: same primary, same term', async () => {
    const old = await healthy();
    const w = writer('leader', ids());
    await waitFor('writes flowing', () => w.acks.length > 20, 10_000);
    const m = member(old.member);
    const pgPid = postmasterPid(m.memberDir)!;
    const lastBefore = w.acks.at(-1)!.id;
    const faultAt = Date.now();
    process.kill(pgPid, 'SIGKILL');
    // At most one write was in flight at the crash (lastBefore + 1); later ids were sent after it.
    const first = await waitFor(
      'a write after the crash',
      () => w.acks.find((a) => a.at >= faultAt && a.id > lastBefore + 1),
      15_000,
      20,
    );
    expect(first.member).toBe(old.member);
    expect((await leader())?.term).toBe(old.term);
    console.log(
      `(j) postgres crash -> first write on the restarted primary: ${((first.at - faultAt) / 1000).toFixed(2)} s`,
    );
    await stopWriters();
    await healthy();
  });

  fault(
    '(k) a primary whose postgres cannot restart releases the leader record at once: failover without waiting for the TTL',
    async () => {
      const old = await healthy();
      const m = member(old.member);
      // A setting postgres refuses at start-up, where pgha does not rewrite it.
      const p = new pg.Client({ connectionString: conn(old.member) });
      p.on('error', () => undefined);
      await p.connect();
      try {
        await p.query("ALTER SYSTEM SET shared_preload_libraries = 'pgha_no_such_library'");
      } finally {
        await p.end();
      }
      const pgPid = postmasterPid(m.memberDir)!;
      const faultAt = Date.now();
      process.kill(pgPid, 'SIGKILL');
      const next = await newLeader(old, 20_000);
      expect(next.member).not.toBe(old.member);
      const log = readFileSync(m.logFile, 'utf8');
      expect(log).toMatch(/released the leader record: postgres failed/);
      console.log(
        `(k) crash with failing restart -> new writable primary after ${((Date.parse(next.since) - faultAt) / 1000).toFixed(2)} s`,
      );
      // Repair the old primary's configuration; it comes back as a replica.
      const auto = join(m.memberDir, 'data', 'postgresql.auto.conf');
      writeFileSync(auto, readFileSync(auto, 'utf8').replace(/^shared_preload_libraries.*$/m, ''));
      await healthy(90_000);
    },
  );
});
