// Conformance: every point of pg.Pool's contract (node-postgres packages/pg-pool),
// through a pgha Pool, against a real etcd and a real primary + standby.
import { clusterKeys, PghaError } from '@pgha/core';
import pg from 'pg';
import Cursor from 'pg-cursor';
import QueryStream from 'pg-query-stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NoPrimaryError, NotPrimaryError, Pool, type PoolOptions, watchCluster } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { nextEvent, until } from './support/wait.js';

describe('Pool keeps the pg.Pool contract', () => {
  let env: TestEnv;
  const pools: Pool[] = [];
  let term = 1;

  beforeAll(async () => {
    env = await startEnv({ standbys: 1 });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => (p.ending ? undefined : p.end().catch(() => undefined))));
    // Put the primary back as leader if a test moved it.
    if (term !== 1) {
      term += 1;
      await env.publishLeader(env.pg.primary, term);
    }
  });
  afterAll(async () => {
    await env?.stop();
  });

  function pool(extra: Partial<PoolOptions> = {}): Pool {
    const p = new Pool(env.poolOptions(extra));
    pools.push(p);
    return p;
  }

  async function serverPort(p: Pool | pg.PoolClient): Promise<number> {
    const { rows } = await p.query<{ port: number }>('SELECT inet_server_port() AS port');
    return rows[0]!.port;
  }

  it('is an instance of pg.Pool and hands out pg.Client subclasses', async () => {
    const p = pool();
    expect(p).toBeInstanceOf(pg.Pool);
    expect(p.Client.prototype).toBeInstanceOf(pg.Client);
    const client = await p.connect();
    expect(client).toBeInstanceOf(pg.Client);
    client.release();
  });

  it("keeps pg-pool's option defaults, hides the password and keeps pgha options out of pool.options", async () => {
    const p = pool();
    expect(p.options.max).toBe(10);
    expect(p.options.min).toBe(0);
    expect(p.options.idleTimeoutMillis).toBe(10_000);
    expect(p.options.maxUses).toBe(Number.POSITIVE_INFINITY);
    expect(p.options.allowExitOnIdle).toBe(false);
    expect(p.options.password).toBe(env.poolOptions().password);
    expect(Object.keys(p.options)).not.toContain('password');
    expect(JSON.stringify(p.options)).not.toContain(String(env.poolOptions().password));
    for (const key of ['etcd', 'cluster', 'keyRoot', 'drainTimeoutMillis', 'primaryWaitTimeoutMillis']) {
      expect(Object.keys(p.options)).not.toContain(key);
    }
    expect(pool({ max: 3, idleTimeoutMillis: 50 }).options).toMatchObject({ max: 3, idleTimeoutMillis: 50 });
  });

  it('points options and Client at the current primary, whatever host the config named', async () => {
    const standby = env.pg.standbys[0]!;
    const p = pool({ host: standby.host, port: standby.port });
    await p.discovery.ready;
    expect(p.options.port).toBe(env.pg.primary.port);
    // What ORMs do for side connections: new pool.Client(pool.options), even with a stale copy.
    const side = new p.Client({ ...p.options, password: p.options.password, port: standby.port });
    await side.connect();
    try {
      expect((await side.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(env.pg.primary.port);
    } finally {
      await side.end();
    }
  });

  it('connects with the promise form and the callback form', async () => {
    const p = pool();
    const client = await p.connect();
    expect(await serverPort(client)).toBe(env.pg.primary.port);
    client.release();
    await new Promise<void>((resolve, reject) => {
      p.connect((err, c, done) => {
        if (err || !c) return reject(err);
        c.query('SELECT 1 AS one', (qerr: Error | null, res: pg.QueryResult) => {
          done();
          if (qerr) return reject(qerr);
          expect(res.rows[0].one).toBe(1);
          resolve();
        });
      });
    });
    expect(p.totalCount).toBe(1);
    expect(p.idleCount).toBe(1);
  });

  it('queries with text, values, config objects, row mode and every callback form', async () => {
    const p = pool();
    expect((await p.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await p.query('SELECT $1::int + 1 AS two', [1])).rows).toEqual([{ two: 2 }]);
    expect((await p.query({ text: 'SELECT $1::text AS t', values: ['x'] })).rows).toEqual([{ t: 'x' }]);
    expect((await p.query({ text: 'SELECT 1, 2', rowMode: 'array' })).rows).toEqual([[1, 2]]);
    expect((await p.query({ name: 'named', text: 'SELECT $1::int AS n', values: [5] })).rows).toEqual([{ n: 5 }]);
    const viaCallback = await new Promise((resolve, reject) =>
      p.query('SELECT 3 AS three', (err: Error, res: pg.QueryResult) => (err ? reject(err) : resolve(res.rows))),
    );
    expect(viaCallback).toEqual([{ three: 3 }]);
    const viaValuesCallback = await new Promise((resolve, reject) =>
      p.query('SELECT $1::int AS v', [4], (err: Error, res: pg.QueryResult) => (err ? reject(err) : resolve(res.rows))),
    );
    expect(viaValuesCallback).toEqual([{ v: 4 }]);
  });

  it('rejects a function as the first argument of query, as pg-pool does', async () => {
    const p = pool();
    const error = await new Promise<Error>((resolve) =>
      (p.query as unknown as (f: (e: Error) => void) => void)(resolve),
    );
    expect(error.message).toBe('Passing a function as the first parameter to pool.query is not supported');
  });

  it('runs submittables: pg-cursor and pg-query-stream', async () => {
    const p = pool();
    const client = await p.connect();
    try {
      const cursor = client.query(new Cursor('SELECT g FROM generate_series(1, 5) g'));
      expect((await cursor.read(3)).map((r: { g: number }) => r.g)).toEqual([1, 2, 3]);
      expect((await cursor.read(3)).map((r: { g: number }) => r.g)).toEqual([4, 5]);
      await cursor.close();
      const stream = client.query(new QueryStream('SELECT g FROM generate_series(1, 100) g', [], { batchSize: 10 }));
      let sum = 0;
      for await (const row of stream) sum += (row as { g: number }).g;
      expect(sum).toBe(5050);
    } finally {
      client.release();
    }
  });

  it('emits connect, acquire, release and remove with pg-pool argument order', async () => {
    const p = pool();
    const seen: string[] = [];
    let connected: unknown;
    let acquired: unknown;
    let releasedArgs: unknown[] = [];
    let removed: unknown;
    p.on('connect', (c) => {
      seen.push('connect');
      connected = c;
    });
    p.on('acquire', (c) => {
      seen.push('acquire');
      acquired = c;
    });
    p.on('release', (err, c) => {
      seen.push('release');
      releasedArgs = [err, c];
    });
    p.on('remove', (c) => {
      seen.push('remove');
      removed = c;
    });
    const client = await p.connect();
    expect(connected).toBe(client);
    expect(acquired).toBe(client);
    const failure = new Error('give it back');
    const gone = nextEvent(p, 'remove');
    client.release(failure);
    await gone;
    expect(releasedArgs).toEqual([failure, client]);
    expect(removed).toBe(client);
    expect(seen).toEqual(['connect', 'acquire', 'release', 'remove']);
    expect(p.totalCount).toBe(0);
  });

  it("emits error (err, client) when an idle client's connection dies, and removes it", async () => {
    const p = pool();
    const client = await p.connect();
    const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    client.release();
    expect(p.idleCount).toBe(1);
    const failed = new Promise<[Error, pg.PoolClient]>((resolve) => p.once('error', (e, c) => resolve([e, c])));
    await env.pg.primary.query('SELECT pg_terminate_backend($1)', [pid]);
    const [error, errored] = await failed;
    expect(errored).toBe(client);
    expect(error).toBeInstanceOf(Error);
    await until('the dead client to be removed', () => p.totalCount === 0);
  });

  it('counts total, idle, waiting and expired clients', async () => {
    const p = pool({ max: 2 });
    const a = await p.connect();
    const b = await p.connect();
    expect([p.totalCount, p.idleCount, p.waitingCount]).toEqual([2, 0, 0]);
    const third = p.connect();
    expect(p.waitingCount).toBe(1);
    a.release();
    const c = await third;
    expect(p.waitingCount).toBe(0);
    c.release();
    b.release();
    expect([p.totalCount, p.idleCount]).toEqual([2, 2]);
    expect(p.expiredCount).toBe(0);
  });

  it("times a queued checkout out with pg-pool's error when the pool is full (connectionTimeoutMillis)", async () => {
    const p = pool({ max: 1, connectionTimeoutMillis: 300 });
    const held = await p.connect();
    const started = Date.now();
    await expect(p.connect()).rejects.toThrow('timeout exceeded when trying to connect');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(p.waitingCount).toBe(0);
    held.release();
    const again = await p.connect();
    again.release();
  });

  it('keeps a connection whose 25006 comes from a read-only transaction the application began', async () => {
    const p = pool({ max: 1 });
    const client = await p.connect();
    await client.query('BEGIN READ ONLY');
    const error = await client.query('CREATE TABLE never_created (x int)').catch((e) => e);
    expect(error).toBeInstanceOf(pg.DatabaseError);
    expect(error.code).toBe('25006');
    await client.query('ROLLBACK');
    client.release();
    expect([p.totalCount, p.idleCount]).toEqual([1, 1]);
  });

  it('keeps following the primary, on every pool of a shared watcher, when a primary-changed listener throws', async () => {
    const watcher = watchCluster({
      etcd: { endpoints: env.etcd.endpoint },
      cluster: env.cluster,
      keyRoot: env.keyRoot,
    });
    const { etcd: _e, cluster: _c, keyRoot: _k, ...pgOnly } = env.poolOptions();
    const a = new Pool({ ...pgOnly, discovery: watcher });
    const b = new Pool({ ...pgOnly, discovery: watcher });
    const thrown: unknown[] = [];
    // The listener's exception must surface as an uncaughtException (as a throwing
    // listener does anywhere in Node): catch it here instead of the test runner.
    const runnerListeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    const onUncaught = (error: unknown) => thrown.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      await watcher.ready;
      a.on('primary-changed', () => {
        throw new Error('listener bug');
      });
      const bSaw = nextEvent(b, 'primary-changed');
      const errors: Error[] = [];
      watcher.on('discovery-error', (e) => errors.push(e.error));
      term += 1;
      await env.publishLeader(env.pg.primary, term, { member: 'demo-renamed' });
      expect((await bSaw).term).toBe(term);
      await until('the throw to surface as an uncaught exception', () => thrown.length > 0);
      expect((thrown[0] as Error).message).toBe('listener bug');
      expect(errors.filter((e) => /etcd/.test(e.message))).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
      for (const listener of runnerListeners) process.on('uncaughtException', listener);
      await a.end();
      await b.end();
      await watcher.close();
    }
  });

  it('follows a re-bootstrapped cluster (another initialize system id) down to its lower term, with cluster-reset', async () => {
    const initializeKey = clusterKeys(env.cluster, env.keyRoot).initialize;
    const initialize = (systemId: string) =>
      JSON.stringify({ v: 1, member: 'demo-primary', systemId, at: new Date().toISOString() });
    await env.admin.put(initializeKey).value(initialize('7000000000000000001'));
    term += 1;
    await env.publishLeader(env.pg.primary, term);
    // No periodic re-read within the test: the reset must be found from the watch
    // events themselves (each older-term leader triggers a fresh read).
    const p = pool({ rereadIntervalMillis: 300_000, staleAfterMillis: 600_000 });
    await until('the long-lived pool to follow the current term', () => p.discovery.primary?.term === term);
    expect(await serverPort(p)).toBe(env.pg.primary.port);
    const reset = nextEvent(p, 'cluster-reset');
    // Re-bootstrap, as the bootstrapping agent does it: a leader record of term 1 (not
    // writable yet), the new initialize record, then the leader turns writable.
    await env.publishLeader(env.pg.primary, 1, { member: 'demo-reborn', writable: false });
    await env.admin.put(initializeKey).value(initialize('7000000000000000002'));
    await env.publishLeader(env.pg.primary, 1, { member: 'demo-reborn', writable: true });
    expect(await reset).toMatchObject({
      type: 'cluster-reset',
      previousSystemId: '7000000000000000001',
      systemId: '7000000000000000002',
    });
    await until('the pool to follow the new cluster', () => p.discovery.primary?.member === 'demo-reborn');
    expect(p.discovery.primary?.term).toBe(1);
    expect(await serverPort(p)).toBe(env.pg.primary.port);
  });

  it('destroys a client released with an error and throws on a double release', async () => {
    const p = pool();
    const client = await p.connect();
    client.release(new Error('broken'));
    expect(p.totalCount).toBe(0);
    expect(() => client.release()).toThrow('Release called on client which has already been released to the pool.');
  });

  it('passes pg DatabaseError through untouched', async () => {
    const p = pool();
    const error = await p.query('SELEC 1').catch((e) => e);
    expect(error).toBeInstanceOf(pg.DatabaseError);
    expect(error.code).toBe('42601');
    expect(error).not.toBeInstanceOf(PghaError);
    const client = await p.connect();
    try {
      const inClient = await client.query('SELECT 1/0').catch((e) => e);
      expect(inClient).toBeInstanceOf(pg.DatabaseError);
      expect(inClient.code).toBe('22012');
    } finally {
      client.release();
    }
  });

  it('ends with the promise and callback forms, sets ending/ended, and refuses use after end', async () => {
    const p = pool();
    await p.query('SELECT 1');
    expect([p.ending, p.ended]).toEqual([false, false]);
    await p.end();
    expect([p.ending, p.ended]).toEqual([true, true]);
    await expect(p.connect()).rejects.toThrow('Cannot use a pool after calling end on the pool');
    await expect(p.query('SELECT 1')).rejects.toThrow('Cannot use a pool after calling end on the pool');
    await expect(p.end()).rejects.toThrow('Called end on pool more than once');
    expect(p.discovery.closed).toBe(true);

    const q = pool();
    await q.query('SELECT 1');
    await new Promise<void>((resolve) => q.end(() => resolve()));
    expect(q.ended).toBe(true);
    await new Promise<void>((resolve) =>
      q.connect((err) => {
        expect(err?.message).toBe('Cannot use a pool after calling end on the pool');
        resolve();
      }),
    );
  });

  it('shares one watcher among pools and leaves it running when a pool ends', async () => {
    const watcher = watchCluster({
      etcd: { endpoints: env.etcd.endpoint },
      cluster: env.cluster,
      keyRoot: env.keyRoot,
    });
    try {
      const { etcd: _e, cluster: _c, keyRoot: _k, ...pgOnly } = env.poolOptions();
      const a = new Pool({ ...pgOnly, discovery: watcher });
      const b = new Pool({ ...pgOnly, discovery: watcher });
      expect(await serverPort(a)).toBe(env.pg.primary.port);
      expect(await serverPort(b)).toBe(env.pg.primary.port);
      await a.end();
      expect(watcher.closed).toBe(false);
      expect(await serverPort(b)).toBe(env.pg.primary.port);
      await b.end();
    } finally {
      await watcher.close();
    }
  });

  it('refuses a leader whose server is a standby, with NotPrimaryError, and recovers when the leader is fixed', async () => {
    const p = pool({ primaryWaitTimeoutMillis: 800 });
    await p.discovery.ready;
    term += 1;
    await env.publishLeader(env.pg.standbys[0]!, term);
    await until('the standby to be published', () => p.discovery.primary?.term === term);
    const error = await p.query('SELECT 1').catch((e) => e);
    expect(error).toBeInstanceOf(NotPrimaryError);
    expect(error.retryable).toBe(true);
    term += 1;
    await env.publishLeader(env.pg.primary, term);
    expect(await serverPort(p)).toBe(env.pg.primary.port);
  });

  it('waits for a primary while there is none, and gets one as soon as it is published', async () => {
    const p = pool();
    await p.discovery.ready;
    await env.deleteLeader();
    await until('no primary', () => p.discovery.primary === null);
    const waiting = serverPort(p);
    term += 1;
    await env.publishLeader(env.pg.primary, term, { writable: false });
    await new Promise((r) => setTimeout(r, 200)); // a non-writable leader must not be used
    const published = Date.now();
    await env.publishLeader(env.pg.primary, term, { writable: true });
    expect(await waiting).toBe(env.pg.primary.port);
    expect(Date.now() - published).toBeLessThan(2000);
  });

  it('fails a checkout with NoPrimaryError after primaryWaitTimeoutMillis (or connectionTimeoutMillis)', async () => {
    const p = pool({ primaryWaitTimeoutMillis: 500 });
    await p.discovery.ready;
    await env.deleteLeader();
    term += 1;
    await until('no primary', () => p.discovery.primary === null);
    const started = Date.now();
    const error = await p.query('SELECT 1').catch((e) => e);
    expect(error).toBeInstanceOf(NoPrimaryError);
    expect(error.code).toBe('no-primary');
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/no leader record/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(p.totalCount).toBe(0);

    const q = pool({ connectionTimeoutMillis: 300 });
    await q.discovery.ready;
    const started2 = Date.now();
    const timedOut = await q.query('SELECT 1').catch((e) => e);
    expect(timedOut).toBeInstanceOf(Error);
    expect(Date.now() - started2).toBeLessThan(2000);
  });

  it('fails with NoPrimaryError naming etcd when etcd is unreachable at start, without crashing', async () => {
    const p = pool({
      etcd: { endpoints: 'http://127.0.0.1:1', callTimeoutMillis: 200 },
      primaryWaitTimeoutMillis: 700,
    });
    const errors: unknown[] = [];
    p.on('discovery-error', (e) => errors.push(e.error));
    const error = await p.query('SELECT 1').catch((e) => e);
    expect(error).toBeInstanceOf(NoPrimaryError);
    expect(error.message).toMatch(/etcd is not answering/);
    expect(errors.length).toBeGreaterThan(0);
  });

  it('rejects invalid options with clear errors', () => {
    const bad: unknown[] = [
      undefined,
      {},
      { cluster: 'demo' },
      { etcd: { endpoints: 'http://127.0.0.1:2379' } },
      { etcd: { endpoints: 'nope' }, cluster: 'demo' },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', drainTimeoutMillis: -5 },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', primaryWaitTimeoutMillis: 0 },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', stalePolicy: 'maybe' },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', preconnect: 'yes' },
      // Not a class or factory (any other Client is accepted, as pg-pool does).
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', Client: 42 },
    ];
    for (const options of bad) {
      let thrown: unknown;
      try {
        new Pool(options as PoolOptions);
      } catch (e) {
        thrown = e;
      }
      expect(thrown, JSON.stringify(options)).toBeInstanceOf(PghaError);
      expect((thrown as PghaError).code).toBe('invalid-option');
    }
  });
});
