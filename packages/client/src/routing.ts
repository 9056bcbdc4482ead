/**
 * The client's routing decisions, as pure functions of plain snapshots: what a leader
 * observation means, where a checkout goes, whether a server is the primary, what a
 * failed query means and which connections must be drained. No clock, timers, etcd
 * or pg in here; the shells (discovery.ts, primary-client.ts, pool.ts) read, call
 * these, and apply the result.
 */
import type { ClusterEvent, LeaderRecord, PrimaryChangeReason, PrimaryEndpoint, Term } from '@pgha/core';

/** What the watcher knows about the leader, as of etcd revision `revision`. */
export interface DiscoveryState {
  /** The current leader record as an endpoint (possibly not yet writable), or null when there is none. */
  readonly leader: PrimaryEndpoint | null;
  /** The newest term seen in any leader record (0 before any). */
  readonly newestTerm: Term;
  /** The last writable primary announced, kept as `previous` for events. */
  readonly lastPrimary: PrimaryEndpoint | null;
  /** The etcd revision the state reflects (0 before the first observation). */
  readonly revision: number;
  /** Whether anything has been observed yet (the first absence is announced too). */
  readonly observed: boolean;
}

/** The state before anything was read. */
export const initialDiscoveryState: DiscoveryState = {
  leader: null,
  newestTerm: 0,
  lastPrimary: null,
  revision: 0,
  observed: false,
};

/** One thing the watcher learned about the `leader` key, at an etcd revision. */
export type LeaderObservation =
  | {
      readonly kind: 'record';
      readonly record: LeaderRecord;
      readonly revision: number;
      /** Why the term began, when the controller's target record for that term says so. */
      readonly reasonHint?: PrimaryChangeReason;
    }
  | { readonly kind: 'absent'; readonly revision: number }
  | { readonly kind: 'invalid'; readonly error: Error; readonly revision: number };

/** What to do with an observation: the next state and the events to emit, in order. */
export interface LeaderDecision {
  readonly next: DiscoveryState;
  readonly events: readonly ClusterEvent[];
  /** Why nothing changed, when nothing did (for logs and tests). */
  readonly ignored?: 'older-revision' | 'older-term' | 'unchanged' | 'invalid';
}

function endpointOf(record: LeaderRecord): PrimaryEndpoint {
  return {
    member: record.member,
    host: record.host,
    port: record.port,
    term: record.term,
    timeline: record.timeline,
    writable: record.writable,
  };
}

/** Whether two endpoints name the same server in the same term with the same writability. */
export function sameEndpoint(a: PrimaryEndpoint | null, b: PrimaryEndpoint | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.term === b.term &&
    a.member === b.member &&
    a.host === b.host &&
    a.port === b.port &&
    a.timeline === b.timeline &&
    a.writable === b.writable
  );
}

function sameServerAndTerm(a: PrimaryEndpoint | null, b: PrimaryEndpoint | null): boolean {
  return (
    a !== null && b !== null && a.term === b.term && a.member === b.member && a.host === b.host && a.port === b.port
  );
}

/**
 * Applies one leader observation to the watcher's state.
 *
 * Safety rules (ARCHITECTURE.md, contract lines 3 and 6):
 * - an observation older than the state's revision is ignored (a slow re-read must
 *   not undo a newer watch event);
 * - a record of an older term than the newest seen is ignored and reported as a
 *   `discovery-error`: terms only grow;
 * - an invalid record is reported and the last good leader kept;
 * - a record that is not `writable` yet (installed, promotion still running) is
 *   announced as `no-primary`: writes go only to a writable leader;
 * - `primary-changed` is emitted once per writable primary (term, member, address).
 */
