/**
 * The connection class a pgha pool hands out as `pool.Client`: a subclass of the
 * pool's pg `Client` that connects only where its pool's router says (the current
 * writable primary, or for a replica pool a replica within the lag limits), checks
 * the server's role before anyone may use it, and turns failures caused by a lost
 * connection into the typed errors of errors.ts (pg's `DatabaseError` passes through
 * untouched).
 */
import { createConnection } from 'node:net';
import pg from 'pg';
import { OutcomeUnknownError, PrimaryChangedError } from './errors.js';
import { classifyQueryFailure, decideRole, type RouteTarget } from './routing.js';

/** What a routed client needs from its pool. */
export interface ClientRouter {
  /** When a `connect()` starting now stops waiting for a route (epoch milliseconds). */
  connectDeadline(): number;
  /** Whether sessions must be read-only (replica pools: `default_transaction_read_only=on`). */
  readonly readOnly: boolean;
  /**
   * Where `client` connects: waits (until `deadlineMillis`, or until `cancelled`
   * rejects) for a usable target, then returns it. @throws the pool's typed error when none came.
   */
  route(deadlineMillis: number, cancelled: Promise<never>, client: pg.Client): Promise<RouteTarget>;
  /**
   * For a connection opened to a `candidate` (a leader being promoted): waits until it
   * is the writable primary (returns that target) or the leader moved (null).
   * @throws the pool's typed error at the deadline.
   */
  awaitPromotion(
    candidate: RouteTarget,
    deadlineMillis: number,
    cancelled: Promise<never>,
  ): Promise<RouteTarget | null>;
  /** The error to fail the connection with when the server's role does not fit `target`, else null. */
  checkRole(target: RouteTarget, inRecovery: boolean): Error | null;
  /** Whether connections to `target` must be drained (no longer where new ones would go). */
  isStale(target: RouteTarget): boolean;
  /** The connection proved the server is not what it should be: stop reusing it. */
  discard(client: pg.Client): void;
  /** Something suggests the route is wrong (connection lost...): re-read discovery. */
  reread(): void;
  /** A connection was established and checked. */
  connected(client: pg.Client): void;
  /** A connection ended. */
  ended(client: pg.Client): void;
  /** A statement failed with `error` (as its caller receives it: classified), for the pool's metrics. */
  failed?(error: Error): void;
}

/** Per-connection routing state, kept under a symbol on the client. */
export interface ClientRouting {
  /** Where this connection was opened to, once connected and checked. */
  endpoint: RouteTarget | null;
  /** ReadyForQuery status: 'I' idle, 'T' in a transaction, 'E' in a failed transaction. */
  transactionStatus: string | null;
  /** ParameterStatus values the server reported (in_hot_standby, server_version...). */
  readonly parameters: Map<string, string>;
  /** Set when pgha cut the connection itself (a straggler after a primary change). */
  terminatedByPgha: boolean;
  /**
   * The statement that was in flight when the connection failed (its text and the
   * ReadyForQuery status before it), kept until the socket error pg emits next is
   * classified like it; else null.
   */
  interrupted: Interrupted | null;
}

/** The symbol under which a primary client keeps its {@link ClientRouting}. */
export const routingState: unique symbol = Symbol('pgha.routing');

/** A statement cut off by a lost connection: what classifying its failure needs. */
interface Interrupted {
  readonly transactionStatus: string | null;
  readonly text: string;
}

/** Returns the routing state of a client made by {@link createRoutedClientClass}, else undefined. */
export function routingOf(client: unknown): ClientRouting | undefined {
  return (client as { [routingState]?: ClientRouting } | null)?.[routingState];
}

type Callback = (err: Error | null | undefined, result?: unknown) => void;

/** The parts of a pg query object (or a submittable: pg-cursor...) pgha looks at. */
interface Statement {
  text?: unknown;
  handleError(err: Error, connection: unknown): unknown;
  callback?: Callback;
}

