import {
  type HistoryRecord,
  type LastPrimaryRecord,
  type LeaderRecord,
  type LsnText,
  lsnLagBytes,
  type MemberRecord,
  maxLsn,
  recordVersion,
  type SwitchoverRecord,
  type SyncRecord,
  type TargetReason,
  type TargetRecord,
} from '@pgha/core';
import { type RankingPolicy, type Rejection, rankCandidates } from './candidates.js';

/** Settings the controller decides with. */
export interface ControllerPolicy {
  readonly maximumLagOnFailoverBytes: number;
  /** After the leader vanishes, wait this long at most for every member's fresh report. */
  readonly freshReportWaitMillis: number;
  /** A target that has not installed the leader record by then is replaced. */
  readonly targetInstallTimeoutMillis: number;
  /**
   * With no leader and a `last-primary` record of the current term that is not clean,
   * naming a member this controller did not see lead (it started without a leader):
   * wait this long at most, from when it saw no leader, for that member to report as a
   * running replica before electing someone else. A clean record is waited for without
   * bound (only a manual failover with acceptDataLoss overrides).
   */
  readonly lastPrimaryWaitMillis: number;
  /** Switchover: a candidate's report must be at most this old (ranking on fresh data only). */
  readonly maximumReportAgeMillis: number;
}

/**
 * The policy `pgha controller` runs with when no flag changes it, and the one the
 * Kubernetes operator gives each cluster's controller (with the PgHaCluster's
 * `maximumLagOnFailoverBytes`). `maximumLagOnFailoverBytes` is core's `defaultConfig`.
 */
export const defaultControllerPolicy: Omit<ControllerPolicy, 'maximumLagOnFailoverBytes'> = {
  freshReportWaitMillis: 1000,
  targetInstallTimeoutMillis: 5000,
  lastPrimaryWaitMillis: 30_000,
  maximumReportAgeMillis: 5000,
};

/** What the active controller knows on one pass. Times are wall-clock milliseconds. */
export interface ControllerSnapshot {
  readonly now: number;
  readonly term: number;
  readonly leader: LeaderRecord | null;
  readonly target: TargetRecord | null;
  /** When this controller first saw the current target. */
  readonly targetSeenAt: number | null;
  readonly members: readonly MemberRecord[];
  /** When this controller saw the leader record disappear (null while there is one). */
  readonly leaderLostAt: number | null;
  /** The last primary's member record as last seen (its LSN is the loss reference). */
  readonly lastPrimary: MemberRecord | null;
  /**
   * The durable `last-primary` records this controller has read, newest per term
   * (including this pass's). Only the one of the current `term` counts for an
   * election (an older one is a leftover); the one of term−1 is the old primary a
   * new leader's history names.
   */
  readonly lastPrimaryRecords: readonly LastPrimaryRecord[];
  /** Each member's newest record seen while it ran as a replica (a new primary's position before promotion). */
  readonly lastAsReplica: readonly MemberRecord[];
  readonly switchover: SwitchoverRecord | null;
  /**
   * When this controller first saw the current switchover request (its clock, like
   * `now`): the `detectedAt` of the target that answers it. Null or absent: `now`.
   */
  readonly switchoverSeenAt?: number | null;
  /** The newest term with a history record. */
  readonly lastHistoryTerm: number;
  /**
   * The newest history record as read (its new primary was the primary of that
   * term): names the old primary of a promotion when no `last-primary` record of the
   * previous term was seen (a controller that started after the new primary's record
   * replaced it). Null or absent when none.
   */
  readonly lastHistory?: { readonly term: number; readonly newPrimary: string } | null;
  /**
   * The synchronous claim (`sync`) as last read: when it is of the current term and
   * claims a quorum, an election counts positions from enough of its standbys and
   * promotes only a member holding the most advanced of them.
   */
  readonly sync?: SyncRecord | null;
  readonly policy: ControllerPolicy;
}