export function decideLeaderObservation(state: DiscoveryState, observation: LeaderObservation): LeaderDecision {
  if (observation.revision < state.revision) return { next: state, events: [], ignored: 'older-revision' };
  switch (observation.kind) {
    case 'invalid':
      return {
        next: { ...state, revision: observation.revision },
        events: [{ type: 'discovery-error', error: observation.error }],
        ignored: 'invalid',
      };
    case 'absent': {
      const next: DiscoveryState = { ...state, leader: null, revision: observation.revision, observed: true };
      if (state.observed && state.leader === null) return { next, events: [], ignored: 'unchanged' };
      return { next, events: [{ type: 'no-primary', previous: state.lastPrimary, term: state.newestTerm }] };
    }
    case 'record': {
      const record = observation.record;
      if (record.term < state.newestTerm) {
        return {
          next: { ...state, revision: observation.revision },
          events: [
            {
              type: 'discovery-error',
              error: new Error(
                `leader record of term ${record.term} (member ${record.member}) is older than term ${state.newestTerm} already seen; ignored it and kept the newer leader`,
              ),
            },
          ],
          ignored: 'older-term',
        };
      }
      const current = endpointOf(record);
      const base: DiscoveryState = {
        ...state,
        leader: current,
        newestTerm: record.term,
        revision: observation.revision,
        observed: true,
      };
      if (state.observed && sameEndpoint(state.leader, current))
        return { next: base, events: [], ignored: 'unchanged' };
      if (!current.writable) {
        // Announce the gap once: only when a routable primary (or nothing yet) was known
        // before; after a delete the gap has already been announced.
        const announce = !state.observed || state.leader?.writable === true;
        return {
          next: base,
          events: announce ? [{ type: 'no-primary', previous: state.lastPrimary, term: current.term }] : [],
        };
      }
      if (state.leader?.writable === true && sameServerAndTerm(state.leader, current)) {
        // Only the timeline moved within the same term; the route is unchanged.
        return { next: { ...base, lastPrimary: current }, events: [] };
      }
      const previous = state.lastPrimary;
      const reason: PrimaryChangeReason =
        previous === null
          ? 'initial'
          : (observation.reasonHint ?? (previous.member === current.member ? 'restart' : 'unknown'));
      return {
        next: { ...base, lastPrimary: current },
        events: [{ type: 'primary-changed', previous, current, term: current.term, reason }],
      };
    }
    default: {
      const unreachable: never = observation;
      return unreachable;
    }
  }
}

/** What a read of the `initialize` record means for the newest term seen. */
export type IncarnationDecision =
  | { readonly action: 'first' | 'same' }
  | { readonly action: 'reset'; readonly next: DiscoveryState; readonly previousSystemId: string };

/**
 * Decides whether the cluster is a new incarnation (restored from a backup of etcd, or
 * bootstrapped again): its `initialize` record names another PostgreSQL system id than
 * the one known. Terms restart with a new incarnation, so the newest term seen is
 * forgotten (the next leader record is accepted whatever its term); the current
 * leader stays routable until one arrives. The first system id seen is just learned.
 */
export function decideIncarnation(
  state: DiscoveryState,
  knownSystemId: string | null,
  systemId: string,
): IncarnationDecision {
  if (knownSystemId === null) return { action: 'first' };
  if (knownSystemId === systemId) return { action: 'same' };
  return { action: 'reset', next: { ...state, newestTerm: 0 }, previousSystemId: knownSystemId };
}

/**
 * The `reason` of a primary change, from the controller's decision for that term
 * (its target record): failovers (automatic or manual), switchovers, or the bootstrap.
 */
export function reasonFromTarget(
  reason: 'failover' | 'switchover' | 'manual-failover' | 'bootstrap',
): PrimaryChangeReason {
  switch (reason) {
    case 'failover':
    case 'manual-failover':
      return 'failover';
    case 'switchover':
      return 'switchover';
    case 'bootstrap':
      return 'initial';
    default: {
      const unreachable: never = reason;
      return unreachable;
    }
  }
}

