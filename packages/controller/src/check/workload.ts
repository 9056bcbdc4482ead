/**
 * `pgha check`'s writers. Two paths insert uniquely identified rows (writer, seq):
 *
 * - Pool writers, through `@pgha/client`'s Pool (the product path), which follows
 *   the leader record and must only ever reach the current primary;
 * - one direct writer per member, a plain pg.Client pinned to that member
 *   (reconnecting after any error), which every non-primary must refuse.
 *
 * Each writer has at most one write in flight and paces itself to its share of the
 * rate. Every acknowledgement is recorded with the member that acknowledged it (the
 * RETURNING of cluster_name), the term the writer believed at send time, and send and
 * acknowledgement times on the monotonic clock; every failure by its type.
 */

import { type EtcdOptions, Pool } from '@pgha/client';
import { isPghaError } from '@pgha/core';
import pg from 'pg';
import type { AckEntry, WriteSource } from './analysis.js';

/** The table the writers insert into (created by {@link createCheckTable}). */
export const checkTable = 'pgha_check';

/** One failed write. */
export interface WriteFailure {
  readonly writer: string;
  readonly source: WriteSource;
  /** The member a direct writer is pinned to; null for the Pool. */
  readonly member: string | null;
  readonly type: string;
  readonly at: number;
}

/** A member as the writers reach it. */
export interface WorkloadMember {
  readonly name: string;
  readonly connectionString: string;
}

/** Options of {@link startWorkload}. */
export interface WorkloadOptions {
  /** How the Pool reaches etcd (`poolEtcdOptions` of the check's connection). */
  readonly etcd: EtcdOptions;
  readonly cluster: string;
  readonly keyRoot?: string;
  readonly members: readonly WorkloadMember[];
  readonly user: string;
  readonly password: string;
  readonly database: string;
  /** Writes per second in total. */
  readonly rate: number;
  /** The term the checker itself last saw (what a direct writer believes). */
  readonly observedTerm: () => number;
  readonly now: () => number;
}

/** The running writers. */
export interface Workload {
  readonly acks: AckEntry[];
  readonly failures: WriteFailure[];
  /** Stops every writer (waiting for the writes in flight, bounded) and closes the Pool. */
  stop(): Promise<void>;
}

/**
 * What kind of failure `error` is: a pgha client error's code (`no-primary`,
 * `outcome-unknown`...), a SQLSTATE (`25006 read-only`), a network code
 * (`ECONNREFUSED`), `timeout`, `connection-ended`, or `other`.
 */
