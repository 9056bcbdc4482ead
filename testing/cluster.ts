// Test support for whole local clusters: free port ranges, bounded waits, and the
// PIDs of everything a cluster runs, so tests can prove nothing is left behind.
import { isAlive } from '../packages/controller/src/adapters/processes.js';

export { findFreePortRange } from '../packages/controller/src/adapters/ports.js';
export {
  childPids,
  commandLine,
  living,
  postgresProcesses,
  postmasterPid,
  processState,
} from '../packages/controller/src/adapters/proc.js';

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

/** The PIDs among `pids` that are still alive. */
export function alive(pids: ReadonlyArray<number | null | undefined>): number[] {
  return pids.filter((p): p is number => typeof p === 'number' && isAlive(p));
}
