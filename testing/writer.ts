// A test writer that records every acknowledged write and the server that
// acknowledged it. One connection per member; each write goes to the member the
// writer currently targets (the etcd leader, or a pinned member), one every
// intervalMillis, never more than one in flight per connection.
import { clusterKeys, LeaderRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';

/** One acknowledged write. */
export interface Ack {
  readonly id: number;
  /** cluster_name of the server that acknowledged it. */
  readonly member: string;
  /** Wall-clock ms when the acknowledgement arrived. */
  readonly at: number;
  /** Wall-clock ms when the write was sent (an ack arriving after a fence was sent before it, or is a violation). */
  readonly sentAt?: number;
  /** WAL insert position right after the row (`pg_current_wal_insert_lsn()`), to measure lost bytes. */
  readonly lsn: string;
}

export interface WriterMember {
  readonly name: string;
  readonly connectionString: string;
}

export interface WriterOptions {
  readonly members: readonly WriterMember[];
  /** Follow the etcd leader record (cluster + etcd), or write to one member only. */
  readonly follow:
    | { readonly etcd: Etcd3; readonly cluster: string; readonly keyRoot?: string }
    | { readonly pinned: string };
  readonly intervalMillis?: number;
  readonly table?: string;
  /** Ids start here (so two writers never collide). */
  readonly firstId?: number;
}

export interface Writer {
  readonly acks: Ack[];
  /** Errors seen, by message (counted). */
  readonly errors: Map<string, number>;
  /** The member written to now (null before the first leader record is read). */
  target(): string | null;
  /** Resolves to the first ack at or after `since` by a member other than `notBy` (bounded). */
  firstAckAfter(since: number, notBy?: string): Ack | undefined;
  stop(): Promise<void>;
}

/** Creates the writers' table on the primary (idempotent). */
export async function createAckTable(connectionString: string, table = 'acks'): Promise<void> {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    await c.query(
      `CREATE TABLE IF NOT EXISTS ${table} (id bigint PRIMARY KEY, member text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    );
  } finally {
    await c.end();
  }
}

/** Starts writing at once; stop() waits for the write in flight. */
export function startWriter(options: WriterOptions): Writer {
  const table = options.table ?? 'acks';
  const interval = options.intervalMillis ?? 10;
  const acks: Ack[] = [];
  const errors = new Map<string, number>();
  const conns = new Map<string, pg.Client | null>();
  let nextId = options.firstId ?? 1;
  let stopped = false;
  let target: string | null = 'pinned' in options.follow ? options.follow.pinned : null;
  let watcher: { cancel(): Promise<void> } | null = null;

  const note = (error: unknown) => {
    const key = (error as Error).message.split('\n')[0]!.slice(0, 120);
    errors.set(key, (errors.get(key) ?? 0) + 1);
  };

  if (!('pinned' in options.follow)) {
    const follow = options.follow;
    const key = clusterKeys(follow.cluster, follow.keyRoot).leader;
    const apply = (text: string | null) => {
      if (text === null) return;
      try {
        const r = LeaderRecord.decode(text);
        if (r.writable) target = r.member;
      } catch (error) {
        note(error);
      }
    };
    // Read, then watch from the revision after the read: a record written between the
    // two is delivered by the watch, never missed (a watch created after the read
    // without a start revision would miss it, and the writer would follow a dead primary).
    void (async () => {
      try {
        const read = await follow.etcd.get(key).exec();
        apply(read.kvs[0]?.value.toString() ?? null);
        const w = await follow.etcd
          .watch()
          .key(key)
          .startRevision(String(Number(read.header.revision) + 1))
          .create();
        watcher = w;
        w.on('put', (kv) => apply(kv.value.toString()));
        w.on('error', note);
        if (stopped) void w.cancel();
      } catch (error) {
        note(error);
      }
    })();
  }

  const connection = async (name: string): Promise<pg.Client> => {
    const existing = conns.get(name);
    if (existing) return existing;
    const member = options.members.find((m) => m.name === name);
    if (member === undefined) throw new Error(`unknown member ${name}`);
    const c = new pg.Client({
      connectionString: member.connectionString,
      connectionTimeoutMillis: 1000,
      query_timeout: 2000,
    });
    c.on('error', () => conns.set(name, null));
    await c.connect();
    conns.set(name, c);
    return c;
  };

  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      const name = target;
      if (name !== null) {
        const id = nextId++;
        try {
          const c = await connection(name);
          const sentAt = Date.now();
          const { rows } = await c.query(
            `INSERT INTO ${table} (id, member) VALUES ($1, current_setting('cluster_name')) RETURNING member, pg_current_wal_insert_lsn()::text AS lsn`,
            [id],
          );
          acks.push({ id, member: rows[0].member, at: Date.now(), sentAt, lsn: rows[0].lsn });
        } catch (error) {
          note(error);
          const c = conns.get(name);
          conns.set(name, null);
          c?.end().catch(() => undefined);
        }
      }
      const wait = interval - (Date.now() - started);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  })();

  return {
    acks,
    errors,
    target: () => target,
    firstAckAfter(since: number, notBy?: string) {
      return acks.find((a) => a.at >= since && (notBy === undefined || a.member !== notBy));
    },
    async stop() {
      stopped = true;
      await loop;
      await watcher?.cancel();
      await Promise.all([...conns.values()].map((c) => c?.end().catch(() => undefined)));
    },
  };
}

/** Ids of `acks` missing from `table` on the server at `connectionString`. */
export async function missingAcks(
  connectionString: string,
  acks: ReadonlyArray<Pick<Ack, 'id'>>,
  table = 'acks',
): Promise<number[]> {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    const { rows } = await c.query(`SELECT id FROM ${table} WHERE id = ANY($1::bigint[])`, [acks.map((a) => a.id)]);
    const present = new Set(rows.map((r) => Number(r.id)));
    return acks.map((a) => a.id).filter((id) => !present.has(id));
  } finally {
    await c.end();
  }
}

/** Parses a `X/Y` LSN into a byte position. */
export function lsnBytes(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/**
 * Where timeline `timeline` branched off its parent, read from its history file on
 * the server at `connectionString` (the new primary after a promotion): WAL the old
 * primary wrote past this point is not on the new timeline.
 */
export async function switchPoint(connectionString: string, timeline: number): Promise<bigint> {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    const file = `pg_wal/${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
    const { rows } = await c.query('SELECT pg_read_file($1) AS text', [file]);
    const lines = (rows[0].text as string).split('\n').filter((l) => /^\d+\s/.test(l));
    return lsnBytes(lines.at(-1)!.split(/\s+/)[1]!);
  } finally {
    await c.end();
  }
}

/**
 * WAL bytes `member` acknowledged past `switchpoint`: from the furthest LSN of the
 * writes it acknowledged in `acks` (0 when none is past it).
 */
export function bytesPast(acks: readonly Ack[], member: string, switchpoint: bigint): bigint {
  let furthest = 0n;
  for (const a of acks) if (a.member === member && lsnBytes(a.lsn) > furthest) furthest = lsnBytes(a.lsn);
  return furthest > switchpoint ? furthest - switchpoint : 0n;
}
