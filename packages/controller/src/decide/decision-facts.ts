import { type LsnText, lsnLagBytes, type MemberRecord, maxLsn } from '@pgha/core';
import type { AgentAction, AgentSnapshot, PostgresState } from './agent-role.js';
import type { ControllerDecision, ControllerSnapshot } from './controller.js';

/**
 * The facts a decision was made from, as the fields of its one log line. Pure: the
 * shells pass the snapshot they decided on and the decision they got, and log the
 * result beside the decision's unchanged message (`action: promote`, `target for
 * term 4: pg-1 (failover)`). An operator reading the line later sees what the
 * deciding process saw, not what is true by then.
 */

/** A leader record, as a log field. */
export interface LeaderFact {
  readonly member: string;
  readonly term: number;
  readonly writable: boolean;
}

/** A target record, as a log field. */
export interface TargetFact {
  readonly member: string;
  readonly term: number;
  readonly reason: string;
}

/** The fields of an agent's decision line. */
export interface AgentDecisionFacts {
  readonly decision: AgentAction['type'];
  readonly reason?: string;
  readonly term: number;
  readonly leader: LeaderFact | null;
  readonly target: TargetFact | null;
  readonly holdsLeader: boolean;
  /** Until our lease deadline (negative: passed), null without a lease. */
  readonly leaseRemainingMillis: number | null;
  readonly postgres: PostgresState;
  /** What postgres itself answered: out of recovery (true), in recovery (false), no answer (null). */
  readonly observedWritable: boolean | null;
  readonly crashes: number;
  /** The member our standby streams from, null when none. */
  readonly following: string | null;
  /** `restart` only: as what. */
  readonly as?: 'primary' | 'replica';
}

/** The facts of the agent's `decision` on `s`. */
export function agentDecisionFacts(s: AgentSnapshot, decision: AgentAction): AgentDecisionFacts {
  const target = decision.type === 'promote' || decision.type === 'step-down' ? decision.target : s.target;
  const leader = decision.type === 'follow' ? decision.leader : s.leader;
  return {
    decision: decision.type,
    ...('reason' in decision ? { reason: decision.reason } : {}),
    term: s.term,
    leader: leader === null ? null : { member: leader.member, term: leader.term, writable: leader.writable },
    target: target === null ? null : { member: target.member, term: target.term, reason: target.reason },
    holdsLeader: s.holdsLeader,
    // Whole milliseconds: the monotonic clock has fractions no reader needs.
    leaseRemainingMillis: s.leaseDeadline === null ? null : Math.round(s.leaseDeadline - s.now),
    postgres: s.postgres,
    observedWritable: s.observedWritable,
    crashes: s.crashes,
    following: s.following?.member ?? null,
    ...(decision.type === 'restart' ? { as: decision.as } : {}),
  };
}

/** One member as an election saw it. */
export interface CandidateFact {
  readonly member: string;
  readonly role: MemberRecord['role'];
  readonly state: MemberRecord['state'];
  readonly timeline: number | null;
  /** Its position: received WAL (a replica), else replayed; null when it did not say. */
  readonly lsn: LsnText | null;
  /** Bytes behind `lastPrimaryLsn`, null when either is unknown. */
  readonly lagBytes: number | null;
  readonly streaming: boolean;
  readonly noFailover: boolean;
  /** How old its report was when the controller decided. */
  readonly reportAgeMillis: number;
  /** Why the ranking refused it (no-candidate only). */
  readonly rejected?: string;
}

/** The fields of a controller's decision line. */
export interface ControllerDecisionFacts {
  readonly decision: ControllerDecision['type'];
  readonly reason?: string;
  readonly term: number;
  readonly leader: LeaderFact | null;
  readonly target: TargetFact | null;
  /** Since the controller saw the leader record vanish, null while there is one. */
  readonly leaderLostForMillis: number | null;
  /** The last primary the controller knows of, and its furthest known position: the lag reference. */
  readonly lastPrimary: string | null;
  readonly lastPrimaryLsn: LsnText | null;
  readonly candidates: readonly CandidateFact[];
  readonly switchover: { readonly from: string | null; readonly to: string | null } | null;
}

/** The facts of the controller's `decision` on `s`. */
export function controllerDecisionFacts(s: ControllerSnapshot, decision: ControllerDecision): ControllerDecisionFacts {
  const record = s.lastPrimaryRecords.find((r) => r.term === s.term) ?? null;
  const lastPrimary = record?.member ?? s.lastPrimary?.name ?? (s.leader?.writable ? s.leader.member : null);
  const current = s.leader === null ? null : (s.members.find((m) => m.name === s.leader!.member) ?? null);
  const lastPrimaryLsn = maxLsn(record?.lsn ?? null, maxLsn(positionOf(s.lastPrimary), positionOf(current)));
  const rejected = decision.type === 'no-candidate' ? decision.rejected : [];
  const target = decision.type === 'set-target' ? decision.target : s.target;
  return {
    decision: decision.type,
    ...('reason' in decision ? { reason: decision.reason } : {}),
    ...(decision.type === 'set-target' ? { reason: decision.target.reason } : {}),
    term: s.term,
    leader: s.leader === null ? null : { member: s.leader.member, term: s.leader.term, writable: s.leader.writable },
    target: target === null ? null : { member: target.member, term: target.term, reason: target.reason },
    leaderLostForMillis: s.leaderLostAt === null ? null : s.now - s.leaderLostAt,
    lastPrimary,
    lastPrimaryLsn,
    candidates: s.members.map((m) => {
      const lsn = positionOf(m);
      const why = rejected.find((r) => r.member === m.name)?.reason;
      return {
        member: m.name,
        role: m.role,
        state: m.state,
        timeline: m.timeline,
        lsn,
        lagBytes: lsn === null || lastPrimaryLsn === null ? null : lsnLagBytes(lastPrimaryLsn, lsn),
        streaming: m.streaming,
        noFailover: m.tags.noFailover === true,
        reportAgeMillis: Math.max(0, s.now - Date.parse(m.updatedAt)),
        ...(why === undefined ? {} : { rejected: why }),
      };
    }),
    switchover: s.switchover === null ? null : { from: s.switchover.from, to: s.switchover.to },
  };
}

function positionOf(m: MemberRecord | null): LsnText | null {
  return m === null ? null : (m.receivedLsn ?? m.replayedLsn);
}
