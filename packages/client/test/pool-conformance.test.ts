// pg.Pool conformance, parametrised: every test body runs against plain pg.Pool
// (pointed at the primary) and against @pgha/client's Pool (routed through etcd), so
// each case proves the baseline holds too. Real etcd, real primary and standby.
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Pool, type PoolOptions } from '../src/index.js';
import { startEnv, type TestEnv } from './support/env.js';
import { until } from './support/wait.js';

const childScript = fileURLToPath(new URL('./support/child-pool.mjs', import.meta.url));

interface Flavour {
  readonly name: string;
  readonly kind: 'pg' | 'pgha';
  /** The options of a pool of this flavour, plus `extra` (pg options only). */
  options(extra?: pg.PoolConfig): PoolOptions;
  make(extra?: pg.PoolConfig): pg.Pool;
}

interface ChildRun {
  readonly code: number | null;
  readonly lines: string[];
  /** Milliseconds from the first line printed to the exit. */
  readonly exitAfterFirstLineMillis: number;
}

/** Runs child-pool.mjs with a scenario; rejects if it has not exited after `boundMillis`. */
function runChild(flavour: Flavour, scenario: string, extra: pg.PoolConfig, boundMillis: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    let firstLineAt = 0;
    let out = '';
    const child = execFile(
      process.execPath,
      [childScript, JSON.stringify({ kind: flavour.kind, scenario, options: flavour.options(extra) })],
      { timeout: boundMillis, killSignal: 'SIGKILL' },
      (error, _stdout, stderr) => {
        const lines = out.split('\n').filter((l) => l !== '');
        if (error && (error as { killed?: boolean }).killed) {
          reject(new Error(`the child had not exited after ${boundMillis} ms (printed: ${lines.join(' | ')})`));
          return;
        }
        if (stderr.trim() !== '') console.log(`child stderr: ${stderr}`);
        resolve({
          code: child.exitCode,
          lines,
          exitAfterFirstLineMillis: firstLineAt === 0 ? Number.NaN : Date.now() - firstLineAt,
        });
      },
    );
    child.stdout?.on('data', (chunk) => {
      if (firstLineAt === 0) firstLineAt = Date.now();
      out += String(chunk);
    });
  });
}

/** A stand-in client with pg.Client's callback API and nothing else (what test doubles and APM wrappers look like). */
class MockClient extends EventEmitter {
  constructor(readonly config: unknown) {
    super();
  }
  connect(callback: (err: Error | null) => void): void {
    setImmediate(() => callback(null));
  }
  query(text: string, _values: unknown, callback: (err: Error | null, res: unknown) => void): void {
    setImmediate(() => callback(null, { rows: [{ mocked: text }] }));
  }
  end(callback?: () => void): void {
    setImmediate(() => {
      this.emit('end');
      callback?.();
    });
  }
}

/** A pg.Client subclass whose connect accepts only a callback, as pg-pool always calls it. */
class CallbackOnlyClient extends pg.Client {
  // biome-ignore lint/suspicious/noExplicitAny: pg's own callback type
  override connect(callback?: any): any {
    if (typeof callback !== 'function') throw new TypeError('this client only connects with a callback');
    return super.connect(callback);
  }
}

