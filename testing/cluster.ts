// Test support for whole local clusters: free port ranges, bounded waits, and the
// PIDs of everything a cluster runs, so tests can prove nothing is left behind.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isPortFree } from '../packages/controller/src/adapters/ports.js';
import { isAlive } from '../packages/controller/src/adapters/processes.js';

/** `count` consecutive free loopback ports, starting at a random base. */
export async function findFreePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 35_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await isPortFree(base + i);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

/** Thrown inside a {@link waitFor} check to give up at once (the condition can no longer come true). */
export class StopWaiting extends Error {}

/**
 * Polls `check` until it returns a value other than undefined/false, or fails after
 * `timeoutMillis` with `what` and the last value or error seen.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMillis: number,
  intervalMillis = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMillis;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
      last = value;
    } catch (error) {
      if (error instanceof StopWaiting) throw error;
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMillis} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMillis));
  }
}

/** The postmaster PID of a running member (from postmaster.pid), or null. */
export function postmasterPid(memberDir: string): number | null {
  const file = join(memberDir, 'data', 'postmaster.pid');
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** The PIDs among `pids` that are still alive. */
export function alive(pids: ReadonlyArray<number | null | undefined>): number[] {
  return pids.filter((p): p is number => typeof p === 'number' && isAlive(p));
}

/** PIDs of the living children of `pid` (Linux /proc). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** The command line of `pid`, or '' when it is gone. */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/**
 * The postmaster `pid` and its living children. PostgreSQL makes every child (each
 * backend, walsender, checkpointer…) the leader of its own process group (setsid()
 * in InitPostmasterChild), so the postmaster's process group holds the postmaster
 * alone: to see whether "postgres" is gone, take this set before the fault (the
 * children are re-parented once the postmaster dies) and wait until none lives.
 */
export function postgresProcesses(pid: number): number[] {
  return living([pid, ...childPids(pid)]);
}

/**
 * The PIDs among `pids` that are running: neither gone nor a zombie. (Children of
 * a killed postmaster are re-parented to an init that may reap them late; a zombie
 * answers `kill(pid, 0)` but runs no code.)
 */
export function living(pids: readonly number[]): number[] {
  return pids.filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      return state !== 'Z' && state !== 'X';
    } catch {
      return false;
    }
  });
}
