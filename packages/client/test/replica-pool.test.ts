// ReplicaPool against a real etcd and a real primary with two streaming standbys; the
// test plays the agents and writes the member records (role, lag) itself.
import { clusterKeys, type MemberRecord, PghaError } from '@pgha/core';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../../../testing/postgres.js';
import { NoReplicaError, ReplicaPool, type ReplicaPoolOptions } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { memberRecord } from './support/records.js';
import { nextEvent, until } from './support/wait.js';

describe('ReplicaPool', () => {
  let env: TestEnv;
  const pools: ReplicaPool[] = [];

  beforeAll(async () => {
    env = await startEnv({ standbys: 2 });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.end().catch(() => undefined)));
    await env.admin.delete().prefix(clusterKeys(env.cluster, env.keyRoot).membersPrefix);
  });
  afterAll(async () => {
    await env?.stop();
  });

  async function report(server: TestServer, overrides: Partial<MemberRecord> = {}): Promise<void> {
    const name = `demo-${server.name}`;
    const record = memberRecord({
      name,
      role: server === env.pg.primary ? 'primary' : 'replica',
      host: server.host,
      port: server.port,
      streaming: server !== env.pg.primary,
      ...overrides,
    });
    await env.admin.put(clusterKeys(env.cluster, env.keyRoot).member(name)).value(JSON.stringify(record));
  }

  function pool(extra: Partial<ReplicaPoolOptions> = {}): ReplicaPool {
    const p = new ReplicaPool({ ...env.poolOptions(), max: 4, maxReplicaLagBytes: 1024, ...extra });
    p.on('error', () => undefined);
    pools.push(p);
    return p;
  }

  const portOf = async (p: pg.Pool | pg.PoolClient) =>
    (await p.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port;

  it('lets a long read run on when the replica qualifies again before the drain cut', async () => {
    const [s1] = env.pg.standbys as [TestServer, TestServer];
    await Promise.all([report(env.pg.primary), report(s1)]);
    const p = pool({ drainTimeoutMillis: 800 });
    const client = await p.connect();
    expect(await portOf(client)).toBe(s1.port);
    const long = client.query('SELECT pg_sleep(1.5), 1 AS ok').catch((e) => e);
    const name = `demo-${s1.name}`;
    await report(s1, { lagBytes: 10_000 }); // a lag spike past the 1024-byte limit...
    await until('the spike to be seen', () => p.discovery.members.get(name)?.lagBytes === 10_000);
    await report(s1, { lagBytes: 0 }); // ...that passes before drainTimeoutMillis
    await until('the recovery to be seen', () => p.discovery.members.get(name)?.lagBytes === 0);
    const result = await long;
    expect(result).not.toBeInstanceOf(Error);
    expect(result.rows[0].ok).toBe(1);
    client.release();
  });

  it('spreads reads over the replicas within the lag limits, read-only', async () => {
    const [s1, s2] = env.pg.standbys as [TestServer, TestServer];
    await Promise.all([report(env.pg.primary), report(s1), report(s2)]);
    const p = pool();
    expect(p).toBeInstanceOf(pg.Pool);
    const clients = await Promise.all([p.connect(), p.connect(), p.connect(), p.connect()]);
    const ports = await Promise.all(clients.map(portOf));
    expect(new Set(ports)).toEqual(new Set([s1.port, s2.port]));
    for (const c of clients) {
      expect((await c.query('SELECT pg_is_in_recovery() AS r')).rows[0].r).toBe(true);
      c.release();
    }
  });

  it('stops using a replica whose lag grows past the limit and drains its idle connections', async () => {
    const [s1, s2] = env.pg.standbys as [TestServer, TestServer];
    await Promise.all([report(env.pg.primary), report(s1), report(s2)]);
    const p = pool();
    const clients = await Promise.all([p.connect(), p.connect()]);
    for (const c of clients) c.release();
    expect(p.idleCount).toBe(2);
    const drained = nextEvent(p, 'remove', () => true, 5000);
    await report(s1, { lagBytes: 1_000_000 });
    await drained;
    await until('the lagging replica to leave the pool', () => p.totalCount === 1);
    for (let i = 0; i < 6; i++) {
      const c = await p.connect();
      expect(await portOf(c)).toBe(s2.port);
      c.release(new Error('fresh connection next time'));
    }
  });

  it('falls back to the primary with read-only sessions, or fails with NoReplicaError, as configured', async () => {
    const [s1, s2] = env.pg.standbys as [TestServer, TestServer];
    await Promise.all([report(env.pg.primary), report(s1, { lagBytes: 1e9 }), report(s2, { healthy: false })]);
    const fallback = pool();
    expect(await portOf(fallback)).toBe(env.pg.primary.port);
    const write = await fallback.query('CREATE TABLE must_not_exist (x int)').catch((e) => e);
    expect(write).toBeInstanceOf(pg.DatabaseError);
    expect(write.code).toBe('25006');

    const strict = pool({ replicaFallback: 'fail', primaryWaitTimeoutMillis: 500 });
    const error = await strict.query('SELECT 1').catch((e) => e);
    expect(error).toBeInstanceOf(NoReplicaError);
    expect(error.code).toBe('no-replica');
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/lags 1000000000 bytes.*unhealthy/);
    // A waiting checkout gets a replica as soon as one qualifies.
    const waiting = pool({ replicaFallback: 'fail', primaryWaitTimeoutMillis: 10_000 });
    const pending = portOf(waiting);
    await report(s2);
    expect(await pending).toBe(s2.port);
  });

  it('reports a hostile member record and ignores that member', async () => {
    const [s1] = env.pg.standbys as [TestServer];
    await report(s1);
    const p = pool();
    expect(await portOf(p)).toBe(s1.port);
    const errors: Error[] = [];
    p.on('discovery-error', (e) => errors.push(e.error));
    const keys = clusterKeys(env.cluster, env.keyRoot);
    await env.admin.put(keys.member('demo-evil')).value('{"v":1,"name":"demo-evil","role":"replica","host":"x y"}');
    await until('the hostile record to be reported', () => errors.length > 0);
    expect((errors[0] as PghaError).code).toBe('protocol');
    expect(p.discovery.members.has('demo-evil')).toBe(false);
    expect(await portOf(p)).toBe(s1.port);
  });

  it('rejects invalid replica options', () => {
    for (const bad of [{ maxReplicaLagBytes: -1 }, { maxReplicaLagMillis: 'x' }, { replicaFallback: 'maybe' }]) {
      expect(() => new ReplicaPool({ ...env.poolOptions(), ...(bad as object) })).toThrow(PghaError);
    }
  });
});
