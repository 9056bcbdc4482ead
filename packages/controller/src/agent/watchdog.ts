import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { spawnOwned } from '../adapters/processes.js';
import type { Logger } from '../log.js';
import { monotonicMillis } from './watchdog-process.js';

export { monotonicMillis, runWatchdog } from './watchdog-process.js';

/**
 * The fence that works when the agent cannot: a separate small process with its
 * own clock. While the agent leads, it sends the watchdog its remaining lease time
 * after every acknowledged keepalive ("arm PGID MILLIS"). If no update extends the
 * deadline in time — the agent is frozen (SIGSTOP, a hung event loop) or dead —
 * the watchdog SIGKILLs postgres's whole process group (postmaster and every
 * backend at once, so no backend can acknowledge one more commit). If the agent
 * dies, its pipe closes and the watchdog kills an armed group at once.
 *
 * The protocol is one line per message on the watchdog's stdin:
 *   arm <pgid> <remainingMillis> <deadline>   |   disarm
 * where `deadline` is the same moment on the host's monotonic clock (CLOCK_MONOTONIC,
 * shared by every process: {@link monotonicMillis}), so a message read late (a
 * watchdog still starting, a loaded host) does not push the kill later.
 */
export class Watchdog {
  private child: ChildProcess | null = null;
  private stopped = false;
  /** The last arm message, re-sent to a restarted watchdog. */
  private armed: { pgid: number; until: number } | null = null;
  /** Restarts of a watchdog that died on its own. */
  restarts = 0;

  constructor(
    private readonly cli: string,
    private readonly logFile: string,
    private readonly log: Logger,
    /** Called when the watchdog died and could not be restarted: the agent must fence. */
    private readonly onLost: () => void = () => undefined,
  ) {}

  start(): void {
    this.stopped = false;
    this.spawn();
  }

  private spawn(): void {
    // Not detached: it shares the agent's process group, so a signal to a frozen
    // host's group freezes it too (the honest model of a frozen host).
    let child: ChildProcess;
    try {
      // The small entry beside the CLI starts much faster than `pgha watchdog`.
      const main = join(dirname(this.cli), 'watchdog-main.js');
      const args = existsSync(main) ? [main] : [this.cli, 'watchdog'];
      child = spawnOwned(process.execPath, args, { logFile: this.logFile, stdin: 'pipe' });
    } catch (error) {
      this.log.error(`could not start the watchdog: ${(error as Error).message}`);
      this.onLost();
      return;
    }
    this.child = child;
    // A watchdog that died leaves a broken pipe: writes then fail with EPIPE, which
    // must never take the agent down.
    child.stdin?.on('error', () => undefined);
    child.on('error', (error) => this.log.warn(`watchdog: ${error.message}`));
    child.on('exit', (code, signal) => {
      if (this.child !== child) return;
      this.child = null;
      if (this.stopped) return;
      this.log.warn(`watchdog exited (${code ?? signal}); starting a new one`);
      this.restarts += 1;
      if (this.restarts > 5) {
        this.log.error('the watchdog keeps dying: fencing, the agent cannot be protected against its own freeze');
        this.onLost();
        return;
      }
      this.spawn();
      // A watchdog that was armed is armed again with what is left of the deadline.
      if (this.armed !== null) this.arm(this.armed.pgid, this.armed.until - performance.now());
    });
  }

  /** Whether a watchdog process runs. */
  get running(): boolean {
    return this.child !== null;
  }

  /** The watchdog kills process group `pgid` unless re-armed within `remainingMillis`. */
  arm(pgid: number, remainingMillis: number): void {
    this.armed = { pgid, until: performance.now() + remainingMillis };
    const remaining = Math.max(0, Math.floor(remainingMillis));
    this.send(`arm ${pgid} ${remaining} ${monotonicMillis() + remaining}\n`);
  }

  disarm(): void {
    this.armed = null;
    this.send('disarm\n');
  }

  private send(line: string): void {
    const stdin = this.child?.stdin;
    if (stdin === undefined || stdin === null || stdin.destroyed) return;
    try {
      stdin.write(line);
    } catch {
      /* the exit handler replaces a dead watchdog */
    }
  }

  stop(): void {
    this.stopped = true;
    this.armed = null;
    const child = this.child;
    this.child = null;
    if (child !== null) {
      try {
        child.stdin?.write('disarm\n');
        child.stdin?.end();
      } catch {
        /* already gone */
      }
      child.kill('SIGTERM');
    }
  }
}
