/**
 * Discovery: follows a pgha cluster's `leader` record in etcd (read-only) and
 * announces role changes as events. Usable on its own (`watchCluster`) or inside a
 * `Pool`.
 */
import {
  type ClusterEvent,
  type ClusterKeys,
  clusterKeys,
  InitializeRecord,
  type MemberRecord,
  PghaError,
  type PrimaryEndpoint,
  TargetRecord,
} from '@pgha/core';
import { ConsecutiveBreaker, circuitBreaker, ExponentialBackoff, handleWhen, noop, retry } from 'cockatiel';
import { Etcd3, type IOptions, isRecoverableError, type Watcher } from 'etcd3';
import { EventEmitter } from 'eventemitter3';
import { NoPrimaryError } from './errors.js';
import { type HostAllowlist, parseHostAllowlist } from './host-allowlist.js';
import { acceptMember, observeLeader } from './record-acceptance.js';
import {
  type DiscoveryState,
  decideIncarnation,
  decideLeaderObservation,
  initialDiscoveryState,
  type LeaderObservation,
  reasonFromTarget,
  sameEndpoint,
} from './routing.js';

/** How the client reaches etcd. */
export interface EtcdOptions {
  /** `http(s)://host:port` endpoints, as an array or a comma-separated string. */
  readonly endpoints: string | readonly string[];
  /** etcd user name (role-based access); needs read access to the cluster's keys only. */
  readonly username?: string;
  readonly password?: string;
  /** TLS material for `https` endpoints (etcd3's `credentials`). */
  readonly credentials?: {
    readonly rootCertificate: Buffer;
    readonly privateKey?: Buffer;
    readonly certChain?: Buffer;
  };
  /** How long one etcd call may take before it counts as failed. Default 2000. */
  readonly callTimeoutMillis?: number;
}

/** Options of {@link watchCluster}. */
export interface WatchClusterOptions {
  readonly etcd: EtcdOptions;
  /** The pgha cluster name (a DNS-1123 label). */
  readonly cluster: string;
  /** The etcd key root the cluster lives under; default `/pgha/`. */
  readonly keyRoot?: string;
  /**
   * Interval of the safety re-read of the leader record, guarding against a watch that
   * died silently. Default 5000. Must be shorter than `staleAfterMillis`.
   */
  readonly rereadIntervalMillis?: number;
  /** After this long without an answer from etcd, `discovery-stale` is emitted. Default 15000. */
  readonly staleAfterMillis?: number;
  /**
   * The hosts the cluster's servers may be on: exact host names (`db-1.internal`), IP
   * addresses (`10.0.0.5`) and CIDR subnets (`10.0.0.0/24`, `fd00::/8`). A leader or
   * member record naming any other host is ignored with a `discovery-error` that
   * names the host (the last good primary is kept), so whoever can write to etcd
   * cannot send the application's connections elsewhere. Host names are compared as
   * written (case-insensitive), never resolved. Default: every host allowed.
   */
  readonly allowedHosts?: readonly string[];
}

/** The `primary-changed` event: a (new) writable primary. */
export type PrimaryChangedEvent = Extract<ClusterEvent, { type: 'primary-changed' }>;
/** The `no-primary` event: no leader, or a leader not writable yet. */
export type NoPrimaryEvent = Extract<ClusterEvent, { type: 'no-primary' }>;
/** The `discovery-error` event: etcd failed or a record was malformed, hostile or out of date. */
export type DiscoveryErrorEvent = Extract<ClusterEvent, { type: 'discovery-error' }>;
/** The `discovery-stale` event: etcd has not answered for longer than `staleAfterMillis`. */
export type DiscoveryStaleEvent = Extract<ClusterEvent, { type: 'discovery-stale' }>;
/** The `discovery-restored` event: etcd answers again after `discovery-stale`. */
export type DiscoveryRestoredEvent = Extract<ClusterEvent, { type: 'discovery-restored' }>;

/**
 * The `cluster-reset` event: the cluster is a new incarnation (its `initialize` record
 * names another PostgreSQL system id: restored from an etcd backup, or bootstrapped
 * again). Terms restart with it, so the watcher forgot the newest term it had seen and
 * follows the new cluster's leader whatever its term.
 */
export interface ClusterResetEvent {
  readonly type: 'cluster-reset';
  readonly previousSystemId: string;
  readonly systemId: string;
}

