/**
 * The failover controllers one operator leadership runs: one `Controller` (the
 * same class, etcd election and defaults as `pgha controller`) per PgHaCluster,
 * connected to that cluster's etcd. The Operator calls `sync` on every reconcile
 * of a cluster (the cluster, or null once it is gone) and reads `state` into the
 * cluster's status; `stop` ends them all when the leadership ends.
 *
 * A controller whose start fails (etcd unreachable: `Controller.start` throws) is
 * stopped (its etcd client closed) and started again after a doubling delay; the
 * operator goes on. Once started, a controller retries etcd on its own (every pass).
 *
 * Safety does not rest on this bookkeeping: a `Controller` writes only while it
 * holds its cluster's `controller` key under its own etcd lease, in transactions
 * guarded by that, so two of them (a restart's old and new, or two operator
 * replicas overlapping around a Lease handover) never both act.
 *
 * May import: the controller (for the default factory), the pure decisions.
 */
import { defaultConfig, PghaError } from '@pgha/core';
import type { EtcdCredentials } from '../../adapters/etcd.js';
import { Controller } from '../../controller/controller.js';
import { defaultControllerPolicy } from '../../decide/controller.js';
import type { Logger } from '../../log.js';
import {
  decideFailoverController,
  desiredFailoverController,
  type FailoverControllerConfig,
  type FailoverControllerState,
  startRetryDelayMillis,
} from './decide-failover-controller.js';
import type { PgHaClusterObject } from './pgha-cluster.js';

/** What the bookkeeping needs of a controller (a `Controller`, or a fake in tests). */
export interface FailoverControllerHandle {
  /** Connects to etcd and starts campaigning; rejects when etcd cannot be reached. */
  start(): Promise<void>;
  /** Stops acting and releases the `controller` key; also after a failed start. */
  stop(): Promise<void>;
  readonly isActive: boolean;
  readonly problem: string | null;
}

/** What the Operator uses of {@link ClusterControllers}. */
export interface FailoverControllerSet {
  /** Starts, restarts or stops the controller of the cluster `key` (namespace/name); `cluster` null: it is gone. */
  sync(key: string, cluster: PgHaClusterObject | null): void;
  /** The controller of `key` for the status, or null when none runs. */
  state(key: string): FailoverControllerState | null;
  /** Stops every controller, waiting at most the stop timeout; no controller starts afterwards. */
  stop(): Promise<void>;
}

export interface ClusterControllersOptions {
  /** Builds (does not start) the controller of cluster `key`. */
  create(key: string, config: FailoverControllerConfig): FailoverControllerHandle;
  /** Called when a controller's state changes (the Operator re-reconciles that cluster to report it). */
  onChange(key: string): void;
  log: { info(message: string): void; warn(message: string): void };
  /** First wait before starting again after a failed start, doubling. Default 1000 ms. */
  retryDelayMillis?: number;
  /** Longest wait between starts. Default 30 000 ms. */
  maxRetryDelayMillis?: number;
  /** `stop()` waits at most this long for the controllers to stop. Default 5000 ms. */
  stopTimeoutMillis?: number;
  /**
   * A start that has not finished by then counts as failed (and is retried). Its
   * calls have deadlines, but opening the watch is a stream that has none. Default 15 000 ms.
   */
  startTimeoutMillis?: number;
}

interface Entry {
  readonly key: string;
  readonly config: FailoverControllerConfig;
  handle: FailoverControllerHandle | null;
  phase: 'starting' | 'running' | 'unreachable';
  error: string;
  failures: number;
  retryInMillis: number;
  timer: NodeJS.Timeout | undefined;
  /** Set once the entry is replaced or removed: nothing of it starts any more. */
  retired: boolean;
  /** The start in progress, if any (awaited before stopping). */
  starting: Promise<void> | undefined;
}