/** What `decideCheckout` looks at. */
export interface CheckoutSnapshot {
  readonly leader: PrimaryEndpoint | null;
  /** Since when etcd has been unanswered beyond the stale window, or null when fresh. */
  readonly staleSinceMillis: number | null;
  readonly stalePolicy: StalePolicy;
  /** Whether discovery has been closed (the pool ended). */
  readonly closed: boolean;
  /**
   * Whether the pool is ending: checkouts made before `end()` still get the primary,
   * but once discovery has read the leader and found no writable one, they fail at
   * once instead of holding `end()` for the whole wait.
   */
  readonly ending: boolean;
  /** Whether discovery has read the leader record (or its absence) at least once. */
  readonly observed: boolean;
  readonly nowMillis: number;
  /** When the caller stops waiting for a primary. */
  readonly deadlineMillis: number;
  /** Whether a leader still being promoted may be connected to in advance (see `preconnect`). */
  readonly preconnect: boolean;
}

/**
 * What a pool does with new checkouts while etcd is unreachable beyond the stale window.
 * - `serve`: keep routing to the last known primary (every new connection is still role-checked).
 * - `refuse`: fail new checkouts with `DiscoveryStaleError` until etcd answers again.
 */
export const stalePolicies = ['serve', 'refuse'] as const;
/** One of {@link stalePolicies}. */
export type StalePolicy = (typeof stalePolicies)[number];

/** Where a new connection goes. */
export type CheckoutDecision =
  | { readonly action: 'connect'; readonly endpoint: PrimaryEndpoint }
  | { readonly action: 'preconnect'; readonly endpoint: PrimaryEndpoint }
  | { readonly action: 'wait' }
  | { readonly action: 'fail'; readonly code: 'no-primary' | 'discovery-stale' | 'closed' };

/**
 * Decides where a new connection goes: the writable leader; or, while the leader is
 * being promoted and `preconnect` is on, that leader in advance (the connection is
 * handed out only after it turns writable); else wait for one, or fail.
 */
export function decideCheckout(snapshot: CheckoutSnapshot): CheckoutDecision {
  if (snapshot.closed) return { action: 'fail', code: 'closed' };
  if (snapshot.staleSinceMillis !== null && snapshot.stalePolicy === 'refuse') {
    return { action: 'fail', code: 'discovery-stale' };
  }
  if (snapshot.leader?.writable === true) return { action: 'connect', endpoint: snapshot.leader };
  if (snapshot.nowMillis >= snapshot.deadlineMillis) return { action: 'fail', code: 'no-primary' };
  if (snapshot.ending && snapshot.observed) return { action: 'fail', code: 'closed' };
  if (snapshot.leader !== null && snapshot.preconnect && snapshot.staleSinceMillis === null) {
    return { action: 'preconnect', endpoint: snapshot.leader };
  }
  return { action: 'wait' };
}

/** What a connection opened early to a leader being promoted looks at. */
export interface PromotionSnapshot {
  /** Where the connection was opened: the leader being promoted, when it was routed. */
  readonly candidate: RouteTarget;
  /** The current leader record, or null. */
  readonly leader: PrimaryEndpoint | null;
  /** Whether the pool is ending or its watcher closed. */
  readonly closed: boolean;
  readonly nowMillis: number;
  /** When the checkout stops waiting for a primary. */
  readonly deadlineMillis: number;
}

/** What to do with a connection opened early (see {@link decidePromotion}). */
export type PromotionDecision =
  | { readonly action: 'promoted'; readonly target: RouteTarget }
  | { readonly action: 'moved' | 'wait' | 'fail' };

/**
 * What a connection opened early to a leader being promoted (`candidate`) waits for:
 * `promoted` once the same server's record in the same term is writable; `moved` when
 * the leader record names another server or term, or is gone, or the pool closed
 * (close it, route again); `fail` at the deadline (no primary came); `wait` while the
 * promotion is still running.
 */