export function failureType(error: unknown): string {
  if (isPghaError(error)) return error.code;
  const e = error as { code?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : String(error);
  if (/^[0-9A-Z]{5}$/.test(code)) {
    const names: Record<string, string> = {
      '25006': 'read-only',
      '57P01': 'admin-shutdown',
      '57P02': 'crash-shutdown',
      '57P03': 'cannot-connect-now',
      '53300': 'too-many-connections',
      '23505': 'duplicate-key',
    };
    return `${code} ${names[code] ?? 'sql-error'}`;
  }
  if (code !== '') return code;
  if (/timeout/i.test(message)) return 'timeout';
  if (/terminated|ended|closed|not queryable/i.test(message)) return 'connection-ended';
  return 'other';
}

/** Creates the writers' table on `connectionString` (the primary), empty. */
export async function createCheckTable(connectionString: string): Promise<void> {
  const c = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    await c.query(
      `CREATE TABLE IF NOT EXISTS ${checkTable} (writer text NOT NULL, seq bigint NOT NULL, member text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (writer, seq))`,
    );
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** `writer:seq` of every row of the table on `connectionString`. */
export async function readCheckRows(connectionString: string): Promise<Set<string>> {
  const c = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    const { rows } = await c.query(`SELECT writer, seq FROM ${checkTable}`);
    return new Set(rows.map((r) => `${r.writer}:${r.seq}`));
  } finally {
    await c.end().catch(() => undefined);
  }
}

// The member (cluster_name) and the timeline it writes on: the first 8 hex digits of
// the current WAL file's name (a primary only; a standby refuses the INSERT first).
const insert = `INSERT INTO ${checkTable} (writer, seq, member) VALUES ($1, $2, current_setting('cluster_name')) RETURNING member, pg_walfile_name(pg_current_wal_lsn()) AS walfile`;

const timelineOf = (walfile: unknown): number => Number.parseInt(String(walfile).slice(0, 8), 16);

/** How many Pool writers share the Pool's part of the rate (one connection each). */
const poolWriters = 4;

/**
 * Starts the writers at once. The direct writers together take a tenth of the rate
 * (at least one write per second per member), the Pool writers the rest.
 */
export function startWorkload(options: WorkloadOptions): Workload {
  const acks: AckEntry[] = [];
  const failures: WriteFailure[] = [];
  let stopped = false;
  const sleeps = new Set<() => void>();
  const sleep = (millis: number) =>
    new Promise<void>((resolve) => {
      if (stopped || millis <= 0) return resolve();
      const done = () => {
        clearTimeout(timer);
        sleeps.delete(done);
        resolve();
      };
      const timer = setTimeout(done, millis);
      sleeps.add(done);
    });

  const perMember = Math.max(1, Math.round((options.rate * 0.1) / options.members.length));
  const poolRate = Math.max(1, options.rate - perMember * options.members.length);

  const pool = new Pool({
    etcd: options.etcd,
    cluster: options.cluster,
    ...(options.keyRoot === undefined ? {} : { keyRoot: options.keyRoot }),
    user: options.user,
    password: options.password,
    database: options.database,
    max: poolWriters,
    // A checkout waits out a failover, but not so long that a writer sits silent
    // through a whole fault without recording why.
    primaryWaitTimeoutMillis: 10_000,
    connectionTimeoutMillis: 10_000,
    query_timeout: 5000,
    drainTimeoutMillis: 2000,
  });
  pool.on('error', () => undefined); // idle connections to a dying server report here

  /** One insert on `client`, its acknowledgement recorded with the member and timeline that gave it. */
  const insertAndRecord = async (
    client: pg.ClientBase,
    writer: string,
    seq: number,
    source: WriteSource,
    term: number,
  ): Promise<void> => {
    const sentAt = options.now();
    const { rows } = await client.query(insert, [writer, seq]);
    const ackAt = options.now();
    acks.push({
      writer,
      seq,
      source,
      member: String(rows[0].member),
      term,
      timeline: timelineOf(rows[0].walfile),
      sentAt,
      ackAt,
    });
  };

  const poolWriter = async (index: number) => {
    const writer = `pool-${index}`;
    const interval = (1000 * poolWriters) / poolRate;
    // Spread the writers over the interval.
    await sleep((interval * index) / poolWriters);
    let seq = 0;
    while (!stopped) {
      const started = options.now();
      seq += 1;
      let client: pg.PoolClient | null = null;
      try {
        client = await pool.connect();
        // The term believed when the statement goes out: after the checkout, which
        // may have waited out a failover.
        await insertAndRecord(client, writer, seq, 'pool', pool.discovery.term);
        client.release();
      } catch (error) {
        failures.push({ writer, source: 'pool', member: null, type: failureType(error), at: options.now() });
        try {
          client?.release(error as Error);
        } catch {
          /* already released */
        }
      }
      await sleep(interval - (options.now() - started));
    }
  };

  const directWriter = async (member: WorkloadMember, index: number) => {
    const writer = `direct-${member.name}`;
    const interval = 1000 / perMember;
    await sleep((interval * index) / options.members.length);
    let client: pg.Client | null = null;
    let seq = 0;
    while (!stopped) {
      const started = options.now();
      seq += 1;
      try {
        if (client === null) {
          const c = new pg.Client({
            connectionString: member.connectionString,
            connectionTimeoutMillis: 1000,
            query_timeout: 2000,
          });
          c.on('error', () => {
            if (client === c) client = null;
          });
          client = c;
          await c.connect();
        }
        await insertAndRecord(client, writer, seq, 'direct', options.observedTerm());
      } catch (error) {
        const type = failureType(error);
        failures.push({ writer, source: 'direct', member: member.name, type, at: options.now() });
        // A refusal (read-only) keeps the session; anything else reconnects.
        if (!type.startsWith('25006')) {
          const c = client;
          client = null;
          c?.end().catch(() => undefined);
        }
      }
      await sleep(interval - (options.now() - started));
    }
    await (client as pg.Client | null)?.end().catch(() => undefined);
  };

  const loops = [
    ...Array.from({ length: poolWriters }, (_, i) => poolWriter(i)),
    ...options.members.map((m, i) => directWriter(m, i)),
  ];

  return {
    acks,
    failures,
    async stop() {
      stopped = true;
      for (const wake of [...sleeps]) wake();
      // A write in flight is bounded by its query/connection timeouts; do not wait longer.
      await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 12_000).unref())]);
      await Promise.race([pool.end().catch(() => undefined), new Promise((r) => setTimeout(r, 5000).unref())]);
    },
  };
}
