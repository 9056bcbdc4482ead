/**
 * The options of a pgha `Pool`: pgha's own, validated and kept out of `pool.options`
 * (`splitOptions`), and `pool.options.host/port`, kept naming the current primary
 * (`pointOptionsAtPrimary`).
 */
import { PghaError } from '@pgha/core';
import type pg from 'pg';
import { type ClusterWatcher, type EtcdOptions, watchCluster } from './discovery.js';
import { checkMetricsOptions, type PoolMetricsOptions } from './pool-metrics.js';
import { type StalePolicy, stalePolicies } from './routing.js';

/** The options pgha adds to `pg.PoolConfig`. */
export interface PghaPoolOptions {
  /** How to reach etcd. Required unless `discovery` is given. */
  readonly etcd?: EtcdOptions;
  /** The pgha cluster name. Required unless `discovery` is given. */
  readonly cluster?: string;
  /** The etcd key root; default `/pgha/`. */
  readonly keyRoot?: string;
  /**
   * A watcher to share (from `watchCluster`), instead of `etcd`/`cluster`: many pools
   * then follow one etcd watch. The pool does not close a watcher it was given.
   */
  readonly discovery?: ClusterWatcher;
  /**
   * The hosts the cluster's servers may be on (own watcher only; a shared watcher
   * takes it from `watchCluster`): host names, IP addresses and CIDR subnets like
   * `['10.0.0.0/24', 'db-1.internal']`. A leader or member record naming another host
   * is ignored with a `discovery-error` event, and the pool keeps the last good
   * primary. Default: every host allowed. See `watchCluster`'s `allowedHosts`.
   */
  readonly allowedHosts?: readonly string[];
  /** Safety re-read interval of the leader record (own watcher only). Default 5000. */
  readonly rereadIntervalMillis?: number;
  /** etcd silence after which the pool emits `discovery-stale` (own watcher only). Default 15000. */
  readonly staleAfterMillis?: number;
  /**
   * How long a checkout waits for a writable primary (during a failover, or while the
   * leader's server refuses connections) before failing with `NoPrimaryError`.
   * Default 30000. When `connectionTimeoutMillis` is set and shorter, it wins.
   */
  readonly primaryWaitTimeoutMillis?: number;
  /**
   * After a primary change, how long checked-out connections to the old primary may
   * keep running before pgha cuts them (their statement fails with a typed error).
   * Idle ones are closed at once; busy ones are closed when released. Default 5000.
   */
  readonly drainTimeoutMillis?: number;
  /** What to do while etcd is unreachable beyond `staleAfterMillis`: `serve` (default) or `refuse`. */
  readonly stalePolicy?: StalePolicy;
  /**
   * During a failover, the new leader's record appears (not writable) before its
   * promotion ends. With `preconnect` (default true), checkouts waiting then open their
   * connection to it at once, and get it as soon as the record turns writable and the
   * server confirms it left recovery (one round trip), instead of starting to connect
   * only then. Nothing is sent on such a connection before that check.
   */
  readonly preconnect?: boolean;
  /**
   * Prometheus metrics (opt-in): `{ registry, pool? }` with a prom-client `Registry`;
   * the pool registers `pgha_client_connections`, `pgha_client_reroutes_total`,
   * `pgha_client_errors_total` and `pgha_client_without_primary_seconds` in it,
   * labelled `pool` (default `'default'`). Needs prom-client installed. Default none.
   */
  readonly metrics?: PoolMetricsOptions;
}

/** `new Pool(options)`: every `pg.PoolConfig` option plus {@link PghaPoolOptions}. */
export type PoolOptions = pg.PoolConfig & PghaPoolOptions;

const pghaOptionNames = [
  'etcd',
  'cluster',
  'keyRoot',
  'discovery',
  'allowedHosts',
  'rereadIntervalMillis',
  'staleAfterMillis',
  'primaryWaitTimeoutMillis',
  'drainTimeoutMillis',
  'stalePolicy',
  'preconnect',
  'metrics',
  // ReplicaPool's (kept out of pool.options for every pool).
  'maxReplicaLagBytes',
  'maxReplicaLagMillis',
  'replicaFallback',
] as const;

/** pgha's options of one pool, validated, with its watcher. */
export interface ResolvedOptions {
  readonly watcher: ClusterWatcher;
  readonly ownsWatcher: boolean;
  readonly primaryWaitTimeoutMillis: number;
  readonly drainTimeoutMillis: number;
  readonly stalePolicy: StalePolicy;
  readonly preconnect: boolean;
  readonly metrics: PoolMetricsOptions | null;
}

function invalid(message: string): PghaError {
  return new PghaError('invalid-option', message);
}

