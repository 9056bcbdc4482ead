/**
 * Synchronous replication on Kubernetes, the operator's two decisions (pure: no
 * clock, no etcd):
 *
 * - {@link decideSynchronousConfig}: the cluster's `config` record in etcd carries the
 *   synchronous settings the agents follow (`synchronousMode`, `synchronousCount`,
 *   `synchronousStrict`); the PgHaCluster's `spec.synchronous` is their source, and the
 *   spec's `leaseTtlMillis`, `maximumLagOnFailoverBytes` and `postgresParameters` are
 *   the source of those fields (a stored record wins over the agents' flags). When
 *   they differ the operator writes them, keeping every other field of the record as
 *   it is (`version` + 1, `updatedAt`, `updatedBy: 'pgha operator'`), in a transaction
 *   guarded by the mod revision it read (or create-if-absent), so a concurrent
 *   `pgha config set` is never overwritten unseen: the guard fails and the next round
 *   reads again. A record that does not parse is never overwritten (its other fields
 *   would be lost): the condition says so. With no record and mode `off` nothing is
 *   written: no record means off.
 * - {@link decideSynchronousCondition}: the `Synchronous` status condition and its
 *   events. True when the current primary's `sync` record (its claim) of the current
 *   term says at least `count` standbys hold every commit it acknowledged — and, in
 *   strict mode, when at least `count` standbys report streaming (otherwise commits
 *   wait: the claim stays whole but writes block). False/`Degraded` otherwise, with
 *   what falls short and what it means for commits; False/`Off` in mode off. A Warning
 *   event `SynchronousDegraded` when it becomes degraded, a Normal `SynchronousRestored`
 *   when it recovers from degraded, each once per change (the previous condition, in
 *   the status, is the memory).
 *
 * While nothing can be said — no writable primary (a failover or switchover is under
 * way), etcd unreadable — the condition keeps its previous value (the `Ready`
 * condition and the `PrimaryLost` event tell that story), so a switchover does not
 * emit a Degraded/Restored pair, and a degradation that outlasts one is reported once.
 * Likewise for a short while after the settings changed (`graceMillis`, default
 * {@link defaultApplyGraceMillis}), while
 * the primary's agent applies them: a claim older than the change that falls short is
 * not yet a degradation.
 */

import { ConfigRecord, defaultConfig, ProtocolError, type SyncRecord } from '@pgha/core';
import type { Condition, PgHaClusterSpec, SynchronousSpec } from './pgha-cluster.js';

/** The condition type on the PgHaCluster's status. */
export const synchronousConditionType = 'Synchronous';
/** Who the operator's config writes name as `updatedBy`. */
export const operatorConfigWriter = 'pgha operator';
/**
 * How long after a change of the synchronous settings a claim that predates it and
 * falls short is taken for "being applied": the primary's agent applies a change at
 * its next report (1 s), waits for its walsenders to show it (1 s) and for the
 * standbys to catch up before it claims more.
 */
export const defaultApplyGraceMillis = 5000;

/** The cluster's `config` record as the shell found it. */
export type StoredConfigObservation =
  | { readonly state: 'absent' }
  | { readonly state: 'stored'; readonly record: ConfigRecord; readonly modRevision: string }
  | { readonly state: 'malformed'; readonly problem: string };

/** What the shell read from the cluster's etcd for synchronous replication. */
export interface SynchronousObservation {
  readonly config: StoredConfigObservation;
  /** The `sync` record (the primary's claim), null when absent. */
  readonly sync: SyncRecord | null;
  /** Why the `sync` record could not be parsed; absent when it could. */
  readonly syncProblem?: string;
  /** Members whose record says they run as a replica whose WAL receiver streams. */
  readonly streaming: readonly string[];
}

/** A write of the `config` record: create it, or replace the version read. */
export interface ConfigWrite {
  readonly record: ConfigRecord;
  /** `create`: only if absent; else only if the key's mod revision is still this one. */
  readonly expect: { readonly create: true } | { readonly modRevision: string };
  /** What changes, for the log (`synchronousMode off → quorum, …`). */
  readonly change: string;
}

export type SynchronousConfigDecision =
  | { readonly type: 'in-sync' }
  | { readonly type: 'write'; readonly write: ConfigWrite }
  /** The record cannot be written safely (it does not parse): the condition says why. */
  | { readonly type: 'blocked'; readonly problem: string };

/**
 * The record's fields the spec owns, with the spec's value of each: the synchronous
 * settings, and the settings the spec also gives the agents and the failover controller
 * as flags (a stored record wins over flags, so a spec change of these must reach the
 * record too, or it would be ignored once a record exists).
 */
function ownedFields(spec: PgHaClusterSpec): Array<readonly [keyof ConfigRecord, unknown]> {
  return [
    ['synchronousMode', spec.synchronous.mode],
    ['synchronousCount', spec.synchronous.count],
    ['synchronousStrict', spec.synchronous.strict],
    ['leaseTtlMillis', spec.leaseTtlMillis],
    ['maximumLagOnFailoverBytes', spec.maximumLagOnFailoverBytes],
    ['postgresParameters', { ...spec.postgresParameters }],
  ];
}

