import type { ClusterKeys, ConfigRecord, MemberRecord, SyncRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { type ClusterRecords, readClusterRecords } from '../adapters/cluster-records.js';
import { type ClusterUrls, clusterUrls } from './connection-urls.js';
import { printable } from './printable.js';

export { printable };

/** One member as `pgha status` shows it. */
export interface MemberStatus {
  readonly name: string;
  readonly role: MemberRecord['role'];
  readonly state: MemberRecord['state'];
  readonly host: string;
  readonly port: number;
  readonly timeline: number | null;
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
  readonly streaming: boolean;
  readonly healthy: boolean;
  readonly problem: string | null;
  readonly updatedAt: string;
  /** Its agent's health API (`http://host:port`), null when it serves none (or is older). */
  readonly api: string | null;
  /**
   * PostgreSQL parameters changed in the cluster's settings that wait for a restart of
   * this member's postgres (empty when none).
   */
  readonly pendingRestart: readonly string[];
}

/** What `pgha status --json` prints: a stable shape scripts can rely on. */
export interface ClusterStatus {
  readonly cluster: string;
  readonly term: number;
  readonly leader: {
    readonly member: string;
    readonly host: string;
    readonly port: number;
    readonly writable: boolean;
  } | null;
  readonly members: readonly MemberStatus[];
  /**
   * Whether a failover or switchover is under way: no writable leader, or a target
   * for a newer term than the current one.
   */
  readonly failover: {
    readonly inProgress: boolean;
    readonly target: { readonly member: string; readonly term: number; readonly reason: string } | null;
  };
  /**
   * The active controller (null when none holds the `controller` key) and what its
   * election waits for (a wait or no-candidate reason), since when; null when nothing.
   */
  readonly controller: {
    readonly id: string;
    readonly waiting: { readonly reason: string; readonly since: string } | null;
  } | null;
  /**
   * The cluster's stored settings (the `config` record): its version and the
   * synchronous replication settings; null when none are stored (each process uses
   * its flags).
   */
  readonly config: {
    readonly version: number;
    readonly synchronousMode: ConfigRecord['synchronousMode'];
    readonly synchronousCount: number;
    readonly synchronousStrict: boolean;
    readonly maximumLagOnFailoverBytes: number;
    /** Failsafe mode (`failsafeMode`; off when absent). */
    readonly failsafeMode: boolean;
    readonly updatedAt: string;
    readonly updatedBy: string;
  } | null;
  /**
   * Synchronous replication: the configured mode (the `config` record; off without
   * one), the current primary's claim (standbys that hold every acknowledged commit,
   * null when it claims nothing in this term) and why it falls short of the
   * configuration (null when it does not).
   */
  readonly synchronous: {
    readonly mode: ConfigRecord['synchronousMode'];
    readonly count: number;
    readonly strict: boolean;
    readonly claim: { readonly standbys: readonly string[]; readonly quorum: number; readonly term: number } | null;
    readonly degraded: string | null;
  };
  /**
   * Multi-host connection strings over every member's host:port (libpq's
   * `target_session_attrs` and pgjdbc's `targetServerType`): clients given them find
   * the primary wherever it is. No password (libpq reads PGPASSWORD or ~/.pgpass);
   * null while no member reports.
   */
  readonly urls: ClusterUrls | null;
  /** Records that could not be parsed (shown, never fatal). */
  readonly problems: readonly string[];
}

/** Who the status's connection strings connect as. */
export interface StatusUrlOptions {
  readonly user: string;
  readonly database: string;
  /** The members' CA file (`pgha status --ssl-ca`): the strings then carry `sslmode=verify-full`. */
  readonly sslRootCert?: string | null;
}

/** Reads the cluster's term, leader and member records from etcd. */
export async function readClusterStatus(
  etcd: Etcd3,
  cluster: string,
  keys: ClusterKeys,
  urlOptions: StatusUrlOptions = { user: 'postgres', database: 'postgres' },
): Promise<ClusterStatus> {
  const all = await etcd.getAll().prefix(keys.prefix).exec();
  const entries = all.kvs.map((kv) => ({
    key: kv.key.toString(),
    value: kv.value.toString(),
    modRevision: kv.mod_revision,
  }));
  return clusterStatusOf(cluster, readClusterRecords(keys, entries), urlOptions);
}

/**
 * The status of `cluster` from one read of its records. Pure; never throws: records
 * that did not parse are in `problems` (shown, never fatal).
 */
export function clusterStatusOf(
  cluster: string,
  records: ClusterRecords,
  urlOptions: StatusUrlOptions = { user: 'postgres', database: 'postgres' },
): ClusterStatus {
  const { term, target, config, sync } = records;
  const r = records.leader;
  const leader: ClusterStatus['leader'] =
    r === null ? null : { member: r.member, host: r.host, port: r.port, writable: r.writable };
  const controller: ClusterStatus['controller'] =
    records.controller === null ? null : { id: records.controller.id, waiting: records.controller.waiting ?? null };
  const members: MemberStatus[] = records.members.map((m) => ({
    name: m.name,
    role: m.role,
    state: m.state,
    host: m.host,
    port: m.port,
    timeline: m.timeline,
    lagBytes: m.lagBytes,
    lagSeconds: m.lagSeconds,
    streaming: m.streaming,
    healthy: m.healthy,
    problem: m.problem,
    updatedAt: m.updatedAt,
    api: m.api ?? null,
    pendingRestart: m.pendingRestart ?? [],
  }));
  members.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
  const pending = target !== null && target.term > term ? target : null;
  const inProgress = leader === null || !leader.writable || pending !== null;
  return {
    cluster,
    term,
    leader,
    members,
    failover: {
      inProgress,
      target: pending === null ? null : { member: pending.member, term: pending.term, reason: pending.reason },
    },
    controller,
    config: configSection(config),
    synchronous: synchronousStatus(config, sync, term),
    urls: members.length === 0 ? null : clusterUrls({ ...urlOptions, members }),
    problems: records.problems.map((p) => p.message),
  };
}

/** The `config` section of the status: the stored record's version and main settings. */
function configSection(r: ConfigRecord | null): ClusterStatus['config'] {
  return r === null
    ? null
    : {
        version: r.version,
        synchronousMode: r.synchronousMode,
        synchronousCount: r.synchronousCount,
        synchronousStrict: r.synchronousStrict,
        maximumLagOnFailoverBytes: r.maximumLagOnFailoverBytes,
        failsafeMode: r.failsafeMode ?? false,
        updatedAt: r.updatedAt,
        updatedBy: r.updatedBy,
      };
}

function synchronousStatus(
  config: ConfigRecord | null,
  sync: SyncRecord | null,
  term: number,
): ClusterStatus['synchronous'] {
  const mode = config?.synchronousMode ?? 'off';
  const count = config?.synchronousCount ?? 1;
  const strict = config?.synchronousStrict ?? false;
  const current = sync !== null && sync.term === term && sync.quorum > 0 ? sync : null;
  const claim = current === null ? null : { standbys: current.standbys, quorum: current.quorum, term: current.term };
  let degraded: string | null = null;
  if (mode === 'quorum' && (claim === null || claim.quorum < count)) {
    degraded =
      claim === null
        ? `no standby confirms commits: ${strict ? 'strict mode, commits wait' : 'asynchronous until one streams'}`
        : `only ${claim.quorum} of the ${count} standbys required confirm commits`;
  }
  return { mode, count, strict, claim, degraded };
}

/** A human-readable table of a status; an API column only when some member serves one. Pure. */
export function formatStatus(status: ClusterStatus): string {
  return formatStatusRaw(printableDeep(status));
}

/** `value` with every string in it made {@link printable}. */
function printableDeep<T>(value: T): T {
  if (typeof value === 'string') return printable(value) as T;
  if (Array.isArray(value)) return value.map(printableDeep) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, printableDeep(v)])) as T;
  }
  return value;
}

