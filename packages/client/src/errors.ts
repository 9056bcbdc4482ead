import { PghaError } from '@pgha/core';

/**
 * No writable primary was known within the wait the caller allowed.
 *
 * Thrown by `pool.connect()`/`pool.query()` (and by `pool.Client#connect`) when the
 * leader record is absent, not yet writable (a promotion in progress), or etcd was
 * not reachable, for longer than `primaryWaitTimeoutMillis`. Nothing was sent to any
 * server, so retrying is safe (`retryable` is true).
 *
 * @example
 * try { await pool.query('SELECT 1') } catch (e) { if (e instanceof NoPrimaryError) scheduleRetry() }
 */
export class NoPrimaryError extends PghaError {
  /** The newest term the client had seen when it gave up (0 when none). */
  readonly term: number;

  constructor(message: string, options: { term: number; cause?: unknown }) {
    super('no-primary', message, { retryable: true, cause: options.cause });
    this.name = 'NoPrimaryError';
    this.term = options.term;
  }
}

/**
 * The primary changed (or the connection to it was lost) and the statement cannot
 * have taken effect, so running it again is safe.
 *
 * Two cases, told apart by `rolledBack`:
 * - `rolledBack: false` — the statement was never sent to the server;
 * - `rolledBack: true` — it was sent inside an open transaction (not a COMMIT), so the
 *   server rolled the whole transaction back when the connection died: retry the
 *   whole transaction, not only this statement.
 *
 * `retryable` is always true. The connection it came from is unusable: release it
 * with the error (`client.release(err)`).
 */
export class PrimaryChangedError extends PghaError {
  /** Whether an open transaction was rolled back (retry the whole transaction). */
  readonly rolledBack: boolean;

  constructor(message: string, options: { rolledBack: boolean; cause?: unknown }) {
    super('primary-changed', message, { retryable: true, cause: options.cause });
    this.name = 'PrimaryChangedError';
    this.rolledBack = options.rolledBack;
  }
}

/**
 * The connection died while a COMMIT, or a statement outside any transaction, was in
 * flight: it may or may not have committed.
 *
 * Never retried by pgha and `retryable` is false: check the effect (for example by
 * reading the row back by its key on the new primary) before doing it again.
 */
export class OutcomeUnknownError extends PghaError {
  /** The beginning of the statement whose outcome is unknown, for logs. */
  readonly statement: string;

  constructor(message: string, options: { statement: string; cause?: unknown }) {
    super('outcome-unknown', message, { retryable: false, cause: options.cause });
    this.name = 'OutcomeUnknownError';
    this.statement = options.statement;
  }
}

/**
 * A server the leader record named as primary reported that it is a standby (in
 * recovery) when a connection was opened to it. The connection was closed before
 * use and discovery was asked to re-read; retrying is safe.
 */
export class NotPrimaryError extends PghaError {
  /** `host:port` of the server that is not the primary. */
  readonly server: string;

  constructor(message: string, options: { server: string; cause?: unknown }) {
    super('not-primary', message, { retryable: true, cause: options.cause });
    this.name = 'NotPrimaryError';
    this.server = options.server;
  }
}

/**
 * etcd has not answered for longer than `staleAfterMillis` and the pool's
 * `stalePolicy` is `'refuse'`, so new checkouts fail until etcd answers again.
 * Retrying later may succeed.
 */
export class DiscoveryStaleError extends PghaError {
  /** How long etcd had been unanswered, in milliseconds. */
  readonly staleForMillis: number;

  constructor(message: string, options: { staleForMillis: number; cause?: unknown }) {
    super('discovery-stale', message, { retryable: true, cause: options.cause });
    this.name = 'DiscoveryStaleError';
    this.staleForMillis = options.staleForMillis;
  }
}

/**
 * A replica pool found no replica within its lag limits (and, under
 * `replicaFallback: 'primary'`, no writable primary either) within its wait.
 * Its `code` is `no-replica`; `retryable` is true.
 */
export class NoReplicaError extends PghaError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('no-replica', message, { retryable: true, cause: options.cause });
    this.name = 'NoReplicaError';
  }
}
