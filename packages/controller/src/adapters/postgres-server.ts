import type { ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import pg from 'pg';
import {
  conninfo,
  includeLine,
  renderHbaConfig,
  renderServerConfig,
  replicationUser,
  type ServerSettings,
  superUser,
  upstreamTls,
} from '../agent/postgres-config.js';
import { killPostmaster } from '../agent/watchdog-process.js';
import { syncFileSystem } from './file-system-sync.js';
import type { OsUser } from './os-user.js';
import type { PostgresBinaries } from './prerequisites.js';
import { exited, runTool, spawnOwned, stopChild } from './processes.js';

/** Writes a file owned by `user` (when pgha is root) with `mode`. */
export function writeOwnedFile(path: string, content: string, user: OsUser | null, mode = 0o600): void {
  writeFileSync(path, content, { mode });
  if (user !== null) chownSync(path, user.uid, user.gid);
}

/** Creates a directory owned by `user` with mode 0700. */
export function makeOwnedDir(path: string, user: OsUser | null): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if (user !== null) chownSync(path, user.uid, user.gid);
}

/**
 * Runs initdb into `dataDir` with data checksums, SCRAM authentication and the
 * given superuser password. Works in `<dataDir>.partial` and renames at the end,
 * so an interrupted initdb never leaves something that looks like a data directory.
 */
