// Test support: a real PostgreSQL primary and streaming standbys on loopback, in a
// fresh temporary directory, run as the unprivileged OS user when the tests run as
// root. Never a fake. Every process started here is stopped by PID in stop().
import type { ChildProcess } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as PgModule from 'pg';
import { type OsUser, postgresOsUser } from '../packages/controller/src/adapters/os-user.js';
import { findFreePort } from '../packages/controller/src/adapters/ports.js';
import { findPostgresBinaries, type PostgresBinaries } from '../packages/controller/src/adapters/prerequisites.js';
import { runTool, spawnOwned, stopChild } from '../packages/controller/src/adapters/processes.js';

// pg is a dependency of the packages, not of the workspace root: load it from @pgha/client.
const pg = createRequire(new URL('../packages/client/package.json', import.meta.url))('pg') as typeof PgModule;
type ClientConfig = PgModule.ClientConfig;
type QueryResultRow = PgModule.QueryResultRow;

/** The superuser every test server has; its password authenticates with SCRAM on 127.0.0.1. */
export const testUser = 'postgres';
/** The password of {@link testUser}. */
export const testPassword = 'pgha-test-password';

/** One running postgres server of a test cluster. */
export interface TestServer {
  readonly name: string;
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly dataDir: string;
  /** The postmaster's PID while it runs, else null. */
  readonly pid: number | null;
  /** Connection settings for pg (user, password, host, port, database). */
  readonly connection: ClientConfig;
  /** Runs one statement on a fresh connection and returns its rows. */
  query<R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]): Promise<R[]>;
  /** Whether the server is in recovery (a standby). */
  isInRecovery(): Promise<boolean>;
  /** `pg_promote()` and wait until the server accepts writes. */
  promote(): Promise<void>;
  /** Fast shutdown (SIGINT), then SIGKILL after the grace period. */
  stop(): Promise<void>;
  /** SIGKILL the postmaster (a crash). */
  kill(): Promise<void>;
  /** Starts the server again after stop() or kill(). */
  start(): Promise<void>;
}

/** A primary and its standbys; `stop()` stops every server and removes the directory. */
export interface TestCluster {
  readonly dir: string;
  readonly binaries: PostgresBinaries;
  readonly primary: TestServer;
  readonly standbys: readonly TestServer[];
  /** Adds a streaming standby cloned from `from` (default: the primary) with pg_basebackup -R. */
  addStandby(from?: TestServer): Promise<TestServer>;
  stop(): Promise<void>;
}

/** Options of {@link startTestCluster}. */
export interface TestClusterOptions {
  /** How many streaming standbys to clone from the primary (default 1). */
  readonly standbys?: number;
  /** Extra postgresql.conf lines for every server. */
  readonly settings?: Readonly<Record<string, string | number>>;
  /**
   * Authentication on 127.0.0.1: `scram-sha-256` (default) or `trust` (benchmarks
   * that open many connections, where SCRAM's deliberate cost would dominate).
   */
  readonly auth?: 'scram-sha-256' | 'trust';
}