export function decidePromotion(snapshot: PromotionSnapshot): PromotionDecision {
  const { candidate, leader } = snapshot;
  if (snapshot.closed) return { action: 'moved' };
  if (
    leader === null ||
    leader.term !== candidate.term ||
    leader.member !== candidate.member ||
    leader.host !== candidate.host ||
    leader.port !== candidate.port
  ) {
    return { action: 'moved' };
  }
  if (leader.writable) return { action: 'promoted', target: { ...candidate, kind: 'primary' } };
  return snapshot.nowMillis >= snapshot.deadlineMillis ? { action: 'fail' } : { action: 'wait' };
}

/**
 * What the server says about its role at connection time: `in_hot_standby` is
 * reported in ParameterStatus by PostgreSQL 14 and newer (`on` while in recovery).
 * `unknown` (an older server) means: ask with `SELECT pg_is_in_recovery()`.
 */
export function decideRole(inHotStandby: string | undefined): 'primary' | 'standby' | 'unknown' {
  if (inHotStandby === 'off') return 'primary';
  if (inHotStandby === 'on') return 'standby';
  return 'unknown';
}

/** Whether a connection opened for `connectionTerm` must be drained given the current leader. */
export function shouldDrain(connectionTerm: Term, leader: PrimaryEndpoint | null): boolean {
  return leader === null || leader.term !== connectionTerm;
}

/** SQLSTATEs that prove the server is not (or no longer) a primary we may use. */
export const notPrimarySqlStates: ReadonlySet<string> = new Set([
  '25006', // read_only_sql_transaction: a standby, or a primary fenced read-only
  '57P01', // admin_shutdown: the server is shutting down or terminated us
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or in recovery
]);

/**
 * SQLSTATEs of a FATAL error that ends the session while a statement runs (the
 * server shutting down or terminating the backend): the statement may have committed
 * just before, so they are classified like a lost connection, with the server's
 * error kept as `cause`.
 */
export const terminatingSqlStates: ReadonlySet<string> = new Set(['57P01', '57P02']);

/** The facts about a failed query that decide what it means. */
export interface QueryFailure {
  /** The SQLSTATE when the server sent an ErrorResponse (pg's DatabaseError), else null. */
  readonly sqlState: string | null;
  /** Whether the connection is gone (socket closed or errored without the caller ending it). */
  readonly connectionLost: boolean;
  /** Whether the statement had been written to the server. */
  readonly sent: boolean;
  /** ReadyForQuery status before the statement was sent: 'I' idle, 'T' in transaction, 'E' failed transaction. */
  readonly transactionStatus: string | null;
  /** The statement text (empty for a prepared statement run by name only). */
  readonly text: string;
  /**
   * Whether the session is read-only on purpose, so a 25006 says nothing about the
   * server: a replica pool's session, or a read-only transaction (BEGIN READ ONLY) on
   * a server that reports itself writable (`in_hot_standby` and
   * `default_transaction_read_only` both `off`, PostgreSQL 14+).
   */
  readonly readOnlyByChoice?: boolean;
}

/** What a failed query means. */
export type QueryFailureDecision =
  | { readonly kind: 'pass-through'; readonly discardConnection: boolean; readonly reread: boolean }
  | { readonly kind: 'primary-changed'; readonly rolledBack: boolean }
  | { readonly kind: 'outcome-unknown' };

/**
 * Whether `text` may commit work when run inside an open transaction: COMMIT, END,
 * COMMIT PREPARED or PREPARE TRANSACTION anywhere in it (multi-statement text
 * included). Errs toward "yes": a false positive only turns a safe retry into an
 * "outcome unknown".
 */
export function mayCommit(text: string): boolean {
  return /\bcommit\b/i.test(text) || /(^|;)\s*end\b/i.test(text) || /\bprepare\s+transaction\b/i.test(text);
}

