/**
 * `Pool`: a drop-in `pg.Pool` that always talks to the current pgha primary. It keeps
 * pg-pool's whole contract (node-postgres packages/pg-pool/index.js) and adds
 * routing, draining and typed failover errors under new option and event names.
 */
import pg from 'pg';
import type {
  ClusterResetEvent,
  ClusterWatcher,
  DiscoveryErrorEvent,
  DiscoveryRestoredEvent,
  DiscoveryStaleEvent,
  NoPrimaryEvent,
  PrimaryChangedEvent,
} from './discovery.js';
import { DiscoveryStaleError, NotPrimaryError, PrimaryChangedError } from './errors.js';
import { connectionRoles, PoolMetrics } from './pool-metrics.js';
import { type PoolOptions, pointOptionsAtPrimary, splitOptions } from './pool-options.js';
import { type ClientRouter, createRoutedClientClass, routingOf, terminateClient } from './routed-client.js';
import {
  decideCheckout,
  decidePromotion,
  type RouteTarget,
  retryDelayMillis,
  type StalePolicy,
  shouldDrain,
} from './routing.js';

/** pg-pool's internals pgha works with (stable across pg-pool 3.x). */
interface PoolInternals {
  _clients: pg.Client[];
  _idle: Array<{ client: pg.Client; timeoutId?: NodeJS.Timeout }>;
  _expired: WeakSet<pg.Client>;
  _pendingQueue: PendingItem[];
  _remove(client: pg.Client, callback?: () => void): void;
  _pulseQueue(): void;
  Promise: PromiseConstructor;
  Client: typeof pg.Client;
}

type PendingCallback = (err: Error | undefined, client?: pg.PoolClient, done?: (release?: unknown) => void) => void;

interface PendingItem {
  callback: PendingCallback;
  timedOut?: boolean;
  [retryState]?: { deadline: number; attempts: number; notBefore: number };
}

const retryState: unique symbol = Symbol('pgha.retry');
const NOOP = () => undefined;

/** Whether `Client` is pg's JavaScript client or a subclass (what pgha can route). */
function isPgJsClient(Client: unknown): Client is typeof pg.Client {
  return (
    typeof Client === 'function' &&
    typeof (Client as { prototype?: { _handleReadyForQuery?: unknown } }).prototype?._handleReadyForQuery === 'function'
  );
}

function isRetryableConnectError(error: unknown): boolean {
  if (error instanceof NotPrimaryError || error instanceof PrimaryChangedError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (code === '57P03' || code === '57P01') return true; // starting up / shutting down
  if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|EPIPE)$/.test(code)) {
    return true;
  }
  return error instanceof Error && /^Connection terminated unexpectedly$/.test(error.message);
}

/**
 * A `pg.Pool` that always talks to the current pgha primary, learned from etcd.
 *
 * A true drop-in: `instanceof pg.Pool` holds and pg-pool's whole contract is kept
 * (callback and promise forms of `connect`/`query`/`end`, the `connect`, `acquire`,
 * `release`, `remove` and `error` events, the counters, `options`, `Client`,
 * `ending`/`ended`, `release(err)`). In addition:
 *
 * - every new connection goes to the writable primary named by the leader record and
 *   is checked to be out of recovery before use (`pool.Client` is routed the same way);
 * - `pool.options.host`/`port` name the primary: the watcher's writable primary when
 *   the pool is created, then each new one, set before any `primary-changed` listener
 *   runs (on this pool, another pool or the watcher), so they match the event being
 *   handled. Before the first they are what was passed (pg-pool adds no default);
 *   while there is none (a failover) they keep the last one. Routed clients connect to
 *   the route whatever their config says; an unrouted `Client` is created with them;
 * - on a new term, idle connections close at once, busy ones on release, and those
 *   still checked out after `drainTimeoutMillis` are cut;
 * - while there is no primary, checkouts wait up to `primaryWaitTimeoutMillis`, then
 *   fail with `NoPrimaryError`; failures caused by a failover are `PrimaryChangedError`
 *   (safe to retry) or `OutcomeUnknownError` (never retried); pg's `DatabaseError`
 *   passes through untouched;
 * - events `primary-changed`, `no-primary`, `discovery-error`, `discovery-stale`,
 *   `discovery-restored` (one {@link ClusterEvent} argument each).
 *
 * @example
 * import { Pool } from '@pgha/client';
 * const pool = new Pool({ etcd: { endpoints: ['http://10.0.0.5:2379'] }, cluster: 'demo', user: 'app', password, database: 'app' });
 * pool.on('primary-changed', (e) => console.log(`primary is ${e.current.member} (term ${e.term})`));
 * const { rows } = await pool.query('SELECT now()');
 */
