// A member whose data is ahead of the elected timeline cannot follow it: postgres
// stops with "requested timeline N does not contain minimum recovery point" (or
// "forked off ... before current recovery point"). The agent must rewind it (or
// re-clone it), never leave it stopped. Constructed for real: the only member
// that holds the newest WAL is tagged noFailover, the old primary is gone, and the
// controller elects the member that is behind (within the lag bound).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterKeys, LeaderRecord, MemberRecord } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { findFreePortRange, postmasterPid, waitFor } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd } from '../../../testing/etcd.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { createLogger } from '../src/log.js';
import { type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const cluster = 'diverge';
const keys = clusterKeys(cluster);
let stateDir: string;
let testEtcd: TestEtcd;
let c: LocalCluster | null = null;
let etcd: Etcd3;

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-diverge-');
  testEtcd = await startTestEtcd();
  etcd = new Etcd3({ hosts: testEtcd.endpoint });
}, 60_000);

afterAll(async () => {
  await c?.stop();
  etcd?.close();
  await testEtcd?.stop();
  removeTestStateDir(stateDir);
}, 120_000);

async function leader(): Promise<LeaderRecord | null> {
  const text = await etcd.get(keys.leader).string();
  return text === null ? null : LeaderRecord.decode(text);
}

async function memberRecords(): Promise<MemberRecord[]> {
  return Object.values(await etcd.getAll().prefix(keys.membersPrefix).strings()).map((v) => MemberRecord.decode(v));
}

async function exec(sql: string, connectionString: string): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

test('a member ahead of the timeline the controller elected is rewound and streams again, not left stopped', async () => {
  const base = await findFreePortRange(3);
  c = await startLocalCluster({
    cluster,
    stateDir,
    members: 3,
    basePort: base,
    etcd: testEtcd.endpoint,
    // diverge-2 will hold the newest WAL but may not be elected.
    memberArgs: (name) => (name === 'diverge-2' ? ['--no-failover'] : []),
    log: createLogger('test', () => undefined),
  });
  const first = await waitFor(
    'a writable primary with both replicas streaming',
    async () => {
      const l = await leader();
      const all = await memberRecords();
      return l?.writable && all.length === 3 && all.every((m) => m.name === l.member || m.streaming) ? l : undefined;
    },
    60_000,
  );
  expect(first.member).toBe('diverge-0');
  await exec('CREATE TABLE t (id int)', c.connectionString('diverge-0'));

  // diverge-1 stops; the primary writes on, which only diverge-2 receives.
  await c.stopMember('diverge-1');
  await exec('INSERT INTO t SELECT generate_series(1, 20000)', c.connectionString('diverge-0'));
  await exec('CHECKPOINT', c.connectionString('diverge-0'));
  await waitFor(
    'diverge-2 to have replayed the primary',
    async () => {
      const all = await memberRecords();
      const p = all.find((m) => m.name === 'diverge-0');
      const r = all.find((m) => m.name === 'diverge-2');
      return p?.receivedLsn !== undefined && r?.replayedLsn === p.receivedLsn;
    },
    30_000,
  );
  // The primary's host is lost for good (kill -9 of its agent; pdeathsig takes postgres).
  c.hold('diverge-0');
  process.kill(-(await waitFor('the primary agent', () => c!.members[0]!.agentPid(), 5000)), 'SIGKILL');
  await waitFor('the leader record to expire', async () => (await leader()) === null, 30_000);
  c.startMember('diverge-1');
  await waitFor(
    'diverge-1 to run as a standby',
    async () => (await memberRecords()).some((m) => m.name === 'diverge-1' && m.state === 'running'),
    60_000,
  );

  // The controller elects diverge-1: behind diverge-2, but within the lag bound
  // (asynchronous replication's contract), and diverge-2 may not be elected.
  const second = await waitFor(
    'diverge-1 to lead',
    async () => {
      const l = await leader();
      return l?.writable && l.member === 'diverge-1' ? l : undefined;
    },
    30_000,
  );
  expect(second.timeline).toBeGreaterThan(first.timeline);
  // diverge-2 has WAL past the fork on the old timeline: it must be rewound, then stream.
  c.startMember('diverge-0');
  await waitFor(
    'diverge-2 (and the old primary) to stream from diverge-1 on its timeline',
    async () => {
      const all = await memberRecords();
      return (
        all.length === 3 &&
        all
          .filter((m) => m.name !== 'diverge-1')
          .every((m) => m.state === 'running' && m.streaming && m.timeline === second.timeline)
      );
    },
    120_000,
    250,
  );
  expect(postmasterPid(join(stateDir, 'diverge-2'))).not.toBeNull();
  // It got there by rewinding (or re-cloning) its diverged data, as its log says.
  expect(readFileSync(c.members[2]!.logFile, 'utf8')).toMatch(/pg_rewind onto diverge-1|base backup from diverge-1/);
}, 300_000);
