/**
 * The operator's shell: lists and watches PgHaClusters (resuming from the last
 * resourceVersion, re-listing on 410 Gone or a closed watch), keeps a work queue of
 * cluster keys (one reconcile per key at a time, retries with a growing delay),
 * reads what `decideReconcile` needs, applies the actions it returns and logs them.
 * A 409 (someone wrote first) is never retried blindly: the key is requeued and the
 * next attempt reads everything again. A periodic resync re-enqueues every cluster
 * so pods and Secrets (not watched) are looked at too; the leader record is watched
 * in etcd through the injected `leaderWatches` (leader-watches.ts), the resync being
 * its backstop. Pods are not watched, so a round that changed role labels is
 * followed by another at once: moving `primary` takes two (old pod first); a round
 * that took a rolling-update step (`delete-pod`, a switchover request) is followed by
 * another within a second.
 *
 * Synchronous replication: the injected `synchronous` reads each cluster's `config`
 * and `sync` records (with the leader record) and writes the `config` record when
 * the decision says so (`write-config`); a `recheck` action re-enqueues the cluster
 * after a delay (the end of the grace while a primary applies new settings).
 *
 * Each cluster's failover controller runs in the Operator too, through the
 * injected `failoverControllers` (cluster-controllers.ts): every reconcile of a
 * cluster syncs its controller first (start, restart on new settings, stop once the
 * cluster is gone) and reports it in the status; `stop()` stops them all.
 *
 * Leader election between operator replicas is not in here: `ElectedOperator`
 * (elected-operator.ts) starts one Operator per leadership and stops it when the
 * leadership ends; `mayWrite` lets it veto each write at the last moment.
 *
 * May import: @kubernetes/client-node, the pure decision, the logger. Not the etcd
 * side of `request-switchover` nor the controllers (the caller injects everything
 * that talks to etcd).
 */
import { randomBytes } from 'node:crypto';
import {
  ApiException,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  Watch,
} from '@kubernetes/client-node';
import type { FailoverControllerSet } from './cluster-controllers.js';
import { decideReconcile, type ObservedPod, type ReconcileAction } from './decide-reconcile.js';
import type { ConfigWrite, SynchronousObservation } from './decide-synchronous.js';
import { clusterLabel, type KubeObject } from './desired-objects.js';
import type { LeaderWatchSet } from './leader-watches.js';
import { type PgHaClusterObject, pghaApiVersion, pghaGroup, pghaVersion } from './pgha-cluster.js';

export interface OperatorLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface OperatorOptions {
  /** A loaded KubeConfig, or the path of a kubeconfig file; default: in-cluster or $KUBECONFIG (loadFromDefault). */
  kubeConfig?: KubeConfig | string;
  /** Watch one namespace, or all when undefined. */
  namespace?: string;
  /** The writable leader record of a cluster (from etcd), or null. */
  readLeader(cluster: PgHaClusterObject): Promise<{ member: string; term: number } | null>;
  /** Writes a switchover request for the cluster's controller (to etcd). */
  requestSwitchover(cluster: PgHaClusterObject, from: string, candidates: readonly string[]): Promise<void>;
  /**
   * The `removed/<name>` marks of members scaled away on purpose (in etcd): read,
   * written (create-if-absent) and deleted. Without it the operator keeps no marks, and
   * the slots of removed members go only after the agents' member slots TTL.
   */
  removedMembers?: {
    read(cluster: PgHaClusterObject): Promise<string[]>;
    mark(cluster: PgHaClusterObject, member: string, reason: string): Promise<void>;
    unmark(cluster: PgHaClusterObject, member: string): Promise<void>;
  };
  /**
   * Synchronous replication in the cluster's etcd: `read` its `config` and `sync`
   * records and which members stream; `write` the `config` record (create-if-absent,
   * or guarded by the mod revision read), false when the guard failed. Without it the
   * operator neither writes the config record nor reports a `Synchronous` condition.
   */
  synchronous?: {
    read(cluster: PgHaClusterObject): Promise<SynchronousObservation>;
    write(cluster: PgHaClusterObject, write: ConfigWrite): Promise<boolean>;
  };
  /**
   * How long after a change of the synchronous settings a claim that does not reach
   * them yet counts as being applied (condition `Applying`), not degraded. Default 5000 ms.
   */
  synchronousGraceMillis?: number;
  log: OperatorLog;
  /** Every cluster is reconciled at least this often. Default 5000 ms. */
  resyncIntervalMillis?: number;
  /** First retry delay after a failed reconcile, doubling up to maxRetryDelayMillis. Default 100 ms. */
  retryDelayMillis?: number;
  maxRetryDelayMillis?: number;
  now?: () => Date;
  /**
   * Asked right before every write to the API server or etcd; false refuses the
   * write (the reconcile fails and nothing more is written). The leader election
   * passes "my renew deadline has not passed", checked on the clock, so a write
   * never starts after it even when the timer that stops the operator runs late.
   */
  mayWrite?: () => boolean;
  /**
   * Builds this Operator's failover controllers (one per cluster); `onChange(key)`
   * re-reconciles a cluster whose controller changed state. Without it the Operator
   * runs no controllers and its status has no `FailoverControllerReady` condition.
   */
  failoverControllers?: (onChange: (key: string) => void) => FailoverControllerSet;
  /**
   * Builds this Operator's watches on each cluster's leader record; `onChange(key)`
   * re-reconciles a cluster whose record changed. Without it the leader record is
   * read only on reconciles the resync or Kubernetes events cause.
   */
  leaderWatches?: (onChange: (key: string) => void) => LeaderWatchSet;
}