async function waitFor<T>(what: string, deadlineMillis: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + deadlineMillis;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${deadlineMillis} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function chownTree(path: string, user: OsUser | null): void {
  if (user !== null) chownSync(path, user.uid, user.gid);
}

/**
 * Starts a primary (initdb with SCRAM auth on 127.0.0.1, no Unix socket) and
 * `standbys` streaming standbys cloned from it, each on a free port, in a fresh
 * directory under the system temp dir. Call `stop()` in an `afterAll`.
 */
export async function startTestCluster(options: TestClusterOptions = {}): Promise<TestCluster> {
  const binaries = await findPostgresBinaries();
  const user = postgresOsUser();
  const dir = mkdtempSync(join(tmpdir(), 'pgha-pg-'));
  chownTree(dir, user);
  const servers: ServerImpl[] = [];
  const auth = options.auth ?? 'scram-sha-256';
  const env = { ...process.env, PGPASSWORD: testPassword, LC_ALL: 'C', LANG: 'C' };
  const settings: Record<string, string | number> = {
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: "''",
    wal_level: 'replica',
    max_wal_senders: 10,
    max_replication_slots: 10,
    hot_standby: 'on',
    wal_keep_size: "'64MB'",
    // Test speed only: a crash loses nothing we keep.
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    shared_buffers: "'32MB'",
    max_connections: 200,
    logging_collector: 'off',
    log_min_messages: 'warning',
    ...options.settings,
  };

  const makeServer = (name: string, port: number): ServerImpl => {
    const server = new ServerImpl(name, join(dir, name), port, binaries, user, env);
    servers.push(server);
    return server;
  };

  try {
    const primary = makeServer('primary', await findFreePort());
    const pwfile = join(dir, 'pwfile');
    writeFileSync(pwfile, `${testPassword}\n`, { mode: 0o600 });
    chownTree(pwfile, user);
    await runTool(
      binaries.path('initdb'),
      [
        '-D',
        primary.dataDir,
        '-U',
        testUser,
        '--pwfile',
        pwfile,
        '--auth-host=scram-sha-256',
        '--auth-local=reject',
        '-E',
        'UTF8',
        '--no-sync',
      ],
      { user, env, timeoutMillis: 60_000, cwd: dir },
    );
    rmSync(pwfile);
    writeFileSync(
      join(primary.dataDir, 'postgresql.conf'),
      `${Object.entries(settings)
        .map(([k, v]) => `${k} = ${v}`)
        .join('\n')}\n`,
      { flag: 'a' },
    );
    writeFileSync(
      join(primary.dataDir, 'pg_hba.conf'),
      `host all all 127.0.0.1/32 ${auth}\nhost replication all 127.0.0.1/32 ${auth}\n`,
    );
    await primary.start();

    const addStandby = async (from: TestServer = primary): Promise<TestServer> => {
      const standby = makeServer(`standby${servers.length}`, await findFreePort());
      mkdirSync(standby.dataDir, { mode: 0o700 });
      chownTree(standby.dataDir, user);
      await runTool(
        binaries.path('pg_basebackup'),
        [
          '-h',
          '127.0.0.1',
          '-p',
          String(from.port),
          '-U',
          testUser,
          '-D',
          standby.dataDir,
          '-R',
          '-X',
          'stream',
          '-c',
          'fast',
          '--no-sync',
        ],
        { user, env, timeoutMillis: 60_000, cwd: dir },
      );
      await standby.start();
      return standby;
    };
    const standbys: TestServer[] = [];
    for (let i = 0; i < (options.standbys ?? 1); i++) standbys.push(await addStandby());

    return {
      dir,
      binaries,
      primary,
      standbys,
      addStandby,
      async stop() {
        await Promise.all(servers.map((s) => s.stop()));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

class ServerImpl implements TestServer {
  readonly host = '127.0.0.1' as const;
  private child: ChildProcess | null = null;

  constructor(
    readonly name: string,
    readonly dataDir: string,
    readonly port: number,
    private readonly binaries: PostgresBinaries,
    private readonly user: OsUser | null,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get connection(): ClientConfig {
    return { host: this.host, port: this.port, user: testUser, password: testPassword, database: 'postgres' };
  }

  async query<R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
    const client = new pg.Client({ ...this.connection, connectionTimeoutMillis: 5000 });
    client.on('error', () => undefined);
    await client.connect();
    try {
      return (await client.query<R>(text, values)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async isInRecovery(): Promise<boolean> {
    const rows = await this.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
    return rows[0]!.r;
  }

  async start(): Promise<void> {
    if (this.child !== null) throw new Error(`${this.name} already runs (PID ${this.child.pid})`);
    const child = spawnOwned(this.binaries.path('postgres'), ['-D', this.dataDir, '-c', `port=${this.port}`], {
      user: this.user,
      env: this.env,
      cwd: this.dataDir,
      logFile: join(this.dataDir, '..', `${this.name}.log`),
    });
    this.child = child;
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    await waitFor(`${this.name} on port ${this.port} to accept connections`, 30_000, async () => {
      if (this.child !== child) throw new Error(`${this.name} exited; see ${this.name}.log`);
      await this.query('SELECT 1');
      return true;
    });
  }

  async promote(): Promise<void> {
    await this.query('SELECT pg_promote(true, 30)');
    await waitFor(`${this.name} to leave recovery`, 30_000, async () =>
      (await this.isInRecovery()) ? undefined : true,
    );
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    await stopChild(child, 'SIGINT', 15_000);
    this.child = null;
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    await stopChild(child, 'SIGKILL', 5_000);
    this.child = null;
  }
}
