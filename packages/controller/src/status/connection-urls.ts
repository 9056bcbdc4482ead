/**
 * Connection strings any PostgreSQL client can follow the primary with: libpq's
 * multi-host URLs (psql, psycopg, pgx, and every other libpq-based driver) and
 * pgjdbc's. Pure: built from the members' host:port, never from etcd or postgres.
 *
 * libpq tries the hosts in order and keeps the first whose session matches
 * `target_session_attrs` (`read-write`: not in recovery and not
 * default_transaction_read_only; `prefer-standby`, libpq 14 and later: a standby, else
 * any). `connect_timeout` bounds each host's attempt, so a dead host (a machine that
 * does not answer, rather than a refused port) costs that many seconds, not the
 * kernel's TCP timeout of minutes.
 */

/** One member's address as clients reach it. */
export interface UrlEndpoint {
  readonly host: string;
  readonly port: number;
}

/** What {@link clusterUrls} builds from. */
export interface ClusterUrlOptions {
  readonly user: string;
  /** Omitted from the URL when null or absent (libpq then reads PGPASSWORD or ~/.pgpass). */
  readonly password?: string | null;
  readonly database: string;
  /** Every member, in the order clients should try them. */
  readonly members: readonly UrlEndpoint[];
  /** Seconds per host attempt (libpq `connect_timeout`, pgjdbc `connectTimeout`). Default 2. */
  readonly connectTimeoutSeconds?: number;
  /**
   * The CA file the members' certificates chain to: the URLs then ask for TLS that
   * verifies the certificate and the host (`sslmode=verify-full&sslrootcert=<file>`).
   * Null or absent: no TLS parameters.
   */
  readonly sslRootCert?: string | null;
}

/** The cluster's connection strings: `pgha status --json` prints them as `urls`. */
export interface ClusterUrls {
  /** libpq: lands on the primary wherever it is (`target_session_attrs=read-write`). */
  readonly readWrite: string;
  /** libpq: a replica when one answers, else the primary (`target_session_attrs=prefer-standby`). */
  readonly readOnly: string;
  /** pgjdbc: the primary (`targetServerType=primary`). */
  readonly jdbcReadWrite: string;
  /** pgjdbc: a replica when one answers, else the primary (`targetServerType=preferSecondary`). */
  readonly jdbcReadOnly: string;
}

/** The default seconds a client spends on one host before it tries the next. */
export const defaultConnectTimeoutSeconds = 2;

/** `host:port`, with an IPv6 address in brackets as URLs need it. */
function hostPort(m: UrlEndpoint): string {
  return `${m.host.includes(':') && !m.host.startsWith('[') ? `[${m.host}]` : m.host}:${m.port}`;
}

/**
 * Builds the libpq and pgjdbc multi-host URLs of a cluster. User, password and
 * database are percent-encoded (a password with `@`, `:` or `/` stays one
 * password). Pure.
 *
 * @example
 * clusterUrls({ user: 'postgres', database: 'postgres', members: [{ host: '10.0.0.1', port: 5432 }, { host: '10.0.0.2', port: 5432 }] }).readWrite
 * // 'postgresql://postgres@10.0.0.1:5432,10.0.0.2:5432/postgres?target_session_attrs=read-write&connect_timeout=2'
 */
export function clusterUrls(o: ClusterUrlOptions): ClusterUrls {
  if (o.members.length === 0) throw new RangeError('clusterUrls needs at least one member');
  const timeout = o.connectTimeoutSeconds ?? defaultConnectTimeoutSeconds;
  const hosts = o.members.map(hostPort).join(',');
  const password = o.password === undefined || o.password === null ? '' : `:${encodeURIComponent(o.password)}`;
  const tls = o.sslRootCert == null ? '' : `&sslmode=verify-full&sslrootcert=${encodeURIComponent(o.sslRootCert)}`;
  const libpq = (attrs: string) =>
    `postgresql://${encodeURIComponent(o.user)}${password}@${hosts}/${encodeURIComponent(o.database)}?target_session_attrs=${attrs}&connect_timeout=${timeout}${tls}`;
  // pgjdbc takes the credentials as parameters (its URL has no user-info part).
  const credentials = `user=${encodeURIComponent(o.user)}${o.password == null ? '' : `&password=${encodeURIComponent(o.password)}`}`;
  const jdbc = (type: string) =>
    `jdbc:postgresql://${hosts}/${encodeURIComponent(o.database)}?targetServerType=${type}&connectTimeout=${timeout}${tls}&${credentials}`;
  return {
    readWrite: libpq('read-write'),
    readOnly: libpq('prefer-standby'),
    jdbcReadWrite: jdbc('primary'),
    jdbcReadOnly: jdbc('preferSecondary'),
  };
}
