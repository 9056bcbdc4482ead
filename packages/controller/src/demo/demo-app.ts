/**
 * `pgha demo`'s example app: a few callers, each inserting numbered rows in a loop
 * through `@pgha/client`'s Pool, as an application would. Each row records the port
 * of the server that took it (`inet_server_port()`) and the term the Pool believed;
 * each acknowledgement and each failure (by error class) is recorded for the report.
 */
import { Pool, type PrimaryChangedEvent } from '@pgha/client';
import { isPghaError } from '@pgha/core';
import pg from 'pg';
import { failureType } from '../check/workload.js';
import type { DemoAck } from './demo-report.js';

/** The table the app writes to. */
export const demoTable = 'pgha_demo';

/** Options of {@link startDemoApp}. */
export interface DemoAppOptions {
  readonly etcdEndpoints: readonly string[];
  readonly cluster: string;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  /** How many callers write concurrently. */
  readonly callers: number;
  /** Pause between one caller's writes. */
  readonly pauseMillis: number;
  readonly now: () => number;
  /** Each primary the Pool moves to (its `primary-changed` event). */
  readonly onPrimaryChanged: (event: PrimaryChangedEvent, at: number) => void;
  /** The Pool saw the leader record go (its `no-primary` event). */
  readonly onNoPrimary: (term: number, at: number) => void;
}

/** The running app. */
export interface DemoApp {
  readonly acks: DemoAck[];
  /** Failed writes by error class name (`PrimaryChangedError`, `DatabaseError 57P01`...). */
  readonly errors: Record<string, number>;
  /** Stops the callers (waiting for the writes in flight, bounded) and ends the Pool. */
  stop(): Promise<void>;
}

/** Creates the app's table on `connectionString` (the primary). */
export async function createDemoTable(connectionString: string): Promise<void> {
  const c = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    await c.query(
      `CREATE TABLE IF NOT EXISTS ${demoTable} (caller int NOT NULL, seq int NOT NULL, port int NOT NULL, term int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (caller, seq))`,
    );
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** `caller:seq` of every row on `connectionString`. */
export async function readDemoRows(connectionString: string): Promise<Set<string>> {
  const c = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    const { rows } = await c.query(`SELECT caller, seq FROM ${demoTable}`);
    return new Set(rows.map((r) => `${r.caller}:${r.seq}`));
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** The name a failure is counted under: the pgha error's class, else pg's error class and SQLSTATE or code. */
function errorName(error: unknown): string {
  if (isPghaError(error)) return error.constructor.name;
  const name = error instanceof Error ? error.constructor.name : 'Error';
  return `${name} ${failureType(error)}`;
}

/** Starts the callers at once. */
export function startDemoApp(options: DemoAppOptions): DemoApp {
  const acks: DemoAck[] = [];
  const errors: Record<string, number> = {};
  let stopped = false;
  const pool = new Pool({
    etcd: { endpoints: [...options.etcdEndpoints] },
    cluster: options.cluster,
    user: options.user,
    password: options.password,
    database: options.database,
    max: options.callers,
    primaryWaitTimeoutMillis: 30_000,
    connectionTimeoutMillis: 10_000,
    query_timeout: 5000,
    application_name: 'pgha-demo',
  });
  pool.on('error', () => undefined); // idle connections to the dying server report here
  pool.on('primary-changed', (e) => options.onPrimaryChanged(e, options.now()));
  pool.on('no-primary', (e) => options.onNoPrimary(e.term, options.now()));

  const caller = async (index: number) => {
    await new Promise((r) => setTimeout(r, (options.pauseMillis * index) / options.callers));
    let seq = 0;
    while (!stopped) {
      seq += 1;
      let client: pg.PoolClient | null = null;
      try {
        client = await pool.connect();
        // The term believed when the statement goes out: after the checkout, which may
        // have waited out the failover.
        const term = pool.discovery.term;
        const sentAt = options.now();
        const { rows } = await client.query(
          `INSERT INTO ${demoTable} (caller, seq, port, term) VALUES ($1, $2, inet_server_port(), $3) RETURNING port`,
          [index, seq, term],
        );
        acks.push({ caller: index, seq, port: Number(rows[0].port), term, sentAt, ackAt: options.now() });
        client.release();
      } catch (error) {
        const name = errorName(error);
        errors[name] = (errors[name] ?? 0) + 1;
        try {
          client?.release(error as Error);
        } catch {
          /* already released */
        }
      }
      if (!stopped) await new Promise((r) => setTimeout(r, options.pauseMillis));
    }
  };
  const loops = Array.from({ length: options.callers }, (_, i) => caller(i));
  return {
    acks,
    errors,
    async stop() {
      stopped = true;
      await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 12_000).unref())]);
      await Promise.race([pool.end().catch(() => undefined), new Promise((r) => setTimeout(r, 5000).unref())]);
    },
  };
}