/** The events of a {@link ClusterWatcher}, each with one {@link ClusterEvent} argument. */
export interface ClusterWatcherEvents {
  'primary-changed': (event: PrimaryChangedEvent) => void;
  'no-primary': (event: NoPrimaryEvent) => void;
  'discovery-error': (event: DiscoveryErrorEvent) => void;
  'discovery-stale': (event: DiscoveryStaleEvent) => void;
  'discovery-restored': (event: DiscoveryRestoredEvent) => void;
  'cluster-reset': (event: ClusterResetEvent) => void;
  /** The member records changed (only while following members, see {@link ClusterWatcher.followMembers}). */
  'members-changed': (members: ReadonlyMap<string, MemberRecord>) => void;
}

/** The names of {@link ClusterWatcherEvents}. */
export const clusterWatcherEventNames = [
  'primary-changed',
  'no-primary',
  'discovery-error',
  'discovery-stale',
  'discovery-restored',
] as const satisfies ReadonlyArray<keyof ClusterWatcherEvents>;

function invalid(message: string): PghaError {
  return new PghaError('invalid-option', message);
}

function positiveMillis(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalid(`${name} must be a positive number of milliseconds, got ${String(value)}`);
  }
  return value;
}

/** Checks and normalizes etcd endpoints. @throws PghaError `invalid-option` */
export function parseEtcdEndpoints(endpoints: string | readonly string[] | undefined): string[] {
  if (endpoints === undefined || endpoints === null) {
    throw invalid('etcd.endpoints is required: pass the etcd URLs of the pgha cluster, like http://10.0.0.5:2379');
  }
  const list = (typeof endpoints === 'string' ? endpoints.split(',') : [...endpoints])
    .map((e) => String(e).trim())
    .filter((e) => e !== '');
  if (list.length === 0) throw invalid('etcd.endpoints is empty: pass at least one URL like http://10.0.0.5:2379');
  for (const endpoint of list) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw invalid(`etcd endpoint "${endpoint}" is not a URL: use http://HOST:PORT`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw invalid(`etcd endpoint "${endpoint}" must use http: or https:`);
    }
    if (url.username !== '' || url.password !== '') {
      throw invalid(
        `etcd endpoint "${url.protocol}//***@${url.host}" carries credentials: pass them as etcd.username and etcd.password instead (a URL shows up in logs and error messages)`,
      );
    }
  }
  return list;
}

function sameMembers(a: ReadonlyMap<string, MemberRecord>, b: ReadonlyMap<string, MemberRecord>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, record] of a) {
    const other = b.get(name);
    if (other === undefined || JSON.stringify(other) !== JSON.stringify(record)) return false;
  }
  return true;
}

/** Translates an etcd3/gRPC failure into our error: the one place the client does so. */
function castEtcdError(error: unknown, endpoints: readonly string[], doing: string): PghaError {
  if (error instanceof PghaError) return error;
  const detail = error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error);
  return new PghaError(
    'etcd-unavailable',
    `etcd at ${endpoints.join(',')} did not answer while ${doing} (${detail}); the client keeps the last known primary and retries`,
    { retryable: true, cause: error },
  );
}

/**
 * A read-only follower of one cluster's `leader` record in etcd, and an event emitter
 * of its role changes. Create it with {@link watchCluster}.
 *
 * It reads the record, then watches from the revision after that read (so no change
 * is missed between the two), applies only newer terms, validates every record
 * (malformed or hostile ones are reported as `discovery-error` and the last good
 * leader is kept), re-reads periodically in case the watch died silently, and
 * emits `discovery-stale`/`discovery-restored` when etcd stops/starts answering.
 */
export class ClusterWatcher extends EventEmitter<ClusterWatcherEvents> {
  /** The cluster's key layout. */
  readonly keys: ClusterKeys;
  /** The cluster name. */
  readonly cluster: string;
  /** Resolves after the first successful read of the leader record (and the start of the watch). Never rejects. */
  readonly ready: Promise<void>;

