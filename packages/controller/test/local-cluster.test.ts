// The static three-member cluster (milestone 1) on real etcd and real postgres:
// replication of writes, member records, lease-bound records, clean stop, and a
// second start on the same state directory. Last, on the same cluster, the member
// slots cases (member-slots-cases.ts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterKeys, InitializeRecord, LeaderRecord, MemberRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { alive, findFreePortRange, postmasterPid, waitFor } from '../../../testing/cluster.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findFreePort } from '../src/adapters/ports.js';
import { createLogger } from '../src/log.js';
import { type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';
import { describeMemberSlots } from './member-slots-cases.js';

const cluster = 'milestone';
let stateDir: string;
let basePort: number;
let etcdPort: number;
let running: LocalCluster | null = null;
let etcd: Etcd3;
const keys = clusterKeys(cluster);
/** Extra arguments of each agent start (none until the member-slots cases at the end restart the cluster). */
let agentArgs: (name: string) => readonly string[] = () => [];

async function start(): Promise<LocalCluster> {
  running = await startLocalCluster({
    cluster,
    stateDir,
    basePort,
    etcdPort,
    members: 3,
    leaseTtlMillis: 3000,
    // This file tests leases and records, not recovery: a killed agent stays down.
    supervise: false,
    memberArgs: (name) => agentArgs(name),
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 90_000,
  });
  etcd = createEtcdClient({ endpoints: running.etcdEndpoint });
  return running;
}

async function query<T = Record<string, unknown>>(
  c: LocalCluster,
  member: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: c.connectionString(member), connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end();
  }
}

async function memberRecords(): Promise<Map<string, MemberRecord>> {
  const all = await etcd.getAll().prefix(keys.membersPrefix).strings();
  return new Map(Object.values(all).map((v) => [MemberRecord.decode(v).name, MemberRecord.decode(v)]));
}

function clusterPids(c: LocalCluster): number[] {
  return [c.etcdPid, ...c.members.map((m) => m.agentPid()), ...c.members.map((m) => postmasterPid(m.memberDir))].filter(
    (p): p is number => typeof p === 'number',
  );
}

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-milestone-');
  basePort = await findFreePortRange(3);
  etcdPort = await findFreePortRange(2);
  while (etcdPort >= basePort - 1 && etcdPort <= basePort + 3) etcdPort = await findFreePort();
  await start();
});

afterAll(async () => {
  etcd?.close();
  await running?.stop();
  removeTestStateDir(stateDir);
});

