import type { LeaderRecord } from '@pgha/core';

/** What the agent found in its data directory. */
export type DataDirKind =
  /** Absent or empty: nothing to lose. */
  | 'empty'
  /** A PostgreSQL data directory marked as this member's. */
  | 'ours'
  /** Non-empty and not this member's (no marker, another cluster's or member's). */
  | 'foreign';

/** What the agent knows at start-up, before it touches postgres. */
export interface StartupSnapshot {
  readonly self: string;
  readonly dataDir: DataDirKind;
  /** Why the data directory is foreign, when it is. */
  readonly foreignReason: string | null;
  /** standby.signal present. */
  readonly standby: boolean;
  /** The system identifier in the local control file (null without a data dir). */
  readonly localSystemId: string | null;
  /** The cluster's system identifier from the `initialize` record (null before initdb finished). */
  readonly clusterSystemId: string | null;
  readonly leader: LeaderRecord | null;
  /** Whether this member may run initdb for a new cluster. */
  readonly mayBootstrap: boolean;
}

/** What to do at start-up. */
export type StartupDecision =
  | { readonly action: 'refuse'; readonly reason: string }
  /** Take the leader record first, then initdb, publish `initialize`, start writable. */
  | { readonly action: 'bootstrap' }
  /** Wait for a leader, then take a base backup from it. */
  | { readonly action: 'clone' }
  /** Take the leader record, then start the existing data writable. */
  | { readonly action: 'start-primary' }
  /** Start the existing data as a standby of the leader (waiting for one if none). */
  | { readonly action: 'start-replica' };

/**
 * Decides how an agent starts. Pure.
 *
 * Safety: nothing here starts postgres writable; `bootstrap` and `start-primary`
 * only permit the shell to *try* to install the leader record, and it starts
 * writable only if that etcd transaction succeeds (contract line 5). Existing data
 * is never discarded here; a foreign or mismatched directory is refused.
 */
export function decideStartup(s: StartupSnapshot): StartupDecision {
  if (s.dataDir === 'foreign') {
    return { action: 'refuse', reason: s.foreignReason ?? 'the data directory is not empty and does not belong to this member' };
  }
  if (s.dataDir === 'empty') {
    if (s.clusterSystemId === null && s.mayBootstrap && (s.leader === null || s.leader.member === s.self)) return { action: 'bootstrap' };
    return { action: 'clone' };
  }
  if (s.clusterSystemId !== null && s.localSystemId !== null && s.clusterSystemId !== s.localSystemId) {
    return {
      action: 'refuse',
      reason: `the data directory holds database system ${s.localSystemId} but the cluster is ${s.clusterSystemId}: it was made for another cluster; move it away to re-clone`,
    };
  }
  if (s.standby) return { action: 'start-replica' };
  if (s.leader !== null && s.leader.member !== s.self) return { action: 'start-replica' };
  return { action: 'start-primary' };
}
