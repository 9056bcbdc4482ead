import { isIP } from 'node:net';
import { PghaError, slotNameFor } from '@pgha/core';
import type { FloorValues } from './standby-parameters.js';

/**
 * Renders the files pgha owns inside a data directory. Pure: the shell writes them.
 *
 * pgha owns `pgha.conf` (included from postgresql.conf, rewritten at every start and
 * on every re-point) and `pg_hba.conf` (restrictive: password authentication only,
 * loopback plus the networks the operator allows; no trust lines).
 */

/** The role replicas connect as. */
export const replicationUser = 'replicator';
/** The superuser the agent and the local quick start use. */
export const superUser = 'postgres';
/** pgha's max_wal_senders (one per replica plus base backups and pg_rewind). */
export const maxWalSenders = 10;

/** Where a replica streams from. */
export interface UpstreamSettings {
  readonly host: string;
  readonly port: number;
  /** The libpq passfile holding the replication password. */
  readonly passfile: string;
  /** This member's name: its application_name and slot on the primary. */
  readonly member: string;
  /**
   * The CA file the upstream's server certificate must chain to: replication then
   * connects with `sslmode=verify-full` (TLS, and the certificate must name `host`).
   * Absent or null: no TLS.
   */
  readonly sslRootCert?: string | null;
}

/** The files postgres serves TLS with (copies the agent keeps beside the data directory). */
export interface ServerTlsFiles {
  /** The server certificate (PEM); it must name every host members and clients connect to. */
  readonly certFile: string;
  /** Its private key (PEM): owned by postgres's OS user, mode 0600, or postgres refuses to start. */
  readonly keyFile: string;
  /** The CA that signed the members' certificates (PEM). */
  readonly caFile: string;
}

/** What pgha.conf says. */
export interface ServerSettings {
  readonly member: string;
  readonly listenAddresses: string;
  readonly port: number;
  readonly sharedBuffers: string;
  readonly maxConnections: number;
  /** Null on a primary. */
  readonly upstream: UpstreamSettings | null;
  /**
   * Extra settings (`--postgres-parameter`), written after pgha's own, values quoted;
   * never one of {@link reservedPostgresParameters} ({@link assertExtraParameters}).
   */
  readonly extraParameters?: Readonly<Record<string, string>>;
  /**
   * Values that replace the configured ones (pgha's own or extra): a standby's floor,
   * the primary's recorded values where they exceed the configuration
   * (`decideStartParameters` in standby-parameters.ts). Absent: none.
   */
  readonly floor?: Partial<FloorValues>;
  /**
   * `synchronous_standby_names`, managed by the primary's agent (synchronous quorum
   * mode; decide/synchronous-standbys.ts). Absent or '': none.
   */
  readonly synchronousStandbyNames?: string;
  /** TLS (`ssl = on` with these files). Absent or null: none. */
  readonly ssl?: ServerTlsFiles | null;
  /**
   * Write `recovery_init_sync_method = syncfs` ({@link syncfsAvailable}): a start after
   * a crash, a base backup or a rewind syncs the data directory's file systems with one
   * call each instead of opening and fsyncing every file. Absent or false: postgres's
   * default (fsync of every file).
   */
  readonly syncfs?: boolean;
}

/**
 * Whether a member writes its data back a file system at a time (`syncfs()`):
 * postgres's sync before recovery from data that was not shut down cleanly
 * (`recovery_init_sync_method = syncfs`), and the agent's own after pg_basebackup and
 * pg_rewind with `--no-sync`. PostgreSQL 14+ on Linux only (elsewhere postgres refuses
 * the value and would not start), and not when the operator's extra parameters choose
 * `recovery_init_sync_method = fsync`.
 */
export const syncfsAvailable = (
  platform: string,
  postgresMajor: number,
  extraParameters: Readonly<Record<string, string>> = {},
): boolean =>
  platform === 'linux' &&
  postgresMajor >= 14 &&
  extraParameters.recovery_init_sync_method?.trim().toLowerCase() !== 'fsync';

/**
 * PostgreSQL settings pgha writes itself (agent/postgres-config.ts) or that its
 * replication, addressing and authentication depend on: `spec.postgresParameters`
 * (and `--postgres-parameter`) may not set them: the agent refuses them.
 */
export const reservedPostgresParameters: ReadonlySet<string> = new Set([
  'listen_addresses',
  'port',
  'unix_socket_directories',
  'cluster_name',
  'max_connections',
  'shared_buffers',
  'password_encryption',
  'wal_level',
  'max_wal_senders',
  'max_replication_slots',
  'max_slot_wal_keep_size',
  'wal_keep_size',
  'wal_log_hints',
  'hot_standby',
  'hot_standby_feedback',
  'wal_receiver_status_interval',
  'wal_receiver_timeout',
  'wal_sender_timeout',
  'wal_retrieve_retry_interval',
  'logging_collector',
  'log_line_prefix',
  'primary_conninfo',
  'primary_slot_name',
  'recovery_target_timeline',
  'synchronous_standby_names',
  'hba_file',
  'ident_file',
  'config_file',
  'data_directory',
  'include',
  'include_if_exists',
  'include_dir',
  'restore_command',
  'archive_cleanup_command',
  'promote_trigger_file',
  'ssl',
  'ssl_cert_file',
  'ssl_key_file',
  'ssl_ca_file',
]);