const same = (a: unknown, b: unknown) => JSON.stringify(sortedObject(a)) === JSON.stringify(sortedObject(b));

const describeValue = (v: unknown) => (typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));

function sortedObject(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

/**
 * The write, if any, that makes the `config` record's synchronous fields equal to
 * `spec.synchronous` (see the file header). A new record takes its other fields from
 * what the spec gives the agents and the failover controller as flags (lease TTL, lag
 * bound, PostgreSQL parameters; keepalive and fencing margin at their defaults), so
 * that its appearing changes nothing else they use.
 */
export function decideSynchronousConfig(input: {
  readonly spec: PgHaClusterSpec;
  readonly config: StoredConfigObservation;
  /** ISO time, for `updatedAt`. */
  readonly now: string;
}): SynchronousConfigDecision {
  const { spec, config, now } = input;
  const wanted = spec.synchronous;
  switch (config.state) {
    case 'malformed':
      return {
        type: 'blocked',
        problem: `the cluster's config record in etcd cannot be read (${config.problem}), so spec.synchronous cannot be written into it without losing its other settings: repair it with pgha config set, or delete the key for the operator to create it`,
      };
    case 'absent': {
      if (wanted.mode === 'off') return { type: 'in-sync' };
      const record: ConfigRecord = {
        ...defaultConfig,
        version: 1,
        leaseTtlMillis: spec.leaseTtlMillis,
        maximumLagOnFailoverBytes: spec.maximumLagOnFailoverBytes,
        postgresParameters: { ...spec.postgresParameters },
        synchronousMode: wanted.mode,
        synchronousCount: wanted.count,
        synchronousStrict: wanted.strict,
        updatedAt: now,
        updatedBy: operatorConfigWriter,
      };
      return checked(record, { create: true }, `created with ${describeSettings(wanted)}`);
    }
    case 'stored': {
      const have = config.record;
      const differing = ownedFields(spec).filter(([field, value]) => !same(have[field], value));
      const changes = differing.map(
        ([field, value]) => `${field} ${describeValue(have[field])} → ${describeValue(value)}`,
      );
      if (changes.length === 0) return { type: 'in-sync' };
      const record: ConfigRecord = {
        ...have,
        ...Object.fromEntries(differing),
        version: have.version + 1,
        updatedAt: now,
        updatedBy: operatorConfigWriter,
      };
      return checked(
        record,
        { modRevision: config.modRevision },
        `version ${have.version} → ${record.version}: ${changes.join(', ')}`,
      );
    }
    default: {
      const never: never = config;
      throw new Error(`unknown config state ${JSON.stringify(never)}`);
    }
  }
}

/** The write when the record it makes is valid; else why not (a spec value the record cannot hold). */
function checked(record: ConfigRecord, expect: ConfigWrite['expect'], change: string): SynchronousConfigDecision {
  try {
    // Validates only (the codec is pure); the shell encodes it when it writes.
    return { type: 'write', write: { record: ConfigRecord.parse(record), expect, change } };
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return {
      type: 'blocked',
      problem: `the cluster's config record cannot hold this spec (${error.message}); fix the spec`,
    };
  }
}

function describeSettings(s: SynchronousSpec): string {
  return s.mode === 'off' ? 'synchronousMode off' : `synchronousMode quorum, count ${s.count}, strict ${s.strict}`;
}

/** Everything the condition needs, as plain data. */
export interface SynchronousConditionInput {
  readonly spec: SynchronousSpec;
  /** The writable leader record (member, term), or null when there is none. */
  readonly leader: { readonly member: string; readonly term: number } | null;
  /** What was read from etcd; null when it could not be read. */
  readonly observed: SynchronousObservation | null;
  /** The config write this round makes (its record is what the agents will follow), if any. */
  readonly writing: ConfigWrite | null;
  /** The config record cannot be written (malformed, or the spec does not fit it). */
  readonly blocked: string | null;
  /** The condition in the status now, if any. */
  readonly previous: Condition | undefined;
  /** Now, in milliseconds since the epoch (the shell's clock, read once per round). */
  readonly nowMillis: number;
  /** How long a settings change the claim does not reach yet counts as being applied. */
  readonly graceMillis: number;
}

/** A condition without its bookkeeping (observedGeneration, lastTransitionTime). */
export interface ConditionValue {
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
}

export interface SynchronousConditionDecision {
  /** The condition to publish; `keep`: the previous one stays as it is. */
  readonly condition: ConditionValue | 'keep';
  readonly event: {
    readonly eventType: 'Normal' | 'Warning';
    readonly reason: 'SynchronousDegraded' | 'SynchronousRestored';
    readonly message: string;
  } | null;
  /** Look again after this long (the grace of a settings change ends); null: no need. */
  readonly recheckAfterMillis: number | null;
}

/** The `Synchronous` condition and its event (see the file header). */
export function decideSynchronousCondition(input: SynchronousConditionInput): SynchronousConditionDecision {
  const { spec, leader, observed, previous } = input;
  const keepOr = (
    fallback: ConditionValue,
    recheckAfterMillis: number | null = null,
  ): SynchronousConditionDecision => ({
    condition: previous === undefined ? fallback : 'keep',
    event: null,
    recheckAfterMillis,
  });
  if (input.blocked !== null)
    return settle(previous, { status: 'Unknown', reason: 'ConfigNotWritable', message: input.blocked }, null);
  if (spec.mode === 'off')
    return settle(
      previous,
      {
        status: 'False',
        reason: 'Off',
        message: 'spec.synchronous.mode is off: the primary acknowledges commits without waiting for a standby',
      },
      null,
    );
  if (observed === null)
    return keepOr({
      status: 'Unknown',
      reason: 'EtcdUnreadable',
      message: "the cluster's sync record cannot be read from etcd",
    });
  if (leader === null)
    return keepOr({
      status: 'Unknown',
      reason: 'NoPrimary',
      message: 'no writable primary: nothing acknowledges commits',
    });

  // What the agents follow: the record this round writes, else the stored one.
  const stored = observed.config.state === 'stored' ? observed.config.record : null;
  const followed = input.writing?.record ?? stored;
  const sync = observed.sync;
  const claim = sync !== null && sync.term === leader.term && sync.member === leader.member ? sync : null;
  const quorum = claim?.quorum ?? 0;
  const standbys = claim?.standbys ?? [];
  const streaming = observed.streaming.filter((m) => m !== leader.member);
  const who = `the primary ${leader.member} (term ${leader.term})`;
  const claimText =
    quorum === 0
      ? `${who} claims no standby holds its commits`
      : `${who} claims every commit is on ${quorum} of ${standbys.join(', ')}`;

  let shortfall: string | null = null;
  if (quorum < spec.count)
    shortfall =
      `${claimText}; spec.synchronous.count is ${spec.count}` +
      (observed.syncProblem !== undefined ? ` (its sync record cannot be read: ${observed.syncProblem})` : '') +
      `: ${quorum === 0 ? 'commits are acknowledged without a standby (asynchronous)' : `commits are acknowledged after ${quorum} confirmation${quorum === 1 ? '' : 's'}`} until enough standbys stream; ${streaming.length} stream${streaming.length === 1 ? 's' : ''} now${streaming.length > 0 ? ` (${streaming.join(', ')})` : ''} — check the replicas' pods and pgha status`;
  else if (spec.strict && streaming.length < spec.count)
    shortfall = `strict mode: ${streaming.length} of the ${spec.count} standbys required stream${
      streaming.length > 0 ? ` (${streaming.join(', ')})` : ''
    }, so commits on ${leader.member} (term ${leader.term}) wait until ${spec.count} do — check the replicas' pods and pgha status`;

  if (shortfall === null)
    return settle(
      previous,
      {
        status: 'True',
        reason: 'Quorum',
        message: `${claimText}${spec.strict ? ' (strict)' : ''}; spec.synchronous.count is ${spec.count}`,
      },
      null,
    );

  // A change of the settings the primary has not acted on yet is not a degradation
  // (yet): the one this round writes, or a stored one newer than the claim, for
  // `graceMillis` after its `updatedAt` (either side: another writer's clock).
  const grace = input.graceMillis;
  let wait: number | null = null;
  if (input.writing !== null) wait = grace;
  else if (followed !== null) {
    const changedAt = Date.parse(followed.updatedAt);
    const claimedAt = claim === null ? Number.NEGATIVE_INFINITY : Date.parse(claim.at);
    const since = Math.abs(input.nowMillis - changedAt);
    // `updatedAt` may be cut to the second (the operator's own writes are): a claim
    // up to a second after it may still predate the change.
    if (claimedAt < changedAt + 1000 && since < grace) wait = grace - since;
  }
  if (wait !== null) {
    const applying: ConditionValue = {
      status: 'Unknown',
      reason: 'Applying',
      message: `${who} is applying the synchronous settings (config version ${followed?.version ?? '?'}: ${describeSettings(spec)})`,
    };
    // A True or Degraded condition stays through it: no event pair for a short wait.
    const keep = previous !== undefined && (previous.status === 'True' || previous.reason === 'Degraded');
    return { condition: keep ? 'keep' : applying, event: null, recheckAfterMillis: Math.max(100, Math.ceil(wait)) };
  }
  return settle(previous, { status: 'False', reason: 'Degraded', message: shortfall }, null);
}

/** The condition and, on a change into or out of `Degraded`, its event. */
function settle(
  previous: Condition | undefined,
  next: ConditionValue,
  recheckAfterMillis: number | null,
): SynchronousConditionDecision {
  const wasDegraded = previous?.status === 'False' && previous.reason === 'Degraded';
  let event: SynchronousConditionDecision['event'] = null;
  if (next.reason === 'Degraded' && !wasDegraded)
    event = { eventType: 'Warning', reason: 'SynchronousDegraded', message: next.message };
  else if (next.status === 'True' && wasDegraded)
    event = { eventType: 'Normal', reason: 'SynchronousRestored', message: next.message };
  return { condition: next, event, recheckAfterMillis };
}
