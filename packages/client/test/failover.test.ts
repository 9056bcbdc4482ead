// Failover while callers run, against real etcd and postgres. Until the agent's
// failover lands, the test plays the agents: it fences the old primary, deletes the
// leader record, installs the new one (not writable), promotes the standby and marks
// the record writable — the order of ARCHITECTURE.md's "Failover, step by step".
import { PghaError } from '@pgha/core';
import pg from 'pg';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePrometheusText } from '../../../testing/prometheus-text.js';
import { OutcomeUnknownError, Pool, PrimaryChangedError } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { nextEvent, until } from './support/wait.js';

const typedCodes = new Set(['no-primary', 'primary-changed', 'outcome-unknown', 'not-primary']);

type Outcome =
  | { kind: 'ok'; port: number; inRecovery: boolean; id: number; at: number }
  | { kind: 'typed'; code: string; retryable: boolean; at: number }
  | { kind: 'other'; error: unknown; at: number };

describe('failover', () => {
  let env: TestEnv | undefined;
  const pools: Pool[] = [];

  afterEach(async () => {
    // pool.end() waits for checked-out clients; a failed test may have left some out.
    const ending = Promise.all(pools.splice(0).map((p) => (p.ending ? undefined : p.end().catch(() => undefined))));
    await Promise.race([ending, new Promise((r) => setTimeout(r, 3000))]);
    await env?.stop();
    env = undefined;
  });

  /** A pool as applications must use one with pg: with an 'error' listener for idle-client errors. */
  function track(pool: Pool): Pool {
    pool.on('error', () => undefined);
    pools.push(pool);
    return pool;
  }

  function classify(error: unknown, at: number): Outcome {
    if (error instanceof PghaError && typedCodes.has(error.code)) {
      return { kind: 'typed', code: error.code, retryable: error.retryable, at };
    }
    return { kind: 'other', error, at };
  }

  it('moves running callers to the promoted standby: no write reaches a non-primary, every caller gets a result or a typed error', async () => {
    env = await startEnv({ standbys: 1 });
    const { primary } = env.pg;
    const standby = env.pg.standbys[0]!;
    await primary.query('CREATE TABLE writes (id bigserial PRIMARY KEY, caller int, seq int, port int)');
    await until(
      'the table to reach the standby',
      async () => (await standby.query("SELECT to_regclass('writes') AS t"))[0]?.t,
    );

    // With the opt-in metrics: the registry is read before and after the failover.
    const registry = new Registry();
    const pool = track(
      new Pool(
        env.poolOptions({
          max: 8,
          drainTimeoutMillis: 500,
          primaryWaitTimeoutMillis: 15_000,
          metrics: { registry, pool: 'writes' },
        }),
      ),
    );
    const metrics = async () => parsePrometheusText(await registry.metrics());
    const changes: number[] = [];
    pool.on('primary-changed', (e) => changes.push(e.term));
    await pool.query('SELECT 1');
    const before = await metrics();
    expect(before.value('pgha_client_connections', { pool: 'writes', role: 'primary' })).toBe(1);
    expect(before.value('pgha_client_reroutes_total', { pool: 'writes' })).toBe(0);
    expect(before.value('pgha_client_without_primary_seconds', { pool: 'writes' })).toBe(0);
    expect(before.find('pgha_client_errors_total')).toEqual([]);

    const insert =
      'INSERT INTO writes (caller, seq, port) VALUES ($1, $2, inet_server_port()) RETURNING id, port, pg_is_in_recovery() AS r';
    const written = (row: { id: string; port: number; r: boolean }): Outcome => ({
      kind: 'ok',
      id: Number(row.id),
      port: row.port,
      inRecovery: row.r,
      at: Date.now(),
    });
    const outcomes: Outcome[][] = [];
    let running = true;
    const callers = Array.from({ length: 12 }, async (_, caller) => {
      const mine: Outcome[] = [];
      outcomes.push(mine);
      for (let seq = 0; running; seq++) {
        try {
          if (caller % 2 === 0) {
            // Autocommit statements through pool.query.
            const { rows } = await pool.query(insert, [caller, seq]);
            mine.push(written(rows[0]));
          } else {
            // Explicit transactions on a checked-out client, as ORMs do.
            const client = await pool.connect();
            let failure: Error | undefined;
            try {
              await client.query('BEGIN');
              const { rows } = await client.query(insert, [caller, seq]);
              await client.query('COMMIT');
              mine.push(written(rows[0]));
            } catch (error) {
              failure = error as Error;
              throw error;
            } finally {
              client.release(failure);
            }
          }
        } catch (error) {
          mine.push(classify(error, Date.now()));
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    });

    await until('writes before the failover', () => outcomes.flat().filter((o) => o.kind === 'ok').length > 100);
    // 1. The old primary fences itself (here: a fast shutdown; its WAL reaches the standby).
    await primary.stop();
    const fencedAt = Date.now();
    // 2. Its lease expires: the leader record disappears.
    await env.deleteLeader();
    await until(
      'the pool to report time without a primary',
      async () => (await metrics()).value('pgha_client_without_primary_seconds', { pool: 'writes' }) > 0,
    );
    // 3. The standby's agent installs the leader of term 2, not writable yet, and promotes.
    await env.publishLeader(standby, 2, { writable: false });
    await standby.promote();
    // 4. Postgres accepts writes: the record becomes writable.
    const writableAt = Date.now();
    await env.publishLeader(standby, 2, { writable: true });
    await until('every caller to write on the new primary', () =>
      outcomes.every((mine) => mine.some((o) => o.kind === 'ok' && o.port === standby.port)),
    );
    running = false;
    await Promise.all(callers);

    const all = outcomes.flat();
    const others = all.filter((o) => o.kind === 'other');
    expect(others, JSON.stringify(others.map((o) => String((o as { error: unknown }).error)))).toEqual([]);
    const oks = all.filter((o): o is Extract<Outcome, { kind: 'ok' }> => o.kind === 'ok');
    // No write reached a non-primary: every acknowledged write ran on a server out of recovery,
    // on the old primary only before it was fenced, on the new one only once it was writable.
    expect(oks.every((o) => !o.inRecovery)).toBe(true);
    for (const o of oks) {
      if (o.port === primary.port) expect(o.at).toBeLessThanOrEqual(fencedAt);
      else {
        expect(o.port).toBe(standby.port);
        expect(o.at).toBeGreaterThanOrEqual(writableAt);
      }
    }
    // No acknowledged write was lost.
    const stored = new Set((await standby.query<{ id: string }>('SELECT id FROM writes')).map((r) => Number(r.id)));
    expect(oks.filter((o) => !stored.has(o.id))).toEqual([]);
    // Typed errors only with the right retry flags; outcome-unknown is never retryable.
    for (const o of all) if (o.kind === 'typed') expect(o.retryable).toBe(o.code !== 'outcome-unknown');
    expect(changes.filter((t) => t !== 1)).toEqual([2]);
    expect(pool.options.port).toBe(standby.port);

    // The metrics: one reroute, a primary again, connections there only, and every
    // error a caller saw counted under its code.
    const after = await metrics();
    expect(after.value('pgha_client_reroutes_total', { pool: 'writes' })).toBe(1);
    expect(after.value('pgha_client_without_primary_seconds', { pool: 'writes' })).toBe(0);
    expect(after.value('pgha_client_connections', { pool: 'writes', role: 'primary' })).toBeGreaterThan(0);
    expect(after.value('pgha_client_connections', { pool: 'writes', role: 'replica' })).toBe(0);
    const seen: Record<string, number> = {};
    for (const o of all) if (o.kind === 'typed') seen[o.code] = (seen[o.code] ?? 0) + 1;
    const counted = Object.fromEntries(
      after.find('pgha_client_errors_total', { pool: 'writes' }).map((sample) => [sample.labels.type, sample.value]),
    );
    expect(counted).toEqual(seen);
    console.log(`client metrics after the failover: errors by type ${JSON.stringify(counted)}`);
  });

  it('drains connections to an old primary that was not fenced: idle at once, busy on release, stragglers cut', async () => {
    env = await startEnv({ standbys: 1 });
    const { primary } = env.pg;
    const standby = env.pg.standbys[0]!;
    const pool = track(new Pool(env.poolOptions({ max: 5, drainTimeoutMillis: 700, application_name: 'pgha-drain' })));

    const [idleA, idleB, busy, straggler, inTransaction] = await Promise.all(
      Array.from({ length: 5 }, () => pool.connect()),
    );
    // Two idle, one checked out between statements, one in a long statement, one inside a transaction.
    idleA!.release();
    idleB!.release();
    const longStatement = straggler!.query('SELECT pg_sleep(30)').catch((e) => e);
    await inTransaction!.query('BEGIN');
    await inTransaction!.query('CREATE TABLE never_committed (x int); INSERT INTO never_committed VALUES (1)');
    const inTransactionStatement = inTransaction!.query('SELECT pg_sleep(30)').catch((e) => e);
    const count = async () =>
      Number(
        (await primary.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'pgha-drain'"))[0]!.n,
      );
    expect(await count()).toBe(5);

    // Split brain in the test only: the standby is promoted while the old primary runs.
    await standby.promote();
    const changed = nextEvent(pool, 'primary-changed');
    const changedAt = Date.now();
    await env.publishLeader(standby, 2);
    await changed;
    // Idle connections close at once.
    await until('idle connections to close', async () => (await count()) === 3, 2000);
    expect(Date.now() - changedAt).toBeLessThan(650);
    // New work goes to the new primary at once.
    expect((await pool.query('SELECT inet_server_port() AS p')).rows[0].p).toBe(standby.port);
    // A busy connection is destroyed on release, never reused.
    const busyRemoved = nextEvent(pool, 'remove', (c) => c === busy, 2000);
    busy!.release();
    await busyRemoved;
    // Stragglers are cut after drainTimeoutMillis, with typed errors.
    const cut = await longStatement;
    expect(cut).toBeInstanceOf(OutcomeUnknownError);
    expect(Date.now() - changedAt).toBeGreaterThanOrEqual(650);
    const rolledBack = await inTransactionStatement;
    expect(rolledBack).toBeInstanceOf(PrimaryChangedError);
    expect(rolledBack.rolledBack).toBe(true);
    straggler!.release(cut);
    inTransaction!.release(rolledBack);
    await until('no connection left on the old primary', async () => (await count()) === 0, 3000);
    expect(await primary.query("SELECT to_regclass('never_committed') AS t")).toEqual([{ t: null }]);
    expect(pool.expiredCount).toBe(0);
  });

  it('connects early to a leader being promoted, and hands those connections out only once it is writable and out of recovery', async () => {
    env = await startEnv({ standbys: 1 });
    const { primary } = env.pg;
    const standby = env.pg.standbys[0]!;
    const pool = track(
      new Pool(env.poolOptions({ max: 4, primaryWaitTimeoutMillis: 1500, application_name: 'pgha-preconnect' })),
    );
    await pool.query('SELECT 1');
    const early = async () =>
      Number(
        (
          await standby.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'pgha-preconnect'")
        )[0]!.n,
      );
    const reads: Array<{ port: number; inRecovery: boolean; at: number }> = [];
    const failures: string[] = [];
    let running = true;
    const callers = Array.from({ length: 4 }, async () => {
      while (running) {
        try {
          const { rows } = await pool.query('SELECT inet_server_port() AS port, pg_is_in_recovery() AS r');
          reads.push({ port: rows[0].port, inRecovery: rows[0].r, at: Date.now() });
        } catch (error) {
          failures.push(error instanceof PghaError ? error.code : String(error));
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    });
    await until('reads on the primary', () => reads.length > 20);

    // 1. A candidate that is never promoted: connections open early, nothing runs on
    //    them, and they are closed when the leader moves elsewhere.
    await env.publishLeader(standby, 2, { writable: false });
    await until('connections opened early to the candidate', async () => (await early()) > 0);
    await env.publishLeader(primary, 3, { writable: true });
    const movedAt = Date.now();
    await until('reads on the primary again', () => reads.some((r) => r.at > movedAt && r.port === primary.port));
    await until('the early connections to close', async () => (await early()) === 0);

    // 2. A candidate whose record turns writable while the server is still in recovery
    //    (a record ahead of the server): the early connections are refused by the role
    //    check, so callers only wait and then fail with typed errors.
    await env.publishLeader(standby, 4, { writable: false });
    await until('connections opened early to the candidate', async () => (await early()) > 0);
    await env.publishLeader(standby, 4, { writable: true });
    const failuresBefore = failures.length;
    await until('a checkout refused while the server is a standby', () =>
      failures.slice(failuresBefore).some((code) => code === 'not-primary' || code === 'no-primary'),
    );
    // 3. The server is promoted: checkouts now succeed on it.
    const promotingAt = Date.now();
    await standby.promote();
    await until('reads on the promoted server', () => reads.some((r) => r.port === standby.port));
    running = false;
    await Promise.all(callers);

    // Nothing ever ran on the standby while it was in recovery.
    expect(reads.filter((r) => r.inRecovery)).toEqual([]);
    expect(reads.filter((r) => r.port === standby.port && r.at < promotingAt)).toEqual([]);
    expect(failures.filter((code) => !typedCodes.has(code))).toEqual([]);
  });

  it('passes 25006 through untouched, discards that connection and re-reads discovery', async () => {
    env = await startEnv({ standbys: 0 });
    const { primary } = env.pg;
    const pool = track(new Pool(env.poolOptions({ max: 1 })));
    await primary.query('CREATE TABLE t (x int)');
    const client = await pool.connect();
    await client.query('SET default_transaction_read_only = on');
    const error = await client.query('INSERT INTO t VALUES (1)').catch((e) => e);
    expect(error).toBeInstanceOf(pg.DatabaseError);
    expect(error.code).toBe('25006');
    const removed = nextEvent(pool, 'remove');
    client.release();
    expect(await removed).toBe(client);
    await pool.query('INSERT INTO t VALUES (2)');
  });
});