/** A postgres parameter name: an identifier, optionally qualified (`auto_explain.log_min_duration`). */
export const isPostgresParameterName = (name: string): boolean =>
  /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/.test(name);

/**
 * Checks extra parameters before they reach pgha.conf: names must be identifiers
 * (a name is written unquoted) and none may be one pgha owns.
 *
 * @throws PghaError `invalid-option` naming the first bad parameter.
 */
export function assertExtraParameters(parameters: Readonly<Record<string, string>>): void {
  for (const name of Object.keys(parameters)) {
    if (!isPostgresParameterName(name))
      throw new PghaError(
        'invalid-option',
        `postgres parameter ${JSON.stringify(name)} is not a parameter name: use name=value with an identifier such as work_mem`,
      );
    if (reservedPostgresParameters.has(name.toLowerCase()))
      throw new PghaError(
        'invalid-option',
        `postgres parameter ${name} is set by pgha and cannot be overridden: remove it from --postgres-parameter`,
      );
  }
}

/**
 * Adds one `name=value` (a `--postgres-parameter` argument) to `into`: the name is
 * everything before the first `=`, the value everything after (it may hold `=`).
 *
 * @throws PghaError `invalid-option` when there is no `=`, the name is not an
 *   identifier, or pgha owns it.
 */
export function addPostgresParameter(
  argument: string,
  into: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const at = argument.indexOf('=');
  if (at <= 0)
    throw new PghaError(
      'invalid-option',
      `--postgres-parameter ${JSON.stringify(argument)} is not name=value: write it as work_mem=64MB`,
    );
  const name = argument.slice(0, at).trim().toLowerCase();
  const parameters = { [name]: argument.slice(at + 1) };
  assertExtraParameters(parameters);
  return { ...into, ...parameters };
}

// A postgresql.conf string: backslashes and quotes escaped, and line breaks written
// as \n / \r so that no value can end its line and start a setting of its own.
function quote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''").replace(/\n/g, '\\n').replace(/\r/g, '\\r')}'`;
}

