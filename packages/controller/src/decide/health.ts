import type { LeaderRecord, MemberRole, MemberState } from '@pgha/core';
import type { PostgresState } from './agent-role.js';

/**
 * The agent's health API (Patroni-style REST checks for probes and load balancers):
 * which endpoint answers what. Pure: the shell (agent/health-server.ts) builds a
 * {@link HealthSnapshot} from what the agent already knows and sends the decision.
 */

/** The checks the health API answers, each with the paths that ask for it. */
export const healthChecks = ['liveness', 'readiness', 'health', 'primary', 'replica'] as const;
export type HealthCheck = (typeof healthChecks)[number];

/** URL path → check. `/leader` and `/read-write` are `/primary`; `/read-only` is `/replica`. */
export const healthPaths: Readonly<Record<string, HealthCheck>> = {
  '/liveness': 'liveness',
  '/readiness': 'readiness',
  '/health': 'health',
  '/primary': 'primary',
  '/leader': 'primary',
  '/read-write': 'primary',
  '/replica': 'replica',
  '/read-only': 'replica',
};

/** What postgres answered on the control loop's last status query. */
export interface HealthObservation {
  readonly inRecovery: boolean;
  /** The WAL receiver's status ('streaming', ...) or null when none runs. */
  readonly receiverStatus: string | null;
  readonly timeline: number | null;
  /** Primary: current WAL position; replica: last received. */
  readonly lsn: string | null;
  /** Replica: last replayed (the primary's current position on a primary). */
  readonly replayedLsn: string | null;
}

/** Everything the agent knows when a health request arrives. Plain data, monotonic times. */
export interface HealthSnapshot {
  readonly member: string;
  /** Monotonic milliseconds. */
  readonly now: number;
  /**
   * When the control loop last finished a pass (or, before its first, when the agent
   * started), and since when an action it runs has been in progress (null: none).
   */
  readonly lastTickAt: number;
  readonly actingSince: number | null;
  /** /liveness fails when the loop has neither finished a pass nor been inside an action for this long. */
  readonly livenessTimeoutMillis: number;
  readonly state: MemberState;
  /** The agent's own label for postgres. */
  readonly postgres: PostgresState;
  /** Whether a postmaster process runs (the agent started it and it has not exited). */
  readonly postgresRunning: boolean;
  /** The last status query's answer (null: it did not answer) and when it was taken. */
  readonly observation: HealthObservation | null;
  readonly observedAt: number | null;
  /** An observation older than this is not trusted (the loop is stuck or slow). */
  readonly observationMaxAgeMillis: number;
  /** Whether we hold the leader record (installed under our lease, not seen replaced). */
  readonly holdsLeader: boolean;
  /** Whether our lease deadline is ahead. */
  readonly leaseValid: boolean;
  /** The leader record as last read. */
  readonly leader: LeaderRecord | null;
  readonly term: number;
  /** Why postgres was fenced, when it was and has not been started again. */
  readonly fenced: string | null;
  /** From the last member report: bytes and seconds behind the primary's published position. */
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
}

/** What the client asked: one check and, for `replica`, an optional lag bound. */
export interface HealthRequest {
  readonly check: HealthCheck;
  /** `?lag=`: a replica further behind than this many bytes answers 503. */
  readonly maxLagBytes: number | null;
}

/** The JSON body every endpoint answers with (like Patroni's), so `curl` is informative. */
export interface HealthBody {
  readonly member: string;
  readonly check: HealthCheck;
  /** Why the check failed (null on 200). */
  readonly reason: string | null;
  /** What postgres said it is (`unknown` when it did not answer recently). */
  readonly role: MemberRole;
  readonly state: MemberState;
  readonly postgres: PostgresState;
  readonly timeline: number | null;
  readonly term: number;
  readonly leader: string | null;
  readonly lsn: string | null;
  readonly replayedLsn: string | null;
  readonly streaming: boolean;
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
}

/** The answer to one health request. */
export interface HealthDecision {
  readonly status: 200 | 503;
  readonly body: HealthBody;
}

/**
 * Decides one health request. The checks, each failing with the first reason found:
 *
 * - `liveness`: the control loop finished a pass within `livenessTimeoutMillis`, or
 *   is inside an action (a restart that rewinds or re-clones lasts as long as the base
 *   backup: that must not get the agent killed). Never depends on postgres.
 * - `health`: postgres runs and answered the last status query recently.
 * - `primary`: we hold the leader record, it is writable, our lease deadline is
 *   ahead, postgres is labelled primary, runs, answered recently as out of recovery,
 *   and was not fenced. Every fact must hold, so at most one member answers 200
 *   (the one the leader record names; the lease bounds a stale belief).
 * - `replica`: postgres runs as a standby (labelled replica, answered recently as in
 *   recovery), we do not hold the leader record, its WAL receiver streams, and, with
 *   `maxLagBytes`, its reported lag is known and within it.
 * - `readiness`: `primary` when we hold the leader record, else a running standby
 *   (streaming not required: a replica waiting for a new primary is still readable).
 *
 * Stale facts fail closed: an observation older than `observationMaxAgeMillis` counts
 * as no answer.
 */