export class Pool extends pg.Pool {
  /**
   * The client class this pool creates (pg.Pool sets it at runtime; @types/pg does
   * not declare it). A subclass of pg.Client whose connections go to the current
   * primary, so `new pool.Client(pool.options)` side connections are routed too.
   */
  declare readonly Client: typeof pg.Client;
  /** The watcher this pool follows (its own, or the shared one given as `discovery`). */
  readonly discovery: ClusterWatcher;
  /** How long checkouts wait for a writable primary, in milliseconds. */
  readonly primaryWaitTimeoutMillis: number;
  /** How long busy connections to an old primary may run on after a change, in milliseconds. */
  readonly drainTimeoutMillis: number;
  /** What new checkouts do while etcd is unreachable beyond the stale window. */
  readonly stalePolicy: StalePolicy;
  /** Whether waiting checkouts connect early to a leader being promoted (the `preconnect` option). */
  readonly preconnect: boolean;

  private readonly ownsDiscovery: boolean;
  /** Whether the Client is pg's JavaScript client, which pgha routes (see the constructor). */
  private readonly routesClients: boolean;
  private readonly sideClients = new Set<pg.Client>();
  private readonly drainTimers = new Set<NodeJS.Timeout>();
  /** The re-read a pool resuming after a pause routes by, while it runs (see connect()). */
  private resumeRead: Promise<void> | null = null;
  /** Whether this pool holds its watcher's watches open (it has work; see holdDiscovery). */
  private holdingDiscovery = false;
  /** Checks every so often whether the pool still has work (unref'd: never keeps the process alive). */
  private activityTimer: NodeJS.Timeout | null = null;
  /** The deadline of the checkout pg-pool is connecting a client for, while it does (see newClient). */
  private connectDeadline: number | null = null;
  /** The pool's Prometheus metrics (the `metrics` option), else null. */
  private readonly metrics: PoolMetrics | null;
  /** Since when (epoch ms) discovery has said there is no primary (a `no-primary` event), null while there is one. */
  private withoutPrimarySince: number | null = null;
  /** Whether this pool has had a primary (the next one is a reroute). */
  private hadPrimary: boolean;
  /** Stops listening to discovery; subclasses add their own detachers. */
  protected readonly detachers: Array<() => void> = [];

