/**
 * The operator's decisions about each PgHaCluster's failover controller (the
 * `Controller` of `pgha controller`, run inside the operator leader): which
 * settings it runs with, whether the one running must start, restart or stop, how
 * long to wait before retrying a start that failed, and the status condition that
 * reports it. Pure: no clock, no I/O; the shell is cluster-controllers.ts.
 *
 * May import: the PgHaCluster reader only.
 */
import { type PgHaClusterObject, parsePgHaCluster } from './pgha-cluster.js';

/** What one cluster's failover controller runs with; a change to any of it restarts the controller. */
export interface FailoverControllerConfig {
  /** The cluster's name in etcd (the PgHaCluster's name, as its agents use it). */
  readonly cluster: string;
  readonly endpoints: readonly string[];
  readonly keyRoot: string;
  readonly leaseTtlMillis: number;
  readonly maximumLagOnFailoverBytes: number;
}

/** What the operator reads of a cluster for its controller: gone, not usable, or these settings. */
export type DesiredFailoverController =
  | { readonly type: 'absent' }
  | { readonly type: 'invalid' }
  | { readonly type: 'valid'; readonly config: FailoverControllerConfig };

/**
 * The controller a PgHaCluster asks for: `absent` when the cluster is gone (null)
 * or being deleted, `invalid` when its spec cannot be read (the operator reports
 * that elsewhere), else its settings with the CRD's defaults applied (the lease TTL
 * and maximum lag on failover default to `pgha controller`'s defaults).
 */
export function desiredFailoverController(cluster: PgHaClusterObject | null): DesiredFailoverController {
  if (cluster === null || cluster.metadata.deletionTimestamp) return { type: 'absent' };
  const parsed = parsePgHaCluster(cluster);
  if (!parsed.ok) return { type: 'invalid' };
  const { spec } = parsed;
  return {
    type: 'valid',
    config: {
      cluster: cluster.metadata.name,
      endpoints: spec.etcd.endpoints,
      keyRoot: spec.etcd.keyRoot,
      leaseTtlMillis: spec.leaseTtlMillis,
      maximumLagOnFailoverBytes: spec.maximumLagOnFailoverBytes,
    },
  };
}

export type FailoverControllerDecision =
  | { readonly type: 'keep' }
  | { readonly type: 'start'; readonly config: FailoverControllerConfig }
  | { readonly type: 'restart'; readonly config: FailoverControllerConfig; readonly changed: readonly string[] }
  | { readonly type: 'stop' };

/**
 * Start, restart, stop or keep a cluster's controller, given what the cluster asks
 * for and the settings of the one running (null: none).
 *
 * - A spec that turned invalid keeps the controller that runs (failover is still
 *   needed; the operator changes nothing running on bad input) and starts none.
 * - Any change of settings restarts it: a `Controller` takes them at construction.
 *   The restart is cheap: the old one revokes its lease, which frees the
 *   `controller` key for the new one at once.
 */
export function decideFailoverController(
  desired: DesiredFailoverController,
  running: FailoverControllerConfig | null,
): FailoverControllerDecision {
  switch (desired.type) {
    case 'absent':
      return running === null ? { type: 'keep' } : { type: 'stop' };
    case 'invalid':
      return { type: 'keep' };
    case 'valid': {
      if (running === null) return { type: 'start', config: desired.config };
      const changed = configChanges(running, desired.config);
      return changed.length === 0 ? { type: 'keep' } : { type: 'restart', config: desired.config, changed };
    }
    default: {
      const never: never = desired;
      throw new Error(`unknown desired controller ${JSON.stringify(never)}`);
    }
  }
}

/** The names of the settings that differ (endpoints compared in order). */
export function configChanges(a: FailoverControllerConfig, b: FailoverControllerConfig): string[] {
  const changed: string[] = [];
  for (const key of ['cluster', 'keyRoot', 'leaseTtlMillis', 'maximumLagOnFailoverBytes'] as const)
    if (a[key] !== b[key]) changed.push(key);
  if (a.endpoints.join(',') !== b.endpoints.join(',')) changed.push('endpoints');
  return changed;
}

/**
 * The wait before the next start of a controller whose start failed `failures`
 * times in a row (≥ 1): doubling from `firstMillis`, at most `maxMillis`.
 */
export function startRetryDelayMillis(failures: number, firstMillis: number, maxMillis: number): number {
  return Math.min(firstMillis * 2 ** Math.max(0, Math.min(failures - 1, 30)), maxMillis);
}

/** A cluster's controller as the shell reports it. */
export type FailoverControllerState =
  /** Its first connection to etcd is being made. */
  | { readonly phase: 'starting'; readonly endpoints: readonly string[] }
  /** Connected and campaigning; `active` when it holds the `controller` key; `problem` when its last pass failed. */
  | {
      readonly phase: 'running';
      readonly endpoints: readonly string[];
      readonly active: boolean;
      readonly problem: string | null;
    }
  /** Its start failed (etcd did not answer); another start follows in `retryInMillis`. */
  | {
      readonly phase: 'unreachable';
      readonly endpoints: readonly string[];
      readonly error: string;
      readonly retryInMillis: number;
    };

/** The `FailoverControllerReady` condition's content. */
export interface FailoverControllerCondition {
  readonly ok: boolean;
  readonly reason: 'Starting' | 'Active' | 'Standby' | 'EtcdUnreachable';
  readonly message: string;
  /** Whether a transition to it deserves a Warning event. */
  readonly warn: boolean;
}

export const failoverControllerConditionType = 'FailoverControllerReady';

/**
 * How the status reports the controller. Ready means it is connected to etcd and
 * campaigning: `Active` holds the `controller` key, `Standby` waits behind another
 * controller of the same cluster (a separate `pgha controller`, or an earlier
 * operator leader's until its etcd lease ends) — either way failover is covered.
 * `EtcdUnreachable` (a failed start, or a failing pass) warns with an event.
 */
export function failoverControllerCondition(state: FailoverControllerState): FailoverControllerCondition {
  const where = state.endpoints.join(',');
  switch (state.phase) {
    case 'starting':
      return { ok: false, reason: 'Starting', message: `connecting to etcd at ${where}`, warn: false };
    case 'unreachable':
      return {
        ok: false,
        reason: 'EtcdUnreachable',
        message: `the failover controller cannot start: ${state.error}; retrying in ${Math.ceil(state.retryInMillis / 1000)} s`,
        warn: true,
      };
    case 'running':
      if (state.problem !== null)
        return {
          ok: false,
          reason: 'EtcdUnreachable',
          message: `the failover controller's last pass failed: ${state.problem}; retrying`,
          warn: true,
        };
      return state.active
        ? {
            ok: true,
            reason: 'Active',
            message: `the operator's failover controller holds the cluster's controller key in etcd at ${where}`,
            warn: false,
          }
        : {
            ok: true,
            reason: 'Standby',
            message: `the operator's failover controller runs; another controller holds the cluster's controller key in etcd at ${where}`,
            warn: false,
          };
    default: {
      const never: never = state;
      throw new Error(`unknown controller state ${JSON.stringify(never)}`);
    }
  }
}
