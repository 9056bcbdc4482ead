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
  /**
   * Start the existing data as a standby: of the leader when there is a writable
   * one, else with no upstream until the controller elects someone (possibly us).
   * `rewind` when the data was last writable (no standby.signal): it may hold WAL
   * the new timeline does not, so it is rewound before it follows anyone.
   */
  | { readonly action: 'start-replica'; readonly rewind: boolean };

/**
 * Decides how an agent starts. Pure.
 *
 * Safety: nothing here starts existing data writable; `bootstrap` only permits the
 * shell to *try* to install the leader record for a new cluster, and it runs
 * initdb and starts writable only if that etcd transaction succeeds (contract line 5). Existing data
 * is never discarded here; a foreign or mismatched directory is refused.
 */
export function decideStartup(s: StartupSnapshot): StartupDecision {
  if (s.dataDir === 'foreign') {
    return {
      action: 'refuse',
      reason: s.foreignReason ?? 'the data directory is not empty and does not belong to this member',
    };
  }
  if (s.dataDir === 'empty') {
    if (s.clusterSystemId === null && s.mayBootstrap && (s.leader === null || s.leader.member === s.self))
      return { action: 'bootstrap' };
    return { action: 'clone' };
  }
  if (s.clusterSystemId !== null && s.localSystemId !== null && s.clusterSystemId !== s.localSystemId) {
    return {
      action: 'refuse',
      reason: `the data directory holds database system ${s.localSystemId} but the cluster is ${s.clusterSystemId}: it was made for another cluster; move it away to re-clone`,
    };
  }
  // Existing data never starts writable here, not even a cluster's only member: after
  // a restart the controller elects the most advanced member (contract line 4), and
  // a member that was primary before may be behind a newer timeline.
  return { action: 'start-replica', rewind: !s.standby };
}