/** What the controller does next. */
export type ControllerDecision =
  | { readonly type: 'none' }
  | { readonly type: 'wait'; readonly reason: string }
  /** Write this target (failover, manual failover, or switchover). */
  | { readonly type: 'set-target'; readonly target: TargetRecord; readonly consumeSwitchover: boolean }
  | { readonly type: 'no-candidate'; readonly reason: string; readonly rejected: readonly Rejection[] }
  | { readonly type: 'reject-switchover'; readonly reason: string }
  | { readonly type: 'record-history'; readonly history: HistoryRecord };

function target(
  term: number,
  member: string,
  reason: TargetReason,
  from: string | null,
  now: number,
  detectedAt: number,
): TargetRecord {
  return {
    v: recordVersion,
    term,
    member,
    reason,
    from,
    decidedAt: new Date(now).toISOString(),
    detectedAt: new Date(Math.min(detectedAt, now)).toISOString(),
  };
}

function positionOf(m: MemberRecord | null): LsnText | null {
  return m === null ? null : (m.receivedLsn ?? m.replayedLsn);
}

/**
 * The controller's decision. Pure. One decision per call; the shell applies it and
 * asks again until `none` or `wait`.
 *
 * Safety: a target for term+1 is only a proposal; the named agent installs the
 * leader record only when none exists and the term is unchanged (contract line 2),
 * so a target written while the old leader lives (switchover) cannot make two
 * writers. Failover targets are only written after the leader record is gone.
 */
