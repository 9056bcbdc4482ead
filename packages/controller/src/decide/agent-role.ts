import type { LeaderRecord, TargetRecord } from '@pgha/core';

/** What the agent's postgres is doing, as far as the agent knows. */
export const postgresStates = ['down', 'starting', 'primary', 'replica'] as const;
export type PostgresState = (typeof postgresStates)[number];

/** What the agent knows on one tick of its control loop. */
export interface AgentSnapshot {
  readonly self: string;
  /** Monotonic milliseconds. */
  readonly now: number;
  /** Our own lease deadline (see LeaseKeeper), null without a lease. */
  readonly leaseDeadline: number | null;
  readonly postgres: PostgresState;
  /**
   * What postgres itself said on the last status query: true when it is out of
   * recovery (writable), false in recovery, null when it did not answer. A fact,
   * unlike `postgres`, which is the agent's own label.
   */
  readonly observedWritable: boolean | null;
  /** Unexpected postgres exits since it last ran healthy for a while. */
  readonly crashes: number;
  /** Whether we installed the leader record and have not seen it deleted or replaced since. */
  readonly holdsLeader: boolean;
  /** The leader record in etcd as last read (null: none). */
  readonly leader: LeaderRecord | null;
  /** The cluster's term as last read. */
  readonly term: number;
  readonly target: TargetRecord | null;
  /** The member our standby configuration streams from, or null. */
  readonly following: { readonly member: string; readonly host: string; readonly port: number } | null;
  /** How many in-place restarts a primary gets before it gives up the leader record. */
  readonly maxRestarts: number;
}

/** What the agent does next. */
export type AgentAction =
  | { readonly type: 'none' }
  /** Kill postgres now: it is writable without a valid claim to be (contract line 1). */
  | { readonly type: 'fence'; readonly reason: string }
  /** Delete our leader record so failover starts at once instead of after the TTL. */
  | { readonly type: 'release-leader'; readonly reason: string }
  /** Planned switchover: shut down cleanly (WAL reaches the replicas), release the leader record, follow. */
  | { readonly type: 'step-down'; readonly target: TargetRecord }
  /** Install the leader record for the target's term, then promote. */
  | { readonly type: 'promote'; readonly target: TargetRecord }
  /**
   * We hold the leader record of the current term but it is not writable yet (an
   * install whose answer was lost, a promotion interrupted after the install):
   * promote postgres (if it is still a standby) and mark the record writable.
   */
  | { readonly type: 'finish-promotion' }
  /** Start postgres again: writable only while we hold a valid leader record. */
  | { readonly type: 'restart'; readonly as: 'primary' | 'replica' }
  /** (Re)point the standby at the leader. */
  | { readonly type: 'follow'; readonly leader: LeaderRecord };

/**
 * The agent's role transitions. Pure.
 *
 * Safety (checked by property tests): the only actions that can make postgres
 * writable are `promote` (after an etcd transaction that installs our leader
 * record for a term no one else holds) and `restart` as primary (only while we hold
 * the leader record and our lease deadline is ahead). Whenever postgres is writable
 * without both — by our label or by what postgres itself answered — the answer is
 * `fence`, before anything else. `finish-promotion` only completes a promotion of
 * the term whose leader record we already hold.
 */
export function decideAgentAction(s: AgentSnapshot): AgentAction {
  const leaseValid = s.leaseDeadline !== null && s.now < s.leaseDeadline;
  if (s.postgres === 'primary' && !s.holdsLeader)
    return { type: 'fence', reason: 'writable without holding the leader record' };
  if (s.postgres === 'primary' && !leaseValid) return { type: 'fence', reason: 'lease deadline passed' };
  // Facts over labels: a postgres promoted behind our back (an operator's
  // pg_promote) is writable whatever the agent thought it was.
  if (s.observedWritable === true && !s.holdsLeader)
    return { type: 'fence', reason: 'postgres is out of recovery but we hold no leader record' };
  // Both halves of the claim, on the facts too: a postgres promoted behind our back
  // while we hold a record whose deadline passed (restarted as a standby, say) has no
  // claim either. Its label is not primary, so neither rule above nor the fence
  // timer sees it.
  if (s.observedWritable === true && !leaseValid)
    return { type: 'fence', reason: 'postgres is out of recovery but our lease deadline passed' };
  if (s.holdsLeader && s.postgres === 'down' && s.crashes > s.maxRestarts) {
    return { type: 'release-leader', reason: `postgres failed ${s.crashes} times in a row` };
  }
  const ownRecord = s.holdsLeader && s.leader !== null && s.leader.member === s.self ? s.leader : null;
  if (ownRecord !== null && !ownRecord.writable) {
    if (!leaseValid) return { type: 'release-leader', reason: 'lease deadline passed before the promotion finished' };
    if (s.postgres === 'replica' || s.postgres === 'primary') return { type: 'finish-promotion' };
    // Down: it starts as a standby (its data was not promoted in this term yet),
    // and the next tick promotes it.
    if (s.postgres === 'down') return { type: 'restart', as: 'replica' };
    return { type: 'none' };
  }
  if (
    s.holdsLeader &&
    s.postgres === 'primary' &&
    s.target !== null &&
    s.target.member !== s.self &&
    s.target.term > (s.leader?.term ?? s.term)
  ) {
    return { type: 'step-down', target: s.target };
  }
  if (
    !s.holdsLeader &&
    s.leader === null &&
    s.target !== null &&
    s.target.member === s.self &&
    s.target.term === s.term + 1 &&
    s.postgres === 'replica' &&
    leaseValid
  ) {
    return { type: 'promote', target: s.target };
  }
  if (s.postgres === 'down') {
    // Writable again only with data promoted in the current term: our own writable
    // record of the newest term, under a valid lease.
    const primary = ownRecord !== null && ownRecord.writable && ownRecord.term >= s.term && leaseValid;
    return { type: 'restart', as: primary ? 'primary' : 'replica' };
  }
  if (
    s.postgres === 'replica' &&
    s.leader !== null &&
    s.leader.writable &&
    s.leader.member !== s.self &&
    (s.following === null ||
      s.following.member !== s.leader.member ||
      s.following.host !== s.leader.host ||
      s.following.port !== s.leader.port)
  ) {
    return { type: 'follow', leader: s.leader };
  }
  return { type: 'none' };
}

/** What the agent knows on a tick whose etcd read failed. */
export interface UnreadSnapshot {
  /** As {@link AgentSnapshot.observedWritable}: what postgres itself answered. */
  readonly observedWritable: boolean | null;
  readonly holdsLeader: boolean;
  /** Whether our lease deadline is still ahead (LeaseKeeper.isValid). */
  readonly leaseValid: boolean;
}

/**
 * The one decision a tick makes without etcd: facts need no etcd. A postgres that
 * answers as writable while we hold no valid claim is fenced even when etcd cannot
 * be read (an out-of-band promotion of a member cut off from etcd). Returns the
 * fence's reason, or null. Pure.
 */
export function decideWithoutEtcd(s: UnreadSnapshot): { type: 'fence'; reason: string } | null {
  if (s.observedWritable === true && (!s.holdsLeader || !s.leaseValid)) {
    return { type: 'fence', reason: 'postgres is out of recovery but we hold no valid leader record' };
  }
  return null;
}
