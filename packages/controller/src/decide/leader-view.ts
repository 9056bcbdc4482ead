import { LeaderRecord } from '@pgha/core';
import { printable } from '../status/printable.js';

/** The `leader` key as an agent read it from etcd. */
export interface LeaderKey {
  readonly value: string;
  /** The etcd lease the key is attached to ('0': none). */
  readonly lease: string;
  readonly modRevision: string;
}

/** What {@link decideLeaderView} decides from. */
export interface LeaderViewSnapshot {
  readonly self: string;
  /** The `leader` key, null when it does not exist. */
  readonly key: LeaderKey | null;
  /** The leader record last read (kept while the key does not parse). */
  readonly last: LeaderRecord | null;
  /** Our etcd lease, null before one was granted. */
  readonly ourLease: string | null;
  /** The revision of an unreadable record already warned about, or null. */
  readonly warned: string | null;
}

/** The agent's view of the leader record. */
export interface LeaderView {
  readonly leader: LeaderRecord | null;
  /** The lease the key is under in etcd (never the last record's): null without a key. */
  readonly lease: string | null;
  /** Whether the record names us and is under our lease. */
  readonly ours: boolean;
  /** The revision to remember as warned about (null once the key is readable or gone). */
  readonly warned: string | null;
  /** A warning to log now (once per unreadable revision, not every tick), or null. */
  readonly warning: string | null;
}

/**
 * The leader record as the agent sees it, robust against a key that does not parse
 * (garbage, a newer record version). Pure.
 *
 * Safety: an unreadable record keeps the last one read, but never its lease: the
 * record is ours only while the key is under our own lease, so a primary whose key
 * was overwritten stops holding it (and fences), and one whose key is still under its
 * lease keeps its claim and its deadline logic. An unreadable record never gives a
 * member leadership: a member that read no leader before may try to install one, and
 * the install's guard (the key does not exist, "Create == 0") refuses while it is there.
 */
export function decideLeaderView(s: LeaderViewSnapshot): LeaderView {
  if (s.key === null) return { leader: null, lease: null, ours: false, warned: null, warning: null };
  const lease = s.key.lease;
  let leader: LeaderRecord | null;
  let warned: string | null = null;
  let warning: string | null = null;
  try {
    leader = LeaderRecord.decode(s.key.value);
  } catch (error) {
    leader = s.last;
    warned = s.key.modRevision;
    if (s.warned !== warned)
      warning = `ignoring the leader record (revision ${warned}): ${printable((error as Error).message)}; keeping the last one read (${s.last === null ? 'none' : `${s.last.member}, term ${s.last.term}`}). No member can take leadership while the key exists: if no pgha of this cluster wrote it, delete it`;
  }
  const ours = leader !== null && leader.member === s.self && s.ourLease !== null && lease === s.ourLease;
  return { leader, lease, ours, warned, warning };
}