interface ClientInternals {
  _queryable: boolean;
  _ended?: boolean;
  _connecting?: boolean;
  // The statement queues, named differently across pg ^8.11: `activeQuery` and
  // `queryQueue` before 8.20, `_activeQuery` and `_queryQueue` since, and pg 8.23's
  // pipeline mode adds `_sentQueryQueue` (written, not yet answered).
  activeQuery?: Statement | null;
  _activeQuery?: Statement | null;
  queryQueue?: Statement[];
  _queryQueue?: Statement[];
  _sentQueryQueue?: Statement[];
  connection: {
    on(
      event: string,
      listener: (msg: { parameterName?: string; parameterValue?: string; status?: string }) => void,
    ): void;
    stream: {
      once(e: string, l: () => void): void;
      off(e: string, l: () => void): void;
      destroy(): void;
      destroyed?: boolean;
    };
  };
  connectionParameters: { host: string; port: number; options?: string };
}

function isDatabaseError(error: unknown): error is { code: string } {
  const DatabaseError = (pg as unknown as { DatabaseError?: new (...args: never[]) => Error }).DatabaseError;
  if (DatabaseError !== undefined && error instanceof DatabaseError) return true;
  // Older pg versions, or a second copy of pg-protocol: recognize the shape.
  return (
    error instanceof Error &&
    typeof (error as { code?: unknown }).code === 'string' &&
    /^[0-9A-Z]{5}$/.test((error as unknown as { code: string }).code) &&
    typeof (error as { severity?: unknown }).severity === 'string'
  );
}

/** Why `connect()` stopped waiting: its socket closed (pg-pool's connection timeout destroys it). */
class RouteCancelled extends Error {
  constructor() {
    super('connection attempt cancelled while waiting for a route');
  }
}

function describe(target: RouteTarget): string {
  return `${target.kind} ${target.member} (${target.host}:${target.port}, term ${target.term})`;
}

/** The statement in flight on a pg client (named `activeQuery` before pg 8.20), else null. */
function activeQueryOf(client: ClientInternals): Statement | null {
  return ('_activeQuery' in client ? client._activeQuery : client.activeQuery) ?? null;
}

function textOf(query: Statement): string {
  return typeof query.text === 'string' ? query.text : '';
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 60 ? `${flat.slice(0, 57)}...` : flat;
}

/**
 * Creates the `Client` class of one pool: `Base` (pg's `Client` or the one given in
 * the pool options), routed through `router`.
 *
 * `connect()` waits (up to the router's wait) for a target, connects to it whatever
 * host/port the config names, checks the server's role (the `in_hot_standby`
 * ParameterStatus on PostgreSQL 14+, a query before), and checks the route did not
 * change meanwhile. `new pool.Client(pool.options)` (what ORMs do for side
 * connections) gets the same guarantees.
 */
