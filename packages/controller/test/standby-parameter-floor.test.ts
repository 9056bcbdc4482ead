// A hot standby never runs below the settings the primary recorded in WAL and
// pg_control (max_locks_per_transaction here): a replica restarted with a lower value
// starts with the primary's, and a running replica whose replay PostgreSQL pauses
// because a new primary raised one is restarted with the new value. Real etcd and
// postgres (a local three-member cluster).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { clusterKeys, LeaderRecord, MemberRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { findFreePortRange, waitFor } from '../../../testing/cluster.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findFreePort } from '../src/adapters/ports.js';
import { createLogger } from '../src/log.js';
import { cliPath, type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const cluster = 'floor';
let stateDir: string;
let running: LocalCluster;
let etcd: Etcd3;
const keys = clusterKeys(cluster);
/** max_locks_per_transaction per member (read at every start of its agent); absent: the default, 64. */
const locks = new Map<string, number>();

async function show(member: string): Promise<string> {
  const client = new pg.Client({ connectionString: running.connectionString(member), connectionTimeoutMillis: 5000 });
  // A member restarted by the test ends this session: an 'error' event without a
  // listener would be an uncaught exception (the query's own error still rejects).
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ v: string }>(`SELECT current_setting('max_locks_per_transaction') AS v`);
    return rows[0]!.v;
  } finally {
    await client.end();
  }
}

async function leader(): Promise<LeaderRecord | null> {
  const text = await etcd.get(keys.leader).string();
  return text === null ? null : LeaderRecord.decode(text);
}

/** Waits until one member is a writable primary and the others stream from it (per their records). */
async function healthy(what: string): Promise<LeaderRecord> {
  return waitFor(
    what,
    async () => {
      const l = await leader();
      if (l === null || !l.writable) return undefined;
      const all = Object.values(await etcd.getAll().prefix(keys.membersPrefix).strings()).map((v) =>
        MemberRecord.decode(v),
      );
      const ok = all.length === 3 && all.every((m) => m.state === 'running' && (m.name === l.member || m.streaming));
      return ok ? l : undefined;
    },
    60_000,
    100,
  );
}

/** The names of the members streaming from `primary`, per its pg_stat_replication. */
async function streamingFrom(primary: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: running.connectionString(primary), connectionTimeoutMillis: 5000 });
  // A member restarted by the test ends this session: an 'error' event without a
  // listener would be an uncaught exception (the query's own error still rejects).
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string }>(
      `SELECT application_name AS name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1`,
    );
    return rows.map((r) => r.name);
  } finally {
    await client.end();
  }
}

function agentLog(member: string): string {
  return readFileSync(running.members.find((m) => m.name === member)!.logFile, 'utf8');
}

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-floor-');
  const basePort = await findFreePortRange(3);
  let etcdPort = await findFreePortRange(2);
  while (etcdPort >= basePort - 1 && etcdPort <= basePort + 3) etcdPort = await findFreePort();
  for (const i of [0, 1, 2]) locks.set(`${cluster}-${i}`, 128);
  running = await startLocalCluster({
    cluster,
    stateDir,
    basePort,
    etcdPort,
    members: 3,
    supervise: false,
    memberArgs: (name) =>
      locks.has(name) ? ['--postgres-parameter', `max_locks_per_transaction=${locks.get(name)}`] : [],
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 90_000,
  });
  expect(running.members.map((m) => m.name).sort()).toEqual([...locks.keys()].sort());
  etcd = createEtcdClient({ endpoints: running.etcdEndpoint });
});

afterAll(async () => {
  etcd?.close();
  await running?.stop();
  removeTestStateDir(stateDir);
});

describe('standby parameter floor', () => {
  test('a replica restarted with a lower max_locks_per_transaction runs with the primary’s value and streams', async () => {
    const primary = (await healthy('a healthy cluster at 128')).member;
    const [a] = running.members.map((m) => m.name).filter((n) => n !== primary) as [string];
    expect(await show(a)).toBe('128');

    await running.stopMember(a);
    locks.delete(a); // the default, 64: below what the primary recorded
    running.startMember(a);
    await waitFor(
      `${a} streaming from ${primary} again`,
      async () => (await streamingFrom(primary)).includes(a),
      60_000,
    );
    await healthy('a healthy cluster after the restart');
    expect(await show(a)).toBe('128');
    expect(agentLog(a)).toContain(
      'starting as a standby with max_locks_per_transaction=128 (the primary recorded 128; configured 64)',
    );
  });

  test('a running replica whose replay a raised setting paused restarts with the new primary’s value', async () => {
    const before = await healthy('a healthy cluster');
    const replicas = running.members.map((m) => m.name).filter((n) => n !== before.member);
    // One replica is configured with 256 and becomes the primary: its promotion
    // records 256 in WAL (XLOG_PARAMETER_CHANGE), above what the others run with.
    const target = replicas.find((n) => locks.get(n) === 128)!;
    const other = replicas.find((n) => n !== target)!;
    await running.stopMember(target);
    locks.set(target, 256);
    running.startMember(target);
    await waitFor(`${target} running with 256`, async () => (await show(target)) === '256', 60_000);
    await healthy('a healthy cluster with one replica at 256');
    expect(await show(other)).toBe('128');

    await promisify(execFile)(process.execPath, [
      cliPath(),
      'switchover',
      '--etcd',
      running.etcdEndpoint,
      '--cluster',
      cluster,
      '--to',
      target,
      '--timeout-millis',
      '30000',
    ]);
    const after = await healthy(`a healthy cluster led by ${target}`);
    expect(after.member).toBe(target);
    // Both others (the old primary, configured 128, and the replica at 128) replay the
    // record, pause, and are restarted at 256.
    for (const member of [other, before.member])
      await waitFor(`${member} running with 256`, async () => (await show(member)) === '256', 60_000);
    await waitFor(
      `both replicas streaming from ${target}`,
      async () => (await streamingFrom(target)).length === 2,
      60_000,
    );
    await healthy('a healthy cluster at 256');
    // The pause was recognised from the control data (replay had written 256 there),
    // and the restart took its floor from it.
    expect(agentLog(other)).toMatch(
      /replay paused: the primary raised max_locks_per_transaction to 256 \(this standby has 128\)/,
    );
    expect(agentLog(other)).toContain(
      `starting as a standby with max_locks_per_transaction=256 (the primary recorded 256; configured ${locks.get(other) ?? 64})`,
    );
  });
});
