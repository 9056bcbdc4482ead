import { PghaError } from '@pgha/core';
import { ConsecutiveBreaker, circuitBreaker, ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { Etcd3, EtcdError, type IOptions, isRecoverableError } from 'etcd3';

/** How pgha reaches etcd. */
export interface EtcdConnection {
  /** Comma-separated or array of `http://host:port` endpoints. */
  readonly endpoints: string | readonly string[];
  readonly username?: string;
  readonly password?: string;
}

/** Splits a comma-separated endpoint list and checks each is a URL. */
export function parseEndpoints(endpoints: string | readonly string[]): string[] {
  const list = (typeof endpoints === 'string' ? endpoints.split(',') : [...endpoints])
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (list.length === 0)
    throw new PghaError('invalid-option', 'no etcd endpoint given: pass --etcd http://HOST:PORT or set PGHA_ETCD');
  for (const endpoint of list) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new PghaError('invalid-option', `etcd endpoint "${endpoint}" is not a URL: use http://HOST:PORT`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new PghaError('invalid-option', `etcd endpoint "${endpoint}" must use http: or https:`);
    }
    if (url.username !== '' || url.password !== '') {
      throw new PghaError(
        'invalid-option',
        `etcd endpoint "${url.protocol}//***@${url.host}" carries credentials: give the etcd user with --etcd-user (PGHA_ETCD_USER) and its password in PGHA_ETCD_PASSWORD or --etcd-password-file, never in the URL (it would show in ps, logs and error messages)`,
      );
    }
  }
  return list;
}

/**
 * Creates an etcd client whose calls give up after `callTimeoutMillis`.
 * `tuning.maxWatchBackoffMillis` caps the wait between reconnections of its watch stream
 * (etcd3's default grows to 30 s, so a watch could come back that long after etcd).
 */
export function createEtcdClient(
  connection: EtcdConnection,
  callTimeoutMillis = 5000,
  tuning: { maxWatchBackoffMillis?: number } = {},
): Etcd3 {
  const hosts = parseEndpoints(connection.endpoints);
  const options: IOptions = {
    hosts,
    dialTimeout: callTimeoutMillis,
    // Unary calls get a deadline; streams (watches, lease keepalives) must not: a
    // deadline ends them every few seconds, and a re-created watch is unsynced in etcd,
    // holding events back up to ~100 ms. Dead streams are found by the lease keeper's
    // stall check and by the polling loops the watches only wake.
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMillis }),
    faultHandling: {
      // etcd3's default breaker shuns a host for 5 s after 3 failures: after a short
      // outage of a single-endpoint etcd, a primary would fence itself for nothing.
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 500, breaker: new ConsecutiveBreaker(3) }),
      // Retry on the other endpoints, not on the same one: callers poll anyway, and a
      // call must not outlast a lease deadline by retrying (default: 3 attempts).
      global: retry(handleWhen(isRecoverableError), { maxAttempts: hosts.length - 1 }),
      // etcd3 types this as a backoff but calls next() on it first, as it does with its
      // own default (new ExponentialBackoff()): a cockatiel backoff factory.
      ...(tuning.maxWatchBackoffMillis !== undefined
        ? {
            watchBackoff: new ExponentialBackoff({
              initialDelay: Math.min(50, tuning.maxWatchBackoffMillis),
              maxDelay: tuning.maxWatchBackoffMillis,
            }) as never,
          }
        : {}),
    },
  };
  if (connection.username !== undefined && connection.password !== undefined) {
    options.auth = { username: connection.username, password: connection.password };
  }
  return new Etcd3(options);
}

/**
 * Translates an etcd3/gRPC failure into a {@link PghaError}: the one place foreign
 * etcd errors become ours.
 */
export function castEtcdError(error: unknown, endpoints: string | readonly string[], doing: string): PghaError {
  if (error instanceof PghaError) return error;
  const where = typeof endpoints === 'string' ? endpoints : endpoints.join(',');
  // grpc-js ends some messages with an empty "Resolution note: "; it says nothing.
  const detail = (error instanceof Error ? error.message.split('\n')[0]! : String(error)).replace(
    /\s*Resolution note:\s*$/,
    '',
  );
  const unavailable =
    !(error instanceof EtcdError) ||
    /unavailable|deadline|timed? ?out|ECONNREFUSED|No connection|connect/i.test(detail);
  if (unavailable) {
    return new PghaError(
      'etcd-unavailable',
      `cannot reach etcd at ${where} while ${doing} (${detail}): check that etcd runs there, or omit --etcd to let \`pgha up\` start its own`,
      { retryable: true, cause: error },
    );
  }
  return new PghaError('etcd-unavailable', `etcd at ${where} failed while ${doing}: ${detail}`, {
    retryable: true,
    cause: error,
  });
}

/** Fails fast with a clear error when etcd does not answer within the client's timeout. */
export async function assertEtcdReachable(client: Etcd3, endpoints: string | readonly string[]): Promise<void> {
  try {
    await client.maintenance.status();
  } catch (error) {
    throw castEtcdError(error, endpoints, 'checking that etcd answers');
  }
}
