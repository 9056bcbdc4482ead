import { readFileSync } from 'node:fs';
import type { EtcdOptions } from '@pgha/client';
import { PghaError } from '@pgha/core';
import { ConsecutiveBreaker, circuitBreaker, ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { Etcd3, EtcdError, type IOptions, isRecoverableError } from 'etcd3';

/** PEM files for an etcd reached over TLS (read when the client is created). */
export interface EtcdTlsFiles {
  /** The CA that signed etcd's server certificate; absent: the system's roots. */
  readonly caFile?: string;
  /** A client certificate; with etcd's `--client-cert-auth`, its CN is the etcd user. */
  readonly certFile?: string;
  /** The client certificate's private key. */
  readonly keyFile?: string;
}

/** How pgha reaches etcd. */
export interface EtcdConnection {
  /** Comma-separated or array of `http://host:port` or `https://host:port` endpoints. */
  readonly endpoints: string | readonly string[];
  /** etcd user (password authentication; etcd then issues a token). */
  readonly username?: string;
  readonly password?: string;
  /** TLS material; requires `https://` endpoints. */
  readonly tls?: EtcdTlsFiles;
}

/** An {@link EtcdConnection} without its endpoints: one identity used for several etcds (the operator's). */
export type EtcdCredentials = Omit<EtcdConnection, 'endpoints'>;

function readPem(file: string, what: string, option: string): Buffer {
  let content: Buffer;
  try {
    content = readFileSync(file);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new PghaError(
      'invalid-option',
      `cannot read the etcd ${what} ${file} (${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code ?? cause)}): pass an existing PEM file readable by this user with ${option}`,
      { cause },
    );
  }
  if (!content.toString('latin1').includes('-----BEGIN ')) {
    throw new PghaError('invalid-option', `the etcd ${what} ${file} is not a PEM file: pass a PEM file with ${option}`);
  }
  return content;
}

/**
 * etcd3's `credentials` for `connection`, the PEM files read now; undefined for plain
 * `http://` endpoints without TLS files.
 *
 * @throws PghaError `invalid-option` when a file is missing or unreadable, when only one of
 *   the certificate and key is given, or when TLS files come with `http://` endpoints.
 */
export function etcdCredentials(
  connection: EtcdConnection,
): { rootCertificate?: Buffer; certChain?: Buffer; privateKey?: Buffer } | undefined {
  const hosts = parseEndpoints(connection.endpoints);
  const secure = hosts.map((h) => h.startsWith('https:'));
  if (secure.some((s) => s) && secure.some((s) => !s)) {
    throw new PghaError(
      'invalid-option',
      `etcd endpoints mix http:// and https:// (${hosts.join(',')}): use https:// for every endpoint of an etcd with TLS`,
    );
  }
  const tls = connection.tls ?? {};
  const any = tls.caFile !== undefined || tls.certFile !== undefined || tls.keyFile !== undefined;
  if (!secure[0]) {
    if (any)
      throw new PghaError(
        'invalid-option',
        `etcd TLS files were given (--etcd-ca/--etcd-cert/--etcd-key) but the endpoint ${hosts[0]} is http://: use https://${hosts[0]!.replace(/^http:\/\//, '')}`,
      );
    return undefined;
  }
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new PghaError(
      'invalid-option',
      tls.certFile === undefined
        ? 'an etcd client key was given without its certificate: pass --etcd-cert (PGHA_ETCD_CERT) too'
        : 'an etcd client certificate was given without its key: pass --etcd-key (PGHA_ETCD_KEY) too',
    );
  }
  return {
    ...(tls.caFile === undefined ? {} : { rootCertificate: readPem(tls.caFile, 'CA certificate', '--etcd-ca') }),
    ...(tls.certFile === undefined ? {} : { certChain: readPem(tls.certFile, 'client certificate', '--etcd-cert') }),
    ...(tls.keyFile === undefined ? {} : { privateKey: readPem(tls.keyFile, 'client key', '--etcd-key') }),
  };
}

