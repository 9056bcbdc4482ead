/**
 * The codes every pgha error carries. Callers branch on `code`, never on message text.
 *
 * - `protocol`: a record or key in etcd does not match the protocol (malformed, hostile, unknown version).
 * - `invalid-option`: a caller passed an option or argument pgha cannot use.
 * - `missing-prerequisite`: a binary or OS facility pgha needs is not installed.
 * - `etcd-unavailable`: etcd did not answer in time.
 * - `conflict`: the state on disk or in etcd belongs to something else (another cluster, a foreign data directory).
 * - `postgres-failed`: a PostgreSQL process or tool failed.
 * - `timeout`: a bounded wait ran out.
 * - `no-primary`: there is no writable primary right now.
 * - `primary-changed`: the primary changed before the statement was sent; retrying is safe.
 * - `outcome-unknown`: the connection died while a commit was in flight; the statement may or may not have committed.
 * - `not-primary`: a server that was expected to be the primary is not.
 * - `discovery-stale`: etcd has not answered for longer than the configured window.
 * - `no-replica`: no replica is within the read pool's lag limits (and no fallback applies).
 */
export const errorCodes = [
  'protocol',
  'invalid-option',
  'missing-prerequisite',
  'etcd-unavailable',
  'conflict',
  'postgres-failed',
  'timeout',
  'no-primary',
  'primary-changed',
  'outcome-unknown',
  'not-primary',
  'discovery-stale',
  'no-replica',
] as const;

/** One of {@link errorCodes}. */
export type ErrorCode = (typeof errorCodes)[number];

/** Options accepted by {@link PghaError}. */
export interface PghaErrorOptions {
  /** Whether the same operation may succeed if simply tried again. Defaults to false. */
  readonly retryable?: boolean;
  /** The underlying error, kept for diagnosis. */
  readonly cause?: unknown;
}

/**
 * The base class of every error pgha throws or emits.
 *
 * `code` says what kind of failure it is; `retryable` says whether trying the same
 * operation again may succeed without a change by the caller. Messages say what
 * happened, what was expected and what to do. PostgreSQL's own errors (pg's
 * `DatabaseError`) are never wrapped.
 *
 * @example
 * try { MemberRecord.decode(text) } catch (e) { if (e instanceof PghaError && e.code === 'protocol') ... }
 */
export class PghaError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: PghaErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PghaError';
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/**
 * A record or key in etcd that does not follow the protocol.
 *
 * Thrown by every `parse`/`decode` in this package. Never retryable: the same bytes
 * will fail the same way.
 */
export class ProtocolError extends PghaError {
  /** The etcd key or record kind that failed, for logs. */
  readonly subject: string;

  constructor(subject: string, message: string, options: { cause?: unknown } = {}) {
    super('protocol', `${subject}: ${message}`, { retryable: false, cause: options.cause });
    this.name = 'ProtocolError';
    this.subject = subject;
  }
}

/** Whether `value` is a {@link PghaError}, optionally of one code. */
export function isPghaError(value: unknown, code?: ErrorCode): value is PghaError {
  return value instanceof PghaError && (code === undefined || value.code === code);
}