  private readonly endpoints: string[];
  private readonly client: Etcd3;
  private readonly rereadIntervalMillis: number;
  private readonly staleAfterMillis: number;
  private readonly allowlist: HostAllowlist | null;
  private state: DiscoveryState = initialDiscoveryState;
  private watcher: Watcher | null = null;
  private watchHealthy = false;
  private watchStarting: Promise<void> | null = null;
  /** The newest revision the leader watch delivered. */
  private watchRevision = 0;
  /** Pending checks that a watch delivers a change a read found (see expectWatchToDeliver). */
  private readonly watchChecks: Record<'leader' | 'members', NodeJS.Timeout | null> = { leader: null, members: null };
  private reading: Promise<void> | null = null;
  /** The next read after a failure (see failed). */
  private retryTimer: NodeJS.Timeout | null = null;
  private timers: NodeJS.Timeout[] = [];
  private lastContactMillis: number;
  private staleSince: number | null = null;
  private closedFlag = false;
  private lastError: PghaError | null = null;
  private markReady!: () => void;
  private readonly waiters = new Set<() => void>();
  private membersMap = new Map<string, MemberRecord>();
  private membersRevision = 0;
  private membersFollowing: Promise<void> | null = null;
  private membersWatcher: Watcher | null = null;
  private membersWatchHealthy = false;
  private membersWatchStarting: Promise<void> | null = null;
  /** The newest revision the members watch delivered. */
  private membersWatchRevision = 0;
  /** The newest controller decision seen: only a hint for the `reason` of primary changes. */
  private target: TargetRecord | null = null;
  private targetWatcher: Watcher | null = null;
  /** The PostgreSQL system id of the cluster's incarnation (its `initialize` record), once read. */
  private systemId: string | null = null;
  /** The newest revision of an older-term leader record that triggered a re-read. */
  private resetCheckedRevision = 0;
  /** See {@link unref}: whether the watches stay open without a pool holding them. */
  private refed = true;
  /** How many pools have work (see {@link hold}). */
  private holds = 0;
  private suspendedFlag = false;
  /** Told of each new primary before `primary-changed` is emitted (see {@link followPrimary}). */
  private readonly primaryFollowers = new Set<(primary: PrimaryEndpoint) => void>();