export function decideHealth(s: HealthSnapshot, request: HealthRequest): HealthDecision {
  const fresh = s.observation !== null && s.observedAt !== null && s.now - s.observedAt <= s.observationMaxAgeMillis;
  const o = fresh ? s.observation : null;
  const reason = failure(s, o, request);
  const role: MemberRole = o === null ? 'unknown' : o.inRecovery ? 'replica' : 'primary';
  return {
    status: reason === null ? 200 : 503,
    body: {
      member: s.member,
      check: request.check,
      reason,
      role,
      state: s.state,
      postgres: s.postgres,
      timeline: o?.timeline ?? null,
      term: Math.max(s.term, s.leader?.term ?? 0),
      leader: s.leader?.member ?? null,
      lsn: o?.lsn ?? null,
      replayedLsn: o?.replayedLsn ?? null,
      streaming: o !== null && o.inRecovery && o.receiverStatus === 'streaming',
      lagBytes: o === null ? null : s.lagBytes,
      lagSeconds: o === null ? null : s.lagSeconds,
    },
  };
}

function failure(s: HealthSnapshot, o: HealthObservation | null, request: HealthRequest): string | null {
  switch (request.check) {
    case 'liveness':
      return liveness(s);
    case 'health':
      return postgresAnswers(s, o);
    case 'primary':
      return primary(s, o);
    case 'replica':
      return replica(s, o, request.maxLagBytes, true);
    case 'readiness':
      return s.holdsLeader ? primary(s, o) : replica(s, o, null, false);
    default: {
      const unreachable: never = request.check;
      throw new Error(`unhandled health check ${String(unreachable)}`);
    }
  }
}

function liveness(s: HealthSnapshot): string | null {
  if (s.actingSince !== null) return null;
  const quiet = s.now - s.lastTickAt;
  return quiet <= s.livenessTimeoutMillis
    ? null
    : `the control loop has not finished a pass for ${Math.round(quiet)} ms (bound ${s.livenessTimeoutMillis} ms)`;
}

function postgresAnswers(s: HealthSnapshot, o: HealthObservation | null): string | null {
  if (s.fenced !== null && !s.postgresRunning) return `postgres was fenced: ${s.fenced}`;
  if (!s.postgresRunning) return 'postgres is not running';
  if (o === null) return 'postgres did not answer the last status query recently';
  return null;
}

function primary(s: HealthSnapshot, o: HealthObservation | null): string | null {
  if (!s.holdsLeader) {
    if (s.leader === null) return 'there is no leader';
    return s.leader.member === s.member
      ? 'the leader record names this member but is not held under our lease (a previous run, or being released)'
      : `${s.leader.member} holds the leader record`;
  }
  if (s.leader === null || s.leader.member !== s.member) return 'the leader record is not ours';
  if (!s.leader.writable) return 'the leader record is not writable yet (promotion in progress)';
  if (!s.leaseValid) return 'our lease deadline has passed';
  const down = postgresAnswers(s, o);
  if (down !== null) return down;
  if (s.postgres !== 'primary') return `postgres is labelled ${s.postgres}, not primary`;
  if (o!.inRecovery) return 'postgres is still in recovery';
  return null;
}

function replica(
  s: HealthSnapshot,
  o: HealthObservation | null,
  maxLagBytes: number | null,
  mustStream: boolean,
): string | null {
  const down = postgresAnswers(s, o);
  if (down !== null) return down;
  if (!o!.inRecovery) return 'postgres is out of recovery';
  if (s.holdsLeader) return 'this member holds the leader record';
  if (s.postgres !== 'replica') return `postgres is labelled ${s.postgres}, not replica`;
  if (s.state !== 'running') return `the member is ${s.state}`;
  if (mustStream && o!.receiverStatus !== 'streaming')
    return `not streaming from the primary (receiver: ${o!.receiverStatus ?? 'not running'})`;
  if (maxLagBytes !== null) {
    if (s.lagBytes === null) return 'the lag is not known yet';
    if (s.lagBytes > maxLagBytes) return `lag ${s.lagBytes} B exceeds ${maxLagBytes} B`;
  }
  return null;
}

const units: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/**
 * Parses a `?lag=` value: bytes, or a number with a unit as PostgreSQL spells sizes
 * (`16MB`, `512kB`, `1GB`; units are powers of 1024, case-insensitive, `KiB` style
 * accepted). Null when it is not one.
 */
export function parseLagBytes(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (match === null) return null;
  const factor = units[match[2]!.toLowerCase()];
  if (factor === undefined) return null;
  const bytes = Math.floor(Number(match[1]) * factor);
  return Number.isSafeInteger(bytes) ? bytes : null;
}