  constructor(options: PoolOptions) {
    const { pgOptions, pgha } = splitOptions(options);
    super(pgOptions);
    this.discovery = pgha.watcher;
    this.ownsDiscovery = pgha.ownsWatcher;
    this.primaryWaitTimeoutMillis = pgha.primaryWaitTimeoutMillis;
    this.drainTimeoutMillis = pgha.drainTimeoutMillis;
    this.stalePolicy = pgha.stalePolicy;
    this.preconnect = pgha.preconnect;
    this.hadPrimary = this.discovery.primary !== null;

    const internals = this as unknown as PoolInternals;
    const router: ClientRouter = {
      // pg-pool calls client.connect() synchronously inside newClient: a pool
      // connection gets its checkout's deadline, which does not restart per attempt.
      connectDeadline: () => this.connectDeadline ?? Date.now() + this.effectiveWaitMillis(),
      // Read at connection time, after a subclass's constructor has run.
      get readOnly() {
        return pool.readOnlySessions;
      },
      // Only the pool's own connections connect early: they are retried by the pool
      // if the promotion goes elsewhere; a side connection (new pool.Client) waits.
      route: async (deadline, cancelled, client) => {
        // After a pause (watches closed), route by a fresh read (see connect()).
        if (this.holdDiscovery() && this.resumeRead === null) {
          this.resumeRead = this.discovery.refresh().finally(() => {
            this.resumeRead = null;
          });
        }
        if (this.resumeRead !== null) await Promise.race([this.resumeRead, cancelled]);
        return this.routeConnection(deadline, cancelled, this.preconnect && internals._clients.includes(client));
      },
      awaitPromotion: (candidate, deadline, cancelled) => this.awaitPromotion(candidate, deadline, cancelled),
      checkRole: (target, inRecovery) => this.checkRole(target, inRecovery),
      isStale: (target) => this.isStaleTarget(target),
      discard: (client) => {
        internals._expired.add(client);
      },
      reread: () => void this.discovery.refresh(),
      connected: (client) => {
        if (!internals._clients.includes(client)) this.sideClients.add(client);
        // A change may have landed between the connection's check and now.
        const target = routingOf(client)?.endpoint;
        if (target && this.isStaleTarget(target)) this.drain();
      },
      ended: (client) => {
        this.sideClients.delete(client);
      },
      failed: (error) => this.metrics?.failed(error),
    };
    const pool = this;
    // Routing needs pg's JavaScript client (its ReadyForQuery and ParameterStatus
    // handlers). Any other Client (pg-native, test doubles, factories, wrappers) is used
    // as given, as pg-pool does: it is created with pool.options, which name the
    // current primary, but is not role-checked, cut on a change or classified.
    this.routesClients = isPgJsClient(internals.Client);
    if (this.routesClients) internals.Client = createRoutedClientClass(internals.Client, router);
    this.metrics =
      pgha.metrics === null
        ? null
        : new PoolMetrics(pgha.metrics, {
            connections: () => this.connectionsByRole(),
            withoutPrimarySeconds: () =>
              this.withoutPrimarySince === null ? 0 : Math.max(0, Date.now() - this.withoutPrimarySince) / 1000,
          });

    // pool.options name each new primary before any listener hears of it, this pool's
    // and those on a shared watcher alike (see pointOptionsAtPrimary).
    this.detachers.push(pointOptionsAtPrimary(this, this.discovery));
    // A throwing listener on this pool must not keep the watcher from telling the
    // other pools sharing it: rethrown on the next tick (an uncaughtException).
    const emitGuarded = (name: keyof PoolEvents, event: unknown) => {
      try {
        this.emit(name, event);
      } catch (error) {
        process.nextTick(() => {
          throw error;
        });
      }
    };
    const onPrimary = (event: PrimaryChangedEvent) => {
      this.withoutPrimarySince = null;
      if (this.hadPrimary) this.metrics?.rerouted();
      this.hadPrimary = true;
      this.drain();
      emitGuarded('primary-changed', event);
    };
    const onNoPrimary = (event: NoPrimaryEvent) => {
      this.withoutPrimarySince ??= Date.now();
      this.drain();
      emitGuarded('no-primary', event);
    };
    const onError = (event: DiscoveryErrorEvent) => emitGuarded('discovery-error', event);
    const onStale = (event: DiscoveryStaleEvent) => emitGuarded('discovery-stale', event);
    const onRestored = (event: DiscoveryRestoredEvent) => emitGuarded('discovery-restored', event);
    const onReset = (event: ClusterResetEvent) => emitGuarded('cluster-reset', event);
    this.discovery.on('primary-changed', onPrimary);
    this.discovery.on('no-primary', onNoPrimary);
    this.discovery.on('discovery-error', onError);
    this.discovery.on('discovery-stale', onStale);
    this.discovery.on('discovery-restored', onRestored);
    this.discovery.on('cluster-reset', onReset);
    this.detachers.push(() => {
      this.discovery.off('primary-changed', onPrimary);
      this.discovery.off('no-primary', onNoPrimary);
      this.discovery.off('discovery-error', onError);
      this.discovery.off('discovery-stale', onStale);
      this.discovery.off('discovery-restored', onRestored);
      this.discovery.off('cluster-reset', onReset);
    });
  }

  /**
   * The pool has work: keep the watcher's watches open (they keep the process alive)
   * until it has none. Returns whether the watches were closed until now (so what the
   * pool knows may be up to one re-read interval old).
   */
  private holdDiscovery(): boolean {
    if (this.holdingDiscovery) return false;
    this.holdingDiscovery = true;
    const wasSuspended = this.discovery.suspended;
    this.discovery.hold();
    if (this.activityTimer === null) {
      // Released after a second without work, not at once: a pool working in bursts
      // (a query every few hundred ms) keeps its watch, and sees every change as it
      // happens instead of coalesced by a re-read.
      let lastWorkAt = Date.now();
      this.activityTimer = setInterval(() => {
        if (this.hasWork()) lastWorkAt = Date.now();
        else if (Date.now() - lastWorkAt >= 1000) this.releaseDiscovery();
      }, 200);
      this.activityTimer.unref();
    }
    return wasSuspended;
  }