export function createRoutedClientClass(Base: typeof pg.Client, router: ClientRouter): typeof pg.Client {
  const QueryClass = ((Base as unknown as { Query?: typeof pg.Query }).Query ?? pg.Query) as unknown as new (
    ...args: unknown[]
  ) => Statement;

  const getTransactionStatus = (Base.prototype as { getTransactionStatus?: () => string | null }).getTransactionStatus;

  // Failures are classified when they happen, from the client's own state (which
  // statement was in flight, the ReadyForQuery status before it): statements are pg's
  // own objects and pgha adds nothing to the path of a statement that succeeds.
  class PrimaryClient extends Base {
    readonly [routingState]: ClientRouting = {
      endpoint: null,
      transactionStatus: null,
      parameters: new Map(),
      terminatedByPgha: false,
      interrupted: null,
    };

    // biome-ignore lint/suspicious/noExplicitAny: pg's own constructor accepts a string or a config
    constructor(config?: any) {
      super(config);
      const state = this[routingState];
      const connection = (this as unknown as ClientInternals).connection;
      // Registered before pg's own listeners (attached in connect), so the status is
      // current when pg submits the next query from its ReadyForQuery handler.
      connection.on('parameterStatus', (msg) => {
        if (msg.parameterName !== undefined) state.parameters.set(msg.parameterName, msg.parameterValue ?? '');
      });
      if (getTransactionStatus === undefined) {
        // pg before 8.22 does not keep the ReadyForQuery status: keep it ourselves.
        connection.on('readyForQuery', (msg) => {
          state.transactionStatus = msg.status ?? null;
        });
      }
      this.once('end', () => router.ended(this));
    }

    // biome-ignore lint/suspicious/noExplicitAny: matches pg's overloads
    override connect(callback?: any): any {
      const connecting = this.connectRouted();
      if (typeof callback === 'function') {
        // Called outside the promise chain, as pg calls it from its own event handlers:
        // an exception thrown by the callback is an uncaughtException, not an
        // unhandledRejection (pg-pool calls pool.connect(cb) callbacks from here).
        connecting.then(
          () => process.nextTick(callback, null, this),
          (error) => process.nextTick(callback, error),
        );
        return undefined;
      }
      return connecting;
    }

    /** pg's `connect`, always in its callback form (as pg-pool calls it): a subclass may implement only that. */
    private connectBase(): Promise<void> {
      return new Promise((resolve, reject) => {
        super.connect((error: Error | null | undefined) => (error ? reject(error) : resolve()));
      });
    }

    /** pg's `query` in its callback form (a subclass may implement only that). */
    private queryBase(text: string): Promise<pg.QueryResult> {
      return new Promise((resolve, reject) => {
        super.query(text, (error: Error | null | undefined, result: pg.QueryResult) =>
          error ? reject(error) : resolve(result),
        );
      });
    }

    /** pg's `end` in its callback form; never rejects. */
    private endQuietly(): Promise<void> {
      return new Promise((resolve) => {
        try {
          super.end(() => resolve());
        } catch {
          resolve();
        }
      });
    }

    private async connectRouted(): Promise<this> {
      const internals = this as unknown as ClientInternals;
      const stream = internals.connection.stream;
      const deadline = router.connectDeadline();
      // pg-pool's connectionTimeoutMillis destroys the socket: stop waiting then.
      let onClose: () => void = () => undefined;
      const cancelled = new Promise<never>((_, reject) => {
        onClose = () => reject(new RouteCancelled());
        stream.once('close', onClose);
      });
      cancelled.catch(() => undefined);
      let target: RouteTarget;
      let role: ReturnType<typeof decideRole>;
      try {
        target = await router.route(deadline, cancelled, this);
        // Route to the target whatever host and port the config named (pool.options may
        // have been copied before the last change).
        this.host = target.host;
        this.port = target.port;
        internals.connectionParameters.host = target.host;
        internals.connectionParameters.port = target.port;
        if (router.readOnly) {
          const options = internals.connectionParameters.options;
          internals.connectionParameters.options = `${options ? `${options} ` : ''}-c default_transaction_read_only=on`;
        }
        await this.connectBase();
        role = decideRole(this[routingState].parameters.get('in_hot_standby'));
        if (target.kind === 'candidate') {
          // Connected early to a leader being promoted: wait for its record to turn
          // writable, then ask the server itself (its in_hot_standby at startup is stale).
          target = await this.awaitPromotion(target, deadline, cancelled);
          role = 'unknown';
        }
      } finally {
        stream.off('close', onClose);
      }
      const state = this[routingState];
      if (role === 'unknown') {
        let result: pg.QueryResult;
        try {
          result = await this.queryBase('SELECT pg_is_in_recovery() AS in_recovery');
        } catch (error) {
          // pgha's own check failed: nothing of the caller's was sent, whatever the
          // classification of the check itself says.
          if (!(error instanceof OutcomeUnknownError || error instanceof PrimaryChangedError)) throw error;
          await this.endQuietly();
          throw new PrimaryChangedError(
            `the connection to ${describe(target)} was lost while pgha checked the server's role (${(error.cause as Error | undefined)?.message ?? error.message}); nothing was sent. Retrying is safe.`,
            { rolledBack: false, cause: error.cause ?? error },
          );
        }
        role = result.rows[0]?.in_recovery === true ? 'standby' : 'primary';
      }
      const refused = router.checkRole(target, role === 'standby');
      if (refused !== null) {
        await this.endQuietly();
        router.reread();
        throw refused;
      }
      if (router.isStale(target)) {
        await this.endQuietly();
        throw new PrimaryChangedError(
          `the route changed away from ${describe(target)} while connecting; closed the connection before any statement was sent. Retrying is safe.`,
          { rolledBack: false },
        );
      }
      state.endpoint = target;
      router.connected(this);
      return this;
    }

    /**
     * For a connection opened early to `candidate`: the primary target once its record
     * is writable. Otherwise the connection is closed unused and the error says why
     * (the leader moved, the socket closed: retrying is safe; or the pool's deadline).
     */
    private async awaitPromotion(
      candidate: RouteTarget,
      deadline: number,
      cancelled: Promise<never>,
    ): Promise<RouteTarget> {
      let promoted: RouteTarget | null;
      try {
        promoted = await router.awaitPromotion(candidate, deadline, cancelled);
      } catch (error) {
        await this.endQuietly();
        if (!(error instanceof RouteCancelled)) throw error;
        throw new PrimaryChangedError(
          `the connection opened early to ${describe(candidate)} closed while it was being promoted; nothing was sent. Retrying is safe.`,
          { rolledBack: false },
        );
      }
      if (promoted === null) {
        await this.endQuietly();
        throw new PrimaryChangedError(
          `the leader moved away from ${describe(candidate)} before its promotion ended; closed the connection opened early before any statement was sent. Retrying is safe.`,
          { rolledBack: false },
        );
      }
      return promoted;
    }

    // biome-ignore lint/suspicious/noExplicitAny: matches pg's overloads
    override query(config: any, values?: any, callback?: any): any {
      if ((this as unknown as ClientInternals)._queryable !== false || config === null || config === undefined) {
        return super.query(config, values, callback);
      }
      // The connection is lost: pg fails the statement without sending it. Build it here
      // so its failure is classified like the others (never sent: safe to retry).
      const submittable = typeof config.submit === 'function';
      const query: Statement = submittable ? config : new QueryClass(config, values, callback);
      this.classifyFailureOf(query, false, this.transactionStatus());
      if (submittable) return super.query(config, values, callback);
      if (typeof query.callback === 'function') {
        super.query(query as never);
        return undefined;
      }
      return new Promise((resolve, reject) => {
        query.callback = (err, res) => (err ? reject(err) : resolve(res));
        super.query(query as never);
      });
    }

    /** The ReadyForQuery status before the next statement: 'I', 'T' or 'E'. */
    transactionStatus(): string | null {
      return getTransactionStatus === undefined
        ? this[routingState].transactionStatus
        : (getTransactionStatus.call(this) ?? null);
    }

    /**
     * pg fails every statement of a connection that died (or was ended) here, each on
     * the next tick: the one in flight (sent), those written behind it in pipeline mode
     * (sent, the transaction status before them unknown), and the queued ones (never
     * sent). Each gets its failure classified with the facts of this moment.
     * @internal pg's method
     */
    _errorAllQueries(err: Error): void {
      const internals = this as unknown as ClientInternals;
      const status = this.transactionStatus();
      const active = activeQueryOf(internals);
      if (active) {
        this.classifyFailureOf(active, true, status);
        this[routingState].interrupted = { transactionStatus: status, text: textOf(active) };
      }
      for (const query of internals._sentQueryQueue ?? []) this.classifyFailureOf(query, true, null);
      for (const query of internals._queryQueue ?? internals.queryQueue ?? []) {
        this.classifyFailureOf(query, false, status);
      }
      (Base.prototype as unknown as { _errorAllQueries(err: Error): void })._errorAllQueries.call(this, err);
    }

    /**
     * An ErrorResponse from the server for the statement in flight: a DatabaseError
     * passes through (those proving the server is not the primary also discard the
     * connection); 57P01/57P02 (the session was terminated while it ran) are classified
     * like a lost connection.
     * @internal pg's method
     */
    _handleErrorMessage(msg: Error): void {
      const internals = this as unknown as ClientInternals;
      const active = activeQueryOf(internals);
      const error =
        internals._connecting || !active ? msg : this.classify(msg, true, this.transactionStatus(), textOf(active));
      // A failed connection attempt is counted by the pool, where it reaches the checkout.
      if (!internals._connecting && active) router.failed?.(error);
      (Base.prototype as unknown as { _handleErrorMessage(msg: Error): void })._handleErrorMessage.call(this, error);
    }

    /** Makes `query`'s failure (if it fails) reach its caller classified. */
    private classifyFailureOf(query: Statement, sent: boolean, transactionStatus: string | null): void {
      const client = this;
      const handleError = query.handleError;
      query.handleError = function (this: Statement, err: Error, connection: unknown) {
        const classified = client.classify(err, sent, transactionStatus, textOf(query));
        router.failed?.(classified);
        return handleError.call(this, classified, connection);
      };
    }

    /** @internal */
    classify(error: Error, sent: boolean, transactionStatus: string | null, text: string): Error {
      const parameters = this[routingState].parameters;
      const decision = classifyQueryFailure({
        sqlState: isDatabaseError(error) ? error.code : null,
        connectionLost: (this as unknown as ClientInternals)._queryable === false,
        sent,
        transactionStatus,
        text,
        readOnlyByChoice:
          router.readOnly ||
          (parameters.get('in_hot_standby') === 'off' && parameters.get('default_transaction_read_only') === 'off'),
      });
      const where = this[routingState].endpoint;
      const server = where === null ? 'the server' : describe(where);
      switch (decision.kind) {
        case 'pass-through':
          if (decision.discardConnection) router.discard(this);
          if (decision.reread) router.reread();
          return error;
        case 'primary-changed':
          router.reread();
          return new PrimaryChangedError(
            decision.rolledBack
              ? `the connection to ${server} was lost inside a transaction (${error.message}); the server rolled the transaction back. Retry the whole transaction.`
              : `the connection to ${server} was lost before the statement was sent (${error.message}). Retrying is safe.`,
            { rolledBack: decision.rolledBack, cause: error },
          );
        case 'outcome-unknown':
          router.reread();
          return new OutcomeUnknownError(
            `the connection to ${server} was lost while "${snippet(text)}" was in flight ${transactionStatus === 'T' ? 'as the commit of a transaction' : 'outside a transaction'} (${error.message}); it may or may not have committed. Not retried: check its effect before running it again.`,
            { statement: snippet(text), cause: error },
          );
        default: {
          const unreachable: never = decision;
          throw new Error(`unknown decision ${JSON.stringify(unreachable)}`);
        }
      }
    }

    // No rest parameter: pg emits after every statement, and this must not allocate.
    override emit(event: string | symbol): boolean {
      // biome-ignore lint/complexity/noArguments: forwards pg's arguments without building an array
      if (event !== 'error') return Base.prototype.emit.apply(this, arguments as unknown as [string]);
      // biome-ignore lint/complexity/noArguments: the error path may copy
      let args: unknown[] = Array.prototype.slice.call(arguments, 1);
      // pg emits 'error' on a client whose connection dies between statements. On a
      // checked-out client with no 'error' listener (most application code, and every
      // failover terminates such sessions), Node would crash the process. pgha keeps
      // the process alive instead: the connection is unusable, its next statement fails
      // with PrimaryChangedError (never sent), and release() removes it from the pool.
      // The socket error pg emits first (pg-pool's query() answers its caller with it)
      // is classified like the statement it interrupted, so every path reports the
      // same typed error. Without a statement in flight it passes unchanged.
      const state = this[routingState];
      const interrupted = state.interrupted;
      if (interrupted !== null && args[0] instanceof Error) {
        state.interrupted = null;
        args = [this.classify(args[0], true, interrupted.transactionStatus, interrupted.text), ...args.slice(1)];
      }
      if (this.listenerCount('error') === 0) {
        router.reread();
        return false;
      }
      return super.emit(event, ...args);
    }
  }
  Object.defineProperty(PrimaryClient, 'name', { value: `Pgha${Base.name || 'Client'}` });
  return PrimaryClient as unknown as typeof pg.Client;
}