describe('a static three-member cluster', () => {
  test('has one primary holding the leader record and two streaming replicas', async () => {
    const c = running!;
    const leader = LeaderRecord.decode((await etcd.get(keys.leader).string())!);
    expect(leader).toMatchObject({ member: `${cluster}-0`, port: basePort, writable: true, term: 1 });
    const records = await memberRecords();
    expect([...records.keys()].sort()).toEqual(c.members.map((m) => m.name));
    expect(records.get(`${cluster}-0`)).toMatchObject({
      role: 'primary',
      state: 'running',
      healthy: true,
      timeline: 1,
    });
    for (const name of [`${cluster}-1`, `${cluster}-2`]) {
      expect(records.get(name)).toMatchObject({
        role: 'replica',
        state: 'running',
        streaming: true,
        healthy: true,
        timeline: 1,
      });
      expect(records.get(name)?.postgresVersion).toMatch(/^\d+/);
    }
    const sysIds = new Set([...records.values()].map((r) => r.systemId));
    expect(sysIds.size).toBe(1);
    const init = InitializeRecord.decode((await etcd.get(keys.initialize).string())!);
    expect(sysIds.has(init.systemId)).toBe(true);
  });

  test('replicates rows written on the primary to both replicas, and lag returns to 0', async () => {
    const c = running!;
    const primary = `${cluster}-0`;
    await query(c, primary, 'CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, note text)');
    await query(c, primary, "INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g");
    for (const replica of [`${cluster}-1`, `${cluster}-2`]) {
      await waitFor(
        `5000 rows on ${replica}`,
        async () => {
          const rows = await query<{ n: string }>(c, replica, 'SELECT count(*) AS n FROM items');
          return rows[0]?.n === '5000';
        },
        15_000,
      );
      const [recovery] = await query<{ r: boolean }>(c, replica, 'SELECT pg_is_in_recovery() AS r');
      expect(recovery?.r).toBe(true);
      await expect(query(c, replica, 'INSERT INTO items VALUES (0, null)')).rejects.toMatchObject({ code: '25006' });
    }
    // The primary published a position past the insert; replicas report 0 lag once
    // both reports have caught up (a few report intervals).
    await waitFor(
      'both replicas to report lag 0',
      async () => {
        const records = await memberRecords();
        return [`${cluster}-1`, `${cluster}-2`].every(
          (n) => records.get(n)?.lagBytes === 0 && records.get(n)?.lagSeconds === 0,
        );
      },
      15_000,
    );
  });

  test('creates a physical replication slot per replica, in use', async () => {
    const rows = await query<{ slot_name: string; active: boolean }>(
      running!,
      `${cluster}-0`,
      'SELECT slot_name, active FROM pg_replication_slots ORDER BY slot_name',
    );
    expect(rows).toEqual([
      { slot_name: `pgha_${cluster}_1`, active: true },
      { slot_name: `pgha_${cluster}_2`, active: true },
    ]);
  });

  test('every member syncs its data directory with syncfs when it starts from unclean data (Linux)', async () => {
    // A replica's first start is from a base backup: postgres syncs the data directory
    // before replaying; syncfs does it with one call per file system instead of one
    // fsync per file (docs/architecture.md, "PostgreSQL settings").
    expect(process.platform).toBe('linux');
    for (const m of running!.members) {
      const rows = await query<{ v: string }>(
        running!,
        m.name,
        "SELECT current_setting('recovery_init_sync_method') AS v",
      );
      expect({ member: m.name, method: rows[0]?.v }).toEqual({ member: m.name, method: 'syncfs' });
    }
  });

  test('refuses replication and password-less logins outside the allowed rules', async () => {
    const c = running!;
    const bad = new pg.Client({
      host: '127.0.0.1',
      port: basePort,
      user: 'postgres',
      password: 'wrong',
      database: 'postgres',
    });
    await expect(bad.connect()).rejects.toMatchObject({ code: '28P01' });
    const hba = readFileSync(join(c.members[0]!.memberDir, 'data', 'pg_hba.conf'), 'utf8');
    expect(hba).not.toMatch(/\btrust\b/);
    expect(hba).not.toMatch(/\bmd5\b|\bpassword\b\s*$/m);
  });

  test('a stopped agent revokes its lease, so its record vanishes at once', async () => {
    const c = running!;
    const name = `${cluster}-2`;
    await c.stopMember(name);
    await waitFor('the member record to vanish', async () => !(await memberRecords()).has(name), 2000);
    c.startMember(name);
    await waitFor(
      `${name} streaming again`,
      async () => {
        const r = (await memberRecords()).get(name);
        return r?.state === 'running' && r.streaming;
      },
      60_000,
    );
  });

  test('a killed agent takes its postgres with it and its record expires with the lease', async () => {
    const c = running!;
    const member = c.members[1]!;
    const agentPid = member.agentPid()!;
    const pgPid = postmasterPid(member.memberDir)!;
    expect(alive([agentPid, pgPid])).toHaveLength(2);
    process.kill(agentPid, 'SIGKILL');
    await waitFor('postgres to die with its agent', () => alive([pgPid]).length === 0, 5000);
    // Lease TTL is 3 s here: the record must be gone within TTL plus etcd's expiry tick.
    const killedAt = Date.now();
    await waitFor('the member record to expire', async () => !(await memberRecords()).has(member.name), 6000);
    expect(Date.now() - killedAt).toBeLessThan(6000);
    c.startMember(member.name);
    await waitFor(
      `${member.name} streaming again`,
      async () => {
        const r = (await memberRecords()).get(member.name);
        return r?.state === 'running' && r.streaming;
      },
      60_000,
    );
    const rows = await query<{ n: string }>(c, member.name, 'SELECT count(*) AS n FROM items');
    expect(rows[0]?.n).toBe('5000');
  });

  test('stop leaves no process behind, and a second start reuses the data', async () => {
    const c = running!;
    const pids = clusterPids(c);
    expect(pids.length).toBe(7);
    const sysId = InitializeRecord.decode((await etcd.get(keys.initialize).string())!).systemId;
    etcd.close();
    await c.stop();
    running = null;
    expect(alive(pids)).toEqual([]);

    const again = await start();
    const rows = await query<{ n: string }>(again, `${cluster}-0`, 'SELECT count(*) AS n FROM items');
    expect(rows[0]?.n).toBe('5000');
    expect(InitializeRecord.decode((await etcd.get(keys.initialize).string())!).systemId).toBe(sysId);
    const log = readFileSync(join(stateDir, 'logs', `${cluster}-0.log`), 'utf8');
    expect(log.match(/initdb into/g)).toHaveLength(1);
    for (const replica of [`${cluster}-1`, `${cluster}-2`]) {
      const replicaLog = readFileSync(join(stateDir, 'logs', `${replica}.log`), 'utf8');
      expect(replicaLog.match(/base backup from/g)).toHaveLength(1);
    }
    const leader = LeaderRecord.decode((await etcd.get(keys.leader).string())!);
    expect(leader.term).toBeGreaterThan(1);
  });
});

// Last in this file (they leave a member removed and another stopped): the member
// slots cases, on this file's cluster restarted with their agent arguments.
describeMemberSlots({
  keys,
  cluster: () => running!,
  etcd: () => etcd,
  async restart(args) {
    etcd.close();
    await running?.stop();
    running = null;
    agentArgs = args;
    await start();
  },
});