function formatStatusRaw(status: ClusterStatus): string {
  const withApi = status.members.some((m) => m.api !== null);
  const header = ['MEMBER', 'ROLE', 'STATE', 'HOST:PORT', 'TL', 'LAG', ...(withApi ? ['API'] : []), 'HEALTH'];
  const rows = status.members.map((m) => [
    `${m.name}${status.leader?.member === m.name ? ' *' : ''}`,
    m.role,
    m.state,
    `${m.host}:${m.port}`,
    m.timeline === null ? '-' : String(m.timeline),
    m.lagBytes === null ? '-' : `${formatBytes(m.lagBytes)}${m.lagSeconds ? ` / ${m.lagSeconds}s` : ''}`,
    ...(withApi ? [m.api ?? '-'] : []),
    `${m.healthy ? 'ok' : (m.problem ?? 'unhealthy')}${m.pendingRestart.length > 0 ? ` (pending restart: ${m.pendingRestart.join(', ')})` : ''}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  const leader =
    status.leader === null
      ? 'none'
      : `${status.leader.member} (${status.leader.host}:${status.leader.port}${status.leader.writable ? '' : ', not writable yet'})`;
  // The stored settings' version, when settings are stored (else each process uses
  // its flags, and `pgha config show` says so); an asynchronous cluster says so here,
  // a synchronous one on its own line below (with the primary's claim).
  const c = status.config;
  const settings =
    c === null
      ? ''
      : `${c.synchronousMode === 'off' ? '  synchronous off' : ''}  failsafe: ${c.failsafeMode ? 'on' : 'off'}  settings v${c.version}`;
  const out = [`Cluster ${status.cluster}  term ${status.term}  leader ${leader}${settings}`];
  if (status.failover.inProgress) {
    const t = status.failover.target;
    out.push(`FAILOVER IN PROGRESS${t === null ? '' : `: ${t.reason} to ${t.member} for term ${t.term}`}`);
    if (status.controller === null)
      out.push('no active controller: nothing elects a primary (is `pgha controller` running?)');
  }
  const waiting = status.controller?.waiting ?? null;
  if (waiting !== null) out.push(`ELECTION WAITING since ${waiting.since}: ${waiting.reason}`);
  const sync = status.synchronous;
  if (sync.mode !== 'off') {
    const claim =
      sync.claim === null
        ? 'no standby holds every commit'
        : `ANY ${sync.claim.quorum} of ${sync.claim.standbys.join(', ')}`;
    out.push(
      `synchronous ${sync.mode} ${sync.count}${sync.strict ? ' strict' : ''}: ${claim}${sync.degraded === null ? '' : ` — DEGRADED: ${sync.degraded}`}`,
    );
  }
  out.push('', line(header), ...rows.map(line));
  if (status.members.length === 0) out.push('(no member reports: are the agents running?)');
  if (status.urls !== null) {
    out.push(
      '',
      `read-write:  ${status.urls.readWrite}`,
      `read-only:   ${status.urls.readOnly}`,
      `JDBC:        ${status.urls.jdbcReadWrite}`,
    );
  }
  for (const p of status.problems) out.push(`! ${p}`);
  return `${out.join('\n')}\n`;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
