// What a caller gets when its connection is lost or its session is terminated: each
// statement of the connection, by where it was (in flight, written behind one in
// pipeline mode, queued, or issued after the loss), gets the typed error that says
// whether retrying is safe. Real postgres sessions, terminated or cut for real.
import { clusterKeys } from '@pgha/core';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OutcomeUnknownError, Pool, type PoolOptions, PrimaryChangedError } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { leaderRecord } from './support/records.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';
import { until } from './support/wait.js';

describe('statements interrupted by a lost connection get typed errors', () => {
  let env: TestEnv;
  const pools: Pool[] = [];
  const proxies: TcpProxy[] = [];

  beforeAll(async () => {
    env = await startEnv({ standbys: 0 });
    await env.pg.primary.query(`
      CREATE TABLE slow_commit (x int);
      CREATE FUNCTION slow_commit_sleep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$;
      CREATE CONSTRAINT TRIGGER slow_commit_t AFTER INSERT ON slow_commit DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION slow_commit_sleep();
      CREATE TABLE written (x int);
    `);
  });
  afterEach(async () => {
    // A failed test may leave a client checked out, which pg-pool's end() waits for.
    const ended = Promise.all(pools.splice(0).map((p) => p.end().catch(() => undefined)));
    await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    // A cut connection leaves its backend sleeping until it next writes: end those.
    await env.pg.primary.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()",
    );
    await env.publishLeader(env.pg.primary, 1);
  });
  afterAll(async () => {
    await env?.stop();
  });

  function pool(extra: Partial<PoolOptions> = {}): Pool {
    const p = new Pool(env.poolOptions(extra));
    pools.push(p);
    return p;
  }

  async function backendPid(client: pg.PoolClient): Promise<number> {
    return (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  }

  /** Waits until backend `pid` is running a statement that starts with `prefix`. */
  async function running(pid: number, prefix: string): Promise<void> {
    await until(`backend ${pid} to run ${prefix}`, async () => {
      const rows = await env.pg.primary.query<{ query: string }>(
        "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
        [pid],
      );
      return rows[0]?.query.startsWith(prefix) === true;
    });
  }

  async function terminate(pid: number): Promise<void> {
    await env.pg.primary.query('SELECT pg_terminate_backend($1)', [pid]);
  }

  /**
   * On a fresh checkout of `p`: BEGIN, `setup`, then `statement`, whose session is
   * terminated while it runs. Releases the client and returns the statement's error.
   */
  async function terminatedInTransaction(p: Pool, setup: string, statement: string): Promise<unknown> {
    const client = await p.connect();
    const pid = await backendPid(client);
    await client.query('BEGIN');
    await client.query(setup);
    const failed = client.query(statement).catch((e: unknown) => e);
    await running(pid, statement);
    await terminate(pid);
    const error = await failed;
    client.release(error as Error);
    return error;
  }

  /** A pool whose connections go through a TCP proxy the test can cut. */
  async function proxiedPool(extra: Partial<PoolOptions> = {}): Promise<{ pool: Pool; proxy: TcpProxy }> {
    const proxy = await startTcpProxy(env.pg.primary.port);
    proxies.push(proxy);
    const record = leaderRecord({ term: 1, member: 'demo-proxied', host: '127.0.0.1', port: proxy.port });
    await env.admin.put(clusterKeys(env.cluster, env.keyRoot).leader).value(JSON.stringify(record));
    return { pool: pool(extra), proxy };
  }

  it('a terminated session: the statement in flight outside a transaction is outcome-unknown, the one queued behind it and the next one are safe to retry, and nothing crashes without an error listener', async () => {
    const client = await pool().connect();
    const pid = await backendPid(client);
    const inFlight = client.query('SELECT pg_sleep(30)').catch((e: unknown) => e);
    const queued = client.query('INSERT INTO written VALUES (1)').catch((e: unknown) => e);
    await running(pid, 'SELECT pg_sleep');
    await terminate(pid);

    const cut = await inFlight;
    expect(cut).toBeInstanceOf(OutcomeUnknownError);
    expect((cut as OutcomeUnknownError).retryable).toBe(false);
    expect((cut as Error).message).toContain('SELECT pg_sleep(30)');
    expect((cut as Error).cause).toMatchObject({ code: '57P01' });
    const notSent = await queued;
    expect(notSent).toBeInstanceOf(PrimaryChangedError);
    expect((notSent as PrimaryChangedError).rolledBack).toBe(false);
    expect((notSent as PrimaryChangedError).retryable).toBe(true);
    // The connection is gone: a statement issued now is never sent either.
    await until('pg to see the connection closed', () => (client as unknown as { _ended: boolean })._ended);
    const after = await client.query('SELECT 1').catch((e: unknown) => e);
    expect(after).toBeInstanceOf(PrimaryChangedError);
    client.release(after as Error);
    expect(await env.pg.primary.query('SELECT count(*)::int AS n FROM written')).toEqual([{ n: 0 }]);
  });

  it('a terminated session inside a transaction: its statement is rolled back (retry the transaction); a COMMIT in flight is outcome-unknown', async () => {
    const p = pool();
    const rolledBack = await terminatedInTransaction(p, 'INSERT INTO written VALUES (2)', 'SELECT pg_sleep(30)');
    expect(rolledBack).toBeInstanceOf(PrimaryChangedError);
    expect((rolledBack as PrimaryChangedError).rolledBack).toBe(true);

    const unknown = await terminatedInTransaction(p, 'INSERT INTO slow_commit VALUES (1)', 'COMMIT');
    expect(unknown).toBeInstanceOf(OutcomeUnknownError);
    expect((unknown as Error).message).toContain('as the commit of a transaction');
    expect(await env.pg.primary.query('SELECT count(*)::int AS n FROM written')).toEqual([{ n: 0 }]);
  });

  it('a cut connection: pool.query callers get the typed error of their statement, in or outside a transaction', async () => {
    const { pool: p, proxy } = await proxiedPool();
    const outside = p.query('SELECT pg_sleep(30)').catch((e: unknown) => e);
    const client = await p.connect();
    await client.query('BEGIN');
    const inside = client.query('SELECT pg_sleep(30)').catch((e: unknown) => e);
    await until('both statements to run', async () => {
      const rows = await env.pg.primary.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
      );
      return rows[0]!.n === 2;
    });
    proxy.cutAll();
    const [outsideError, insideError] = await Promise.all([outside, inside]);
    expect(outsideError).toBeInstanceOf(OutcomeUnknownError);
    expect(insideError).toBeInstanceOf(PrimaryChangedError);
    expect((insideError as PrimaryChangedError).rolledBack).toBe(true);
    client.release(insideError as Error);
    await until('the pool to drop both connections', () => p.totalCount === 0);
    // The pool goes on through a new connection.
    expect((await p.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('pipeline mode: a statement written behind the one in flight is outcome-unknown (it may have run), a queued one is safe to retry', async () => {
    const { pool: p, proxy } = await proxiedPool({ pipeline: true } as Partial<PoolOptions>);
    const client = await p.connect();
    const pid = await backendPid(client);
    await client.query('BEGIN');
    const inFlight = client.query('SELECT pg_sleep(30)').catch((e: unknown) => e);
    const behind = client.query('INSERT INTO written VALUES (3)').catch((e: unknown) => e);
    const internals = client as unknown as { _sentQueryQueue?: unknown[] };
    if (internals._sentQueryQueue === undefined) {
      // pg before 8.23 has no pipeline mode: both statements are queued and sent in turn.
      proxy.cutAll();
      expect(await behind).toBeInstanceOf(PrimaryChangedError);
      client.release(true);
      return;
    }
    await running(pid, 'SELECT pg_sleep');
    expect(internals._sentQueryQueue.length).toBe(1);
    proxy.cutAll();
    const first = await inFlight;
    expect(first).toBeInstanceOf(PrimaryChangedError);
    expect((first as PrimaryChangedError).rolledBack).toBe(true);
    expect(await behind).toBeInstanceOf(OutcomeUnknownError);
    client.release(first as Error);
    expect(await env.pg.primary.query('SELECT count(*)::int AS n FROM written')).toEqual([{ n: 0 }]);
  });
});
