/**
 * `ReplicaPool`: an opt-in pool for reads that routes to replicas within lag limits,
 * learned from the members' own records in etcd, with the same API as `Pool`.
 */
import { PghaError } from '@pgha/core';
import { NoReplicaError, NotPrimaryError } from './errors.js';
import { Pool } from './pool.js';
import type { PoolOptions } from './pool-options.js';
import {
  decideReplica,
  type ReplicaFallback,
  type ReplicaSnapshot,
  type RouteTarget,
  replicaFallbacks,
  replicaRejection,
} from './routing.js';

/** The options a {@link ReplicaPool} adds to {@link PoolOptions}. */
export interface ReplicaPoolOptions extends PoolOptions {
  /** Largest replay lag, in bytes, a replica may report to get new connections. Default 16 MiB; null for no limit. */
  readonly maxReplicaLagBytes?: number | null;
  /** Largest replay lag, in milliseconds, a replica may report. Default 10000; null for no limit. */
  readonly maxReplicaLagMillis?: number | null;
  /**
   * With no replica within the limits: `primary` (default) reads from the writable
   * primary; `fail` waits up to `primaryWaitTimeoutMillis` for a replica, then fails
   * with {@link NoReplicaError}.
   */
  readonly replicaFallback?: ReplicaFallback;
}

function limit(name: string, value: unknown, fallback: number): number | null {
  if (value === undefined) return fallback;
  if (value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new PghaError('invalid-option', `${name} must be a non-negative number or null, got ${String(value)}`);
  }
  return value;
}

function checked(options: ReplicaPoolOptions): ReplicaPoolOptions {
  if (options === null || typeof options !== 'object') {
    throw new PghaError('invalid-option', 'new ReplicaPool() needs options with etcd and cluster (or discovery)');
  }
  limit('maxReplicaLagBytes', options.maxReplicaLagBytes, 0);
  limit('maxReplicaLagMillis', options.maxReplicaLagMillis, 0);
  if (options.replicaFallback !== undefined && !replicaFallbacks.includes(options.replicaFallback)) {
    throw new PghaError(
      'invalid-option',
      `replicaFallback must be one of ${replicaFallbacks.join(', ')}, got ${String(options.replicaFallback)}`,
    );
  }
  return options;
}

/**
 * A pool for reads: each new connection goes to a replica whose own member record
 * reports it running, healthy, streaming, in the leader's term and within
 * `maxReplicaLagBytes`/`maxReplicaLagMillis` (connections are spread over the
 * eligible replicas); without one it falls back to the primary or waits and fails,
 * as `replicaFallback` says.
 *
 * Same API and contract as {@link Pool} (and so `pg.Pool`). Sessions are read-only
 * (`default_transaction_read_only=on`), also on the primary fallback, so a write
 * sent here fails with SQLSTATE 25006 instead of landing anywhere. Connections to a
 * replica that stops qualifying (lag, health, its record gone) are drained like
 * connections to an old primary.
 *
 * `pool.options.host`/`port` name the current primary, as in {@link Pool} (where the
 * `primary` fallback goes), not a replica: connections are spread over several
 * replicas, so no one host/port names them. Use `discovery.members` to see replicas.
 *
 * @example
 * const reads = new ReplicaPool({ etcd, cluster: 'demo', maxReplicaLagMillis: 2000, ...pgOptions });
 * const { rows } = await reads.query('SELECT count(*) FROM orders');
 */
export class ReplicaPool extends Pool {
  /** Lag limit in bytes (null: none). */
  readonly maxReplicaLagBytes: number | null;
  /** Lag limit in milliseconds (null: none). */
  readonly maxReplicaLagMillis: number | null;
  /** What happens without an eligible replica. */
  readonly replicaFallback: ReplicaFallback;
  private picks = 0;

  constructor(options: ReplicaPoolOptions) {
    super(checked(options));
    this.maxReplicaLagBytes = limit('maxReplicaLagBytes', options.maxReplicaLagBytes, 16 * 1024 * 1024);
    this.maxReplicaLagMillis = limit('maxReplicaLagMillis', options.maxReplicaLagMillis, 10_000);
    this.replicaFallback = options.replicaFallback ?? 'primary';
    void this.discovery.followMembers();
    const onMembers = () => this.drain();
    this.discovery.on('members-changed', onMembers);
    this.detachers.push(() => this.discovery.off('members-changed', onMembers));
  }

  protected override get readOnlySessions(): boolean {
    return true;
  }

  private snapshot(): ReplicaSnapshot {
    return {
      members: [...this.discovery.members.values()],
      leader: this.discovery.leader,
      maxLagBytes: this.maxReplicaLagBytes,
      maxLagMillis: this.maxReplicaLagMillis,
      fallback: this.replicaFallback,
      pick: this.picks,
    };
  }

  /** Chooses a replica (or the primary fallback), waiting for member or leader changes until the deadline. */
  protected override async routeConnection(deadlineMillis: number, cancelled: Promise<never>): Promise<RouteTarget> {
    await Promise.race([this.discovery.followMembers(), cancelled]);
    for (;;) {
      if (this.discovery.closed) throw new NoReplicaError('the pool or watcher was closed');
      const decision = decideReplica(this.snapshot());
      if (decision.action === 'connect') {
        this.picks += 1;
        return decision.target;
      }
      const remaining = deadlineMillis - Date.now();
      if (remaining <= 0) {
        throw new NoReplicaError(
          `no replica to read from within ${this.primaryWaitTimeoutMillis} ms: ${decision.reason}; retry later, relax maxReplicaLagBytes/maxReplicaLagMillis, or use replicaFallback "primary"`,
          { cause: this.discovery.lastEtcdError ?? undefined },
        );
      }
      let wake: () => void = () => undefined;
      const changed = new Promise<void>((resolve) => {
        wake = resolve;
        this.discovery.once('members-changed', wake);
        this.discovery.once('primary-changed', wake);
      });
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([changed, cancelled, new Promise<void>((r) => (timer = setTimeout(r, remaining)))]);
      } finally {
        clearTimeout(timer);
        this.discovery.off('members-changed', wake);
        this.discovery.off('primary-changed', wake);
      }
    }
  }

  /**
   * A replica that turned out to be a primary (just promoted) may still serve reads:
   * the session is read-only. Only a primary fallback that is in recovery is refused.
   */
  protected override checkRole(target: RouteTarget, inRecovery: boolean): Error | null {
    if (target.kind === 'primary' && inRecovery) {
      return new NotPrimaryError(
        `the leader record names ${target.member} (${target.host}:${target.port}) as primary, but that server is in recovery; closed the connection before use. Retrying is safe.`,
        { server: `${target.host}:${target.port}` },
      );
    }
    return null;
  }

  /** A replica connection is stale once its member no longer qualifies; a fallback one like Pool's. */
  protected override isStaleTarget(target: RouteTarget): boolean {
    if (target.kind === 'primary') return super.isStaleTarget(target);
    const member = this.discovery.members.get(target.member);
    if (member === undefined || member.host !== target.host || member.port !== target.port) return true;
    return replicaRejection(member, this.snapshot()) !== null;
  }
}