/** One controller per cluster, for one operator leadership (see the file header). */
export class ClusterControllers implements FailoverControllerSet {
  private readonly entries = new Map<string, Entry>();
  /** Stops in progress (of replaced or removed controllers), awaited by stop(). */
  private readonly stopping = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly options: ClusterControllersOptions) {}

  /** Keys of the clusters that have a controller (for tests and logs). */
  get keys(): string[] {
    return [...this.entries.keys()];
  }

  sync(key: string, cluster: PgHaClusterObject | null): void {
    if (this.closed) return;
    const entry = this.entries.get(key);
    const decision = decideFailoverController(desiredFailoverController(cluster), entry?.config ?? null);
    switch (decision.type) {
      case 'keep':
        return;
      case 'start':
        this.options.log.info(`${key}: starting its failover controller (etcd ${decision.config.endpoints.join(',')})`);
        this.launch(this.add(key, decision.config));
        return;
      case 'restart': {
        this.options.log.info(`${key}: restarting its failover controller (${decision.changed.join(', ')} changed)`);
        const stopped = this.retire(entry!);
        const next = this.add(key, decision.config);
        // The new one starts once the old one has released the controller key, so the
        // handover takes one campaign instead of waiting for a lease to expire.
        void stopped.then(() => this.launch(next));
        return;
      }
      case 'stop':
        this.options.log.info(`${key}: stopping its failover controller (the cluster is gone)`);
        this.entries.delete(key);
        void this.retire(entry!);
        return;
      default: {
        const never: never = decision;
        throw new Error(`unknown decision ${JSON.stringify(never)}`);
      }
    }
  }

  state(key: string): FailoverControllerState | null {
    const e = this.entries.get(key);
    if (e === undefined) return null;
    const endpoints = e.config.endpoints;
    switch (e.phase) {
      case 'starting':
        return { phase: 'starting', endpoints };
      case 'running':
        return { phase: 'running', endpoints, active: e.handle?.isActive ?? false, problem: e.handle?.problem ?? null };
      case 'unreachable':
        return { phase: 'unreachable', endpoints, error: e.error, retryInMillis: e.retryInMillis };
      default: {
        const never: never = e.phase;
        throw new Error(`unknown phase ${String(never)}`);
      }
    }
  }

  async stop(): Promise<void> {
    this.closed = true;
    for (const e of this.entries.values()) void this.retire(e);
    this.entries.clear();
    const all = Promise.all([...this.stopping]).then(() => true);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.options.stopTimeoutMillis ?? 5000);
    });
    const done = await Promise.race([all, timeout]);
    clearTimeout(timer);
    if (!done)
      this.options.log.warn(
        `${this.stopping.size} failover controller(s) did not stop in time; their etcd leases end the active one's role`,
      );
  }

  private add(key: string, config: FailoverControllerConfig): Entry {
    const entry: Entry = {
      key,
      config,
      handle: null,
      phase: 'starting',
      error: '',
      failures: 0,
      retryInMillis: 0,
      timer: undefined,
      retired: false,
      starting: undefined,
    };
    this.entries.set(key, entry);
    return entry;
  }

  /** Creates and starts the entry's controller; on failure stops it and schedules another try. */
  private launch(entry: Entry): void {
    if (entry.retired || this.closed) return;
    entry.timer = undefined;
    const handle = this.options.create(entry.key, entry.config);
    entry.handle = handle;
    entry.starting = withTimeout(
      handle.start(),
      this.options.startTimeoutMillis ?? 15_000,
      'the failover controller did not connect',
    ).then(
      () => {
        if (entry.retired) return; // retire() stops it once this settles
        entry.phase = 'running';
        entry.failures = 0;
        this.options.log.info(`${entry.key}: failover controller running`);
        this.options.onChange(entry.key);
      },
      async (error: unknown) => {
        // Close what the failed start opened (its etcd client, a granted lease).
        await handle.stop().catch(() => undefined);
        entry.handle = null;
        if (entry.retired) return;
        entry.failures++;
        entry.phase = 'unreachable';
        entry.error = startFailure(error, entry.config.endpoints);
        entry.retryInMillis = startRetryDelayMillis(
          entry.failures,
          this.options.retryDelayMillis ?? 1000,
          this.options.maxRetryDelayMillis ?? 30_000,
        );
        this.options.log.warn(
          `${entry.key}: failover controller did not start (${entry.error}); retry ${entry.failures} in ${entry.retryInMillis} ms`,
        );
        entry.timer = setTimeout(() => this.launch(entry), entry.retryInMillis);
        this.options.onChange(entry.key);
      },
    );
  }

  /** Retires an entry: no more starts; its controller (if any) stops once its start has settled. */
  private retire(entry: Entry): Promise<void> {
    entry.retired = true;
    clearTimeout(entry.timer);
    const stopped = (async () => {
      await entry.starting?.catch(() => undefined);
      await entry.handle?.stop().catch((error) => {
        this.options.log.warn(`${entry.key}: stopping its failover controller failed: ${(error as Error).message}`);
      });
      entry.handle = null;
    })();
    this.stopping.add(stopped);
    void stopped.finally(() => this.stopping.delete(stopped));
    return stopped;
  }
}

/** Rejects with `what (within N ms)` when `promise` has not settled by then. */
function withTimeout<T>(promise: Promise<T>, millis: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${millis} ms`)), millis);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A failed start in words for the status: for an unreachable etcd, what the
 * connection said (the error's own advice is about `pgha up`'s --etcd flag, which
 * means nothing on Kubernetes).
 */
export function startFailure(error: unknown, endpoints: readonly string[]): string {
  if (error instanceof PghaError && error.code === 'etcd-unavailable' && error.cause !== undefined) {
    const cause = error.cause instanceof Error ? error.cause.message : String(error.cause);
    const detail = cause.split('\n')[0]!.replace(/\s*Resolution note:\s*$/, '');
    return `cannot reach etcd at ${endpoints.join(',')}: ${detail}`;
  }
  return error instanceof Error ? error.message : String(error);
}

/**
 * A `Controller` for one cluster with `pgha controller`'s defaults, where the
 * PgHaCluster sets the lease TTL and the maximum lag on failover. `credentials` are
 * the operator's own etcd TLS files and user (`pgha operator --etcd-ca …`), used for
 * every cluster's endpoints.
 */
export function createFailoverController(
  config: FailoverControllerConfig,
  log: Logger,
  credentials: EtcdCredentials = {},
): Controller {
  return new Controller({
    cluster: config.cluster,
    etcd: { ...credentials, endpoints: config.endpoints },
    keyRoot: config.keyRoot,
    lease: {
      ttlMillis: config.leaseTtlMillis,
      keepaliveIntervalMillis: defaultConfig.keepaliveIntervalMillis,
      fencingMarginMillis: defaultConfig.fencingMarginMillis,
    },
    policy: { ...defaultControllerPolicy, maximumLagOnFailoverBytes: config.maximumLagOnFailoverBytes },
    // Below the operator's start timeout (15 s): an unreachable etcd is reported with
    // etcd's own error (which names the endpoint) in the cluster's condition.
    connectPatienceMillis: 5000,
    log,
  });
}