  /** Lets the watcher close its watches if no other pool has work (see ClusterWatcher.unref). */
  private releaseDiscovery(): void {
    if (this.activityTimer !== null) clearInterval(this.activityTimer);
    this.activityTimer = null;
    if (!this.holdingDiscovery) return;
    this.holdingDiscovery = false;
    this.discovery.release();
  }

  /**
   * Whether the pool has work: checked-out, connecting or pending clients, side
   * connections, or idle clients that keep the process alive anyway (without
   * `allowExitOnIdle`), which are then kept current by the watch.
   */
  private hasWork(): boolean {
    const internals = this as unknown as PoolInternals;
    if (internals._pendingQueue.length > 0 || this.sideClients.size > 0) return true;
    if (internals._clients.length > internals._idle.length) return true;
    return internals._idle.length > 0 && this.options.allowExitOnIdle !== true;
  }

  /** Open connections by where they go (the pool's and `pool.Client` side connections), for the metrics. */
  private connectionsByRole(): Record<string, number> {
    const internals = this as unknown as PoolInternals;
    const counts: Record<string, number> = Object.fromEntries(connectionRoles.map((role) => [role, 0]));
    for (const client of [...internals._clients, ...this.sideClients]) {
      // An unrouted Client connects where pool.options point: the primary.
      const role = this.routesClients ? (routingOf(client)?.endpoint?.kind ?? 'connecting') : 'primary';
      counts[role] = (counts[role] ?? 0) + 1;
    }
    return counts;
  }

  /** The writable primary new connections go to, or null while there is none. */
  get primary() {
    return this.discovery.primary;
  }

  private effectiveWaitMillis(): number {
    const connectionTimeout = this.options.connectionTimeoutMillis;
    return connectionTimeout !== undefined && connectionTimeout > 0
      ? Math.min(connectionTimeout, this.primaryWaitTimeoutMillis)
      : this.primaryWaitTimeoutMillis;
  }

  /** Whether this pool's sessions are read-only (replica pools). */
  protected get readOnlySessions(): boolean {
    return false;
  }

  /**
   * Where a new connection goes: waits for the writable primary (deciding with
   * `decideCheckout`), woken by discovery, until `deadlineMillis` or `cancelled`.
   * With `preconnect`, a leader still being promoted is returned as a `candidate`.
   */
  protected async routeConnection(
    deadlineMillis: number,
    cancelled: Promise<never>,
    preconnect = false,
  ): Promise<RouteTarget> {
    const watcher = this.discovery;
    for (;;) {
      const decision = decideCheckout({
        leader: watcher.leader,
        staleSinceMillis: watcher.staleSinceMillis,
        stalePolicy: this.stalePolicy,
        closed: watcher.closed,
        ending: this.ending,
        observed: watcher.observed,
        nowMillis: Date.now(),
        deadlineMillis,
        preconnect: preconnect && !this.ending,
      });
      switch (decision.action) {
        case 'connect': {
          const { member, host, port, term } = decision.endpoint;
          return { kind: 'primary', member, host, port, term };
        }
        case 'preconnect': {
          const { member, host, port, term } = decision.endpoint;
          return { kind: 'candidate', member, host, port, term };
        }
        case 'fail':
          if (decision.code === 'discovery-stale') throw this.staleError();
          throw watcher.noPrimaryError(
            this.effectiveWaitMillis(),
            decision.code === 'closed'
              ? watcher.closed
                ? 'the pool or watcher was closed'
                : 'the pool is ending and there is no writable primary'
              : undefined,
          );
        case 'wait':
          // Woken by any change of the leader record, or at the deadline: then loop once
          // more so the decision (and its error) is made in one place. Rejects when cancelled.
          await Promise.race([watcher.waitForChange(Math.max(1, deadlineMillis - Date.now())), cancelled]);
          break;
        default: {
          const unreachable: never = decision;
          throw new Error(`unknown decision ${JSON.stringify(unreachable)}`);
        }
      }
    }
  }

