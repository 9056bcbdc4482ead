import { ConfigRecord, clusterKeys, defaultConfig, LeaderRecord, SyncRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { findFreePortRange, waitFor } from '../../../testing/cluster.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { createAckTable } from '../../../testing/writer.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findFreePort } from '../src/adapters/ports.js';
import { createLogger } from '../src/log.js';
import { type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';
import { readClusterStatus } from '../src/status/cluster-status.js';

const cluster = 'sync';
const keys = clusterKeys(cluster);
let stateDir: string;
let c: LocalCluster;
let etcd: Etcd3;
let version = 0;

async function setConfig(changes: Partial<ConfigRecord>): Promise<void> {
  version += 1;
  const record: ConfigRecord = {
    ...defaultConfig,
    synchronousMode: 'quorum',
    ...changes,
    version,
    updatedAt: new Date().toISOString(),
    updatedBy: 'synchronous.test.ts',
  };
  await etcd.put(keys.config).value(ConfigRecord.encode(record));
}

async function leader(): Promise<LeaderRecord> {
  return waitFor(
    'a writable leader',
    async () => {
      const text = await etcd.get(keys.leader).string();
      const r = text === null ? null : LeaderRecord.decode(text);
      return r?.writable ? r : undefined;
    },
    60_000,
  );
}

async function claim(): Promise<SyncRecord | null> {
  const text = await etcd.get(keys.sync).string();
  return text === null ? null : SyncRecord.decode(text);
}

/** Waits until the claim of the current leader's term names exactly `standbys` with `quorum`. */
async function claimIs(standbys: string[], quorum: number, timeoutMillis = 30_000): Promise<SyncRecord> {
  const l = await leader();
  let last: SyncRecord | null = null;
  return waitFor(
    `the claim ANY ${quorum} of [${standbys.join(', ')}] in term ${l.term}`,
    async () => {
      last = await claim();
      const r = last;
      if (r === null || r.term !== l.term || r.quorum !== quorum) return undefined;
      return [...r.standbys].sort().join() === [...standbys].sort().join() ? r : undefined;
    },
    timeoutMillis,
  ).catch((error: Error) => {
    throw new Error(`${error.message}; the claim was ${JSON.stringify(last)}`);
  });
}

async function query<T extends pg.QueryResultRow>(member: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: c.connectionString(member), connectionTimeoutMillis: 5000 });
  // A member restarted by the test ends this session: an 'error' event without a
  // listener would be an uncaught exception (the query's own error still rejects).
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

const standbyNames = async (member: string) =>
  (await query<{ s: string }>(member, `SELECT current_setting('synchronous_standby_names') AS s`))[0]?.s;

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-sync-');
  const basePort = await findFreePortRange(3);
  let etcdPort = await findFreePortRange(2);
  while (etcdPort >= basePort - 1 && etcdPort <= basePort + 3) etcdPort = await findFreePort();
  c = await startLocalCluster({
    cluster,
    stateDir,
    basePort,
    etcdPort,
    members: 3,
    supervise: false,
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 90_000,
  });
  etcd = createEtcdClient({ endpoints: c.etcdEndpoint });
  await setConfig({});
  await createAckTable(c.connectionString(c.primaryAtStart));
}, 120_000);

afterAll(async () => {
  etcd?.close();
  await c?.stop();
  removeTestStateDir(stateDir);
}, 60_000);

describe('synchronous quorum replication', () => {
  test('the claim follows the standbys: both, one, none (asynchronous, not strict), both again', async () => {
    const primary = (await leader()).member;
    const [a, b] = c.members.map((m) => m.name).filter((n) => n !== primary) as [string, string];
    await claimIs([a, b], 1);
    expect(await standbyNames(primary)).toBe(`ANY 1 ("${[a, b].sort().join('", "')}")`);

    await c.stopMember(b);
    await claimIs([a], 1);
    expect(await standbyNames(primary)).toBe(`ANY 1 ("${a}")`);

    await c.stopMember(a);
    await claimIs([], 0);
    // pgha status says so.
    expect((await readClusterStatus(etcd, cluster, keys)).synchronous).toMatchObject({
      mode: 'quorum',
      claim: null,
      degraded: expect.stringMatching(/asynchronous until one streams/),
    });
    await waitFor('synchronous_standby_names cleared', async () => (await standbyNames(primary)) === '', 10_000);
    // Not strict: commits go on without a standby.
    await query(primary, 'INSERT INTO acks (id, member) VALUES (-1, $1)', [primary]);

    c.startMember(a);
    c.startMember(b);
    await claimIs([a, b], 1, 60_000);
  }, 120_000);

  test('strict mode blocks commits while no standby can confirm them, and lets them through when one returns', async () => {
    const primary = (await leader()).member;
    const [a, b] = c.members.map((m) => m.name).filter((n) => n !== primary) as [string, string];
    await setConfig({ synchronousStrict: true });
    await claimIs([a, b], 1);
    await c.stopMember(a);
    await c.stopMember(b);
    // Strict: the setting never drops below one confirming standby.
    await waitFor(
      'a strict setting with no standby streaming',
      async () => /^ANY 1 \(/.test((await standbyNames(primary)) ?? ''),
      10_000,
    );
    const blocked = new pg.Client({ connectionString: c.connectionString(primary), application_name: 'blocked' });
    await blocked.connect();
    let committedAt: number | null = null;
    const commit = blocked.query('INSERT INTO acks (id, member) VALUES (-2, $1)', [primary]).then(() => {
      committedAt = Date.now();
    });
    try {
      await waitFor(
        'the commit waiting for a synchronous standby (wait_event SyncRep)',
        async () =>
          (
            await query<{ n: number }>(
              primary,
              `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'blocked' AND wait_event = 'SyncRep'`,
            )
          )[0]!.n === 1,
        10_000,
      );
      expect(committedAt).toBeNull();
      const returnedAt = Date.now();
      c.startMember(a);
      await waitFor('the blocked commit to complete', () => committedAt !== null, 60_000);
      await commit;
      console.log(`strict: the blocked commit completed ${committedAt! - returnedAt} ms after ${a} was started again`);
      expect(await query(primary, 'SELECT 1 FROM acks WHERE id = -2')).toHaveLength(1);
    } finally {
      await blocked.end().catch(() => undefined);
    }
    c.startMember(b);
    await claimIs([a, b], 1, 60_000);
    await setConfig({ synchronousStrict: false });
  }, 150_000);
});