export function decideController(s: ControllerSnapshot): ControllerDecision {
  const nextTerm = s.term + 1;
  const pending = s.target !== null && s.target.term === nextTerm ? s.target : null;

  if (s.leader !== null) {
    if (s.leader.writable && s.leader.term > s.lastHistoryTerm) return recordHistory(s, s.leader);
    if (s.switchover === null) return { type: 'none' };
    if (pending !== null) return { type: 'wait', reason: `switchover to ${pending.member} in progress` };
    if (!s.leader.writable) return { type: 'wait', reason: 'the primary is not writable yet' };
    const req = s.switchover;
    if (req.from !== null && req.from !== s.leader.member) {
      return { type: 'reject-switchover', reason: `${req.from} is not the primary (${s.leader.member} is)` };
    }
    if (req.at !== null && Date.parse(req.at) > s.now)
      return { type: 'wait', reason: `switchover scheduled at ${req.at}` };
    // A lossless switchover needs a replica that streams from the primary (it gets
    // the WAL up to the shutdown checkpoint) and is judged on a fresh report.
    const ranking = rankCandidates(s.members, {
      maximumLagOnFailoverBytes: s.policy.maximumLagOnFailoverBytes,
      lastPrimaryLsn: positionOf(s.members.find((m) => m.name === s.leader!.member) ?? null),
      exclude: new Set([s.leader.member]),
      requireStreaming: true,
      reportedSince: s.now - s.policy.maximumReportAgeMillis,
    });
    const chosen = req.to === null ? ranking.candidates[0] : ranking.candidates.find((m) => m.name === req.to);
    if (chosen === undefined) {
      const why = req.to === null ? ranking.rejected : ranking.rejected.filter((r) => r.member === req.to);
      return {
        type: 'reject-switchover',
        reason:
          req.to !== null && why.length === 0
            ? `${req.to} is not a member of this cluster`
            : `no eligible replica${req.to === null ? '' : ` ${req.to}`}: ${why.map((r) => `${r.member} ${r.reason}`).join('; ') || 'none reports'}`,
      };
    }
    return {
      type: 'set-target',
      target: target(nextTerm, chosen.name, 'switchover', s.leader.member, s.now, s.switchoverSeenAt ?? s.now),
      consumeSwitchover: true,
    };
  }

  // No leader.
  if (s.term === 0 && s.target === null) {
    // Never initialized: the bootstrapping member takes the first term by itself.
    return { type: 'wait', reason: 'waiting for the cluster to be bootstrapped' };
  }
  const lostFor = s.leaderLostAt === null ? 0 : s.now - s.leaderLostAt;
  const failedTarget = new Set<string>();
  if (pending !== null) {
    const record = s.members.find((m) => m.name === pending.member);
    const age = s.targetSeenAt === null ? 0 : s.now - s.targetSeenAt;
    if (
      record !== undefined &&
      record.state === 'running' &&
      record.role === 'replica' &&
      age < s.policy.targetInstallTimeoutMillis
    ) {
      return {
        type: 'wait',
        reason: `waiting for ${pending.member} to take the leader record for term ${pending.term}`,
      };
    }
    failedTarget.add(pending.member);
  }
  // The durable record of the current term's primary (an older one is a leftover of
  // an earlier term and says nothing about this one).
  const record = s.lastPrimaryRecords.find((r) => r.term === s.term) ?? null;
  const oldPrimary = record?.member ?? s.lastPrimary?.name ?? null;
  const qualification = {
    maximumLagOnFailoverBytes: s.policy.maximumLagOnFailoverBytes,
    // The lag bound counts from the furthest position known for the old primary.
    lastPrimaryLsn: maxLsn(record?.lsn ?? null, positionOf(s.lastPrimary)),
    minimumTimeline: record?.timeline ?? null,
    // After a clean shutdown nothing past the checkpoint was acknowledged, and
    // everything up to it was: only a member holding it is lossless.
    mustHold: record?.clean === true ? record.lsn : null,
  };
  const quorum = synchronousQuorum(s);
  const manual = s.switchover !== null && s.switchover.to !== null ? s.switchover.to : null;
  if (manual !== null) {
    const m = s.members.find((x) => x.name === manual);
    if (m === undefined || m.role !== 'replica' || m.state !== 'running') {
      return {
        type: 'reject-switchover',
        reason: `${manual} cannot be promoted: ${m === undefined ? 'it does not report' : `it is ${m.state} as ${m.role}`}`,
      };
    }
    if (s.switchover?.acceptDataLoss !== true) {
      // The same qualification as an election; picking by hand overrides only the
      // noFailover tag. Anything that may lose data needs acceptDataLoss.
      if (quorum !== null && quorum.floor === null) {
        return {
          type: 'reject-switchover',
          reason: `${manual} cannot be promoted without risking acknowledged writes: ${quorum.short}; request it with acceptDataLoss (pgha failover --accept-data-loss) to promote it anyway`,
        };
      }
      const ranking = rankCandidates(
        s.members.map((x) => (x.name === manual ? { ...x, tags: { ...x.tags, noFailover: false } } : x)),
        { ...qualification, ...synchronousQualification(qualification.mustHold, quorum), exclude: new Set() },
      );
      const why = ranking.rejected.find((r) => r.member === manual);
      if (why !== undefined) {
        return {
          type: 'reject-switchover',
          reason: `${manual} cannot be promoted without risking acknowledged writes: ${manual} ${why.reason}${describeRecord(record)}; request it with acceptDataLoss (pgha failover --accept-data-loss) to promote it anyway`,
        };
      }
    }
    return {
      type: 'set-target',
      target: target(nextTerm, manual, 'manual-failover', oldPrimary, s.now, s.switchoverSeenAt ?? s.now),
      consumeSwitchover: true,
    };
  }
  if (s.leaderLostAt !== null && lostFor < s.policy.freshReportWaitMillis) {
    const stale = s.members.filter((m) => Date.parse(m.updatedAt) < s.leaderLostAt!);
    if (stale.length > 0)
      return { type: 'wait', reason: `waiting for fresh reports from ${stale.map((m) => m.name).join(', ')}` };
  }
  // A last primary this controller did not see lead (it started with no leader, e.g.
  // a whole-cluster restart) may hold acknowledged writes past its record's position
  // (up to one report interval): give it a bounded time to come back as a replica.
  // In an ordinary failover the controller saw it lead and lose the record, and it
  // is not coming back soon (killed, fenced): no wait, as before.
  if (record !== null && !record.clean && s.lastPrimary?.name !== record.member) {
    const lp = s.members.find((m) => m.name === record.member);
    const back =
      lp !== undefined &&
      lp.role === 'replica' &&
      lp.state === 'running' &&
      (s.leaderLostAt === null || Date.parse(lp.updatedAt) >= s.leaderLostAt);
    const waitedFor = s.leaderLostAt === null ? 0 : s.now - s.leaderLostAt;
    if (!back && lp?.state !== 'failed' && waitedFor < s.policy.lastPrimaryWaitMillis) {
      const since = s.leaderLostAt === null ? '' : ` since ${new Date(s.leaderLostAt).toISOString()}`;
      return {
        type: 'wait',
        reason: `waiting for ${record.member} (primary of term ${record.term}, last known at ${record.lsn}, not shut down cleanly) to report as a running replica: ${describeMember(lp)}; at most ${s.policy.lastPrimaryWaitMillis} ms${since}`,
      };
    }
  }
  // Synchronous quorum: every acknowledged commit is on `quorum` of the claim's
  // standbys, so the most advanced of any |standbys| − quorum + 1 of them has them all.
  if (quorum !== null && quorum.floor === null)
    return electClaimant(s, quorum, qualification, failedTarget, nextTerm, oldPrimary);
  // The old primary is not excluded: once fenced and back as a running replica it
  // holds everything it acknowledged, so it may well be the best (lossless) choice.
  const ranking = rankCandidates(s.members, {
    ...qualification,
    ...synchronousQualification(qualification.mustHold, quorum),
    exclude: failedTarget,
  });
  const best = ranking.candidates[0];
  const reasons = ranking.rejected.map((r) => `${r.member} ${r.reason}`).join('; ') || 'no member reports';
  if (best === undefined && quorum !== null) {
    return {
      type: 'wait',
      reason: `waiting for a member holding ${quorum.floor}, the most advanced position of the synchronous standbys (${quorum.counted.join(', ')}): only it is sure to hold every acknowledged commit (${reasons}); pgha failover --to MEMBER --accept-data-loss overrides`,
    };
  }
  if (best === undefined && record?.clean === true) {
    return {
      type: 'wait',
      reason: `waiting for a member holding ${record.lsn}, where ${record.member} (primary of term ${record.term}) shut down cleanly: ${record.member} back as a running replica or a replica that received its shutdown checkpoint (${reasons}); pgha failover --to MEMBER --accept-data-loss overrides`,
    };
  }
  if (best === undefined) {
    return {
      type: 'no-candidate',
      reason: `no member qualifies for term ${nextTerm}: ${reasons}`,
      rejected: ranking.rejected,
    };
  }
  return {
    type: 'set-target',
    target: target(nextTerm, best.name, 'failover', oldPrimary, s.now, s.leaderLostAt ?? s.now),
    consumeSwitchover: false,
  };
}

