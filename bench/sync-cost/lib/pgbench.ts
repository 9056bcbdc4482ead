// Runs pgbench (from the PostgreSQL bin directory the benchmark found) against one
// member: N clients, each committing one INSERT per transaction for a fixed time,
// with a per-transaction log for the latency percentiles. The process is killed by
// PID on every exit path.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { postgresBinDir } from '../../failover/lib/postgres-bin.js';
import { bounded, isAlive, killAndWait, onExit, spawnDaemon } from '../../failover/lib/processes.js';
import { type PgbenchSummary, parsePgbenchLog, parsePgbenchSummary } from './stats.js';

/** The table every run inserts into. */
export const costTable = 'bench_sync_cost';
export const createCostTable = `CREATE TABLE IF NOT EXISTS ${costTable} (id bigserial PRIMARY KEY, client integer NOT NULL, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())`;

/** One transaction: one row, committed on its own (autocommit), so each waits for the commit's flush. */
const script = `INSERT INTO ${costTable} (client, payload) VALUES (:client_id, 'sync-cost');\n`;

/** libpq environment for a pg client config (a connection string or separate fields). */
export function libpqEnv(config: pg.ClientConfig): Record<string, string> {
  if (config.connectionString !== undefined) {
    const url = new URL(config.connectionString);
    return {
      PGHOST: url.hostname,
      PGPORT: url.port || '5432',
      PGUSER: decodeURIComponent(url.username),
      PGPASSWORD: decodeURIComponent(url.password),
      PGDATABASE: decodeURIComponent(url.pathname.slice(1)) || 'postgres',
    };
  }
  return {
    PGHOST: String(config.host ?? '127.0.0.1'),
    PGPORT: String(config.port ?? 5432),
    PGUSER: String(config.user ?? 'postgres'),
    PGPASSWORD: typeof config.password === 'string' ? config.password : '',
    PGDATABASE: String(config.database ?? 'postgres'),
  };
}

/** What one pgbench run produced. */
export interface PgbenchResult extends PgbenchSummary {
  readonly latenciesMillis: number[];
  readonly notCompleted: number;
}

/** The pgbench binary beside the PostgreSQL server the benchmark uses. */
export function pgbenchPath(): { path: string; version: string } {
  const bin = postgresBinDir();
  return { path: join(bin.dir, 'pgbench'), version: bin.version };
}

/**
 * Runs pgbench for `seconds` with `clients` connections (threads: one per core at
 * most) against `config`. Resolves with its summary and per-transaction latencies;
 * rejects when it fails or overruns its time by a minute (after killing it).
 */
export async function runPgbench(options: {
  config: pg.ClientConfig;
  clients: number;
  seconds: number;
}): Promise<PgbenchResult> {
  const dir = mkdtempSync('/tmp/bench-sync-cost-pgbench-');
  const scriptFile = join(dir, 'insert.sql');
  writeFileSync(scriptFile, script);
  const threads = Math.max(1, Math.min(options.clients, cpus().length));
  const args = [
    '--no-vacuum',
    '--protocol=prepared',
    `--file=${scriptFile}`,
    `--client=${options.clients}`,
    `--jobs=${threads}`,
    `--time=${options.seconds}`,
    '--log',
    `--log-prefix=${join(dir, 'txn')}`,
  ];
  const out = join(dir, 'pgbench.out');
  const child = spawnDaemon(pgbenchPath().path, args, {
    logFile: out,
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', ...libpqEnv(options.config) },
  });
  const pid = child.pid;
  const kill = async () => {
    if (pid !== undefined && isAlive(pid)) await killAndWait([pid], 'SIGKILL', 1000);
  };
  const unregister = onExit(kill);
  try {
    if (pid === undefined) throw new Error(`pgbench did not start (${pgbenchPath().path})`);
    const code = await bounded(
      `pgbench (${options.clients} clients, ${options.seconds} s) to finish`,
      new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c))),
      (options.seconds + 60) * 1000,
    );
    const stdout = readFileSync(out, 'utf8');
    if (code !== 0) throw new Error(`pgbench exited with ${code}: ${stdout.slice(-1500)}`);
    const summary = parsePgbenchSummary(stdout);
    const latenciesMillis: number[] = [];
    let notCompleted = 0;
    for (const file of readdirSync(dir).filter((f) => f.startsWith('txn.'))) {
      const parsed = parsePgbenchLog(readFileSync(join(dir, file), 'utf8'));
      for (const l of parsed.latenciesMillis) latenciesMillis.push(l);
      notCompleted += parsed.notCompleted;
    }
    return { ...summary, latenciesMillis, notCompleted };
  } finally {
    await kill();
    unregister();
    rmSync(dir, { recursive: true, force: true });
  }
}