/**
 * Terminates a client's session: a CancelRequest stops the statement running on the
 * server (a backend in a long statement does not notice a closed socket until it next
 * reads), and the socket is cut, so the in-flight statement fails on our side at once
 * and is classified, and queued ones fail as never sent.
 */
export function terminateClient(client: pg.Client): void {
  const state = routingOf(client);
  if (state !== undefined) state.terminatedByPgha = true;
  const keys = client as unknown as { processID?: number | null; secretKey?: number | null };
  const endpoint = state?.endpoint;
  if (endpoint && typeof keys.processID === 'number' && typeof keys.secretKey === 'number') {
    sendCancelRequest(endpoint.host, endpoint.port, keys.processID, keys.secretKey);
  }
  const internals = client as unknown as ClientInternals;
  internals.connection.stream.destroy();
}

/** Fire-and-forget PostgreSQL CancelRequest (protocol code 80877102) for one backend. */
function sendCancelRequest(host: string, port: number, processId: number, secretKey: number): void {
  const message = Buffer.alloc(16);
  message.writeInt32BE(16, 0);
  message.writeInt32BE(80877102, 4);
  message.writeInt32BE(processId, 8);
  message.writeInt32BE(secretKey, 12);
  const socket = createConnection({ host, port }, () => socket.end(message));
  socket.setTimeout(5000, () => socket.destroy());
  socket.on('error', () => undefined);
}
