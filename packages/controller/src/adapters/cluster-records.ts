/**
 * One read of a cluster's etcd prefix, turned into validated records: what the
 * controller's pass and `pgha status` decide and report from. Pure (the shells do the
 * etcd read). A record that does not parse, or a member record under another member's
 * key, is skipped and listed in `problems` with its key: garbage in etcd never
 * crashes a pass or the status, and never stands in for a record of someone else.
 */
import {
  type ClusterKeys,
  ConfigRecord,
  ControllerRecord,
  HistoryRecord,
  LastPrimaryRecord,
  LeaderRecord,
  MemberRecord,
  SwitchoverRecord,
  SyncRecord,
  TargetRecord,
  TermRecord,
} from '@pgha/core';

/** One key-value of the read, as etcd returned it. */
export interface EtcdEntry {
  readonly key: string;
  readonly value: string;
  readonly modRevision: string;
}

/** A record that was skipped, and why. */
export interface RecordProblem {
  readonly key: string;
  readonly modRevision: string;
  /** Names the key and what is wrong with its record. */
  readonly message: string;
}

/** The valid records of one read of the cluster's prefix. */
export interface ClusterRecords {
  readonly leader: LeaderRecord | null;
  /** The leader key's mod revision ('0' when absent or malformed). */
  readonly leaderMod: string;
  readonly term: number;
  readonly termMod: string;
  readonly target: TargetRecord | null;
  /** The target's text as stored (to tell when it changed). */
  readonly targetText: string | null;
  readonly switchover: SwitchoverRecord | null;
  readonly switchoverText: string | null;
  readonly switchoverMod: string;
  readonly lastPrimary: LastPrimaryRecord | null;
  /** Member records, each under its own key. */
  readonly members: readonly MemberRecord[];
  readonly config: ConfigRecord | null;
  readonly sync: SyncRecord | null;
  readonly controller: ControllerRecord | null;
  /** The newest term with a history key (well-formed or not: the key says the term is taken); 0 when none. */
  readonly newestHistoryTerm: number;
  /** The newest well-formed history record's term and new primary, null when none. */
  readonly newestHistory: { readonly term: number; readonly newPrimary: string } | null;
  readonly problems: readonly RecordProblem[];
}

/** Validates the entries of one read of `keys.prefix`. Never throws. */
export function readClusterRecords(keys: ClusterKeys, entries: Iterable<EtcdEntry>): ClusterRecords {
  let leader: LeaderRecord | null = null;
  let leaderMod = '0';
  let term = 0;
  let termMod = '0';
  let target: TargetRecord | null = null;
  let targetText: string | null = null;
  let switchover: SwitchoverRecord | null = null;
  let switchoverText: string | null = null;
  let switchoverMod = '0';
  let lastPrimary: LastPrimaryRecord | null = null;
  const members: MemberRecord[] = [];
  let config: ConfigRecord | null = null;
  let sync: SyncRecord | null = null;
  let controller: ControllerRecord | null = null;
  let newestHistoryTerm = 0;
  let newestHistory: ClusterRecords['newestHistory'] = null;
  const problems: RecordProblem[] = [];
  for (const { key, value, modRevision } of entries) {
    const parsed = keys.parse(key);
    try {
      switch (parsed?.kind) {
        case 'leader':
          leader = LeaderRecord.decode(value);
          leaderMod = modRevision;
          break;
        case 'term':
          term = TermRecord.decode(value).term;
          termMod = modRevision;
          break;
        case 'target':
          target = TargetRecord.decode(value);
          targetText = value;
          break;
        case 'switchover':
          switchover = SwitchoverRecord.decode(value);
          switchoverText = value;
          switchoverMod = modRevision;
          break;
        case 'last-primary':
          lastPrimary = LastPrimaryRecord.decode(value);
          break;
        case 'member': {
          const record = MemberRecord.decode(value);
          if (record.name !== parsed.name) {
            throw new Error(`member record names member "${record.name}", not the key's "${parsed.name}"`);
          }
          members.push(record);
          break;
        }
        case 'config':
          config = ConfigRecord.decode(value);
          break;
        case 'sync':
          sync = SyncRecord.decode(value);
          break;
        case 'controller':
          controller = ControllerRecord.decode(value);
          break;
        case 'history':
          newestHistoryTerm = Math.max(newestHistoryTerm, parsed.term);
          if (parsed.term > (newestHistory?.term ?? 0)) {
            newestHistory = { term: parsed.term, newPrimary: HistoryRecord.decode(value).newPrimary };
          }
          break;
        default:
          break;
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      problems.push({ key, modRevision, message: `${key}: ${message}; skipped it` });
    }
  }
  return {
    leader,
    leaderMod,
    term,
    termMod,
    target,
    targetText,
    switchover,
    switchoverText,
    switchoverMod,
    lastPrimary,
    members,
    config,
    sync,
    controller,
    newestHistoryTerm,
    newestHistory,
    problems,
  };
}