  /**
   * Waits until the leader being promoted that `candidate` names is writable (returns
   * it as a primary target), or the leader moved elsewhere (null). Fails with
   * `NoPrimaryError` at the deadline; rejects when `cancelled` does.
   */
  protected async awaitPromotion(
    candidate: RouteTarget,
    deadlineMillis: number,
    cancelled: Promise<never>,
  ): Promise<RouteTarget | null> {
    const watcher = this.discovery;
    for (;;) {
      const decision = decidePromotion({
        candidate,
        leader: watcher.leader,
        closed: watcher.closed || this.ending,
        nowMillis: Date.now(),
        deadlineMillis,
      });
      switch (decision.action) {
        case 'promoted':
          return decision.target;
        case 'moved':
          return null;
        case 'fail':
          throw watcher.noPrimaryError(this.effectiveWaitMillis());
        case 'wait':
          await Promise.race([watcher.waitForChange(Math.max(1, deadlineMillis - Date.now())), cancelled]);
          break;
      }
    }
  }

  /** The error to refuse a new connection with when its server's role does not fit, else null. */
  protected checkRole(target: RouteTarget, inRecovery: boolean): Error | null {
    if (!inRecovery) return null;
    return new NotPrimaryError(
      `the leader record names ${target.member} (${target.host}:${target.port}, term ${target.term}) as primary, but that server is in recovery (a standby); closed the connection before use and asked discovery to re-read. Retrying is safe.`,
      { server: `${target.host}:${target.port}` },
    );
  }

  /** Whether connections to `target` belong to the past (a newer term, no leader, or a leader not writable). */
  protected isStaleTarget(target: RouteTarget): boolean {
    const leader = this.discovery.leader;
    if (leader === null || shouldDrain(target.term, leader) || !leader.writable) return true;
    return leader.host !== target.host || leader.port !== target.port;
  }

  /** The error for checkouts refused under `stalePolicy: 'refuse'`. */
  protected staleError(): DiscoveryStaleError {
    const since = this.discovery.staleSinceMillis ?? Date.now();
    return new DiscoveryStaleError(
      `etcd has not answered since ${new Date(since).toISOString()} and stalePolicy is "refuse", so no connection is handed out until it answers; retry later, or use stalePolicy "serve" to keep using the last known primary`,
      { staleForMillis: Date.now() - since, cause: this.discovery.lastEtcdError ?? undefined },
    );
  }

  /**
   * Closes what belongs to an older term (contract line 6): idle connections now,
   * busy ones on release (marked expired, as pg-pool does for maxLifetimeSeconds),
   * and cuts those still busy after drainTimeoutMillis.
   */
  protected drain(): void {
    const internals = this as unknown as PoolInternals;
    const idle = new Set(internals._idle.map((item) => item.client));
    const busy: pg.Client[] = [];
    for (const client of [...internals._clients]) {
      const endpoint = routingOf(client)?.endpoint;
      if (endpoint === null || endpoint === undefined) continue; // still connecting: checked after connect
      if (!this.isStaleTarget(endpoint)) continue;
      if (idle.has(client)) {
        this.detachIdle(client);
      } else if (!internals._expired.has(client)) {
        internals._expired.add(client);
        busy.push(client);
      }
    }
    for (const client of this.sideClients) {
      const endpoint = routingOf(client)?.endpoint;
      if (endpoint !== null && endpoint !== undefined && this.isStaleTarget(endpoint)) busy.push(client);
    }
    if (idle.size > 0) internals._pulseQueue();
    if (busy.length === 0) return;
    const cut = () => {
      this.drainTimers.delete(timer);
      for (const client of busy) {
        const ended = (client as unknown as { _ended?: boolean })._ended === true;
        const stillOurs = internals._clients.includes(client) || this.sideClients.has(client);
        // Re-checked now: a replica whose lag spike has passed qualifies again, and its
        // statement runs on (the connection still closes on release).
        const endpoint = routingOf(client)?.endpoint;
        const stillStale = endpoint === null || endpoint === undefined || this.isStaleTarget(endpoint);
        if (!ended && stillOurs && stillStale) terminateClient(client);
      }
    };
    const timer = setTimeout(cut, this.drainTimeoutMillis);
    timer.unref();
    this.drainTimers.add(timer);
  }