function millis(name: string, value: unknown, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw invalid(
      `${name} must be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds, got ${String(value)}`,
    );
  }
  return value;
}

/** Splits pg's options from pgha's and validates pgha's. @throws PghaError `invalid-option` */
export function splitOptions(options: PoolOptions | undefined): { pgOptions: pg.PoolConfig; pgha: ResolvedOptions } {
  if (options === null || typeof options !== 'object') {
    throw invalid('new Pool() from @pgha/client needs options with etcd and cluster (or discovery)');
  }
  const pgOptions: Record<string, unknown> = {};
  for (const key of Object.keys(options)) {
    if (!(pghaOptionNames as readonly string[]).includes(key))
      pgOptions[key] = (options as Record<string, unknown>)[key];
  }
  // A password given as non-enumerable (pg-pool hides it that way) is still copied.
  if ('password' in options && !('password' in pgOptions)) pgOptions.password = options.password;
  const primaryWaitTimeoutMillis = millis('primaryWaitTimeoutMillis', options.primaryWaitTimeoutMillis, 30_000);
  const drainTimeoutMillis = millis('drainTimeoutMillis', options.drainTimeoutMillis, 5000, true);
  const stalePolicy = options.stalePolicy ?? 'serve';
  if (!stalePolicies.includes(stalePolicy)) {
    throw invalid(`stalePolicy must be one of ${stalePolicies.join(', ')}, got ${String(stalePolicy)}`);
  }
  const Client = (options as { Client?: unknown }).Client;
  if (Client !== undefined && typeof Client !== 'function') {
    throw invalid(`the Client option must be a client class or factory (like pg.Client), got ${String(Client)}`);
  }
  const preconnect = options.preconnect ?? true;
  if (typeof preconnect !== 'boolean') throw invalid(`preconnect must be true or false, got ${String(preconnect)}`);
  // Before the watcher starts: a bad option (or prom-client missing) leaves nothing running.
  const metrics = options.metrics === undefined ? null : checkMetricsOptions(options.metrics);
  let watcher: ClusterWatcher;
  let ownsWatcher: boolean;
  if (options.discovery !== undefined) {
    if (options.etcd !== undefined || options.cluster !== undefined) {
      throw invalid('pass either discovery (a shared watcher) or etcd and cluster, not both');
    }
    if (options.allowedHosts !== undefined) {
      throw invalid(
        'allowedHosts applies to the watcher: pass it to watchCluster({ ..., allowedHosts }) when sharing a watcher through discovery',
      );
    }
    if (typeof options.discovery?.waitForPrimary !== 'function') {
      throw invalid('discovery must be a watcher returned by watchCluster()');
    }
    watcher = options.discovery;
    ownsWatcher = false;
  } else {
    if (options.etcd === undefined || options.cluster === undefined) {
      throw invalid(
        'etcd and cluster are required: new Pool({ etcd: { endpoints: ["http://HOST:2379"] }, cluster: "NAME", ...pgOptions })',
      );
    }
    watcher = watchCluster({
      etcd: options.etcd,
      cluster: options.cluster,
      keyRoot: options.keyRoot,
      allowedHosts: options.allowedHosts,
      rereadIntervalMillis: options.rereadIntervalMillis,
      staleAfterMillis: options.staleAfterMillis,
    });
    // The pool decides when its own watcher may let the process exit (see holdDiscovery).
    watcher.unref();
    ownsWatcher = true;
  }
  return {
    pgOptions: pgOptions as pg.PoolConfig,
    pgha: { watcher, ownsWatcher, primaryWaitTimeoutMillis, drainTimeoutMillis, stalePolicy, preconnect, metrics },
  };
}

/**
 * Keeps `pool.options.host` and `pool.options.port` naming the watcher's writable
 * primary: at once if it has one, then each new one before any `primary-changed`
 * listener runs (on the watcher, on this pool or on another pool sharing the watcher),
 * so they always agree with the event being handled. Until the pool has seen a
 * primary they stay as the user gave them (pg-pool adds no default); while there is
 * none (a failover) they keep naming the last one.
 *
 * Routed clients connect to the route whatever their config names; an unrouted
 * `Client` is created by pg-pool with `pool.options`, so it connects there. Returns
 * the function that stops following.
 */
export function pointOptionsAtPrimary(pool: { readonly options: pg.PoolConfig }, watcher: ClusterWatcher): () => void {
  const point = (primary: { readonly host: string; readonly port: number }) => {
    pool.options.host = primary.host;
    pool.options.port = primary.port;
  };
  if (watcher.primary !== null) point(watcher.primary);
  return watcher.followPrimary(point);
}