/**
 * Classifies a failed query (contract line 6: never a silent retry of an unknown outcome).
 *
 * - A server error (pg's `DatabaseError`) passes through untouched; the ones that prove
 *   the server is not the primary (25006, 57P03...) also discard the connection and
 *   ask discovery to re-read. Exception: 57P01/57P02 (the session was terminated while
 *   the statement ran) are classified like a lost connection below, because the
 *   statement may have committed.
 * - Any other error on a live connection passes through untouched.
 * - On a lost connection: not sent → `primary-changed`, `rolledBack` unless the
 *   session was idle (outside a transaction; an unknown status counts as inside); sent inside a
 *   transaction and not a commit → `primary-changed` with `rolledBack` (retry the
 *   transaction); sent outside a transaction, or a commit → `outcome-unknown`.
 */
export function classifyQueryFailure(failure: QueryFailure): QueryFailureDecision {
  const terminated = failure.sqlState !== null && terminatingSqlStates.has(failure.sqlState);
  if (failure.sqlState !== null && !terminated) {
    const notPrimary =
      notPrimarySqlStates.has(failure.sqlState) && !(failure.sqlState === '25006' && failure.readOnlyByChoice === true);
    return { kind: 'pass-through', discardConnection: notPrimary, reread: notPrimary };
  }
  if (!failure.connectionLost && !terminated) return { kind: 'pass-through', discardConnection: false, reread: false };
  // Never sent: nothing of this statement ran, but a transaction it belonged to died
  // with the session. Inside one (or when the status is unknown), the work before it
  // was rolled back: only the whole transaction may be retried.
  if (!failure.sent) return { kind: 'primary-changed', rolledBack: failure.transactionStatus !== 'I' };
  // Opening or abandoning a transaction commits nothing, whatever became of it.
  if (/^\s*(begin|start\s+transaction)\b[^;]*;?\s*$/i.test(failure.text)) {
    return { kind: 'primary-changed', rolledBack: false };
  }
  if (/^\s*(rollback|abort)\b[^;]*;?\s*$/i.test(failure.text) && !/\bprepared\b/i.test(failure.text)) {
    return { kind: 'primary-changed', rolledBack: true };
  }
  const inTransaction = failure.transactionStatus === 'T' || failure.transactionStatus === 'E';
  if (!inTransaction) return { kind: 'outcome-unknown' };
  // In a failed transaction ('E') even COMMIT only rolls back: the outcome is known.
  if (failure.transactionStatus === 'T' && (failure.text === '' || mayCommit(failure.text))) {
    return { kind: 'outcome-unknown' };
  }
  return { kind: 'primary-changed', rolledBack: true };
}

/** Delay before connection attempt `attempt` (1-based) while waiting for a usable primary. */
export function retryDelayMillis(attempt: number): number {
  return Math.min(1000, 25 * 2 ** Math.max(0, attempt - 1));
}

/** Where a routed connection goes: the primary, or (replica pools) one replica. */
export interface RouteTarget {
  /**
   * `primary`: the writable leader. `replica`: a replica within the lag limits.
   * `candidate`: a leader still being promoted (its record not writable yet): the
   * connection is opened early and handed out only once the leader record turns
   * writable and the server confirms it left recovery.
   */
  readonly kind: 'primary' | 'replica' | 'candidate';
  readonly member: string;
  readonly host: string;
  readonly port: number;
  /** The leader's term when the route was chosen (0 when there was no leader). */
  readonly term: Term;
}

/**
 * What a replica pool does when no replica is within the lag limits:
 * `primary` (default) reads from the writable primary, `fail` waits and then fails.
 */
export const replicaFallbacks = ['primary', 'fail'] as const;
/** One of {@link replicaFallbacks}. */
export type ReplicaFallback = (typeof replicaFallbacks)[number];