  /**
   * pg-pool's `connect`, except that under `stalePolicy: 'refuse'` a checkout fails at
   * once with `DiscoveryStaleError` while etcd is unreachable beyond the stale window.
   */
  override connect(): Promise<pg.PoolClient>;
  override connect(
    // biome-ignore lint/suspicious/noExplicitAny: pg's own signature
    callback: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: any) => void) => void,
  ): void;
  // biome-ignore lint/suspicious/noExplicitAny: the implementation serves both overloads
  override connect(cb?: any): any {
    if (!this.holdingDiscovery && !this.ending && this.holdDiscovery()) {
      // The watches were closed while the pool had nothing to do: what it knows may be
      // one re-read interval old. New connections wait for a re-read in route(); an
      // idle client (allowExitOnIdle pools only: otherwise idle clients keep the watch
      // open) may belong to an old primary, so that checkout waits for it here.
      this.resumeRead = this.discovery.refresh().finally(() => {
        this.resumeRead = null;
      });
      if ((this as unknown as PoolInternals)._idle.length === 0) return this.connect(cb);
      const reread = this.resumeRead.then(() => this.connect());
      if (typeof cb !== 'function') return reread;
      // Called outside the promise chain: an exception in cb stays an uncaughtException.
      reread.then(
        (client: pg.PoolClient) => process.nextTick(cb, undefined, client, client.release),
        (error: Error) => process.nextTick(cb, error, undefined, NOOP),
      );
      return undefined;
    }
    if (!this.ending && this.stalePolicy === 'refuse' && this.discovery.staleSinceMillis !== null) {
      const error = this.staleError();
      this.metrics?.failed(error);
      if (typeof cb === 'function') {
        process.nextTick(() => cb(error, undefined, NOOP));
        return undefined;
      }
      return (this as unknown as PoolInternals).Promise.reject(error);
    }
    if (!this.routesClients && this.discovery.primary === null && !this.ending) {
      // An unrouted client connects where pool.options point: wait until they name a primary.
      const waited = this.discovery.waitForPrimary(this.effectiveWaitMillis());
      if (typeof cb === 'function') {
        waited.then(
          () => super.connect(cb),
          (error) => process.nextTick(() => cb(error, undefined, NOOP)),
        );
        return undefined;
      }
      return waited.then(() => super.connect());
    }
    return super.connect(cb);
  }

  /**
   * pg-pool's `_remove` for an idle client, except that the socket is closed on the
   * next turn of the event loop: the client leaves the pool at once (nothing can check
   * it out again), and a change fanned out to many pools is not slowed down by one
   * socket close per pool (each wakes a server process on this machine).
   */
  private detachIdle(client: pg.Client): void {
    const internals = this as unknown as PoolInternals;
    const index = internals._idle.findIndex((item) => item.client === client);
    if (index === -1) return;
    const [item] = internals._idle.splice(index, 1);
    if (item?.timeoutId !== undefined) clearTimeout(item.timeoutId);
    internals._clients = internals._clients.filter((c) => c !== client);
    setImmediate(() => client.end(() => this.emit('remove', client)));
  }

  /**
   * Opens a connection for a checkout, retrying (with backoff, until the wait
   * deadline, which does not restart per attempt) when the leader's server refused,
   * turned out not to be the primary, or the primary changed during the attempt:
   * nothing was sent, so retrying is safe.
   *
   * The checkout stays pg-pool's own queue item (its callback untouched, so pg-pool's
   * `connectionTimeoutMillis` timer can find and remove it): pg-pool connects through
   * a proxy item whose callback decides on a retry. A retried checkout goes back to
   * the head of the queue at once (it counts in `waitingCount`, and an idle client
   * freed meanwhile serves it); it opens no new connection before its delay is over,
   * so `max` is respected. Its caller is answered exactly once.
   * @internal pg-pool's method
   */
  newClient(pendingItem: PendingItem): void {
    const internals = this as unknown as PoolInternals;
    const retry = pendingItem[retryState];
    if (pendingItem.timedOut) {
      // pg-pool's checkout timeout already answered this caller.
      internals._pulseQueue();
      return;
    }
    if (retry !== undefined && retry.notBefore > Date.now()) {
      // Still in its retry delay: keep its place; its timer pulses the queue.
      internals._pendingQueue.unshift(pendingItem);
      return;
    }
    const state = retry ?? { deadline: Date.now() + this.effectiveWaitMillis(), attempts: 0, notBefore: 0 };
    pendingItem[retryState] = state;
    const proxy: PendingItem = {
      get timedOut() {
        return pendingItem.timedOut;
      },
      callback: (err, client, done) => {
        if (pendingItem.timedOut) {
          // Answered by pg-pool's timeout meanwhile; a client connected too late goes back.
          if (err === undefined || err === null) done?.();
          return;
        }
        const delay = retryDelayMillis(state.attempts + 1);
        if (
          err !== undefined &&
          err !== null &&
          isRetryableConnectError(err) &&
          !this.ending &&
          Date.now() + delay < state.deadline
        ) {
          state.attempts += 1;
          state.notBefore = Date.now() + delay;
          void this.discovery.refresh();
          internals._pendingQueue.unshift(pendingItem);
          // Ref'd: a checkout waiting out its delay is work that keeps the process alive.
          setTimeout(() => {
            if (this.ending) {
              const index = internals._pendingQueue.indexOf(pendingItem);
              if (index !== -1) {
                internals._pendingQueue.splice(index, 1);
                pendingItem.callback(err, undefined, NOOP);
              }
              return;
            }
            // The timer ends the delay, not the wall clock (a timer may fire a
            // millisecond before Date.now() reaches notBefore).
            state.notBefore = 0;
            internals._pulseQueue();
          }, delay);
          return;
        }
        if (err !== undefined && err !== null) this.metrics?.failed(err);
        pendingItem.callback(err, client, done);
      },
    };
    this.connectDeadline = state.deadline;
    try {
      (pg.Pool.prototype as unknown as { newClient(item: PendingItem): void }).newClient.call(this, proxy);
    } finally {
      this.connectDeadline = null;
    }
  }

  /** Adds a listener; typed for pgha's events, pg's events keep their signatures. */
  override on<K extends keyof PoolEvents>(event: K, listener: PoolEvents[K]): this;
  override on<K extends 'error' | 'release' | 'connect' | 'acquire' | 'remove'>(
    event: K,
    listener: K extends 'error' | 'release'
      ? (err: Error, client: pg.PoolClient) => void
      : (client: pg.PoolClient) => void,
  ): this;
  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's signature
  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.on(event as 'error', listener);
  }

  /** Adds a one-time listener; typed like {@link Pool.on}. */
  override once<K extends keyof PoolEvents>(event: K, listener: PoolEvents[K]): this;
  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's signature
  override once(event: string | symbol, listener: (...args: any[]) => void): this;
  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's signature
  override once(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.once(event, listener);
  }

  /** Removes a listener; typed like {@link Pool.on}. */
  override off<K extends keyof PoolEvents>(event: K, listener: PoolEvents[K]): this;
  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's signature
  override off(event: string | symbol, listener: (...args: any[]) => void): this;
  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's signature
  override off(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.off(event, listener);
  }

  /**
   * pg-pool's `end`: every checkout made before it and every checked-out client may
   * finish (they keep following discovery meanwhile); then the pool stops following
   * etcd and closes its own watcher (a shared watcher is left running).
   */
  // biome-ignore lint/suspicious/noExplicitAny: matches pg's overloads
  override end(cb?: any): any {
    if (this.ending) return super.end(cb);
    // Checkouts waiting for a primary re-decide now (ending: fail if there is none).
    this.discovery.wakeWaiters();
    const finish = (): Promise<void> => {
      for (const detach of this.detachers) detach();
      for (const timer of this.drainTimers) clearTimeout(timer);
      this.drainTimers.clear();
      this.releaseDiscovery();
      this.metrics?.close();
      return this.ownsDiscovery ? this.discovery.close() : Promise.resolve();
    };
    if (typeof cb === 'function') {
      super.end(() => {
        finish().then(
          () => cb(),
          () => cb(),
        );
      });
      return undefined;
    }
    return (super.end() as Promise<void>).then(finish);
  }
}

/** The events a pgha {@link Pool} adds to pg's, each with one ClusterEvent argument. */
export interface PoolEvents {
  'primary-changed': (event: PrimaryChangedEvent) => void;
  'no-primary': (event: NoPrimaryEvent) => void;
  'discovery-error': (event: DiscoveryErrorEvent) => void;
  'discovery-stale': (event: DiscoveryStaleEvent) => void;
  'discovery-restored': (event: DiscoveryRestoredEvent) => void;
  /** The cluster is a new incarnation (restored or bootstrapped again); see {@link ClusterResetEvent}. */
  'cluster-reset': (event: ClusterResetEvent) => void;
}