/**
 * `@pgha/client`'s `etcd` option for `connection`: the same endpoints, user and TLS
 * files (read now), so that a Pool pgha starts itself (`pgha check`'s writers) reaches
 * an etcd with TLS and authentication as the CLI does.
 *
 * @throws PghaError `invalid-option` as {@link etcdCredentials} does.
 */
export function poolEtcdOptions(connection: EtcdConnection): EtcdOptions {
  const credentials = etcdCredentials(connection);
  return {
    endpoints: parseEndpoints(connection.endpoints),
    ...(connection.username === undefined ? {} : { username: connection.username, password: connection.password }),
    // Without --etcd-ca the system's roots (grpc takes a missing root certificate so);
    // the client's type wants one, as etcd3's does.
    ...(credentials === undefined ? {} : { credentials: credentials as EtcdOptions['credentials'] }),
  };
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
  const credentials = etcdCredentials(connection);
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
  // etcd3 passes these to grpc.credentials.createSsl: a missing root certificate means
  // the system's roots. (Its type wants the root certificate; grpc takes none.)
  if (credentials !== undefined) options.credentials = credentials as IOptions['credentials'];
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
  if (/permission denied|user name not found|authentication failed|invalid auth token|not root/i.test(detail)) {
    return new PghaError(
      'invalid-option',
      `etcd at ${where} refused ${doing} (${detail}): the etcd user (the client certificate's CN, or --etcd-user) lacks the permission; use a user with access to this cluster's keys (pgha etcd-auth sets them up)`,
      { cause: error },
    );
  }
  if (/bad certificate|certificate required|alert number 4[0-9]|handshake/i.test(detail)) {
    return new PghaError(
      'invalid-option',
      `etcd at ${where} refused the TLS connection while ${doing} (${detail}): it requires a client certificate signed by its CA; pass --etcd-cert and --etcd-key (PGHA_ETCD_CERT, PGHA_ETCD_KEY)`,
      { cause: error },
    );
  }
  if (
    /self.signed|unable to verify|unable to get local issuer|certificate verify failed|unknown ca|altnames|Hostname\/IP does not match/i.test(
      detail,
    )
  ) {
    return new PghaError(
      'invalid-option',
      `cannot verify the certificate of etcd at ${where} while ${doing} (${detail}): pass the CA that signed it with --etcd-ca (PGHA_ETCD_CA), and reach etcd at a name or address its certificate lists`,
      { cause: error },
    );
  }
  const unavailable =
    !(error instanceof EtcdError) ||
    /unavailable|deadline|timed? ?out|ECONNREFUSED|No connection|connect/i.test(detail);
  if (unavailable) {
    return new PghaError(
      'etcd-unavailable',
      `cannot reach etcd at ${where} while ${doing} (${detail}): check that etcd runs there, or omit --etcd to let \`pgha up\` start its own${where.includes('http://') ? ' (an etcd with TLS is reached at https:// with --etcd-ca)' : ''}`,
      { retryable: true, cause: error },
    );
  }
  return new PghaError('etcd-unavailable', `etcd at ${where} failed while ${doing}: ${detail}`, {
    retryable: true,
    cause: error,
  });
}

/**
 * Fails with a clear error when etcd does not answer within the client's timeout; with
 * `patienceMillis`, retries failures that may pass (etcd unreachable or slow) until
 * that long has passed. A first call over TLS on a loaded host (handshake, a process
 * still warming up) can outlast a short call timeout: long-running processes (agent,
 * controller) are patient, the CLI is not.
 */
export async function assertEtcdReachable(
  client: Etcd3,
  endpoints: string | readonly string[],
  patienceMillis = 0,
): Promise<void> {
  const deadline = Date.now() + patienceMillis;
  for (;;) {
    try {
      await client.maintenance.status();
      return;
    } catch (error) {
      const cast = castEtcdError(error, endpoints, 'checking that etcd answers');
      if (!cast.retryable || Date.now() >= deadline) throw cast;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
