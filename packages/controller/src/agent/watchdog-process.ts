// The watchdog process itself: no imports, so it starts in a fraction of the time
// the whole CLI takes (seconds on a loaded host), which is time a restarted watchdog
// cannot fence. Run through dist/watchdog-main.js (or `pgha watchdog`).

import { readdirSync, readFileSync } from 'node:fs';

/** PIDs whose parent is `pid` (Linux /proc; the kernel's own list when it keeps one). */
function childrenOf(pid: number): number[] {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    return text === '' ? [] : text.split(/\s+/).map(Number);
  } catch {
    /* no children file: scan */
  }
  const out: number[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return out;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    /* already gone */
  }
}

/**
 * The fence's kill: SIGKILL for a postmaster and every process it started.
 * PostgreSQL makes each child the leader of a process group of its own (setsid in
 * InitPostmasterChild), so killing the postmaster's group reaches the postmaster
 * alone, and a backend that has read a COMMIT would finish and acknowledge it. The
 * postmaster is stopped first (it can fork no new child meanwhile and stays their
 * parent, so the list is complete), then every child's group, then the postmaster.
 */
export function killPostmaster(pid: number): void {
  signal(pid, 'SIGSTOP');
  for (const child of childrenOf(pid)) {
    signal(-child, 'SIGKILL');
    signal(child, 'SIGKILL');
  }
  signal(-pid, 'SIGKILL');
  signal(pid, 'SIGKILL');
}

/**
 * Milliseconds on the host's monotonic clock (CLOCK_MONOTONIC through hrtime), the
 * same in every process, unlike performance.now() (counted from each process's start).
 */
export function monotonicMillis(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

/**
 * The watchdog process's main loop (`pgha watchdog`): reads arm/disarm lines from
 * stdin and kills the armed process group when its deadline passes or stdin closes.
 */
export function runWatchdog(): void {
  // Two deadlines: the monotonic clock is immune to wall-clock steps but stands still
  // while a VM is suspended; the wall clock keeps counting then. Either passing fires.
  let armed: { pgid: number; deadline: number; wallDeadline: number } | null = null;
  const fire = (why: string) => {
    if (armed === null) return;
    try {
      killPostmaster(armed.pgid);
      process.stderr.write(`${new Date().toISOString()} watchdog: killed process group ${armed.pgid} (${why})\n`);
    } catch (error) {
      process.stderr.write(`${new Date().toISOString()} watchdog: kill ${armed.pgid}: ${(error as Error).message}\n`);
    }
    armed = null;
  };
  // 20 ms checks: the fencing margin (default 500 ms) dwarfs this granularity.
  const timer = setInterval(() => {
    if (armed !== null && (performance.now() >= armed.deadline || Date.now() >= armed.wallDeadline))
      fire('lease deadline passed without renewal');
  }, 20);
  let buffer = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    buffer += chunk;
    let newline = buffer.indexOf('\n');
    while (newline >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      const [verb, a, b, c] = line.split(' ');
      if (verb === 'arm' && a !== undefined && b !== undefined) {
        // What is left of the deadline now, not when the message was written: it may
        // have waited in the pipe while this process started.
        const remaining = c === undefined ? Number(b) : Math.min(Number(b), Number(c) - monotonicMillis());
        armed = { pgid: Number(a), deadline: performance.now() + remaining, wallDeadline: Date.now() + remaining };
      } else if (verb === 'disarm') armed = null;
      newline = buffer.indexOf('\n');
    }
  });
  process.stdin.on('end', () => {
    fire('agent gone');
    clearInterval(timer);
    process.exit(0);
  });
  process.on('SIGTERM', () => {
    clearInterval(timer);
    process.exit(0);
  });
}
