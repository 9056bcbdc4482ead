import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { PghaError } from '@pgha/core';
import type { OsUser } from './os-user.js';
import { whichSync } from './prerequisites.js';

/** How to start a long-running child process that must not outlive pgha. */
export interface OwnedProcessOptions {
  /** Run as this unprivileged user (pgha is root). */
  readonly user?: OsUser | null;
  /** Append stdout and stderr here. Without it, both are inherited. */
  readonly logFile?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Put the child in its own process group so a terminal's Ctrl-C reaches only pgha. */
  readonly detached?: boolean;
  /** 'pipe' to write to the child's stdin; default 'ignore'. */
  readonly stdin?: 'pipe' | 'ignore';
}

let setprivPath: string | null | undefined;

/**
 * Starts `command` so that it dies with the process that started it: through
 * `setpriv --pdeathsig KILL` (util-linux), which asks the kernel to SIGKILL the
 * child when its parent thread exits, even by kill -9. A parent that is frozen
 * (SIGSTOP) is not dead, so this is not a fence: the lease deadline is.
 */
export function spawnOwned(command: string, args: readonly string[], options: OwnedProcessOptions = {}): ChildProcess {
  if (setprivPath === undefined) setprivPath = whichSync('setpriv');
  const [file, argv] =
    setprivPath === null ? [command, args] : [setprivPath, ['--pdeathsig', 'KILL', '--', command, ...args]];
  let log: WriteStream | undefined;
  if (options.logFile !== undefined) log = createWriteStream(options.logFile, { flags: 'a' });
  const child = spawn(file, argv, {
    stdio:
      log === undefined
        ? [options.stdin ?? 'ignore', 'inherit', 'inherit']
        : [options.stdin ?? 'ignore', 'pipe', 'pipe'],
    env: options.env ?? process.env,
    cwd: options.cwd,
    detached: options.detached ?? false,
    ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
  });
  // Every stream and the child itself get an error path: an unhandled 'error' event
  // (a log file on a full or vanished disk, a spawn that failed, a broken pipe)
  // would otherwise take the whole agent down with it.
  child.on('error', (error) => {
    if (child.listenerCount('error') === 1) process.stderr.write(`pgha: ${command}: ${error.message}\n`);
  });
  child.stdin?.on('error', () => undefined);
  child.stdout?.on('error', () => undefined);
  child.stderr?.on('error', () => undefined);
  if (log !== undefined) {
    log.on('error', (error) => process.stderr.write(`pgha: log ${options.logFile}: ${error.message}\n`));
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    child.once('close', () => log?.end());
  }
  return child;
}

/** The result of {@link runTool}. */
export interface ToolResult {
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a short-lived program to completion (initdb, pg_basebackup, pg_controldata),
 * as `user` when given, bounded by `timeoutMillis`.
 *
 * @throws PghaError `postgres-failed` with the program's stderr tail.
 */
export function runTool(
  command: string,
  args: readonly string[],
  options: { user?: OsUser | null; env?: NodeJS.ProcessEnv; timeoutMillis?: number; cwd?: string } = {},
): Promise<ToolResult> {
  // Through setpriv --pdeathsig like every long-running child: a pg_basebackup or
  // pg_rewind must not outlive a killed agent and go on writing into a directory
  // the restarted agent is replacing.
  if (setprivPath === undefined) setprivPath = whichSync('setpriv');
  const [file, argv] =
    setprivPath === null ? [command, args] : [setprivPath, ['--pdeathsig', 'KILL', '--', command, ...args]];
  return new Promise((resolve, reject) => {
    execFile(
      file,
      argv,
      {
        env: options.env ?? process.env,
        cwd: options.cwd,
        timeout: options.timeoutMillis ?? 120_000,
        killSignal: 'SIGKILL',
        maxBuffer: 16 * 1024 * 1024,
        ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
      },
      (error, stdout, stderr) => {
        if (error !== null) {
          const tail = stderr.trim().split('\n').slice(-6).join('\n');
          reject(
            new PghaError(
              'postgres-failed',
              `${command.split('/').pop()} failed (${error.message.split('\n')[0]})${tail ? `:\n${tail}` : ''}`,
              {
                cause: error,
              },
            ),
          );
        } else resolve({ stdout, stderr });
      },
    );
  });
}

/** Whether a process with this PID exists (signal 0 probe). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Resolves when `child` has exited (immediately if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  // A child that could not be spawned emits 'error' and never 'exit'.
  if (child.pid === undefined) return new Promise((resolve) => child.once('error', () => resolve()));
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Sends `signal`, then SIGKILL if the child has not exited after `graceMillis`.
 * Resolves once it has exited.
 */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals, graceMillis: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const escalated = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, graceMillis);
  });
  await Promise.race([exited(child), escalated]);
  clearTimeout(timer);
  await exited(child);
}