/**
 * Too few of the claim's standbys can be counted. The claim's own primary flushed
 * every commit it acknowledged before any standby confirmed it, so once it is back
 * as a running replica (fenced, its postgres restarted on its own WAL) and reported
 * after the loss, electing it loses nothing — and nobody else may be elected. This
 * ends the wait that otherwise never ends when a standby of the claim will never
 * stream again until a leader exists: e.g. the primary of the term before, which the
 * new primary's first claim names but which was fenced and restarted without a
 * primary to follow, when the new primary is fenced in turn (found by a soak with a
 * 1 s lease on a saturated machine: a second failover waited for ever).
 */
function electClaimant(
  s: ControllerSnapshot,
  quorum: SynchronousQuorum,
  qualification: Omit<RankingPolicy, 'exclude'>,
  failedTarget: ReadonlySet<string>,
  nextTerm: number,
  oldPrimary: string | null,
): ControllerDecision {
  const claimant =
    s.sync === null || s.sync === undefined ? undefined : s.members.find((m) => m.name === s.sync!.member);
  const back =
    claimant !== undefined &&
    claimant.role === 'replica' &&
    claimant.state === 'running' &&
    s.leaderLostAt !== null &&
    Date.parse(claimant.updatedAt) >= s.leaderLostAt &&
    claimant.observedAt !== undefined &&
    claimant.observedAt !== null &&
    Date.parse(claimant.observedAt) >= s.leaderLostAt;
  if (!back) return { type: 'wait', reason: quorum.short };
  const ranking = rankCandidates([claimant], {
    ...qualification,
    maximumLagOnFailoverBytes: Number.POSITIVE_INFINITY,
    exclude: failedTarget,
  });
  if (ranking.candidates[0] === undefined) {
    const why = ranking.rejected.map((r) => `${r.member} ${r.reason}`).join('; ');
    return { type: 'wait', reason: `${quorum.short}; the claim's own primary cannot be elected instead: ${why}` };
  }
  return {
    type: 'set-target',
    target: target(nextTerm, claimant.name, 'failover', oldPrimary, s.now, s.leaderLostAt ?? s.now),
    consumeSwitchover: false,
  };
}

