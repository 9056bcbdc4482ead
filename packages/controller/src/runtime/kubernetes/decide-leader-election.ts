/**
 * Leader election between operator replicas with a `coordination.k8s.io/v1` Lease,
 * as client-go's `leaderelection` package does it: pure decisions, no I/O. The
 * shell (`lease-elector.ts`) reads the Lease, asks `decideLeaderElection`, writes
 * what it says with the resourceVersion it read, and asks `leadershipDeadline`
 * whether it may still act as the leader.
 *
 * The safety invariant (at most one replica acts as leader at any instant, given
 * clocks that run at about the same rate — never that they agree on the time):
 *
 * - Every write carries the resourceVersion read, so of two candidates that read
 *   the same record only one write succeeds (the other gets 409).
 * - A candidate never compares the Lease's `renewTime` with its own clock. It
 *   notes, on its own monotonic clock, when it first saw the record with its
 *   current content, and treats it as expired `leaseDurationSeconds` after that
 *   (client-go's `observedTime`).
 * - The leader acts only until `renewDeadlineMillis` after it *sent* its last
 *   successful renewal, and `renewDeadlineMillis < leaseDurationSeconds × 1000`.
 *   Why that suffices: a take-over write succeeds only if the record has not
 *   changed since the taker read it, so the leader's last successful write is the
 *   record the taker observed. The leader sent it before the server applied it,
 *   and the taker saw it after, so the leader's deadline (send + renew deadline)
 *   comes before the taker's earliest take-over (seen + lease duration); the
 *   difference (5 s with the defaults) absorbs clock-rate differences and a write
 *   the leader had already sent when its deadline passed.
 *
 * May import: nothing but types.
 */

/** The Lease fields leader election uses (`coordination.k8s.io/v1` LeaseSpec). */
export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  /** MicroTime: RFC 3339 with exactly six fractional digits. */
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

/** A Lease as read: its spec and the resourceVersion a write must carry. */
export interface ObservedLease {
  resourceVersion: string;
  spec: LeaseSpec;
}

/** When this candidate first saw the Lease record with its current content. */
export interface LeaseObservation {
  /** The record's content (holder, times, duration, transitions), compared to tell a change. */
  record: string;
  /** This candidate's monotonic clock when it first saw that content. */
  atMillis: number;
}

/** What one round of the election decides from: the Lease just read, this candidate's identity and clock. */
export interface LeaderElectionSnapshot {
  identity: string;
  /** What this candidate writes as `leaseDurationSeconds`. */
  leaseDurationSeconds: number;
  /** The Lease read just now, or null when it does not exist. */
  lease: ObservedLease | null;
  /** The observation kept from the previous round (null on the first). */
  previous: LeaseObservation | null;
  /** Monotonic milliseconds (never compared with anything in the Lease). */
  nowMillis: number;
  /** Wall time as a MicroTime, for `acquireTime` and `renewTime`. */
  nowTime: string;
}

/** The one write (or wait) a round leads to; every update carries the resourceVersion read. */
export type LeaderElectionAction =
  /** No Lease yet: create it holding it (a 409 AlreadyExists means someone else did first). */
  | { type: 'create'; spec: Required<LeaseSpec> }
  /** Take a Lease another candidate held (expired) or gave up (released). */
  | {
      type: 'acquire';
      reason: 'expired' | 'released';
      from: string | null;
      resourceVersion: string;
      spec: Required<LeaseSpec>;
    }
  /** The Lease is ours: extend it. */
  | { type: 'renew'; resourceVersion: string; spec: Required<LeaseSpec> }
  /** Another candidate holds a Lease that has not expired by our clock. */
  | { type: 'wait'; holder: string; expiresAtMillis: number };

/** A round's action and the observation to keep for the next round. */
export interface LeaderElectionDecision {
  action: LeaderElectionAction;
  /** Keep for the next round. */
  observation: LeaseObservation | null;
}

/** The content that decides whether the record changed (not resourceVersion: any metadata write bumps that). */
function recordOf(spec: LeaseSpec): string {
  return JSON.stringify([
    spec.holderIdentity ?? '',
    spec.leaseDurationSeconds ?? null,
    spec.acquireTime ?? null,
    spec.renewTime ?? null,
    spec.leaseTransitions ?? 0,
  ]);
}

