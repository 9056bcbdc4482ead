// The writer: one INSERT every 10 ms into whichever member accepts writes, recording
// every acknowledged write with the member that acknowledged it.
//
// It holds one connection per member. Each tick tries the last member that
// acknowledged a write first, then the others in turn, and stops at the first that
// acknowledges. A replica answers at once with a read-only error; a dead member
// refuses the connection at once; a hung one costs at most the 1 s bound on
// connecting and on each query. So a tick lasts at most ~1 s per member, and the
// write that ends an outage is seen within one tick of the cluster accepting writes.
import pg from 'pg';
import { now, sleep } from './processes.js';
import type { TargetMember } from './target.js';

/** The table every trial writes into (its `trial` column keeps trials apart). */
export const writesTable = 'bench_failover_writes';
export const createWritesTable = `CREATE TABLE IF NOT EXISTS ${writesTable} (trial text NOT NULL, id integer NOT NULL, PRIMARY KEY (trial, id))`;

/** One acknowledged write. Times are {@link now} milliseconds. */
export interface Ack {
  readonly id: number;
  /** The member that acknowledged it (from inet_server_port() in RETURNING). */
  readonly member: string;
  readonly sentAt: number;
  readonly at: number;
  /** When the connection that carried it was established. */
  readonly connectedAt: number;
}

const intervalMillis = 10;
const connectTimeoutMillis = 1000;
const queryTimeoutMillis = 1000;
/** After a refused connection, leave that member alone this long (keeps a dead member from costing a fork storm). */
const reconnectBackoffMillis = 20;

interface Connection {
  client: pg.Client | null;
  connectedAt: number;
  lastFailure: number;
}

/** SQLSTATE classes after which the session is still usable (e.g. 25006 read-only transaction). */
function sessionSurvives(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return false;
  return !code.startsWith('08') && !code.startsWith('57');
}

export class Writer {
  readonly acks: Ack[] = [];
  failedTicks = 0;
  private readonly connections = new Map<string, Connection>();
  private readonly byPort = new Map<number, string>();
  private current: string;
  private seq = 0;
  private running: Promise<void> | null = null;
  private stopping = false;
  private readonly listeners = new Set<(ack: Ack) => void>();

  constructor(
    private readonly members: readonly TargetMember[],
    private readonly configOf: (m: TargetMember) => pg.ClientConfig,
    private readonly trial: string,
    firstTry: TargetMember,
  ) {
    for (const m of members) {
      this.connections.set(m.name, { client: null, connectedAt: 0, lastFailure: -Infinity });
      this.byPort.set(m.port, m.name);
    }
    this.current = firstTry.name;
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Stops writing and closes every connection. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.running;
    await Promise.all(
      [...this.connections.values()].map(async (c) => {
        const client = c.client;
        c.client = null;
        await client?.end().catch(() => undefined);
      }),
    );
  }

  /** Resolves with the first ack (already recorded or future) that satisfies `predicate`, or rejects after `timeoutMillis`. */
  waitForAck(what: string, predicate: (ack: Ack) => boolean, timeoutMillis: number): Promise<Ack> {
    const found = this.acks.find(predicate);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const listener = (ack: Ack) => {
        if (!predicate(ack)) return;
        this.listeners.delete(listener);
        clearTimeout(timer);
        resolve(ack);
      };
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`timed out after ${(timeoutMillis / 1000).toFixed(0)} s waiting for ${what}`));
      }, timeoutMillis);
      this.listeners.add(listener);
    });
  }

  private async loop(): Promise<void> {
    let next = now();
    while (!this.stopping) {
      await this.tick();
      next += intervalMillis;
      const wait = next - now();
      // Behind schedule (a slow tick): write again at once, but never in a burst.
      if (wait > 0) await sleep(wait);
      else next = now();
    }
  }

  private async tick(): Promise<void> {
    const order = [this.current, ...this.members.map((m) => m.name).filter((n) => n !== this.current)];
    for (const name of order) {
      if (this.stopping) return;
      const ack = await this.tryWrite(name);
      if (ack !== null) {
        this.current = name;
        this.acks.push(ack);
        for (const l of [...this.listeners]) l(ack);
        return;
      }
    }
    this.failedTicks++;
  }

  private async tryWrite(name: string): Promise<Ack | null> {
    const conn = this.connections.get(name)!;
    if (conn.client === null) {
      if (now() - conn.lastFailure < reconnectBackoffMillis) return null;
      const member = this.members.find((m) => m.name === name)!;
      const client = new pg.Client({
        ...this.configOf(member),
        connectionTimeoutMillis: connectTimeoutMillis,
        query_timeout: queryTimeoutMillis,
        application_name: 'bench-writer',
      });
      // A connection that breaks while idle is dropped here; the next write reconnects.
      client.on('error', () => {
        if (conn.client === client) conn.client = null;
      });
      try {
        await client.connect();
      } catch {
        conn.lastFailure = now();
        client.end().catch(() => undefined);
        return null;
      }
      conn.client = client;
      conn.connectedAt = now();
    }
    const client = conn.client;
    const id = ++this.seq;
    const sentAt = now();
    try {
      const result = await client.query<{ port: number }>(
        `INSERT INTO ${writesTable} (trial, id) VALUES ($1, $2) RETURNING inet_server_port() AS port`,
        [this.trial, id],
      );
      const at = now();
      const port = Number(result.rows[0]?.port);
      return { id, member: this.byPort.get(port) ?? name, sentAt, at, connectedAt: conn.connectedAt };
    } catch (error) {
      if (!sessionSurvives(error)) {
        if (conn.client === client) conn.client = null;
        conn.lastFailure = now();
        client.end().catch(() => undefined);
      }
      return null;
    }
  }
}
