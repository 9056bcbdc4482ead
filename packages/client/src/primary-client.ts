/**
 * The connection class a pgha `Pool` hands out as `pool.Client`: a subclass of the
 * pool's pg `Client` that connects only to the current writable primary, checks the
 * server's role before anyone may use it, and turns failures caused by a lost
 * connection into the typed errors of errors.ts (pg's `DatabaseError` passes through
 * untouched).
 */
import { createConnection } from 'node:net';
import type { PrimaryEndpoint } from '@pgha/core';
import pg from 'pg';
import type { ClusterWatcher } from './discovery.js';
import { DiscoveryStaleError, NotPrimaryError, OutcomeUnknownError, PrimaryChangedError } from './errors.js';
import { classifyQueryFailure, decideCheckout, decideRole, type StalePolicy } from './routing.js';

/** What a primary client needs from its pool. */
export interface ClientRouter {
  readonly watcher: ClusterWatcher;
  readonly primaryWaitTimeoutMillis: number;
  readonly stalePolicy: StalePolicy;
  /** The connection proved the server is not the primary: stop reusing it and re-read discovery. */
  discard(client: pg.Client): void;
  /** Something suggests the route is wrong (connection lost...): re-read discovery. */
  reread(): void;
  /** A connection to the primary was established and checked. */
  connected(client: pg.Client): void;
  /** A connection ended. */
  ended(client: pg.Client): void;
}

/** Per-connection routing state, kept under a symbol on the client. */
export interface ClientRouting {
  /** The primary this connection was opened to, once connected and checked. */
  endpoint: PrimaryEndpoint | null;
  /** ReadyForQuery status: 'I' idle, 'T' in a transaction, 'E' in a failed transaction. */
  transactionStatus: string | null;
  /** ParameterStatus values the server reported (in_hot_standby, server_version...). */
  readonly parameters: Map<string, string>;
  /** Set when pgha cut the connection itself (a straggler after a primary change). */
  terminatedByPgha: boolean;
}

/** The symbol under which a primary client keeps its {@link ClientRouting}. */
export const routingState: unique symbol = Symbol('pgha.routing');

/** Returns the routing state of a client made by {@link createPrimaryClientClass}, else undefined. */
export function routingOf(client: unknown): ClientRouting | undefined {
  return (client as { [routingState]?: ClientRouting } | null)?.[routingState];
}

type Callback = (err: Error | null | undefined, result?: unknown) => void;

/** The parts of a pg query object pgha instruments. */
interface Instrumentable {
  text?: string;
  submit(connection: unknown): unknown;
  handleError(err: Error, connection: unknown): unknown;
  callback?: Callback;
  query_timeout?: number;
}

