import {
  type HistoryRecord,
  type LeaderRecord,
  type LsnText,
  lsnLagBytes,
  type MemberRecord,
  recordVersion,
  type SwitchoverRecord,
  type TargetReason,
  type TargetRecord,
} from '@pgha/core';
import { type Rejection, rankCandidates } from './candidates.js';

/** Settings the controller decides with. */
export interface ControllerPolicy {
  readonly maximumLagOnFailoverBytes: number;
  /** After the leader vanishes, wait this long at most for every member's fresh report. */
  readonly freshReportWaitMillis: number;
  /** A target that has not installed the leader record by then is replaced. */
  readonly targetInstallTimeoutMillis: number;
}

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
  readonly switchover: SwitchoverRecord | null;
  /** The newest term with a history record. */
  readonly lastHistoryTerm: number;
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

function target(term: number, member: string, reason: TargetReason, from: string | null, now: number): TargetRecord {
  return { v: recordVersion, term, member, reason, from, decidedAt: new Date(now).toISOString() };
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
    if (s.leader.writable && s.leader.term > s.lastHistoryTerm) {
      const byTarget = s.target !== null && s.target.term === s.leader.term ? s.target : null;
      const oldPrimary = s.lastPrimary !== null && s.lastPrimary.name !== s.leader.member ? s.lastPrimary : null;
      const lastKnownLsn: Record<string, string | null> = {};
      for (const m of s.members) lastKnownLsn[m.name] = positionOf(m);
      if (oldPrimary !== null) lastKnownLsn[oldPrimary.name] = positionOf(oldPrimary);
      const newPrimary = s.members.find((m) => m.name === s.leader!.member) ?? null;
      const oldLsn = positionOf(oldPrimary);
      const newLsn = positionOf(newPrimary);
      return {
        type: 'record-history',
        history: {
          v: recordVersion,
          term: s.leader.term,
          oldPrimary: oldPrimary?.name ?? null,
          newPrimary: s.leader.member,
          timeline: s.leader.timeline,
          reason: byTarget?.reason ?? (s.lastHistoryTerm === 0 ? 'bootstrap' : 'restart'),
          detectedAt: s.leaderLostAt === null ? null : new Date(s.leaderLostAt).toISOString(),
          promotedAt: s.leader.since,
          lastKnownLsn,
          decidedAt: byTarget?.decidedAt ?? null,
          lostBytes:
            oldLsn !== null && newLsn !== null && byTarget?.reason === 'failover' ? lsnLagBytes(oldLsn, newLsn) : null,
        },
      };
    }
    if (s.switchover === null) return { type: 'none' };
    if (pending !== null) return { type: 'wait', reason: `switchover to ${pending.member} in progress` };
    if (!s.leader.writable) return { type: 'wait', reason: 'the primary is not writable yet' };
    const req = s.switchover;
    if (req.from !== null && req.from !== s.leader.member) {
      return { type: 'reject-switchover', reason: `${req.from} is not the primary (${s.leader.member} is)` };
    }
    if (req.at !== null && Date.parse(req.at) > s.now)
      return { type: 'wait', reason: `switchover scheduled at ${req.at}` };
    const ranking = rankCandidates(s.members, {
      maximumLagOnFailoverBytes: s.policy.maximumLagOnFailoverBytes,
      lastPrimaryLsn: positionOf(s.members.find((m) => m.name === s.leader!.member) ?? null),
      exclude: new Set([s.leader.member]),
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
      target: target(nextTerm, chosen.name, 'switchover', s.leader.member, s.now),
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
  const manual = s.switchover !== null && s.switchover.to !== null ? s.switchover.to : null;
  if (manual !== null) {
    const m = s.members.find((x) => x.name === manual);
    if (m === undefined || m.role !== 'replica' || m.state !== 'running') {
      return {
        type: 'reject-switchover',
        reason: `${manual} cannot be promoted: ${m === undefined ? 'it does not report' : `it is ${m.state} as ${m.role}`}`,
      };
    }
    return {
      type: 'set-target',
      target: target(nextTerm, manual, 'manual-failover', s.lastPrimary?.name ?? null, s.now),
      consumeSwitchover: true,
    };
  }
  if (s.leaderLostAt !== null && lostFor < s.policy.freshReportWaitMillis) {
    const stale = s.members.filter((m) => Date.parse(m.updatedAt) < s.leaderLostAt!);
    if (stale.length > 0)
      return { type: 'wait', reason: `waiting for fresh reports from ${stale.map((m) => m.name).join(', ')}` };
  }
  // The old primary is not excluded: once fenced and back as a running replica it
  // holds everything it acknowledged, so it may well be the best (lossless) choice.
  const ranking = rankCandidates(s.members, {
    maximumLagOnFailoverBytes: s.policy.maximumLagOnFailoverBytes,
    lastPrimaryLsn: positionOf(s.lastPrimary),
    exclude: failedTarget,
  });
  const best = ranking.candidates[0];
  if (best === undefined) {
    return {
      type: 'no-candidate',
      reason: `no member qualifies for term ${nextTerm}: ${ranking.rejected.map((r) => `${r.member} ${r.reason}`).join('; ') || 'no member reports'}`,
      rejected: ranking.rejected,
    };
  }
  return {
    type: 'set-target',
    target: target(nextTerm, best.name, 'failover', s.lastPrimary?.name ?? null, s.now),
    consumeSwitchover: false,
  };
}