export async function initdb(
  bins: PostgresBinaries,
  dataDir: string,
  user: OsUser | null,
  superuserPassword: string,
): Promise<void> {
  const partial = `${dataDir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  makeOwnedDir(partial, user);
  const pwfile = join(partial, '..', `.pwfile-${process.pid}`);
  writeOwnedFile(pwfile, `${superuserPassword}\n`, user);
  try {
    await runTool(
      bins.path('initdb'),
      [
        '-D',
        partial,
        '-U',
        superUser,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--data-checksums',
        '-E',
        'UTF8',
        '--locale=C.UTF-8',
        '--no-instructions',
      ],
      { user, timeoutMillis: 180_000 },
    );
  } finally {
    rmSync(pwfile, { force: true });
  }
  renameSync(partial, dataDir);
}

/**
 * Takes a base backup of `source` into `dataDir` as a hot standby (WAL streamed
 * alongside so the copy is consistent). Also staged in `<dataDir>.partial`.
 */
export async function baseBackup(
  bins: PostgresBinaries,
  dataDir: string,
  user: OsUser | null,
  source: { host: string; port: number },
  passfile: string,
  onProgress?: (line: string) => void,
  sslRootCert: string | null = null,
  syncfs = false,
): Promise<void> {
  const partial = `${dataDir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  makeOwnedDir(partial, user);
  const { stderr } = await runTool(
    bins.path('pg_basebackup'),
    [
      '-D',
      partial,
      '-h',
      source.host,
      '-p',
      String(source.port),
      '-U',
      replicationUser,
      '-X',
      'stream',
      '-c',
      'fast',
      '--no-password',
      '-v',
      // With syncfs the copy is written back below, one call for its file system.
      ...(syncfs ? ['--no-sync'] : []),
    ],
    {
      user,
      timeoutMillis: 3_600_000,
      // The password comes from the passfile, TLS from the environment: neither is in argv.
      env: {
        ...process.env,
        PGPASSFILE: passfile,
        PGCONNECT_TIMEOUT: '10',
        ...(sslRootCert === null ? {} : libpqTlsEnv(sslRootCert)),
      },
    },
  );
  if (onProgress) for (const line of stderr.split('\n').filter((l) => l.trim() !== '')) onProgress(line);
  writeOwnedFile(join(partial, 'standby.signal'), '', user);
  // On disk before it is renamed into place: a copy that looks complete is complete.
  if (syncfs) await syncFileSystem(partial);
  renameSync(partial, dataDir);
}

/** {@link upstreamTls} as libpq's environment variables (for tools given no conninfo). */
function libpqTlsEnv(caFile: string): Record<string, string> {
  const tls = upstreamTls(caFile);
  return {
    PGSSLMODE: tls.sslmode!,
    PGSSLROOTCERT: tls.sslrootcert!,
    PGSSLCERT: tls.sslcert!,
    PGSSLKEY: tls.sslkey!,
  };
}

/**
 * Rewinds `dataDir` onto `source`'s timeline with pg_rewind (which first finishes
 * crash recovery of a data directory that was not shut down cleanly). The caller
 * has stopped postgres.
 */
export async function rewind(
  bins: PostgresBinaries,
  dataDir: string,
  user: OsUser | null,
  source: { host: string; port: number },
  passfile: string,
  sslRootCert: string | null = null,
  syncfs = false,
): Promise<void> {
  // No password here (pg_rewind's argv is visible in ps): it comes from the passfile.
  const conn = conninfo({
    host: source.host,
    port: source.port,
    user: superUser,
    dbname: 'postgres',
    passfile,
    connect_timeout: 5,
    ...upstreamTls(sslRootCert),
  });
  // pg_rewind finishes crash recovery in single-user mode first, which refuses to
  // run with standby.signal present (a fenced primary has one).
  const signal = join(dataDir, 'standby.signal');
  const hadSignal = existsSync(signal);
  rmSync(signal, { force: true });
  try {
    await runTool(
      bins.path('pg_rewind'),
      ['--target-pgdata', dataDir, '--source-server', conn, ...(syncfs ? ['--no-sync'] : [])],
      { user, timeoutMillis: 600_000, cwd: dataDir },
    );
    // On disk before the caller clears the needs-rewind flag and starts postgres on it.
    if (syncfs) await syncFileSystem(dataDir);
  } finally {
    if (hadSignal) writeOwnedFile(signal, '', user);
  }
}

/** Moves a data directory aside (keeping only the newest one moved) before a re-clone. */
export function moveAside(dataDir: string): void {
  const old = `${dataDir}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(dataDir)) renameSync(dataDir, old);
}

/** Makes a data directory pgha-managed: include pgha.conf, restrictive pg_hba.conf. */
export function writeServerFiles(
  dataDir: string,
  user: OsUser | null,
  settings: ServerSettings,
  allowedNetworks: readonly string[],
): void {
  const confPath = join(dataDir, 'postgresql.conf');
  const conf = existsSync(confPath) ? readFileSync(confPath, 'utf8') : '';
  if (!conf.includes(includeLine)) appendFileSync(confPath, `\n${includeLine}\n`);
  writeOwnedFile(join(dataDir, 'pgha.conf'), renderServerConfig(settings), user);
  writeOwnedFile(join(dataDir, 'pg_hba.conf'), renderHbaConfig(allowedNetworks, settings.ssl != null), user);
}

/** Whether the data directory is set up to start as a standby. */
export function isStandby(dataDir: string): boolean {
  return existsSync(join(dataDir, 'standby.signal'));
}

/** Makes the data directory start as a standby next time. */
export function markStandby(dataDir: string, user: OsUser | null): void {
  writeOwnedFile(join(dataDir, 'standby.signal'), '', user);
}

/** A postgres server process the agent started. */
export interface PostgresProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the postmaster has exited. */
  readonly exited: Promise<void>;
  /**
   * Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL. Resolves true
   * when the fast shutdown finished within the grace period (a clean shutdown, with
   * a shutdown checkpoint), false otherwise or when it had already exited.
   */
  stop(graceMillis?: number): Promise<boolean>;
  /**
   * SIGKILLs the postmaster and every process it started (each backend is a process
   * group of its own), so no backend can acknowledge another commit. The fence.
   */
  killGroup(): void;
}

/**
 * Starts the postmaster for `dataDir` as `user`, its output appended to `logFile`.
 * The postmaster dies with the agent (pdeathsig); see spawnOwned.
 */
export function startPostgres(
  bins: PostgresBinaries,
  dataDir: string,
  user: OsUser | null,
  logFile: string,
): PostgresProcess {
  // Its own process group (detached): the fence kills the group, and a terminal's
  // Ctrl-C reaches pgha, which shuts postgres down in order.
  const child = spawnOwned(bins.path('postgres'), ['-D', dataDir], { user, logFile, detached: true });
  if (child.pid === undefined) throw new PghaError('postgres-failed', `could not start ${bins.path('postgres')}`);
  const done = exited(child);
  return {
    pid: child.pid,
    child,
    exited: done,
    async stop(graceMillis = 30_000) {
      if (child.exitCode !== null || child.signalCode !== null) return false;
      child.kill('SIGINT');
      let timer: NodeJS.Timeout | undefined;
      const fast = await Promise.race([
        done.then(() => true),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), graceMillis);
        }),
      ]);
      clearTimeout(timer);
      if (!fast) await stopChild(child, 'SIGQUIT', 5000);
      return fast && child.exitCode === 0;
    },
    killGroup() {
      killPostmaster(child.pid!);
    },
  };
}

/** PIDs of living (not zombie) processes whose process group is `pgid`. Linux /proc. */
export function livingGroupMembers(pgid: number): number[] {
  const living: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return living;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the parenthesised command: state ppid pgrp ...
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') living.push(Number(entry));
    } catch {
      /* the process ended while we looked */
    }
  }
  return living;
}

/**
 * Waits until no process of a previous postmaster of `dataDir` lives (its
 * backends exit shortly after it dies), then removes a postmaster.pid left by a
 * killed postmaster that is only a zombie (where an init that reaps late keeps its
 * PID answering, postgres would refuse to start).
 *
 * @throws PghaError `conflict` when a live postmaster still runs there after `timeoutMillis`.
 */
export async function clearStaleLock(dataDir: string, timeoutMillis = 10_000): Promise<void> {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  const deadline = Date.now() + timeoutMillis;
  while (livingGroupMembers(pid).length > 0) {
    if (Date.now() > deadline) {
      throw new PghaError(
        'conflict',
        `a postmaster (pid ${pid}) or its backends still run in ${dataDir}; stop them first`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  rmSync(file, { force: true });
}

/** Connection settings for the agent's own superuser connection to its postgres. */
export interface LocalConnection {
  readonly host: string;
  readonly port: number;
  readonly password: string;
  /**
   * TLS: the CA (PEM text) the server's certificate must chain to. `verifyHost` also
   * requires the certificate to name `host` (every connection to another member); the
   * agent's loopback connection to its own postgres checks the chain only (its
   * certificate names the member's address, and loopback cannot be intercepted by
   * another host). Absent: no TLS.
   */
  readonly tls?: { readonly ca: string; readonly verifyHost: boolean } | null;
}

/**
 * Opens a superuser connection (short timeouts: the agent polls, it never waits
 * long). `queryTimeoutMillis` bounds each query on the client's own clock, so a
 * postgres that stopped answering (SIGSTOP, an I/O stall) cannot hang the caller;
 * the server-side statement_timeout alone would never fire then.
 */
export async function connectLocal(
  target: LocalConnection,
  timeoutMillis = 3000,
  queryTimeoutMillis = timeoutMillis + 1000,
): Promise<pg.Client> {
  const client = new pg.Client({
    host: target.host,
    port: target.port,
    user: superUser,
    password: target.password,
    database: 'postgres',
    connectionTimeoutMillis: timeoutMillis,
    statement_timeout: timeoutMillis,
    query_timeout: queryTimeoutMillis,
    application_name: 'pgha-agent',
    ...(target.tls == null
      ? {}
      : {
          ssl: {
            ca: target.tls.ca,
            rejectUnauthorized: true,
            ...(target.tls.verifyHost ? {} : { checkServerIdentity: () => undefined }),
          },
        }),
  });
  client.on('error', () => {
    /* a dropped agent connection is noticed by the next query */
  });
  await client.connect();
  return client;
}

/** The control file as pg_controldata prints it (C locale). */
export async function controlData(bins: PostgresBinaries, dataDir: string, user: OsUser | null): Promise<string> {
  const { stdout } = await runTool(bins.path('pg_controldata'), ['-D', dataDir], {
    user,
    env: { ...process.env, LC_ALL: 'C' },
  });
  return stdout;
}

/**
 * The location of the shutdown checkpoint of a data directory that a primary left
 * cleanly ("Database cluster state: shut down"), or null when its last stop was
 * not a clean primary shutdown. Read from the control file (pg_controldata).
 */
export async function readCheckpointLocation(
  bins: PostgresBinaries,
  dataDir: string,
  user: OsUser | null,
): Promise<string | null> {
  // The control file's head has kept one layout since PostgreSQL 9.x: system
  // identifier (8 bytes), pg_control_version (4), catalog version (4), state (4),
  // padding (4), time (8), then the latest checkpoint's location (8). Reading it
  // directly takes microseconds where running pg_controldata takes ~50 ms — time a
  // switchover's write pause pays for. pg_controldata remains the fallback.
  try {
    const head = readFileSync(join(dataDir, 'global', 'pg_control')).subarray(0, 40);
    const version = head.readUInt32LE(8);
    if (head.length === 40 && version >= 900 && version < 10_000) {
      const shutDown = head.readUInt32LE(16) === 1; // DB_SHUTDOWNED
      if (!shutDown) return null;
      const lsn = head.readBigUInt64LE(32);
      return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
    }
  } catch {
    /* fall back to pg_controldata */
  }
  const stdout = await controlData(bins, dataDir, user);
  if (!/^Database cluster state:\s+shut down$/m.test(stdout)) return null;
  return /^Latest checkpoint location:\s+([0-9A-F]+\/[0-9A-F]+)$/m.exec(stdout)?.[1] ?? null;
}

/** Reads the last `lines` lines of a log file, for error messages. */
export function logTail(path: string, lines = 8): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}
