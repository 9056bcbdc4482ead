/**
 * The etcd watches on each PgHaCluster's leader key that one operator leadership
 * keeps, so a reconcile follows a change of the leader record at once instead of at
 * the next periodic resync: after a failover the `-rw` Service's role label moves
 * within a reconcile or two, not up to a resync interval later. The resync stays as
 * the backstop (a watch that is down, or etcd unreachable).
 *
 * Lifecycle as for the failover controllers (cluster-controllers.ts): the Operator
 * calls `sync` on every reconcile of a cluster (null once it is gone) and `stop`
 * when its leadership ends. A watch is opened for a cluster with a valid spec,
 * reopened when its etcd endpoints, key root or name change, kept as it is while
 * the spec is invalid, and closed once the cluster is gone.
 *
 * What triggers a reconcile of the cluster (`onChange`): every put or delete of the
 * leader key (and of the other keys the opener watches with it: `pgha operator`
 * adds the `sync` and `config` records, which the `Synchronous` condition reads), and every (re)connection of the watch — the first one closes the gap
 * between the reconcile that opened it and the watch's start, later ones follow an
 * etcd outage. A watch etcd cancels (compaction, an error) is reopened after a
 * doubling delay. Nothing here throws into the operator: a watch that fails only
 * leaves that cluster to the resync.
 *
 * May import: etcd3 (for `openEtcdLeaderWatch`), the pure decisions.
 */
import type { Etcd3, Watcher } from 'etcd3';
import { desiredFailoverController, startRetryDelayMillis } from './decide-failover-controller.js';
import type { PgHaClusterObject } from './pgha-cluster.js';

/** Where a cluster's leader record is: its name in etcd, its etcd, its key root. */
export interface LeaderWatchTarget {
  readonly cluster: string;
  readonly endpoints: readonly string[];
  readonly keyRoot: string;
}

/** What a cluster asks for: gone, an unreadable spec (keep what runs), or a watch on this target. */
export type DesiredLeaderWatch =
  | { readonly type: 'absent' }
  | { readonly type: 'invalid' }
  | { readonly type: 'valid'; readonly target: LeaderWatchTarget };

/** The watch a PgHaCluster asks for, read as its failover controller's settings are (defaults applied). */
export function desiredLeaderWatch(cluster: PgHaClusterObject | null): DesiredLeaderWatch {
  const desired = desiredFailoverController(cluster);
  if (desired.type !== 'valid') return desired;
  const { cluster: name, endpoints, keyRoot } = desired.config;
  return { type: 'valid', target: { cluster: name, endpoints, keyRoot } };
}

export type LeaderWatchDecision =
  | { readonly type: 'keep' }
  | { readonly type: 'open'; readonly target: LeaderWatchTarget }
  | { readonly type: 'reopen'; readonly target: LeaderWatchTarget }
  | { readonly type: 'close' };

/**
 * Open, reopen, close or keep a cluster's leader watch, given what the cluster asks
 * for and the target of the watch open now (null: none). An invalid spec keeps the
 * watch that runs (the operator changes nothing running on bad input) and opens none.
 */
export function decideLeaderWatch(desired: DesiredLeaderWatch, running: LeaderWatchTarget | null): LeaderWatchDecision {
  switch (desired.type) {
    case 'absent':
      return running === null ? { type: 'keep' } : { type: 'close' };
    case 'invalid':
      return { type: 'keep' };
    case 'valid':
      if (running === null) return { type: 'open', target: desired.target };
      return sameTarget(running, desired.target) ? { type: 'keep' } : { type: 'reopen', target: desired.target };
    default: {
      const never: never = desired;
      throw new Error(`unknown desired watch ${JSON.stringify(never)}`);
    }
  }
}

function sameTarget(a: LeaderWatchTarget, b: LeaderWatchTarget): boolean {
  return a.cluster === b.cluster && a.keyRoot === b.keyRoot && a.endpoints.join(',') === b.endpoints.join(',');
}

/** What a watch reports to its owner. */
export interface LeaderWatchEvents {
  /** The leader record was put or deleted. */
  changed(): void;
  /** The watch is (again) established: changes while it was not may have been missed. */
  connected(): void;
  /** The connection dropped; the watch reconnects on its own. */
  disconnected(error: unknown): void;
  /** The watch is dead (etcd cancelled it): it must be reopened. */
  failed(error: unknown): void;
}

/** One open watch; `close` stops its events at once (the cancel itself is not awaited). */
export interface LeaderWatchHandle {
  close(): void;
}

/** What the Operator uses of {@link LeaderWatches}. */
export interface LeaderWatchSet {
  /** Opens, reopens or closes the watch of cluster `key` (namespace/name); `cluster` null: it is gone. */
  sync(key: string, cluster: PgHaClusterObject | null): void;
  /** Closes every watch; none opens afterwards. */
  stop(): void;
}

export interface LeaderWatchesOptions {
  /** Opens a watch on the target's leader key (it connects in the background). */
  open(target: LeaderWatchTarget, events: LeaderWatchEvents): LeaderWatchHandle;
  /** Called when cluster `key`'s leader record may have changed (the Operator enqueues its reconcile). */
  onChange(key: string): void;
  log: { info(message: string): void; warn(message: string): void };
  /** First wait before reopening a failed watch, doubling. Default 1000 ms. */
  retryDelayMillis?: number;
  /** Longest wait before reopening. Default 30 000 ms. */
  maxRetryDelayMillis?: number;
}