  /** @internal use {@link watchCluster} */
  constructor(options: WatchClusterOptions) {
    super();
    if (options === null || typeof options !== 'object') throw invalid('watchCluster needs an options object');
    if (options.etcd === null || typeof options.etcd !== 'object') {
      throw invalid('etcd is required: { endpoints: ["http://HOST:2379"] }');
    }
    this.endpoints = parseEtcdEndpoints(options.etcd.endpoints);
    if (typeof options.cluster !== 'string') throw invalid('cluster is required: the pgha cluster name, like "demo"');
    try {
      this.keys = clusterKeys(options.cluster, options.keyRoot);
    } catch (cause) {
      throw new PghaError('invalid-option', (cause as Error).message, { cause });
    }
    this.cluster = options.cluster;
    this.allowlist = parseHostAllowlist(options.allowedHosts);
    const callTimeoutMillis = positiveMillis('etcd.callTimeoutMillis', options.etcd.callTimeoutMillis, 2000);
    this.rereadIntervalMillis = positiveMillis('rereadIntervalMillis', options.rereadIntervalMillis, 5000);
    this.staleAfterMillis = positiveMillis('staleAfterMillis', options.staleAfterMillis, 15_000);
    if (this.rereadIntervalMillis >= this.staleAfterMillis) {
      throw invalid(
        `rereadIntervalMillis (${this.rereadIntervalMillis}) must be shorter than staleAfterMillis (${this.staleAfterMillis}), or a healthy etcd would look stale`,
      );
    }
    const etcdOptions: IOptions = {
      hosts: this.endpoints,
      dialTimeout: callTimeoutMillis,
      // Unary calls get a deadline; streams (the watches) must not: a stream deadline
      // ends the watch every few seconds, and etcd re-creates it unsynced, holding the
      // next event back up to ~100 ms (its unsynced-watcher sync period).
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMillis }),
      // etcd3's defaults would keep discovery blind for seconds after etcd answers again
      // (measured: 4.5 s after a 7 s freeze). Its breaker shuns a host for 5 s after 3
      // failures; with one endpoint there is no other host to shun it for, and with
      // several a short half-open (250 ms) lets the next re-read through. Its 3 global
      // retries would make one call outlast the re-read interval: only the other
      // endpoints are tried (the re-read is the retry). Its watch backoff grows to 30 s:
      // capped at 250 ms so a watch is back within a fraction of a second of etcd.
      faultHandling: {
        host: () =>
          this.endpoints.length === 1
            ? noop
            : circuitBreaker(handleWhen(isRecoverableError), {
                halfOpenAfter: 250,
                breaker: new ConsecutiveBreaker(3),
              }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: this.endpoints.length - 1 }),
        // etcd3 types this as a backoff but calls next() on it first, as it does with its
        // own default (new ExponentialBackoff()): a cockatiel backoff factory.
        watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 250 }) as never,
      },
    };
    const { username, password, credentials } = options.etcd;
    if (username !== undefined || password !== undefined) {
      if (typeof username !== 'string' || typeof password !== 'string') {
        throw invalid('etcd.username and etcd.password go together: pass both or neither');
      }
      etcdOptions.auth = { username, password };
    }
    if (credentials !== undefined) etcdOptions.credentials = { ...credentials };
    this.client = new Etcd3(etcdOptions);
    this.lastContactMillis = Date.now();
    this.ready = new Promise<void>((resolve) => {
      this.markReady = resolve;
    });

    const reread = setInterval(() => void this.refresh(), this.rereadIntervalMillis);
    const staleCheck = setInterval(() => this.checkStale(), Math.max(50, Math.min(1000, this.staleAfterMillis / 4)));
    reread.unref();
    staleCheck.unref();
    this.timers.push(reread, staleCheck);
    void this.refresh();
  }

  /** The current leader record as an endpoint, possibly not yet writable; null when there is none. */
  get leader(): PrimaryEndpoint | null {
    return this.state.leader;
  }

  /** The current writable primary, or null while there is none (or it is still being promoted). */
  get primary(): PrimaryEndpoint | null {
    return this.state.leader?.writable === true ? this.state.leader : null;
  }

  /** The member records (agents' self-reports) while following members; empty otherwise. */
  get members(): ReadonlyMap<string, MemberRecord> {
    return this.membersMap;
  }

  /**
   * Starts following the member records too (replica pools need their roles and lag):
   * a read of the members prefix, then a watch from the revision after it, re-read
   * with the leader. Idempotent; resolves after the first read (never rejects).
   */
  followMembers(): Promise<void> {
    if (this.membersFollowing === null) this.membersFollowing = this.readMembers();
    return this.membersFollowing;
  }

  /** Whether the leader record (or its absence) has been read at least once. */
  get observed(): boolean {
    return this.state.observed;
  }

  /** The etcd revision the watcher's view of the leader record reflects (0 before the first read). */
  get revision(): number {
    return this.state.revision;
  }

  /** The `allowedHosts` entries this watcher enforces; null when every host is allowed. */
  get allowedHosts(): readonly string[] | null {
    return this.allowlist?.entries ?? null;
  }

  /** The newest term seen (0 before any leader). */
  get term(): number {
    return this.state.newestTerm;
  }

  /** Since when (epoch milliseconds) etcd has been unanswered beyond `staleAfterMillis`; null when fresh. */
  get staleSinceMillis(): number | null {
    return this.staleSince;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.closedFlag;
  }

  /** The last etcd failure, for error messages; null after a success. */
  get lastEtcdError(): PghaError | null {
    return this.lastError;
  }

  /**
   * Re-reads the leader record now (and re-creates the watch when it is down).
   * Concurrent calls share one read. Never rejects: failures become `discovery-error`.
   * Call it when a server proved not to be the primary (the pool does).
   */
  refresh(): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    if (this.reading !== null) return this.reading;
    this.reading = this.readOnce().finally(() => {
      this.reading = null;
    });
    return this.reading;
  }

  /**
   * A read that starts now: a read in flight began before whatever prompted this (a
   * new `initialize` record written after it), so a new one follows it.
   */
  private refreshAfterCurrent(): void {
    const inFlight = this.reading;
    if (inFlight === null) void this.refresh();
    else void inFlight.then(() => this.refresh());
  }

  /**
   * Resolves with the writable primary as soon as there is one, or rejects with
   * {@link NoPrimaryError} after `timeoutMillis` (or when the watcher closes).
   */
  async waitForPrimary(timeoutMillis: number): Promise<PrimaryEndpoint> {
    const deadline = Date.now() + timeoutMillis;
    for (;;) {
      const primary = this.primary;
      if (primary !== null) return primary;
      if (this.closedFlag) throw this.noPrimaryError(timeoutMillis, 'the watcher was closed');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw this.noPrimaryError(timeoutMillis);
      await this.waitForChange(remaining);
    }
  }

  /**
   * Resolves at the next change of the leader record (another server, term, or
   * writability; or its removal), when the watcher closes, or after `timeoutMillis`,
   * whichever comes first. Never rejects: read {@link leader} afterwards.
   */
  waitForChange(timeoutMillis: number): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      // Ref'd: whoever waits for a primary is work that keeps the process alive (the
      // watch stream may not, see unref()).
      const timer = setTimeout(done, timeoutMillis);
      this.waiters.add(done);
    });
  }

  /** Describes why there is no primary, for {@link NoPrimaryError}. */
  noPrimaryError(waitedMillis: number, why?: string): NoPrimaryError {
    const leader = this.state.leader;
    const reason =
      why ??
      (this.lastError !== null && (this.staleSince !== null || !this.state.observed)
        ? `etcd is not answering (${this.lastError.message})`
        : leader === null
          ? `no leader record at ${this.keys.leader}`
          : `leader ${leader.member} of term ${leader.term} is not writable yet (promotion in progress)`);
    return new NoPrimaryError(
      `no writable primary for cluster "${this.cluster}" within ${waitedMillis} ms: ${reason}; retry later, or raise primaryWaitTimeoutMillis to wait longer through failovers`,
      { term: this.state.newestTerm, cause: this.lastError ?? undefined },
    );
  }

  /**
   * Lets the process exit while no pool has work (Node's `unref()` idea). A watcher
   * keeps an etcd watch stream open, which keeps Node's event loop alive; after
   * `unref()`, the watches are closed whenever no pool using this watcher has
   * checked-out, pending or connecting clients, and re-opened (after a re-read, so
   * nothing is missed) as soon as one has. Meanwhile the leader is still re-read every
   * `rereadIntervalMillis` on timers that do not keep the process alive, so changes are
   * seen within that interval instead of at once. A pool's own watcher is unref'd; a
   * shared one (`watchCluster`) is ref'd until you call this. Returns the watcher.
   */
  unref(): this {
    this.refed = false;
    this.updateActivity();
    return this;
  }

  /** Undoes {@link unref}: the watches stay open (and keep the process alive) until {@link close}. */
  ref(): this {
    this.refed = true;
    this.updateActivity();
    return this;
  }

  /**
   * Whether the watches are closed for now (unref'd and no pool has work, see
   * {@link unref}): changes are then seen by the periodic re-read only.
   */
  get suspended(): boolean {
    return this.suspendedFlag;
  }

  /** @internal A pool has work: keep the watches open until the matching {@link release}. */
  hold(): void {
    this.holds += 1;
    this.updateActivity();
  }

  /** @internal The pool that called {@link hold} has no work left. */
  release(): void {
    this.holds = Math.max(0, this.holds - 1);
    this.updateActivity();
  }

  /**
   * @internal Calls `follower` with each new writable primary before `primary-changed`
   * reaches any listener, so what a pool derives from it (its `options.host/port`) is
   * current in every listener: also in those registered on this watcher before the
   * pool, and in another pool's. `follower` must not throw. Returns the detacher.
   */
  followPrimary(follower: (primary: PrimaryEndpoint) => void): () => void {
    this.primaryFollowers.add(follower);
    return () => {
      this.primaryFollowers.delete(follower);
    };
  }

  /** @internal Wakes everything waiting in {@link waitForChange}, so it decides again (a pool is ending). */
  wakeWaiters(): void {
    for (const w of [...this.waiters]) w();
  }

  private updateActivity(): void {
    if (this.closedFlag) return;
    const active = this.refed || this.holds > 0;
    if (active && this.suspendedFlag) {
      this.suspendedFlag = false;
      // Re-read, then watch from the read's revision (readOnce re-creates the watches).
      void this.refresh();
    } else if (!active && !this.suspendedFlag) {
      this.suspendedFlag = true;
      // Closing the streams lets grpc unref its connection; not awaited (etcd3 waits for
      // etcd to confirm a cancel, which never comes for a watch etcd already dropped).
      const watchers = [this.watcher, this.membersWatcher, this.targetWatcher];
      this.watcher = null;
      this.membersWatcher = null;
      this.targetWatcher = null;
      this.watchHealthy = false;
      this.membersWatchHealthy = false;
      for (const watcher of watchers) void watcher?.cancel().catch(() => undefined);
    }
  }

  /** Stops watching and closes the etcd client. Waiters reject with {@link NoPrimaryError}. */
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    for (const timer of Object.values(this.watchChecks)) if (timer !== null) clearTimeout(timer);
    for (const w of [...this.waiters]) w();
    const watchers = [this.watcher, this.membersWatcher, this.targetWatcher];
    this.watcher = null;
    this.membersWatcher = null;
    this.targetWatcher = null;
    // Bounded: a watch etcd already dropped is never confirmed cancelled; the etcd
    // client is closed next anyway.
    await Promise.race([
      Promise.all(watchers.map((watcher) => watcher?.cancel().catch(() => undefined))),
      new Promise((resolve) => setTimeout(resolve, 1000).unref()),
    ]);
    this.client.close();
  }

  private async readOnce(): Promise<void> {
    let revision: number;
    try {
      const [response, targetResponse, initializeResponse] = await Promise.all([
        this.client.get(this.keys.leader).exec(),
        this.client.get(this.keys.target).exec(),
        this.client.get(this.keys.initialize).exec(),
      ]);
      const initializeKv = initializeResponse.kvs[0];
      if (initializeKv !== undefined) this.noteInitialize(initializeKv.value);
      revision = Number(response.header.revision);
      const kv = response.kvs[0];
      this.contact();
      const targetKv = targetResponse.kvs[0];
      if (targetKv !== undefined) this.noteTarget(targetKv.value);
      if (this.targetWatcher === null && !this.suspendedFlag) {
        void this.startTargetWatch(Number(targetResponse.header.revision));
      }
      const appliedBefore = this.state.revision;
      const changed = this.apply(kv === undefined ? { kind: 'absent', revision } : this.observe(kv.value, revision));
      if (!this.watchHealthy && !this.suspendedFlag) {
        // Not awaited: etcd3's watch create() settles only once a stream connects (it
        // retries a failed one with backoff), and re-reads must not wait on it. The
        // watch starts after this read's revision, so nothing falls in between.
        void this.startWatch(revision).finally(() => this.markReady());
      } else {
        if (changed && !this.suspendedFlag) this.expectWatchToDeliver('leader', appliedBefore + 1);
        this.markReady();
      }
      if (this.membersFollowing !== null) await this.readMembers();
    } catch (error) {
      // After an outage the watch stream may be gone without an error: re-create it at
      // the next successful read.
      this.watchHealthy = false;
      this.failed(castEtcdError(error, this.endpoints, `reading ${this.keys.leader}`));
    }
  }

  /**
   * A read saw a change the `which` watch had not delivered yet; every such change is
   * at `revision` or later. Usually the watch event is just behind the read; if it has
   * still not arrived after a grace period, the watch is presumed dead and re-created
   * from the newest revision applied, so nothing is missed. Not re-created at once: a
   * re-created watch starts unsynced in etcd and delays its next event.
   */
  private expectWatchToDeliver(which: 'leader' | 'members', revision: number): void {
    if (this.watchChecks[which] !== null) return;
    const watcher = which === 'leader' ? this.watcher : this.membersWatcher;
    const timer = setTimeout(
      () => {
        this.watchChecks[which] = null;
        if (which === 'leader') {
          if (this.closedFlag || this.watcher !== watcher || this.watchRevision >= revision) return;
          this.watchHealthy = false;
          void this.startWatch(this.state.revision);
        } else {
          if (this.closedFlag || this.membersWatcher !== watcher || this.membersWatchRevision >= revision) return;
          this.membersWatchHealthy = false;
          void this.startMembersWatch(this.membersRevision);
        }
      },
      Math.min(1000, this.rereadIntervalMillis / 2),
    );
    timer.unref?.();
    this.watchChecks[which] = timer;
  }

  private async startWatch(afterRevision: number): Promise<void> {
    if (this.closedFlag) return;
    if (this.watchStarting !== null) return this.watchStarting;
    this.watchStarting = (async () => {
      const old = this.watcher;
      this.watcher = null;
      this.watchHealthy = false;
      // Not awaited: etcd3 waits for etcd to confirm a cancel, which never comes for a
      // watch etcd already dropped.
      void old?.cancel().catch(() => undefined);
      const watcher = await this.client
        .watch()
        .key(this.keys.leader)
        .startRevision(String(afterRevision + 1))
        .create();
      if (this.closedFlag || this.suspendedFlag) {
        await watcher.cancel().catch(() => undefined);
        return;
      }
      this.watcher = watcher;
      this.watchHealthy = true;
      watcher.on('put', (kv) => {
        this.contact();
        this.watchRevision = Math.max(this.watchRevision, Number(kv.mod_revision));
        this.apply(this.observe(kv.value, Number(kv.mod_revision)));
      });
      watcher.on('delete', (kv) => {
        this.contact();
        this.watchRevision = Math.max(this.watchRevision, Number(kv.mod_revision));
        this.apply({ kind: 'absent', revision: Number(kv.mod_revision) });
      });
      watcher.on('connected', () => this.contact());
      watcher.on('error', (error) => {
        this.failed(castEtcdError(error, this.endpoints, `watching ${this.keys.leader}`));
        if (this.watcher === watcher) this.watchHealthy = false;
      });
    })()
      .catch((error) => this.failed(castEtcdError(error, this.endpoints, `watching ${this.keys.leader}`)))
      .finally(() => {
        this.watchStarting = null;
      });
    return this.watchStarting;
  }

  private async readMembers(): Promise<void> {
    if (this.closedFlag) return;
    const prefix = this.keys.membersPrefix;
    try {
      const response = await this.client.getAll().prefix(prefix).exec();
      const revision = Number(response.header.revision);
      this.contact();
      const next = new Map<string, MemberRecord>();
      for (const kv of response.kvs) {
        const record = this.decodeMember(kv.key.toString(), kv.value);
        if (record !== null) next.set(record.name, record);
      }
      const changed = !sameMembers(this.membersMap, next);
      const knownRevision = this.membersRevision;
      if (revision >= this.membersRevision) {
        this.membersRevision = revision;
        this.membersMap = next;
        if (changed) this.emit('members-changed', this.membersMap);
      }
      if (!this.membersWatchHealthy && !this.suspendedFlag) void this.startMembersWatch(revision);
      else if (changed && !this.suspendedFlag) this.expectWatchToDeliver('members', knownRevision + 1);
    } catch (error) {
      this.membersWatchHealthy = false;
      this.failed(castEtcdError(error, this.endpoints, `reading ${prefix}`));
    }
  }

  /** Starts (or re-creates) the members watch; concurrent calls share one creation. */
  private startMembersWatch(afterRevision: number): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    // One creation at a time: two would deliver every event twice, and the one left
    // unreferenced would keep retrying after close().
    if (this.membersWatchStarting !== null) return this.membersWatchStarting;
    this.membersWatchStarting = this.createMembersWatch(afterRevision).finally(() => {
      this.membersWatchStarting = null;
    });
    return this.membersWatchStarting;
  }

  private async createMembersWatch(afterRevision: number): Promise<void> {
    const old = this.membersWatcher;
    this.membersWatcher = null;
    this.membersWatchHealthy = false;
    void old?.cancel().catch(() => undefined);
    try {
      const watcher = await this.client
        .watch()
        .prefix(this.keys.membersPrefix)
        .startRevision(String(afterRevision + 1))
        .create();
      if (this.closedFlag || this.suspendedFlag) {
        await watcher.cancel().catch(() => undefined);
        return;
      }
      this.membersWatcher = watcher;
      this.membersWatchHealthy = true;
      const update = (revision: number, change: (map: Map<string, MemberRecord>) => void) => {
        this.contact();
        this.membersWatchRevision = Math.max(this.membersWatchRevision, revision);
        if (revision < this.membersRevision) return;
        this.membersRevision = revision;
        const next = new Map(this.membersMap);
        change(next);
        this.membersMap = next;
        this.emit('members-changed', next);
      };
      watcher.on('put', (kv) => {
        const record = this.decodeMember(kv.key.toString(), kv.value);
        const parsed = this.keys.parse(kv.key.toString());
        update(Number(kv.mod_revision), (map) => {
          if (parsed?.kind === 'member') map.delete(parsed.name);
          if (record !== null) map.set(record.name, record);
        });
      });
      watcher.on('delete', (kv) => {
        const parsed = this.keys.parse(kv.key.toString());
        if (parsed?.kind === 'member') update(Number(kv.mod_revision), (map) => map.delete(parsed.name));
      });
      watcher.on('error', (error) => {
        this.failed(castEtcdError(error, this.endpoints, `watching ${this.keys.membersPrefix}`));
        if (this.membersWatcher === watcher) this.membersWatchHealthy = false;
      });
    } catch (error) {
      this.failed(castEtcdError(error, this.endpoints, `watching ${this.keys.membersPrefix}`));
    }
  }

  /**
   * Checks the cluster's incarnation (its `initialize` record) against the known one:
   * on another system id, forgets the newest term (see decideIncarnation) and emits
   * `cluster-reset`; the leader read next is then accepted whatever its term.
   */
  private noteInitialize(value: Buffer): void {
    let record: InitializeRecord;
    try {
      record = InitializeRecord.decode(value);
    } catch (error) {
      this.emitEvent({ type: 'discovery-error', error: error instanceof Error ? error : new Error(String(error)) });
      return;
    }
    const decision = decideIncarnation(this.state, this.systemId, record.systemId);
    this.systemId = record.systemId;
    if (decision.action !== 'reset') return;
    this.state = decision.next;
    try {
      this.emit('cluster-reset', {
        type: 'cluster-reset',
        previousSystemId: decision.previousSystemId,
        systemId: record.systemId,
      });
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  /** Keeps the newest valid target record (the controller writes it before the leader is installed). */
  private noteTarget(value: Buffer): void {
    try {
      const record = TargetRecord.decode(value);
      if (this.target === null || record.term >= this.target.term) this.target = record;
    } catch (error) {
      this.emitEvent({ type: 'discovery-error', error: error instanceof Error ? error : new Error(String(error)) });
    }
  }

  private async startTargetWatch(afterRevision: number): Promise<void> {
    if (this.closedFlag || this.targetWatcher !== null) return;
    try {
      const watcher = await this.client
        .watch()
        .key(this.keys.target)
        .startRevision(String(afterRevision + 1))
        .create();
      if (this.closedFlag || this.suspendedFlag || this.targetWatcher !== null) {
        await watcher.cancel().catch(() => undefined);
        return;
      }
      this.targetWatcher = watcher;
      watcher.on('put', (kv) => this.noteTarget(kv.value));
      watcher.on('error', () => {
        // Only a hint: the next re-read starts it again.
        if (this.targetWatcher === watcher) this.targetWatcher = null;
      });
    } catch {
      // Only a hint: the next re-read tries again.
    }
  }

  /**
   * Decodes a member record; a malformed one, one under another member's key, or one
   * naming a host outside `allowedHosts` is reported and dropped.
   */
  private decodeMember(key: string, value: Buffer): MemberRecord | null {
    const acceptance = acceptMember(this.keys, key, value, this.allowlist);
    if (acceptance.accepted) return acceptance.record;
    this.emitEvent({ type: 'discovery-error', error: acceptance.error });
    return null;
  }

  private observe(value: Buffer, revision: number): LeaderObservation {
    return observeLeader(value, revision, this.allowlist);
  }

  /** Applies an observation; returns whether the route changed. */
  private apply(observation: LeaderObservation): boolean {
    if (this.closedFlag) return false;
    const target = this.target;
    const hinted: LeaderObservation =
      observation.kind === 'record' && target !== null && target.term === observation.record.term
        ? { ...observation, reasonHint: reasonFromTarget(target.reason) }
        : observation;
    const before = this.state.leader;
    const decision = decideLeaderObservation(this.state, hinted);
    this.state = decision.next;
    // A leader of an older term: stale, or a new incarnation of the cluster (its terms
    // restart). Re-read now, with the initialize record, to tell which.
    if (decision.ignored === 'older-term' && observation.revision > this.resetCheckedRevision) {
      this.resetCheckedRevision = observation.revision;
      setImmediate(() => this.refreshAfterCurrent());
    }
    const routeChanged = decision.events.some((e) => e.type === 'primary-changed' || e.type === 'no-primary');
    if (routeChanged || !sameEndpoint(before, this.state.leader)) for (const w of [...this.waiters]) w();
    for (const event of decision.events) this.emitEvent(event);
    return routeChanged;
  }

  /**
   * Emits one event. A listener that throws must not break discovery (the exception
   * would be taken for an etcd failure) nor keep other listeners, such as the other
   * pools of a shared watcher, from hearing of the change: the exception is rethrown
   * on the next tick, where it is an uncaughtException as any throwing listener's.
   */
  private emitEvent(event: ClusterEvent): void {
    try {
      this.emitUnguarded(event);
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  private emitUnguarded(event: ClusterEvent): void {
    switch (event.type) {
      case 'primary-changed':
        for (const follow of [...this.primaryFollowers]) follow(event.current);
        this.emit('primary-changed', event);
        return;
      case 'no-primary':
        this.emit('no-primary', event);
        return;
      case 'discovery-error':
        this.emit('discovery-error', event);
        return;
      case 'discovery-stale':
        this.emit('discovery-stale', event);
        return;
      case 'discovery-restored':
        this.emit('discovery-restored', event);
        return;
      default: {
        const unreachable: never = event;
        throw new Error(`unknown event ${JSON.stringify(unreachable)}`);
      }
    }
  }

  private contact(): void {
    this.lastContactMillis = Date.now();
    this.lastError = null;
    if (this.staleSince !== null) {
      this.staleSince = null;
      this.emitEvent({ type: 'discovery-restored' });
    }
  }

  private failed(error: PghaError): void {
    if (this.closedFlag) return;
    this.lastError = error;
    // While etcd fails, read again soon instead of at the next re-read: a call sent to
    // a paused etcd is answered as soon as it resumes, so discovery is back within
    // about this delay of etcd answering, however long the outage was.
    if (this.retryTimer === null) {
      this.retryTimer = setTimeout(
        () => {
          this.retryTimer = null;
          void this.refresh();
        },
        Math.min(200, this.rereadIntervalMillis),
      );
      this.retryTimer.unref();
    }
    this.emitEvent({ type: 'discovery-error', error });
  }

  private checkStale(): void {
    if (this.closedFlag || this.staleSince !== null) return;
    const silentMillis = Date.now() - this.lastContactMillis;
    if (silentMillis > this.staleAfterMillis) {
      this.staleSince = Date.now();
      this.emitEvent({ type: 'discovery-stale', sinceMillis: silentMillis });
    }
  }
}

/**
 * Starts following the leader of `cluster` in etcd and returns the watcher, an
 * eventemitter3 emitter with typed `on()` for `primary-changed`, `no-primary`,
 * `discovery-error`, `discovery-stale` and `discovery-restored`.
 *
 * It never writes to etcd. An unreachable etcd at start is not an exception: the
 * watcher reports `discovery-error`, keeps retrying, and goes `discovery-stale`
 * after `staleAfterMillis`. Call `close()` when done (it holds an etcd connection).
 *
 * @throws PghaError `invalid-option` for missing or malformed options.
 * @example
 * const watcher = watchCluster({ etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo' });
 * watcher.on('primary-changed', (e) => console.log(`primary is ${e.current.member} in term ${e.term}`));
 */
export function watchCluster(options: WatchClusterOptions): ClusterWatcher {
  return new ClusterWatcher(options);
}