/** The member facts replica routing looks at (a subset of core's MemberRecord). */
export interface ReplicaCandidate {
  readonly name: string;
  readonly role: 'primary' | 'replica' | 'unknown';
  readonly state: string;
  readonly host: string;
  readonly port: number;
  readonly term: Term;
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
  readonly streaming: boolean;
  readonly healthy: boolean;
}

/** What `decideReplica` looks at. */
export interface ReplicaSnapshot {
  readonly members: readonly ReplicaCandidate[];
  readonly leader: PrimaryEndpoint | null;
  /** Largest acceptable replay lag in bytes; null for no limit. */
  readonly maxLagBytes: number | null;
  /** Largest acceptable replay lag in milliseconds; null for no limit. */
  readonly maxLagMillis: number | null;
  readonly fallback: ReplicaFallback;
  /** A counter the shell increments per connection, to spread connections over replicas. */
  readonly pick: number;
}

/** Where a replica-pool connection goes, or why it cannot go anywhere yet. */
export type ReplicaDecision =
  | { readonly action: 'connect'; readonly target: RouteTarget }
  | { readonly action: 'wait'; readonly reason: string };

/**
 * Why `member` may not serve reads now, or null when it may: it must be a running,
 * healthy, streaming replica that has seen the leader's term (one that has not may
 * still follow an old primary) and whose reported lag is known and within limits.
 */
export function replicaRejection(member: ReplicaCandidate, snapshot: ReplicaSnapshot): string | null {
  if (member.role !== 'replica') return `${member.name} is not a replica (${member.role})`;
  if (snapshot.leader !== null && member.name === snapshot.leader.member) return `${member.name} is the leader`;
  if (member.state !== 'running' || !member.healthy)
    return `${member.name} is ${member.healthy ? member.state : 'unhealthy'}`;
  if (!member.streaming) return `${member.name} is not streaming from the primary`;
  if (snapshot.leader !== null && member.term < snapshot.leader.term) {
    return `${member.name} has seen term ${member.term} only, the leader is in term ${snapshot.leader.term}`;
  }
  if (member.lagBytes === null || member.lagSeconds === null) return `${member.name} reports no lag`;
  if (snapshot.maxLagBytes !== null && member.lagBytes > snapshot.maxLagBytes) {
    return `${member.name} lags ${member.lagBytes} bytes (limit ${snapshot.maxLagBytes})`;
  }
  if (snapshot.maxLagMillis !== null && member.lagSeconds * 1000 > snapshot.maxLagMillis) {
    return `${member.name} lags ${Math.round(member.lagSeconds * 1000)} ms (limit ${snapshot.maxLagMillis})`;
  }
  return null;
}

/**
 * Chooses a replica for a new read connection: the eligible replicas (see
 * {@link replicaRejection}) in name order, rotated by `pick`; else the writable
 * primary under the `primary` fallback; else wait (the shell fails after its timeout).
 */
export function decideReplica(snapshot: ReplicaSnapshot): ReplicaDecision {
  const term = snapshot.leader?.term ?? 0;
  const rejections: string[] = [];
  const eligible = snapshot.members
    .filter((member) => {
      const why = replicaRejection(member, snapshot);
      if (why !== null) rejections.push(why);
      return why === null;
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (eligible.length > 0) {
    const chosen = eligible[Math.abs(snapshot.pick) % eligible.length]!;
    return {
      action: 'connect',
      target: { kind: 'replica', member: chosen.name, host: chosen.host, port: chosen.port, term },
    };
  }
  const leader = snapshot.leader;
  if (snapshot.fallback === 'primary' && leader?.writable === true) {
    return {
      action: 'connect',
      target: { kind: 'primary', member: leader.member, host: leader.host, port: leader.port, term: leader.term },
    };
  }
  const none = snapshot.members.length === 0 ? 'no member records' : rejections.join('; ');
  return {
    action: 'wait',
    reason: `no replica within the lag limits (${none})${snapshot.fallback === 'primary' ? ' and no writable primary to fall back to' : ''}`,
  };
}
