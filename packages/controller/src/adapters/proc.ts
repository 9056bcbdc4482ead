/**
 * What Linux's /proc says about processes: a postmaster's PID from its data
 * directory, a process's children, command line and run state. Used by `pgha check`
 * to find the processes a fault hits, and by the tests.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The postmaster PID of a running member (from `<memberDir>/data/postmaster.pid`), or null. */
export function postmasterPid(memberDir: string): number | null {
  const file = join(memberDir, 'data', 'postmaster.pid');
  if (!existsSync(file)) return null;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null; // removed between the check and the read
  }
  const pid = Number(text.split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** The state letter of `pid` in /proc/<pid>/stat (R, S, T, Z...), '' when it is gone. */
export function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '';
  } catch {
    return '';
  }
}

/** PIDs of the living children of `pid`. */
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
 * The PIDs among `pids` that are running: neither gone nor a zombie. (Children of
 * a killed postmaster are re-parented to an init that may reap them late; a zombie
 * answers `kill(pid, 0)` but runs no code.)
 */
export function living(pids: readonly number[]): number[] {
  return pids.filter((pid) => {
    const state = processState(pid);
    return state !== '' && state !== 'Z' && state !== 'X';
  });
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

/** The watchdog child of an agent (`pgha watchdog` / watchdog-main.js), if it runs. */
export function watchdogOf(agentPid: number): number | undefined {
  return childPids(agentPid).find((p) => /watchdog/.test(commandLine(p)));
}