interface Entry {
  readonly key: string;
  readonly target: LeaderWatchTarget;
  handle: LeaderWatchHandle | null;
  failures: number;
  /** Whether the last report was a problem (so each outage is logged once, not per retry). */
  troubled: boolean;
  timer: NodeJS.Timeout | undefined;
  closed: boolean;
}

/** The leader watches of one operator leadership (see the file header). */
export class LeaderWatches implements LeaderWatchSet {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly options: LeaderWatchesOptions) {}

  /** Keys of the clusters that have a watch (for tests and logs). */
  get keys(): string[] {
    return [...this.entries.keys()];
  }

  sync(key: string, cluster: PgHaClusterObject | null): void {
    if (this.closed) return;
    const entry = this.entries.get(key);
    const decision = decideLeaderWatch(desiredLeaderWatch(cluster), entry?.target ?? null);
    switch (decision.type) {
      case 'keep':
        return;
      case 'reopen':
        this.close(entry!);
        this.open(key, decision.target);
        return;
      case 'open':
        this.open(key, decision.target);
        return;
      case 'close':
        this.entries.delete(key);
        this.close(entry!);
        return;
      default: {
        const never: never = decision;
        throw new Error(`unknown decision ${JSON.stringify(never)}`);
      }
    }
  }

  stop(): void {
    this.closed = true;
    for (const e of this.entries.values()) this.close(e);
    this.entries.clear();
  }

  private open(key: string, target: LeaderWatchTarget): void {
    const entry: Entry = { key, target, handle: null, failures: 0, troubled: false, timer: undefined, closed: false };
    this.entries.set(key, entry);
    this.attach(entry);
  }

  private attach(entry: Entry): void {
    if (entry.closed || this.closed) return;
    entry.timer = undefined;
    const { key } = entry;
    const notify = () => {
      if (entry.closed) return;
      try {
        this.options.onChange(key);
      } catch (error) {
        this.options.log.warn(`${key}: leader watch: enqueueing failed: ${(error as Error).message}`);
      }
    };
    const problem = (what: string, error: unknown) => {
      if (entry.troubled) return;
      entry.troubled = true;
      this.options.log.warn(`${key}: leader watch ${what} (${describe(error)}); the resync reconciles it meanwhile`);
    };
    try {
      entry.handle = this.options.open(entry.target, {
        changed: notify,
        connected: () => {
          if (entry.closed) return;
          entry.failures = 0;
          if (entry.troubled) this.options.log.info(`${key}: leader watch connected again`);
          entry.troubled = false;
          notify();
        },
        disconnected: (error) => {
          if (!entry.closed) problem('disconnected, reconnecting', error);
        },
        failed: (error) => {
          if (entry.closed) return;
          entry.handle?.close();
          entry.handle = null;
          this.retry(entry, error, problem);
        },
      });
    } catch (error) {
      this.retry(entry, error, problem);
    }
  }

  private retry(entry: Entry, error: unknown, problem: (what: string, error: unknown) => void): void {
    entry.failures++;
    const delay = startRetryDelayMillis(
      entry.failures,
      this.options.retryDelayMillis ?? 1000,
      this.options.maxRetryDelayMillis ?? 30_000,
    );
    problem(`failed, reopening in ${delay} ms`, error);
    entry.timer = setTimeout(() => this.attach(entry), delay);
  }

  private close(entry: Entry): void {
    entry.closed = true;
    clearTimeout(entry.timer);
    try {
      entry.handle?.close();
    } catch (error) {
      this.options.log.warn(`${entry.key}: closing its leader watch failed: ${describe(error)}`);
    }
    entry.handle = null;
  }
}

const describe = (error: unknown) => (error instanceof Error ? error.message.split('\n')[0]! : String(error));

/**
 * A watch on `leaderKey` (or on several keys: one etcd watcher each, reported as one
 * watch — a change of any is `changed`, each (re)connection `connected`, and a failure
 * of any fails the whole, which the owner reopens) with etcd3: created with
 * `watcher()` (not `create()`, which waits for etcd and would hang while it is
 * unreachable), reconnected by the client itself after a dropped stream, resuming
 * from the revision after the last it saw.
 */
export function openEtcdLeaderWatch(
  etcd: Etcd3,
  leaderKey: string | readonly string[],
  events: LeaderWatchEvents,
): LeaderWatchHandle {
  let closed = false;
  const watchers: Watcher[] = [];
  for (const key of typeof leaderKey === 'string' ? [leaderKey] : leaderKey) {
    const watcher: Watcher = etcd.watch().key(key).watcher();
    watchers.push(watcher);
    watcher.on('put', () => closed || events.changed());
    watcher.on('delete', () => closed || events.changed());
    watcher.on('connected', () => closed || events.connected());
    watcher.on('disconnected', (error: unknown) => closed || events.disconnected(error));
    // etcd3 emits 'error' when etcd cancels the watch (e.g. its revision was compacted);
    // the watcher is then detached and never reconnects. Unhandled, it would crash us.
    watcher.on('error', (error: unknown) => {
      if (!closed) events.failed(error);
    });
  }
  return {
    close() {
      closed = true;
      // Not awaited: etcd3 waits for etcd to confirm a cancel, which never comes from an
      // etcd that is down.
      for (const watcher of watchers) void watcher.cancel().catch(() => undefined);
    },
  };
}