/** What a synchronous claim of the current term requires of an election. */
interface SynchronousQuorum {
  /** The most advanced position among the counted standbys; null when too few count. */
  readonly floor: LsnText | null;
  readonly counted: readonly string[];
  /** Why the election cannot go on yet (when `floor` is null). */
  readonly short: string;
}

/**
 * The synchronous claim of the current term's primary, if it claims a quorum: the
 * standbys whose positions count (running replicas with a WAL receiver position,
 * observed after the leader record vanished — the old primary was fenced by then, so
 * they are final) and, when at least
 * |standbys| − quorum + 1 of them count, the most advanced of their positions.
 */
function synchronousQuorum(s: ControllerSnapshot): SynchronousQuorum | null {
  const claim = s.sync ?? null;
  if (claim === null || claim.term !== s.term || claim.quorum === 0) return null;
  const counted = s.members.filter(
    (m) =>
      claim.standbys.includes(m.name) &&
      m.role === 'replica' &&
      m.state === 'running' &&
      // A WAL receiver was started since postgres started: the startup process asks
      // for one only after replaying all the WAL on disk, so the position is no longer
      // an underestimate of what the standby has flushed.
      m.receivedLsn !== null &&
      (s.leaderLostAt === null ||
        (m.observedAt !== undefined && m.observedAt !== null && Date.parse(m.observedAt) >= s.leaderLostAt)),
  );
  const need = claim.standbys.length - claim.quorum + 1;
  if (counted.length >= need) {
    let floor: LsnText | null = null;
    for (const m of counted) floor = maxLsn(floor, maxLsn(m.receivedLsn, m.replayedLsn));
    return { floor, counted: counted.map((m) => m.name), short: '' };
  }
  const missing = claim.standbys
    .filter((n) => !counted.some((m) => m.name === n))
    .map((n) => `${n}: ${describeMember(s.members.find((m) => m.name === n))}`);
  return {
    floor: null,
    counted: counted.map((m) => m.name),
    short: `synchronous quorum (ANY ${claim.quorum} of ${claim.standbys.join(', ')}, claimed by ${claim.member} in term ${claim.term}): an election needs positions observed after the primary was lost from ${need} of them, and has ${counted.length}${counted.length > 0 ? ` (${counted.map((m) => m.name).join(', ')})` : ''}; waiting for ${missing.join('; ')}`,
  };
}

/** With a synchronous quorum, a candidate must hold its floor; the asynchronous lag bound does not apply. */
function synchronousQualification(
  mustHold: LsnText | null,
  quorum: SynchronousQuorum | null,
): { mustHold?: LsnText | null; maximumLagOnFailoverBytes?: number } {
  if (quorum === null || quorum.floor === null) return {};
  return { mustHold: maxLsn(mustHold, quorum.floor), maximumLagOnFailoverBytes: Number.POSITIVE_INFINITY };
}

