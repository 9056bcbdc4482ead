// For tests that run a whole `pgha` command (check, demo) in a directory of their
// own: its output until it exits, and what that command started names the directory on its command line, so
// finding what it left behind — and killing it should the command hang — needs no
// bookkeeping of PIDs the test never saw.
import type { ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { commandLine } from '../packages/controller/src/adapters/proc.js';

/** PIDs of processes (other than this one) whose command line names `path`. */
export function processesUnder(path: string): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => pid !== process.pid && commandLine(pid).includes(path));
}

/**
 * SIGKILL of `childPid` (the command the test spawned, unless it exited: undefined)
 * and then of every process whose command line names `path`.
 */
export function killEverythingUnder(path: string, childPid: number | undefined): void {
  for (const pid of [...(childPid === undefined ? [] : [childPid]), ...processesUnder(path)]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Waits for `child` to exit; resolves with its exit code and its stdout and stderr, interleaved. */
export function outputUntilExit(child: ChildProcess): Promise<{ code: number | null; output: string }> {
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}
