import { PghaError, ProtocolError } from './errors.js';
import { assertValidName, isValidName } from './names.js';

/**
 * The etcd key layout. This module is the only place a pgha key is built or parsed.
 *
 * Everything of one cluster lives below one prefix, `/pgha/<cluster>/` by default:
 *
 * | key | writer | lease |
 * | --- | --- | --- |
 * | `initialize` | the member that ran initdb (create-if-absent) | — |
 * | `config` | `pgha config set`, `pgha up` (guarded by its mod revision) | — |
 * | `sync` | the primary's agent (with the leader install, then guarded by holding `leader`) | — |
 * | `members/<name>` | that member's agent | the agent's |
 * | `leader` | the primary's agent | the primary agent's |
 * | `last-primary` | the primary's agent (guarded by holding `leader`) | — |
 * | `term` | whoever installs a leader, in the same transaction | — |
 * | `target` | controller | — |
 * | `switchover` | CLI / API | — |
 * | `history/<term>` | controller | — |
 * | `controller` | the active controller (create-if-absent) | the controller's |
 * | `removed/<name>` | the Kubernetes operator (a member it scaled away on purpose) | — |
 * | `failsafe` | the primary's agent (guarded by holding `leader`) | — |
 */
export const keyKinds = [
  'initialize',
  'config',
  'sync',
  'member',
  'leader',
  'last-primary',
  'term',
  'target',
  'switchover',
  'history',
  'controller',
  'removed',
  'failsafe',
] as const;

/** One of {@link keyKinds}. */
export type KeyKind = (typeof keyKinds)[number];

/** What {@link ClusterKeys.parse} found a key to be. */
export type ParsedKey =
  | {
      readonly kind:
        | 'initialize'
        | 'config'
        | 'sync'
        | 'leader'
        | 'last-primary'
        | 'term'
        | 'target'
        | 'switchover'
        | 'controller'
        | 'failsafe';
    }
  | { readonly kind: 'member'; readonly name: string }
  | { readonly kind: 'history'; readonly term: number }
  | { readonly kind: 'removed'; readonly name: string };

/** The default root under which clusters are kept. */
export const defaultKeyRoot = '/pgha/';

/** Builders and the parser for one cluster's keys. */
export interface ClusterKeys {
  /** The prefix every key of the cluster starts with, ending in `/`. */
  readonly prefix: string;
  readonly initialize: string;
  readonly config: string;
  /** The primary's synchronous replication claim (which standbys hold every commit). */
  readonly sync: string;
  readonly leader: string;
  /**
   * The durable position of the newest primary (no lease): survives every process of
   * the cluster, so an election after a whole-cluster restart knows whose data is newest.
   */
  readonly lastPrimary: string;
  readonly term: string;
  readonly target: string;
  readonly switchover: string;
  /** Held by the active controller under its lease (the controller election). */
  readonly controller: string;
  /**
   * The members the primary asks for promises during an etcd outage (failsafe mode,
   * issue 14); no lease, so it outlives the outage. Written only by the leader.
   */
  readonly failsafe: string;
  /** Prefix of all member records (for range reads and watches). */
  readonly membersPrefix: string;
  /** Prefix of all history records. */
  readonly historyPrefix: string;
  /** Prefix of all removal marks (`removed/<name>`). */
  readonly removedPrefix: string;
  member(name: string): string;
  /**
   * The mark of a member removed on purpose (a scale-down): its replication slot may
   * be dropped as soon as it has no member record and the slot is inactive, without
   * waiting for the member slots TTL. Deleted again when the member is wanted back.
   */
  removed(name: string): string;
  /** History keys are zero-padded so etcd's byte order is term order. */
  history(term: number): string;
  /** What `key` is, or null when it is not one of this cluster's keys. */
  parse(key: string): ParsedKey | null;
}

const singles = [
  'initialize',
  'config',
  'sync',
  'leader',
  'last-primary',
  'term',
  'target',
  'switchover',
  'controller',
  'failsafe',
] as const;

/**
 * History keys hold the term as 12 zero-padded digits so etcd's byte order is term
 * order; a wider term would neither sort nor parse, so it is refused when building.
 */
const historyDigits = 12;
const maxHistoryTerm = 10 ** historyDigits - 1;

/**
 * The keys of `cluster`, below `root` (default `/pgha/`).
 *
 * @throws PghaError `invalid-option` when the cluster name is not a DNS-1123 label or
 *   the root does not start and end with `/`.
 * @example clusterKeys('demo').leader === '/pgha/demo/leader'
 */
export function clusterKeys(cluster: string, root: string = defaultKeyRoot): ClusterKeys {
  assertValidName('cluster', cluster);
  if (!root.startsWith('/') || !root.endsWith('/')) {
    throw new PghaError('invalid-option', `invalid key root "${root}": it must start and end with "/", like /pgha/`);
  }
  const prefix = `${root}${cluster}/`;
  const membersPrefix = `${prefix}members/`;
  const historyPrefix = `${prefix}history/`;
  const removedPrefix = `${prefix}removed/`;
  return {
    prefix,
    initialize: `${prefix}initialize`,
    config: `${prefix}config`,
    sync: `${prefix}sync`,
    leader: `${prefix}leader`,
    lastPrimary: `${prefix}last-primary`,
    term: `${prefix}term`,
    target: `${prefix}target`,
    switchover: `${prefix}switchover`,
    controller: `${prefix}controller`,
    failsafe: `${prefix}failsafe`,
    membersPrefix,
    historyPrefix,
    removedPrefix,
    member(name: string): string {
      return `${membersPrefix}${assertValidName('member', name)}`;
    },
    removed(name: string): string {
      return `${removedPrefix}${assertValidName('member', name)}`;
    },
    history(term: number): string {
      if (!Number.isSafeInteger(term) || term < 1 || term > maxHistoryTerm) {
        throw new ProtocolError(
          'history key',
          `term ${term} must be a positive integer of at most ${historyDigits} digits`,
        );
      }
      return `${historyPrefix}${String(term).padStart(historyDigits, '0')}`;
    },
    parse(key: string): ParsedKey | null {
      if (!key.startsWith(prefix)) return null;
      const rest = key.slice(prefix.length);
      for (const kind of singles) if (rest === kind) return { kind };
      if (rest.startsWith('members/')) {
        const name = rest.slice('members/'.length);
        return isValidName(name) ? { kind: 'member', name } : null;
      }
      if (rest.startsWith('removed/')) {
        const name = rest.slice('removed/'.length);
        return isValidName(name) ? { kind: 'removed', name } : null;
      }
      if (rest.startsWith('history/')) {
        const digits = rest.slice('history/'.length);
        if (!/^\d{12}$/.test(digits)) return null;
        const term = Number(digits);
        return term >= 1 ? { kind: 'history', term } : null;
      }
      return null;
    },
  };
}