describe('pg.Pool contract, the same test against pg.Pool and @pgha/client Pool', () => {
  let env: TestEnv;
  const pools: pg.Pool[] = [];

  beforeAll(async () => {
    env = await startEnv({ standbys: 1 });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => (p.ending ? undefined : p.end().catch(() => undefined))));
    term += 1;
    await env.publishLeader(env.pg.primary, term);
  });
  afterAll(async () => {
    await env?.stop();
  });
  let term = 1;

  const flavours: Flavour[] = [
    {
      name: 'pg.Pool',
      kind: 'pg',
      options(extra = {}) {
        const { etcd: _e, cluster: _c, keyRoot: _k, ...rest } = env.poolOptions();
        const pgOnly = Object.fromEntries(
          Object.entries(rest).filter(([key]) => !/Millis$/.test(key) || key === 'connectionTimeoutMillis'),
        );
        return { ...pgOnly, host: env.pg.primary.host, port: env.pg.primary.port, ...extra } as PoolOptions;
      },
      make(extra) {
        const p = new pg.Pool(this.options(extra));
        pools.push(p);
        return p;
      },
    },
    {
      name: '@pgha/client Pool',
      kind: 'pgha',
      options(extra = {}) {
        return env.poolOptions(extra as Partial<PoolOptions>);
      },
      make(extra) {
        const p = new Pool(this.options(extra));
        pools.push(p);
        return p;
      },
    },
  ];

  describe.each(flavours)('$name', (flavour) => {
    it('lets every query issued before end() on a fresh pool finish', async () => {
      // max 20: pg-pool serves no queued checkout once end() was called (a query queued
      // behind a full pool then never settles, in pg.Pool as well).
      const p = flavour.make({ max: 20 });
      const queries = Array.from({ length: 20 }, (_, i) => p.query('SELECT $1::int AS i', [i]));
      const settled = Promise.allSettled(queries);
      await p.end();
      const results = await settled;
      expect(
        results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)),
      ).toEqual([]);
      expect(results.map((r) => (r as PromiseFulfilledResult<pg.QueryResult>).value.rows[0].i)).toEqual(
        Array.from({ length: 20 }, (_, i) => i),
      );
      expect(p.ended).toBe(true);
    });

    it('lets a checked-out client finish its work after end()', async () => {
      const p = flavour.make();
      const client = await p.connect();
      const ended = p.end();
      expect((await client.query('SELECT 7 AS seven')).rows[0].seven).toBe(7);
      client.release();
      await ended;
      expect(p.ended).toBe(true);
    });

    it('accepts a Client option that is not a pg.Client subclass (a test double)', async () => {
      const p = flavour.make({ Client: MockClient as unknown as typeof pg.Client });
      const { rows } = await p.query('SELECT whatever');
      expect(rows).toEqual([{ mocked: 'SELECT whatever' }]);
      const client = await p.connect();
      expect(client).toBeInstanceOf(MockClient);
      client.release();
    });

    it('accepts a factory function as Client', async () => {
      const factory = function (this: unknown, config: pg.ClientConfig) {
        return new pg.Client(config);
      } as unknown as typeof pg.Client;
      const p = flavour.make({ Client: factory });
      const { rows } = await p.query<{ port: number }>('SELECT inet_server_port() AS port');
      expect(rows[0]!.port).toBe(env.pg.primary.port);
    });

    it('connects a pg.Client subclass whose connect takes only a callback', async () => {
      const p = flavour.make({ Client: CallbackOnlyClient });
      const { rows } = await p.query('SELECT 1 AS one');
      expect(rows[0].one).toBe(1);
    });

    it('answers a queued checkout exactly once when connectionTimeoutMillis passes (full pool)', async () => {
      const p = flavour.make({ max: 1, connectionTimeoutMillis: 1000 });
      const held = await p.connect();
      // Only pgha routes by the leader record: its next connection attempts fail
      // (a standby) and are retried until pg-pool's checkout timer answers.
      term += 1;
      await env.publishLeader(env.pg.standbys[0]!, term);
      if (flavour.kind === 'pgha') {
        await until('the standby to be the leader', () => (p as Pool).discovery.primary?.term === term);
      }
      const answers: Array<Error | undefined> = [];
      p.connect((err, client, done) => {
        answers.push(err);
        if (client) done();
      });
      // The checkout's timer runs from now; its connection attempts start only when the
      // held client goes, so the timer fires while they are being retried.
      await new Promise((r) => setTimeout(r, 500));
      held.release(new Error('destroy it, so the queued checkout opens a new connection'));
      await until('the checkout to be answered', () => answers.length > 0);
      // Every retry timer of that checkout has fired after the longest retry delay (1 s).
      await new Promise((r) => setTimeout(r, 1200));
      expect(answers.length).toBe(1);
      expect(p.waitingCount).toBe(0);
    });

    it('reports an exception thrown by a connect(cb) callback as uncaughtException', async () => {
      const run = await runChild(flavour, 'throw-in-connect-callback', {}, 20_000);
      expect(run.lines).toEqual(['uncaughtException thrown by the callback']);
    });

    it('lets the process exit once the pool is idle with allowExitOnIdle, without end()', async () => {
      const run = await runChild(flavour, 'idle', { allowExitOnIdle: true }, 20_000);
      expect(run.lines).toEqual(['queried 1']);
      expect(run.code).toBe(0);
      console.log(`${flavour.name}: allowExitOnIdle child exited ${run.exitAfterFirstLineMillis} ms after its query`);
    });

    it('lets the process exit after idleTimeoutMillis when the pool is never ended', async () => {
      const run = await runChild(flavour, 'idle', { idleTimeoutMillis: 300 }, 20_000);
      expect(run.lines).toEqual(['queried 1']);
      expect(run.code).toBe(0);
      console.log(`${flavour.name}: never-ended child exited ${run.exitAfterFirstLineMillis} ms after its query`);
    });

    it('keeps the process alive while a query is in flight', async () => {
      const run = await runChild(flavour, 'busy', { allowExitOnIdle: true }, 20_000);
      expect(run.lines).toEqual(['started', 'done 2']);
      expect(run.code).toBe(0);
    });
  });
});