/** One round of client-go's `tryAcquireOrRenew`: create when absent, renew when ours, take when expired or released, else wait. */
export function decideLeaderElection(s: LeaderElectionSnapshot): LeaderElectionDecision {
  const held = (acquireTime: string, leaseTransitions: number): Required<LeaseSpec> => ({
    holderIdentity: s.identity,
    leaseDurationSeconds: s.leaseDurationSeconds,
    acquireTime,
    renewTime: s.nowTime,
    leaseTransitions,
  });
  if (s.lease === null) return { action: { type: 'create', spec: held(s.nowTime, 0) }, observation: null };

  const spec = s.lease.spec;
  const record = recordOf(spec);
  const observation: LeaseObservation =
    s.previous !== null && s.previous.record === record ? s.previous : { record, atMillis: s.nowMillis };
  const holder = spec.holderIdentity ?? '';
  const transitions = spec.leaseTransitions ?? 0;
  const resourceVersion = s.lease.resourceVersion;

  if (holder === s.identity)
    return {
      action: { type: 'renew', resourceVersion, spec: held(spec.acquireTime ?? s.nowTime, transitions) },
      observation,
    };
  const take = (reason: 'expired' | 'released'): LeaderElectionDecision => ({
    action: {
      type: 'acquire',
      reason,
      from: holder === '' ? null : holder,
      resourceVersion,
      spec: held(s.nowTime, transitions + 1),
    },
    observation,
  });
  if (holder === '') return take('released');
  const durationSeconds =
    spec.leaseDurationSeconds !== undefined && spec.leaseDurationSeconds > 0
      ? spec.leaseDurationSeconds
      : s.leaseDurationSeconds;
  const expiresAtMillis = observation.atMillis + durationSeconds * 1000;
  if (s.nowMillis >= expiresAtMillis) return take('expired');
  return { action: { type: 'wait', holder, expiresAtMillis }, observation };
}

/**
 * What a leader writes when it stops on purpose (client-go's ReleaseOnCancel): no
 * holder, so a standby takes over at its next round instead of after the lease
 * duration. Null when the Lease is not ours (then there is nothing to release).
 * Only written after the leader has stopped acting.
 */
export function decideRelease(
  lease: ObservedLease | null,
  identity: string,
  nowTime: string,
): { resourceVersion: string; spec: Required<LeaseSpec> } | null {
  if (lease === null || lease.spec.holderIdentity !== identity) return null;
  return {
    resourceVersion: lease.resourceVersion,
    spec: {
      holderIdentity: '',
      leaseDurationSeconds: 1,
      acquireTime: nowTime,
      renewTime: nowTime,
      leaseTransitions: lease.spec.leaseTransitions ?? 0,
    },
  };
}

/** The instant (monotonic) after which a leader whose last successful write was sent at `sentAtMillis` must no longer act. */
export function leadershipDeadline(sentAtMillis: number, renewDeadlineMillis: number): number {
  return sentAtMillis + renewDeadlineMillis;
}

/** The three durations of the election (client-go's LeaseDuration, RenewDeadline, RetryPeriod). */
export interface LeaderElectionTiming {
  leaseDurationSeconds: number;
  renewDeadlineMillis: number;
  retryPeriodMillis: number;
}

/**
 * Why a timing is unsafe or useless, or null. The renew deadline must end before
 * the lease could expire for others, and leave room for more than one renewal try
 * (client-go: renew deadline > 1.2 × retry period).
 */
export function leaderElectionTimingProblem(t: LeaderElectionTiming): string | null {
  if (!Number.isInteger(t.leaseDurationSeconds) || t.leaseDurationSeconds < 1)
    return `lease duration must be a whole number of seconds ≥ 1 (got ${t.leaseDurationSeconds})`;
  if (t.renewDeadlineMillis >= t.leaseDurationSeconds * 1000)
    return `renew deadline (${t.renewDeadlineMillis} ms) must be shorter than the lease duration (${t.leaseDurationSeconds} s): otherwise a leader could act after a standby took its lease`;
  if (t.renewDeadlineMillis <= 1.2 * t.retryPeriodMillis)
    return `renew deadline (${t.renewDeadlineMillis} ms) must exceed 1.2 × the retry period (${t.retryPeriodMillis} ms), or one slow renewal ends the leadership`;
  if (t.retryPeriodMillis < 1) return `retry period must be at least 1 ms (got ${t.retryPeriodMillis})`;
  return null;
}

/** A Date as a Kubernetes MicroTime (RFC 3339, exactly six fractional digits: the API server rejects three). */
export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}
