// The kernel's dirty-page limits, read for advice only: where etcd and postgres share
// a disk (`pgha up`), large limits let checkpoints and base backups queue gigabytes
// of dirty data, and etcd's WAL fsync then waits behind it for seconds: past a 2 s
// lease's fencing deadline (measured on this project's CI machine: 1.1-4.6 s).
import { readFileSync } from 'node:fs';

/** `vm.dirty_*` as /proc/sys/vm shows them, and the machine's memory. */
export interface WritebackLimits {
  readonly dirtyBackgroundBytes: number;
  readonly dirtyBackgroundRatio: number;
  readonly dirtyBytes: number;
  readonly dirtyRatio: number;
  readonly memTotalBytes: number;
}

/** Above this, background write-back starts too late for an etcd on the same disk. */
export const adviseAboveBytes = 256 * 1024 * 1024;

/** The background write-back threshold in bytes (the `_bytes` setting wins when set, as in the kernel). */
export function backgroundThresholdBytes(l: WritebackLimits): number {
  return l.dirtyBackgroundBytes > 0 ? l.dirtyBackgroundBytes : (l.memTotalBytes * l.dirtyBackgroundRatio) / 100;
}

/**
 * One line of advice when dirty data may pile up past {@link adviseAboveBytes} before
 * the kernel writes it back; null when the limits are already small. Pure.
 */
export function writebackAdvice(l: WritebackLimits): string | null {
  const threshold = backgroundThresholdBytes(l);
  if (threshold <= adviseAboveBytes) return null;
  const mib = Math.round(threshold / (1024 * 1024));
  return `note: the kernel lets ${mib} MiB of dirty data wait before writing it back (vm.dirty_background_*); etcd shares this disk with postgres, and its fsync can then stall past the lease deadline (a needless failover). On a machine that runs the cluster: sysctl -w vm.dirty_background_bytes=16777216 vm.dirty_bytes=134217728`;
}

/** Reads the limits from /proc; null where they cannot be read (not Linux, a sandbox). */
export function readWritebackLimits(): WritebackLimits | null {
  try {
    const vm = (name: string) => Number(readFileSync(`/proc/sys/vm/${name}`, 'utf8').trim());
    const mem = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (mem === null) return null;
    const limits = {
      dirtyBackgroundBytes: vm('dirty_background_bytes'),
      dirtyBackgroundRatio: vm('dirty_background_ratio'),
      dirtyBytes: vm('dirty_bytes'),
      dirtyRatio: vm('dirty_ratio'),
      memTotalBytes: Number(mem[1]) * 1024,
    };
    return Object.values(limits).every(Number.isFinite) ? limits : null;
  } catch {
    return null;
  }
}
