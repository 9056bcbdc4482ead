/**
 * @pgha/client: a `pg.Pool` that follows the current pgha primary through etcd.
 * May import @pgha/core, pg, etcd3 and eventemitter3.
 */

export type { ClusterEvent, ErrorCode, PrimaryChangeReason, PrimaryEndpoint } from '@pgha/core';
export { isPghaError, PghaError } from '@pgha/core';
export type {
  ClusterResetEvent,
  ClusterWatcherEvents,
  DiscoveryErrorEvent,
  DiscoveryRestoredEvent,
  DiscoveryStaleEvent,
  EtcdOptions,
  NoPrimaryEvent,
  PrimaryChangedEvent,
  WatchClusterOptions,
} from './discovery.js';
export { ClusterWatcher, clusterWatcherEventNames, parseEtcdEndpoints, watchCluster } from './discovery.js';
export {
  DiscoveryStaleError,
  NoPrimaryError,
  NoReplicaError,
  NotPrimaryError,
  OutcomeUnknownError,
  PrimaryChangedError,
} from './errors.js';
export type { PoolEvents } from './pool.js';
export { Pool } from './pool.js';
export type { PoolMetricsOptions } from './pool-metrics.js';
export type { PghaPoolOptions, PoolOptions } from './pool-options.js';
export type { ReplicaPoolOptions } from './replica-pool.js';
export { ReplicaPool } from './replica-pool.js';
export type { ReplicaFallback, RouteTarget, StalePolicy } from './routing.js';
export { replicaFallbacks, stalePolicies } from './routing.js';
