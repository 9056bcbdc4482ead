import { slotNameFor } from '@pgha/core';

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

/** Where a replica streams from. */
export interface UpstreamSettings {
  readonly host: string;
  readonly port: number;
  /** The libpq passfile holding the replication password. */
  readonly passfile: string;
  /** This member's name: its application_name and slot on the primary. */
  readonly member: string;
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
}

function quote(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** A libpq keyword/value connection string with values quoted as libpq wants. */
export function conninfo(parts: Readonly<Record<string, string | number>>): string {
  return Object.entries(parts)
    .map(([k, v]) => `${k}='${String(v).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

/** The contents of pgha.conf for these settings. */
export function renderServerConfig(settings: ServerSettings): string {
  const lines: Array<[string, string | number]> = [
    ['listen_addresses', quote(settings.listenAddresses)],
    ['port', settings.port],
    // No Unix socket: every connection is TCP with a password, and long state-dir
    // paths cannot overflow the 107-byte socket path limit.
    ['unix_socket_directories', quote('')],
    ['cluster_name', quote(settings.member)],
    ['max_connections', settings.maxConnections],
    ['shared_buffers', quote(settings.sharedBuffers)],
    ['password_encryption', quote('scram-sha-256')],
    ['wal_level', 'replica'],
    ['max_wal_senders', 10],
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
  ];
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
          }),
        ),
      ],
      ['primary_slot_name', quote(slotNameFor(up.member))],
      ['recovery_target_timeline', quote('latest')],
    );
  }
  return `# Written by pgha for ${settings.member}; edits are overwritten.\n${lines.map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
}

/**
 * The contents of pg_hba.conf: SCRAM passwords only, loopback plus `allowedNetworks`
 * (CIDR), and replication only for the replication role.
 */
export function renderHbaConfig(allowedNetworks: readonly string[]): string {
  const networks = ['127.0.0.1/32', '::1/128', ...allowedNetworks.filter((n) => n !== '127.0.0.1/32' && n !== '::1/128')];
  const rows = networks.flatMap((net) => [
    `host    all          all          ${net}    scram-sha-256`,
    `host    replication  ${replicationUser}   ${net}    scram-sha-256`,
  ]);
  return `# Written by pgha; edits are overwritten. Password (SCRAM) authentication only.\n${rows.join('\n')}\n`;
}

/** The line pgha adds once to postgresql.conf. */
export const includeLine = "include_if_exists = 'pgha.conf'";