const fieldManager = 'pgha-operator';
const keyOf = (namespace: string, name: string) => `${namespace}/${name}`;
const statusCode = (error: unknown): number | undefined => (error instanceof ApiException ? error.code : undefined);

/** Objects the decision compares with what it wants, by kind and API version. */
const ownedKinds = [
  { apiVersion: 'apps/v1', kind: 'StatefulSet', suffixes: [''] },
  { apiVersion: 'v1', kind: 'Service', suffixes: ['', '-rw', '-ro'] },
  { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', suffixes: [''] },
  { apiVersion: 'v1', kind: 'ServiceAccount', suffixes: [''] },
] as const;

export class Operator {
  private readonly api: KubernetesObjectApi;
  private readonly queue = new Set<string>();
  private readonly busy = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private watchAbort: AbortController | undefined;
  private stopped = false;
  private wake: () => void = () => undefined;
  /** The reconcile in progress, awaited by stop(). */
  private current: Promise<unknown> | undefined;
  /** Reconciles done (for tests and logs). */
  reconciles = 0;
  /** Times the watch started over from a fresh list (410, closed stream). */
  relists = 0;

  private readonly kubeConfig: KubeConfig;

  constructor(private readonly options: OperatorOptions) {
    if (options.kubeConfig instanceof KubeConfig) this.kubeConfig = options.kubeConfig;
    else {
      this.kubeConfig = new KubeConfig();
      if (options.kubeConfig === undefined) this.kubeConfig.loadFromDefault();
      else this.kubeConfig.loadFromFile(options.kubeConfig);
    }
    this.api = KubernetesObjectApi.makeApiClient(this.kubeConfig);
    this.customObjects = this.kubeConfig.makeApiClient(CustomObjectsApi);
    this.controllers = options.failoverControllers?.((key) => {
      if (!this.stopped) this.enqueue(key);
    });
    this.leaderWatches = options.leaderWatches?.((key) => {
      if (!this.stopped) this.enqueue(key);
    });
  }
  /** This Operator's leader-record watches, if it keeps them. */
  readonly leaderWatches: LeaderWatchSet | undefined;
  private readonly customObjects: CustomObjectsApi;
  /** This Operator's failover controllers, if it runs them. */
  readonly controllers: FailoverControllerSet | undefined;

  /** Lists, starts watching and runs the work queue until `stop()`. */
  async start(): Promise<void> {
    await this.listAndWatch();
    if (this.stopped) return; // stopped while listing: start no timers stop() would miss
    const resync = setInterval(() => this.enqueueAll(), this.options.resyncIntervalMillis ?? 5000);
    this.timers.add(resync as unknown as NodeJS.Timeout);
    void this.work();
  }

  /**
   * Stops watching and working. `stopped` is set before anything is awaited, so no
   * write starts after this call; the promise resolves once the reconcile in
   * progress (if any) has given up, i.e. once no write of this operator can still
   * be sent, and the failover controllers have stopped (bounded: see
   * `ClusterControllers.stop`). The reconcile is awaited first: it may still sync
   * a controller, which the stop then covers.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watchAbort?.abort();
    for (const t of this.timers) clearTimeout(t);
    this.wake();
    await this.current?.catch(() => undefined);
    this.leaderWatches?.stop();
    await this.controllers?.stop();
  }

  private clusterPath(): string {
    const ns = this.options.namespace;
    return `/apis/${pghaGroup}/${pghaVersion}${ns ? `/namespaces/${ns}` : ''}/pghaclusters`;
  }

  private known = new Set<string>();

  private async listAndWatch(): Promise<void> {
    if (this.stopped) return;
    let list: { metadata?: { resourceVersion?: string }; items: PgHaClusterObject[] };
    try {
      list = (await this.api.list(pghaApiVersion, 'PgHaCluster', this.options.namespace)) as unknown as typeof list;
    } catch (error) {
      this.options.log.warn(`listing PgHaClusters failed (${(error as Error).message}); retrying`);
      this.later(() => void this.listAndWatch(), this.options.maxRetryDelayMillis ?? 5000);
      return;
    }
    const before = this.known;
    this.known = new Set(list.items.map((c) => keyOf(c.metadata.namespace, c.metadata.name)));
    for (const key of this.known) this.enqueue(key);
    // A cluster deleted while the watch was down (no DELETED event seen) is reconciled
    // once more: reading it finds it gone, which stops its failover controller.
    for (const key of before) if (!this.known.has(key)) this.enqueue(key);
    await this.watchFrom(list.metadata?.resourceVersion);
  }

  /**
   * Watches from a resourceVersion. A stream that closes is resumed from the newest
   * version seen (bookmarks keep it fresh); an ERROR event (410 Gone: that version
   * was compacted) or a failed request starts over with a list.
   */
  private async watchFrom(from: string | undefined): Promise<void> {
    if (this.stopped) return;
    let resourceVersion = from;
    let ended = false;
    const end = (relist: boolean, why: string) => {
      if (ended || this.stopped) return;
      ended = true;
      this.watchAbort?.abort();
      if (relist) {
        this.relists++;
        this.options.log.info(`watch ended (${why}): listing again`);
        this.later(() => void this.listAndWatch(), 50);
      } else this.later(() => void this.watchFrom(resourceVersion), 50);
    };
    try {
      this.watchAbort = await this.startWatch(resourceVersion, end, (rv) => {
        resourceVersion = rv;
      });
    } catch (error) {
      end(true, `watch request failed: ${(error as Error).message}`);
    }
  }

  private startWatch(
    from: string | undefined,
    end: (relist: boolean, why: string) => void,
    seen: (resourceVersion: string) => void,
  ): Promise<AbortController> {
    let resourceVersion = from;
    return new Watch(this.kubeConfig).watch(
      this.clusterPath(),
      { resourceVersion, allowWatchBookmarks: true },
      (type, object: PgHaClusterObject & { code?: number; metadata: { resourceVersion?: string } }) => {
        if (type === 'ERROR') {
          end(true, `error ${object.code ?? ''}`);
          return;
        }
        resourceVersion = object.metadata?.resourceVersion ?? resourceVersion;
        if (resourceVersion !== undefined) seen(resourceVersion);
        if (type === 'BOOKMARK') return;
        const key = keyOf(object.metadata.namespace, object.metadata.name);
        if (type === 'DELETED') this.known.delete(key);
        else this.known.add(key);
        this.enqueue(key);
      },
      (error) =>
        end(error !== null && error !== undefined, error ? String((error as Error).message ?? error) : 'closed'),
    );
  }

  private enqueueAll(): void {
    for (const key of this.known) this.enqueue(key);
  }

  private enqueue(key: string): void {
    this.queue.add(key);
    this.wake();
  }

  private later(fn: () => void, millis: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, millis);
    this.timers.add(t);
  }

  /** One worker: takes a key that is not being reconciled, reconciles it, retries failures with backoff. */
  private async work(): Promise<void> {
    while (!this.stopped) {
      const key = [...this.queue].find((k) => !this.busy.has(k));
      if (key === undefined) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        continue;
      }
      this.queue.delete(key);
      this.busy.add(key);
      try {
        this.current = this.reconcile(key);
        await this.current;
        this.failures.delete(key);
      } catch (error) {
        if (this.stopped) break; // refused writes after stop() are not failures to retry
        const n = (this.failures.get(key) ?? 0) + 1;
        this.failures.set(key, n);
        const delay = Math.min(
          (this.options.retryDelayMillis ?? 100) * 2 ** (n - 1),
          this.options.maxRetryDelayMillis ?? 5000,
        );
        const conflict = statusCode(error) === 409;
        this.options.log.warn(
          `${key}: ${conflict ? 'conflict (someone wrote first): reading again' : `reconcile failed: ${(error as Error).message}`}; retry ${n} in ${delay} ms`,
        );
        this.later(() => this.enqueue(key), delay);
      } finally {
        this.current = undefined;
        this.busy.delete(key);
        this.reconciles++;
      }
    }
  }

  private async readOrNull<T>(read: () => Promise<T>): Promise<T | null> {
    try {
      return await read();
    } catch (error) {
      if (statusCode(error) === 404) return null;
      throw error;
    }
  }

  /** Reads everything one decision needs, decides, applies in order. */
  async reconcile(key: string): Promise<ReconcileAction[]> {
    const [namespace, name] = key.split('/') as [string, string];
    const cluster = (await this.readOrNull(() =>
      this.api.read({ apiVersion: pghaApiVersion, kind: 'PgHaCluster', metadata: { name, namespace } }),
    )) as unknown as PgHaClusterObject | null;
    if (!this.stopped) {
      this.controllers?.sync(key, cluster);
      this.leaderWatches?.sync(key, cluster);
    }
    if (!cluster) return [];
    const objects: KubeObject[] = [];
    for (const { apiVersion, kind, suffixes } of ownedKinds)
      for (const suffix of suffixes) {
        const o = await this.readOrNull(() =>
          this.api.read({ apiVersion, kind, metadata: { name: `${name}${suffix}`, namespace } }),
        );
        if (o) objects.push(o as unknown as KubeObject);
      }
    const secretName =
      ((cluster.spec as { credentialsSecret?: unknown } | undefined)?.credentialsSecret as string | undefined) ??
      `${name}-credentials`;
    const secret = (await this.readOrNull(() =>
      this.api.read({ apiVersion: 'v1', kind: 'Secret', metadata: { name: secretName, namespace } }),
    )) as { data?: Record<string, string> } | null;
    const podList = (await this.api.list(
      'v1',
      'Pod',
      namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      `${clusterLabel}=${name}`,
    )) as unknown as {
      items: {
        metadata: { name: string; uid?: string; labels?: Record<string, string>; deletionTimestamp?: string };
        status?: { conditions?: { type: string; status: string }[] };
      }[];
    };
    const pods: ObservedPod[] = podList.items.map((p) => ({
      name: p.metadata.name,
      ...(p.metadata.uid !== undefined ? { uid: p.metadata.uid } : {}),
      // Includes controller-revision-hash, which the rolling update compares with the
      // StatefulSet's status.updateRevision (read with the StatefulSet above).
      labels: p.metadata.labels ?? {},
      ready: (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
      deleting: p.metadata.deletionTimestamp !== undefined,
    }));
    // An unreadable etcd is reported (the decision keeps the role labels as they are),
    // not a failed reconcile: the status is how users learn of it.
    let leader: { member: string; term: number } | null = null;
    let leaderReadError: string | undefined;
    try {
      leader = await this.options.readLeader(cluster);
    } catch (error) {
      leaderReadError = (error as Error).message;
      this.options.log.warn(`${key}: cannot read the leader record (${leaderReadError}); role labels stay as they are`);
    }
    // The removal marks live in the same etcd: unreadable with it.
    let removedMembers: string[] | null | undefined;
    if (this.options.removedMembers !== undefined && leaderReadError === undefined)
      removedMembers = await this.options.removedMembers.read(cluster).catch((error) => {
        this.options.log.warn(`${key}: cannot read the removal marks (${(error as Error).message})`);
        return null;
      });
    // Read with the leader record (same etcd); null when it cannot be read: the
    // condition then keeps its last value and the config record is not written.
    let synchronous: SynchronousObservation | null | undefined;
    if (this.options.synchronous !== undefined)
      synchronous =
        leaderReadError !== undefined
          ? null
          : await this.options.synchronous.read(cluster).catch((error) => {
              this.options.log.warn(
                `${key}: cannot read the synchronous replication records (${(error as Error).message})`,
              );
              return null;
            });
    const actions = decideReconcile({
      cluster,
      objects,
      credentialsSecretKeys: secret ? Object.keys(secret.data ?? {}) : null,
      pods,
      leader,
      ...(leaderReadError !== undefined ? { leaderReadError } : {}),
      ...(this.controllers ? { failoverController: this.controllers.state(key) } : {}),
      ...(removedMembers !== undefined ? { removedMembers } : {}),
      ...(synchronous !== undefined ? { synchronous } : {}),
      ...(this.options.synchronousGraceMillis !== undefined
        ? { synchronousGraceMillis: this.options.synchronousGraceMillis }
        : {}),
      now: (this.options.now?.() ?? new Date()).toISOString().replace(/\.\d+Z$/, 'Z'),
      randomBytes,
    });
    for (const action of actions) await this.apply(cluster, action);
    // Pods are not watched: read them again now, so the second half of a role-label
    // move (the new primary's label, once the old one's removal is observed) follows
    // at once. A round that changes no label does not requeue, so this settles.
    if (actions.some((a) => a.type === 'label-pod')) this.enqueue(key);
    // A rolling update step is followed by a look soon after (not at once: the pod
    // takes a while to go and come back), not only at the next resync.
    if (actions.some((a) => a.type === 'delete-pod' || a.type === 'request-switchover'))
      this.later(() => this.enqueue(key), Math.min(1000, this.options.resyncIntervalMillis ?? 5000));
    return actions;
  }

  private async apply(cluster: PgHaClusterObject, action: ReconcileAction): Promise<void> {
    const { name, namespace } = cluster.metadata;
    if (this.stopped || (this.options.mayWrite !== undefined && !this.options.mayWrite()))
      throw new Error(`not writing ${action.type}: this operator ${this.stopped ? 'is stopped' : 'no longer leads'}`);
    const log = (message: string) => this.options.log.info(`${namespace}/${name}: ${message}`);
    switch (action.type) {
      case 'create':
        log(`create ${action.object.kind}/${action.object.metadata.name}`);
        await this.api.create(action.object as never, undefined, undefined, fieldManager);
        return;
      case 'create-secret':
        // Never log the data: it holds the passwords.
        log(`create generated Secret/${action.object.metadata.name}`);
        await this.api.create(action.object as never, undefined, undefined, fieldManager);
        return;
      case 'update':
        log(`update ${action.object.kind}/${action.object.metadata.name}`);
        await this.api.replace(action.object as never, undefined, undefined, fieldManager);
        return;
      case 'label-pod':
        log(`label pod ${action.pod} ${action.role}`);
        await this.api.patch(
          {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: action.pod, namespace, labels: { 'pgha.dev/role': action.role } },
          },
          undefined,
          undefined,
          fieldManager,
          undefined,
          PatchStrategy.MergePatch,
        );
        return;
      case 'delete-pod':
        // Conditional on the uid observed: a pod the StatefulSet already re-created
        // under the same name is not deleted again (a 409 re-reads).
        log(`delete pod ${action.pod} (${action.reason})`);
        await this.api.delete(
          { apiVersion: 'v1', kind: 'Pod', metadata: { name: action.pod, namespace } },
          undefined,
          undefined,
          undefined,
          undefined,
          undefined,
          action.uid !== undefined ? { preconditions: { uid: action.uid } } : undefined,
        );
        return;
      case 'request-switchover':
        log(`request switchover from ${action.from} (${action.reason})`);
        await this.options.requestSwitchover(cluster, action.from, action.candidates);
        return;
      case 'mark-removed':
      case 'unmark-removed': {
        const marks = this.options.removedMembers;
        if (marks === undefined) throw new Error(`${action.type} without removedMembers`);
        if (action.type === 'mark-removed') {
          log(`mark member ${action.member} removed (${action.reason})`);
          await marks.mark(cluster, action.member, action.reason);
        } else {
          log(`unmark member ${action.member} (wanted again)`);
          await marks.unmark(cluster, action.member);
        }
        return;
      }
      case 'write-config': {
        const sync = this.options.synchronous;
        if (sync === undefined) throw new Error('write-config without synchronous');
        log(`config record: ${action.write.change}`);
        if (!(await sync.write(cluster, action.write)))
          throw new Error(
            "the cluster's config record changed in etcd since it was read (another writer, such as pgha config set): reading it again",
          );
        return;
      }
      case 'recheck':
        this.later(() => this.enqueue(keyOf(namespace, name)), action.afterMillis);
        return;
      case 'update-status': {
        log(`status ${action.status.phase} ${action.status.ready ?? ''}`);
        // PUT to the status subresource with the resourceVersion read: a 409 means re-read.
        await this.customObjects.replaceNamespacedCustomObjectStatus({
          group: pghaGroup,
          version: pghaVersion,
          namespace,
          plural: 'pghaclusters',
          name,
          body: { ...cluster, status: action.status },
          fieldManager,
        });
        return;
      }
      case 'event':
        log(`event ${action.eventType} ${action.reason}: ${action.message}`);
        await this.api
          .create({
            apiVersion: 'v1',
            kind: 'Event',
            metadata: { generateName: `${name}.`, namespace },
            involvedObject: {
              apiVersion: pghaApiVersion,
              kind: 'PgHaCluster',
              name,
              namespace,
              uid: cluster.metadata.uid,
            },
            type: action.eventType,
            reason: action.reason,
            message: action.message,
            source: { component: 'pgha-operator' },
          } as never)
          .catch((error) => this.options.log.warn(`event not recorded: ${(error as Error).message}`)); // events are best effort
        return;
      default: {
        const never: never = action;
        throw new Error(`unknown action ${JSON.stringify(never)}`);
      }
    }
  }
}
