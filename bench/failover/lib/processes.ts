// Processes the benchmark starts, and bounded waits. Every PID a target starts is
// registered here so that an exit by any path (done, error, Ctrl-C) can kill it.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  type Dirent,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { isAlive } from '../../../packages/controller/src/adapters/processes.js';

/** Milliseconds on a monotonic clock (immune to wall-clock steps during a trial). */
export const now = (): number => performance.now();

/** Resolves after `ms`; only for pacing, never to hope that something happened. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether a process with this PID exists: the controller's own probe. */
export { isAlive };

/** Sends `signal` to `pid`, ignoring a process that is already gone. */
export function signalPid(pid: number | null | undefined, signal: NodeJS.Signals): void {
  if (typeof pid !== 'number' || pid <= 0) return;
  try {
    process.kill(pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/**
 * Polls `check` until it returns a value other than undefined/false, or throws after
 * `timeoutMillis` naming `what` and the last value or error seen.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  timeoutMillis: number,
  intervalMillis = 50,
): Promise<T> {
  const deadline = now() + timeoutMillis;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false && value !== null) return value as T;
      last = value;
    } catch (error) {
      last = error;
    }
    if (now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${(timeoutMillis / 1000).toFixed(0)} s waiting for ${what} (last: ${detail})`);
    }
    await sleep(intervalMillis);
  }
}

/** Rejects with a timeout naming `what` if `promise` has not settled after `timeoutMillis`. */
export async function bounded<T>(what: string, promise: Promise<T>, timeoutMillis: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${(timeoutMillis / 1000).toFixed(0)} s: ${what}`)),
      timeoutMillis,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until every PID has exited, SIGKILLing the survivors after `graceMillis`. */
export async function killAndWait(pids: readonly number[], signal: NodeJS.Signals, graceMillis: number): Promise<void> {
  for (const pid of pids) signalPid(pid, signal);
  const deadline = now() + graceMillis;
  while (pids.some(isAlive) && now() < deadline) await sleep(50);
  for (const pid of pids.filter(isAlive)) signalPid(pid, 'SIGKILL');
  const hardDeadline = now() + 5000;
  while (pids.some(isAlive) && now() < hardDeadline) await sleep(50);
}

/** An unprivileged OS account (postgres refuses to run as root). */
export interface OsUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/** The `postgres` account when we are root (override with BENCH_OS_USER), else null (run as ourselves). */
export function postgresOsUser(): OsUser | null {
  if (process.getuid?.() !== 0) return null;
  const name = process.env.BENCH_OS_USER || 'postgres';
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  if (!Number.isInteger(uid) || uid === 0) throw new Error(`OS user ${name} must be an existing unprivileged account`);
  return { name, uid, gid };
}

let setpriv: string | null | undefined;

/**
 * Starts a long-running daemon with stdout and stderr appended to `logFile`.
 * Through `setpriv --pdeathsig KILL` when available, so the daemon dies with the
 * benchmark even if the benchmark is killed -9 (its own children, like a
 * postmaster, do not: the exit handlers kill those by PID).
 */
export function spawnDaemon(
  command: string,
  args: readonly string[],
  options: { logFile: string; user?: OsUser | null; env?: NodeJS.ProcessEnv; cwd?: string },
): ChildProcess {
  if (setpriv === undefined) {
    setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;
  }
  const [file, argv] = setpriv === null ? [command, args] : [setpriv, ['--pdeathsig', 'KILL', '--', command, ...args]];
  const fd = openSync(options.logFile, 'a');
  try {
    const child = spawn(file, argv, {
      stdio: ['ignore', fd, fd],
      env: options.env ?? process.env,
      cwd: options.cwd,
      // Own process group: a terminal's Ctrl-C reaches only the benchmark, which
      // then tears everything down in order.
      detached: true,
      ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
    });
    child.on('error', () => undefined);
    return child;
  } finally {
    closeSync(fd);
  }
}

/** The postmaster PID recorded in `dataDir`/postmaster.pid, or null. */
export function postmasterPid(dataDir: string): number | null {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

type Cleanup = () => Promise<void>;
const cleanups = new Set<Cleanup>();

/** Registers `fn` to run on exit by any path; returns a function that unregisters it. */
export function onExit(fn: Cleanup): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Runs every registered cleanup (each bounded), newest first. */
export async function runCleanups(): Promise<void> {
  const list = [...cleanups].reverse();
  cleanups.clear();
  for (const fn of list) {
    try {
      await bounded('cleanup', fn(), 90_000);
    } catch (error) {
      process.stderr.write(`cleanup failed: ${(error as Error).message}\n`);
    }
  }
}

/**
 * PIDs of processes whose command line mentions `path` (a run's own temporary
 * directory), so a teardown can find what a daemon started and left behind
 * (a postmaster, pg_rewind, pg_basebackup) without matching on any program name.
 */
export function pidsMentioning(path: string): number[] {
  const found: number[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return found;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(path)) found.push(pid);
    } catch {
      // gone already
    }
  }
  return found;
}

/**
 * Copies every `*.log` file under `from` (keeping relative paths) into `to`, so a
 * failed trial's logs outlive the teardown that removes its directory.
 */
export function keepLogs(from: string, to: string): number {
  let copied = 0;
  const walk = (dir: string, rel: string) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path, join(rel, e.name));
      else if (e.isFile() && (e.name.endsWith('.log') || /^postgresql-.*\.(log|csv)$/.test(e.name))) {
        mkdirSync(join(to, rel), { recursive: true });
        copyFileSync(path, join(to, rel, e.name));
        copied++;
      }
    }
  };
  walk(from, '');
  return copied;
}

/**
 * Runs a benchmark's `main` as the process: its exit code, or 1 on an error or an
 * unhandled rejection, 130 on SIGINT/SIGTERM/SIGHUP; every process it started is
 * stopped ({@link runCleanups}) before the process exits, once.
 */
export function runBenchmark(main: () => Promise<number>, log: (line: string) => void): void {
  let exiting = false;
  const exit = async (code: number): Promise<never> => {
    if (!exiting) {
      exiting = true;
      await runCleanups();
    }
    process.exit(code);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping every process the benchmark started`);
      void exit(130);
    });
  }
  process.on('unhandledRejection', (error) => {
    log(`unhandled: ${(error as Error)?.stack ?? error}`);
    void exit(1);
  });
  main().then(
    (code) => exit(code),
    (error) => {
      log(`error: ${(error as Error).message ?? error}`);
      return exit(1);
    },
  );
}