interface ClientInternals {
  _queryable: boolean;
  _ended?: boolean;
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
  connectionParameters: { host: string; port: number };
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

function describe(endpoint: PrimaryEndpoint): string {
  return `${endpoint.member} (${endpoint.host}:${endpoint.port}, term ${endpoint.term})`;
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 60 ? `${flat.slice(0, 57)}...` : flat;
}

/**
 * Creates the `Client` class of one pool: `Base` (pg's `Client` or the one given in
 * the pool options), routed through `router`.
 *
 * `connect()` waits (up to `primaryWaitTimeoutMillis`) for a writable primary,
 * connects to it whatever host/port the config names, checks the server is not in
 * recovery (the `in_hot_standby` ParameterStatus on PostgreSQL 14+, a query before),
 * and checks the primary did not change meanwhile. `new pool.Client(pool.options)`
 * (what ORMs do for side connections) gets the same guarantees.
 */
export function createPrimaryClientClass(Base: typeof pg.Client, router: ClientRouter): typeof pg.Client {
  const QueryClass = ((Base as unknown as { Query?: typeof pg.Query }).Query ?? pg.Query) as unknown as new (
    ...args: unknown[]
  ) => Instrumentable;

  class PrimaryClient extends Base {
    readonly [routingState]: ClientRouting = {
      endpoint: null,
      transactionStatus: null,
      parameters: new Map(),
      terminatedByPgha: false,
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
      connection.on('readyForQuery', (msg) => {
        state.transactionStatus = msg.status ?? null;
      });
      this.once('end', () => router.ended(this));
    }

    // biome-ignore lint/suspicious/noExplicitAny: matches pg's overloads
    override connect(callback?: any): any {
      const connecting = this.connectToPrimary();
      if (typeof callback === 'function') {
        connecting.then(
          () => callback(null, this),
          (error) => callback(error),
        );
        return undefined;
      }
      return connecting;
    }

    private async connectToPrimary(): Promise<this> {
      const endpoint = await this.waitForRoute();
      const internals = this as unknown as ClientInternals;
      // Route to the primary whatever host and port the config named (pool.options may
      // have been copied before the last change).
      this.host = endpoint.host;
      this.port = endpoint.port;
      internals.connectionParameters.host = endpoint.host;
      internals.connectionParameters.port = endpoint.port;
      await super.connect();
      const state = this[routingState];
      let role = decideRole(state.parameters.get('in_hot_standby'));
      if (role === 'unknown') {
        const result = await super.query('SELECT pg_is_in_recovery() AS in_recovery');
        role = result.rows[0]?.in_recovery === true ? 'standby' : 'primary';
      }
      if (role === 'standby') {
        await this.end().catch(() => undefined);
        router.reread();
        throw new NotPrimaryError(
          `the leader record names ${describe(endpoint)} as primary, but that server is in recovery (a standby); closed the connection before use and asked discovery to re-read. Retrying is safe.`,
          { server: `${endpoint.host}:${endpoint.port}` },
        );
      }
      const now = router.watcher.primary;
      if (now === null || now.term !== endpoint.term || now.host !== endpoint.host || now.port !== endpoint.port) {
        await this.end().catch(() => undefined);
        throw new PrimaryChangedError(
          `the primary changed from ${describe(endpoint)} while connecting; closed the connection before any statement was sent. Retrying is safe.`,
          { rolledBack: false },
        );
      }
      state.endpoint = endpoint;
      router.connected(this);
      return this;
    }

    /** Waits for a writable primary, bounded by the wait timeout and by the socket being destroyed (pool timeout). */
    private async waitForRoute(): Promise<PrimaryEndpoint> {
      const watcher = router.watcher;
      const deadline = Date.now() + router.primaryWaitTimeoutMillis;
      const stream = (this as unknown as ClientInternals).connection.stream;
      for (;;) {
        const decision = decideCheckout({
          leader: watcher.leader,
          staleSinceMillis: watcher.staleSinceMillis,
          stalePolicy: router.stalePolicy,
          closed: watcher.closed,
          nowMillis: Date.now(),
          deadlineMillis: deadline,
        });
        switch (decision.action) {
          case 'connect':
            return decision.endpoint;
          case 'fail':
            if (decision.code === 'discovery-stale') {
              const since = watcher.staleSinceMillis ?? Date.now();
              throw new DiscoveryStaleError(
                `etcd has not answered since ${new Date(since).toISOString()} and stalePolicy is "refuse", so no new connection is opened until it answers; retry later, or use stalePolicy "serve" to keep using the last known primary`,
                { staleForMillis: Date.now() - since, cause: watcher.lastEtcdError ?? undefined },
              );
            }
            throw watcher.noPrimaryError(
              router.primaryWaitTimeoutMillis,
              decision.code === 'closed' ? 'the pool or watcher was closed' : undefined,
            );
          case 'wait': {
            let onClose: () => void = () => undefined;
            const cancelled = new Promise<never>((_, reject) => {
              onClose = () => reject(new Error('connection attempt cancelled while waiting for a primary'));
              stream.once('close', onClose);
            });
            try {
              await Promise.race([watcher.waitForPrimary(Math.max(1, deadline - Date.now())), cancelled]);
            } catch (error) {
              if (stream.destroyed) throw error;
              // Timed out: loop once more so the decision (and its error) is made in one place.
            } finally {
              stream.off('close', onClose);
            }
            break;
          }
          default: {
            const unreachable: never = decision;
            throw new Error(`unknown decision ${JSON.stringify(unreachable)}`);
          }
        }
      }
    }

    // biome-ignore lint/suspicious/noExplicitAny: matches pg's overloads
    override query(config: any, values?: any, callback?: any): any {
      if (config === null || config === undefined) return super.query(config, values, callback);
      if (typeof config.submit === 'function') {
        this.instrument(config as Instrumentable, typeof config.text === 'string' ? config.text : '');
        return super.query(config, values, callback);
      }
      const query = new QueryClass(config, values, callback);
      if (typeof config === 'object' && config.query_timeout !== undefined) query.query_timeout = config.query_timeout;
      this.instrument(query, typeof query.text === 'string' ? query.text : '');
      if (typeof query.callback === 'function') {
        super.query(query as never);
        return undefined;
      }
      const result = new Promise((resolve, reject) => {
        query.callback = (err, res) => (err ? reject(err) : resolve(res));
      });
      super.query(query as never);
      return result;
    }

    /** Records whether and in which transaction state the statement was sent, and classifies its failure. */
    private instrument(query: Instrumentable, text: string): void {
      const client = this;
      let sent = false;
      let transactionStatus: string | null = null;
      const submit = query.submit;
      query.submit = function (this: Instrumentable, connection: unknown) {
        sent = true;
        transactionStatus = client[routingState].transactionStatus;
        return submit.call(this, connection);
      };
      const handleError = query.handleError;
      query.handleError = function (this: Instrumentable, err: Error, connection: unknown) {
        return handleError.call(this, client.classify(err, sent, transactionStatus, text), connection);
      };
    }

    private classify(error: Error, sent: boolean, transactionStatus: string | null, text: string): Error {
      const decision = classifyQueryFailure({
        sqlState: isDatabaseError(error) ? error.code : null,
        connectionLost: (this as unknown as ClientInternals)._queryable === false,
        sent,
        transactionStatus,
        text,
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

    // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's signature
    override emit(event: string | symbol, ...args: any[]): boolean {
      // pg emits 'error' on a client whose connection dies between statements. On a
      // checked-out client with no 'error' listener (most application code, and every
      // failover terminates such sessions), Node would crash the process. pgha keeps
      // the process alive instead: the connection is unusable, its next statement fails
      // with PrimaryChangedError (never sent), and release() removes it from the pool.
      if (event === 'error' && this.listenerCount('error') === 0) {
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
