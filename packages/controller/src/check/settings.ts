/**
 * `pgha check`'s settings: the fault kinds, durations and the seeded random source.
 * Pure (no I/O, no clock); the command parses its flags with these.
 */
import { PghaError, type SynchronousMode } from '@pgha/core';

/** Every fault kind `pgha check` knows, in the order they are documented. */
export const faultKinds = [
  'host-loss',
  'agent-kill',
  'agent-freeze',
  'host-freeze',
  'postgres-kill',
  'switchover',
  'partition',
  'etcd-member-loss',
] as const;
export type FaultKind = (typeof faultKinds)[number];

/** The settings of one run (the flags, resolved). */
export interface CheckSettings {
  readonly cluster: string;
  readonly members: number;
  /** null: stop only after `faultsPerKind` of each kind. */
  readonly durationMillis: number | null;
  /** null: no count limit (stop at the duration). */
  readonly faultsPerKind: number | null;
  readonly faults: readonly FaultKind[];
  /** Writes per second in total (Pool writers and direct writers together). */
  readonly rate: number;
  readonly seed: number;
  readonly synchronousMode: SynchronousMode;
  readonly synchronousCount: number;
  readonly synchronousStrict: boolean;
  /** Lease timing written to the config record (defaults: the cluster defaults). */
  readonly leaseTtlMillis: number;
  readonly keepaliveIntervalMillis: number;
  readonly fencingMarginMillis: number;
  /** Raft timing of the etcd pgha check starts (null: its defaults). */
  readonly etcdHeartbeatMillis: number | null;
  readonly etcdElectionTimeoutMillis: number | null;
  /** Busy-looping processes run beside the cluster for the whole run (0: none). */
  readonly cpuHog: number;
}

function invalid(message: string): PghaError {
  return new PghaError('invalid-option', message);
}

/** Parses `90s`, `30m`, `1h`, `1500ms` or a bare number of seconds into milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (match === null) throw invalid(`--duration must look like 90s, 30m or 1h, got ${JSON.stringify(text)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  const millis = Math.round(Number(match[1]) * unit);
  if (millis < 1000) throw invalid(`--duration must be at least 1s, got ${text}`);
  return millis;
}

/** Parses a comma-separated list of fault kinds (`all` for every one). */
export function parseFaults(text: string): FaultKind[] {
  if (text.trim() === 'all') return [...faultKinds];
  const kinds = text
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
  if (kinds.length === 0) throw invalid('--faults needs at least one fault kind');
  for (const k of kinds) {
    if (!(faultKinds as readonly string[]).includes(k))
      throw invalid(`unknown fault kind ${JSON.stringify(k)} in --faults; choose from ${faultKinds.join(', ')}`);
  }
  // In the documented order, whatever the flag's: the same seed then gives the same
  // schedule for the same set of kinds.
  return faultKinds.filter((k) => kinds.includes(k));
}

/** Checks the settings that depend on each other. @throws PghaError `invalid-option` */
export function assertSettings(s: CheckSettings): void {
  if (s.synchronousMode === 'quorum' && s.synchronousCount > s.members - 1)
    throw invalid(
      `--synchronous-count ${s.synchronousCount} needs at least ${s.synchronousCount + 1} members; pass --members ${s.synchronousCount + 1} or a smaller count`,
    );
  if (s.members < 2 && s.faults.some((f) => f !== 'postgres-kill'))
    throw invalid('--members 1 leaves nobody to fail over to; use 2 or more (default 3)');
  if (s.leaseTtlMillis < 1000)
    throw invalid(`--lease-ttl ${s.leaseTtlMillis} is below the minimum lease TTL of 1000 ms`);
  if (s.keepaliveIntervalMillis * 2 > s.leaseTtlMillis)
    throw invalid(`--keepalive ${s.keepaliveIntervalMillis} must be at most half of --lease-ttl ${s.leaseTtlMillis}`);
  if (s.fencingMarginMillis < s.keepaliveIntervalMillis)
    throw invalid(
      `--fencing-margin ${s.fencingMarginMillis} must be at least --keepalive ${s.keepaliveIntervalMillis}`,
    );
  if (s.fencingMarginMillis + s.keepaliveIntervalMillis >= s.leaseTtlMillis)
    throw invalid(
      `--fencing-margin ${s.fencingMarginMillis} plus --keepalive ${s.keepaliveIntervalMillis} must be below --lease-ttl ${s.leaseTtlMillis}`,
    );
  if (
    s.etcdHeartbeatMillis !== null &&
    s.etcdElectionTimeoutMillis !== null &&
    s.etcdElectionTimeoutMillis < 5 * s.etcdHeartbeatMillis
  )
    throw invalid(
      `--etcd-election-timeout ${s.etcdElectionTimeoutMillis} must be at least 5 times --etcd-heartbeat ${s.etcdHeartbeatMillis} (etcd refuses less)`,
    );
  if (s.rate < s.members)
    throw invalid(`--rate ${s.rate} is below one write per second per member; use at least ${s.members}`);
}

/**
 * A small seeded random source (mulberry32): the same seed gives the same fault
 * order, targets and pauses, so a run can be repeated.
 */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
}

export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => items[Math.floor(next() * items.length)]!,
  };
}

/**
 * The order in which faults are injected: rounds in which every kind appears once,
 * each round shuffled, so that with `faultsPerKind` N every kind gets exactly N and a
 * time-bounded run still covers every kind early.
 */
export function faultSchedule(kinds: readonly FaultKind[], rounds: number, random: Random): FaultKind[] {
  const out: FaultKind[] = [];
  for (let r = 0; r < rounds; r++) {
    const round = [...kinds];
    for (let i = round.length - 1; i > 0; i--) {
      const j = Math.floor(random.next() * (i + 1));
      [round[i], round[j]] = [round[j]!, round[i]!];
    }
    out.push(...round);
  }
  return out;
}