function describeMember(m: MemberRecord | undefined): string {
  if (m === undefined) return 'it does not report';
  return `it reports ${m.state} as ${m.role} (updated ${m.updatedAt})`;
}

function describeRecord(r: LastPrimaryRecord | null): string {
  if (r === null) return '';
  return ` (${r.member}, primary of term ${r.term}, ${r.clean ? 'shut down cleanly at' : 'last known at'} ${r.lsn} on timeline ${r.timeline})`;
}

/**
 * The history record of `leader`'s promotion. The old primary is the one of the
 * durable record of the previous term (the same member when it was re-elected after
 * a restart), else the target's `from`, else the one this controller saw lead, else
 * the new primary of the previous term's history record.
 *
 * Timings: `detectedAt` is the target's (when the controller saw the request or the
 * leader gone), else when this controller saw no leader; `decidedAt` the target's;
 * `writableAt` now (this controller sees the leader writable). All three are on the
 * controller's clock, so their differences do not depend on clocks agreeing;
 * `promotedAt` is the agent's. `lostBytes` is, for every
 * reason, how far the old primary's furthest known position was ahead of what the
 * new primary held when it took the record (`fromLsn`; failing that its last report
 * as a replica): max(0, old − new), null when either is unknown.
 */
function recordHistory(s: ControllerSnapshot, leader: LeaderRecord): ControllerDecision {
  const byTarget = s.target !== null && s.target.term === leader.term ? s.target : null;
  const previous = s.lastPrimaryRecords.find((r) => r.term === leader.term - 1) ?? null;
  const remembered = s.lastPrimary !== null && s.lastPrimary.name !== leader.member ? s.lastPrimary : null;
  const fromTarget = byTarget?.from != null && byTarget.from !== leader.member ? byTarget.from : null;
  const fromHistory = s.lastHistory != null && s.lastHistory.term === leader.term - 1 ? s.lastHistory.newPrimary : null;
  const oldPrimary = previous?.member ?? fromTarget ?? remembered?.name ?? fromHistory;
  const oldLsn = maxLsn(
    previous?.lsn ?? null,
    s.lastPrimary !== null && s.lastPrimary.name === oldPrimary ? positionOf(s.lastPrimary) : null,
  );
  const newPrimary = s.members.find((m) => m.name === leader.member) ?? null;
  const newLsn =
    leader.fromLsn ??
    positionOf(s.lastAsReplica.find((m) => m.name === leader.member) ?? null) ??
    positionOf(newPrimary);
  const lastKnownLsn: Record<string, string | null> = {};
  for (const m of s.members) lastKnownLsn[m.name] = positionOf(m);
  lastKnownLsn[leader.member] = newLsn;
  if (oldPrimary !== null && oldPrimary !== leader.member) lastKnownLsn[oldPrimary] = oldLsn;
  const reason = byTarget?.reason ?? (s.lastHistoryTerm === 0 ? 'bootstrap' : 'restart');
  // A bootstrap answers no fault or request: nothing was detected (a controller that
  // ran before it only saw a cluster without a leader yet).
  const lostAt = reason === 'bootstrap' || s.leaderLostAt === null ? null : new Date(s.leaderLostAt).toISOString();
  return {
    type: 'record-history',
    history: {
      v: recordVersion,
      term: leader.term,
      oldPrimary,
      newPrimary: leader.member,
      timeline: leader.timeline,
      reason,
      detectedAt: byTarget?.detectedAt ?? lostAt,
      promotedAt: leader.since,
      lastKnownLsn,
      decidedAt: byTarget?.decidedAt ?? null,
      writableAt: new Date(s.now).toISOString(),
      lostBytes: oldLsn !== null && newLsn !== null ? lsnLagBytes(oldLsn, newLsn) : null,
    },
  };
}