/** A libpq keyword/value connection string with values quoted as libpq wants. */
export function conninfo(parts: Readonly<Record<string, string | number>>): string {
  return Object.entries(parts)
    .map(([k, v]) => `${k}='${String(v).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

/**
 * The libpq settings of a connection to another member: with a CA, TLS that must
 * verify the server's certificate *and* that it names the host connected to
 * (`verify-full`; `verify-ca` would accept any member's certificate for any address),
 * and `client.crt`/`client.key` beside the CA as the client certificate when present.
 * Without one: nothing (libpq's default).
 */
export function upstreamTls(caFile: string | null | undefined): Record<string, string> {
  if (caFile == null) return {};
  // The client certificate and key are named explicitly, beside the CA (none by
  // default: a missing file means none): libpq's default, ~/.postgresql/postgresql.crt,
  // is under $HOME, and a postgres started by a root agent inherits HOME=/root, which
  // it may not read; libpq then refuses the connection ("Permission denied").
  const dir = caFile.slice(0, caFile.lastIndexOf('/') + 1);
  return {
    sslmode: 'verify-full',
    sslrootcert: caFile,
    sslcert: `${dir}client.crt`,
    sslkey: `${dir}client.key`,
  };
}

/** The contents of pgha.conf for these settings. */
export function renderServerConfig(settings: ServerSettings): string {
  assertExtraParameters(settings.extraParameters ?? {});
  const floor = settings.floor ?? {};
  // A floored extra setting takes the floor's value in place (one line per name).
  const extra: Record<string, string> = { ...settings.extraParameters };
  for (const name of ['max_worker_processes', 'max_prepared_transactions', 'max_locks_per_transaction'] as const) {
    const value = floor[name];
    if (value !== undefined) extra[name] = String(value);
  }
  const lines: Array<[string, string | number]> = [
    ['listen_addresses', quote(settings.listenAddresses)],
    ['port', settings.port],
    // No Unix socket: every connection is TCP with a password, and long state-dir
    // paths cannot overflow the 107-byte socket path limit.
    ['unix_socket_directories', quote('')],
    ['cluster_name', quote(settings.member)],
    ['max_connections', floor.max_connections ?? settings.maxConnections],
    ['shared_buffers', quote(settings.sharedBuffers)],
    ['password_encryption', quote('scram-sha-256')],
    ['wal_level', 'replica'],
    ['max_wal_senders', floor.max_wal_senders ?? maxWalSenders],
    ['max_replication_slots', 10],
    // Slots keep WAL for replicas that are away; bound it so a dead member cannot
    // fill the primary's disk (it re-clones instead).
    ['max_slot_wal_keep_size', quote('1GB')],
    ['wal_keep_size', quote('128MB')],
    // pg_rewind needs hint bits in WAL (initdb also enables data checksums).
    ['wal_log_hints', 'on'],
    ['hot_standby', 'on'],
    ['hot_standby_feedback', 'on'],
    ['wal_receiver_status_interval', quote('1s')],
    ['wal_receiver_timeout', quote('10s')],
    ['wal_sender_timeout', quote('10s')],
    ['wal_retrieve_retry_interval', quote('1s')],
    ['logging_collector', 'off'],
    ['log_line_prefix', quote('%m [%p] %q%u@%d ')],
    ['synchronous_standby_names', quote(settings.synchronousStandbyNames ?? '')],
  ];
  // Before recovery from data that was not shut down cleanly (a crash, a base backup,
  // a rewind: every replica's start after a failover or a clone), postgres syncs the
  // whole data directory. The default opens and fsyncs every file one by one: 6-15 s
  // on a busy disk for a nearly empty cluster, before the member can even replay.
  // syncfs asks the kernel once per file system. Not reserved: an operator on a file
  // system shared with heavy writers, or on Linux before 5.8 (which may not report
  // syncfs write errors to postgres), sets `--postgres-parameter
  // recovery_init_sync_method=fsync`, written after this line.
  if (settings.syncfs === true) lines.push(['recovery_init_sync_method', 'syncfs']);
  if (settings.ssl != null) {
    lines.push(
      ['ssl', 'on'],
      ['ssl_cert_file', quote(settings.ssl.certFile)],
      ['ssl_key_file', quote(settings.ssl.keyFile)],
      ['ssl_ca_file', quote(settings.ssl.caFile)],
    );
  }
  if (settings.upstream !== null) {
    const up = settings.upstream;
    lines.push(
      [
        'primary_conninfo',
        quote(
          conninfo({
            host: up.host,
            port: up.port,
            user: replicationUser,
            passfile: up.passfile,
            application_name: up.member,
            connect_timeout: 5,
            ...upstreamTls(up.sslRootCert),
          }),
        ),
      ],
      ['primary_slot_name', quote(slotNameFor(up.member))],
      ['recovery_target_timeline', quote('latest')],
    );
  }
  // After pgha's own. postgres takes the last occurrence of a name, so an extra
  // setting of a name pgha writes would win: that is why reserved names are refused above.
  for (const [name, value] of Object.entries(extra)) lines.push([name, quote(value)]);
  return `# Written by pgha for ${settings.member}; edits are overwritten.\n${lines.map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
}

/**
 * Checks that every allowed network is an address/prefix (CIDR), the only form pgha
 * writes into pg_hba.conf (anything else could add fields or lines of its own).
 *
 * @throws PghaError `invalid-option` naming the first bad network.
 */
export function assertNetworks(networks: readonly string[]): void {
  for (const network of networks) {
    const match = /^([0-9A-Fa-f.:]+)\/(\d{1,3})$/.exec(network);
    const family = match === null ? 0 : isIP(match[1]!);
    if (family === 0 || Number(match![2]) > (family === 4 ? 32 : 128)) {
      throw new PghaError(
        'invalid-option',
        `allowed network ${JSON.stringify(network)} is not an address/prefix such as 10.0.0.0/8 or fd00::/8: fix --allow-cidr`,
      );
    }
  }
}

/**
 * The contents of pg_hba.conf: SCRAM passwords only, loopback plus `allowedNetworks`
 * (CIDR), and replication only for the replication role. With `ssl`, every line is
 * `hostssl`: a connection without TLS matches no line and is refused, loopback
 * included (the agent's own connection uses TLS too).
 *
 * @throws PghaError `invalid-option` when a network is not CIDR ({@link assertNetworks}).
 */
export function renderHbaConfig(allowedNetworks: readonly string[], ssl = false): string {
  assertNetworks(allowedNetworks);
  const networks = [
    '127.0.0.1/32',
    '::1/128',
    ...allowedNetworks.filter((n) => n !== '127.0.0.1/32' && n !== '::1/128'),
  ];
  const type = ssl ? 'hostssl' : 'host   ';
  const rows = networks.flatMap((net) => [
    `${type} all          all          ${net}    scram-sha-256`,
    `${type} replication  ${replicationUser}   ${net}    scram-sha-256`,
  ]);
  const what = ssl ? 'TLS and password (SCRAM) authentication only' : 'Password (SCRAM) authentication only';
  return `# Written by pgha; edits are overwritten. ${what}.\n${rows.join('\n')}\n`;
}

/** The line pgha adds once to postgresql.conf. */
export const includeLine = "include_if_exists = 'pgha.conf'";
