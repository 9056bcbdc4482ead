import type { HistoryRecord } from '@pgha/core';
import { type ClusterStatus, formatStatus } from './cluster-status.js';
import { historyTimings } from './history-timings.js';

/**
 * `pgha status --watch`: what changed between two reads of the cluster, and the
 * screen and lines that show it. Pure; the shell (watch-status.ts) reads etcd.
 */

/** What one read of the cluster holds: the status and the history records. */
export interface WatchView {
  readonly status: ClusterStatus;
  readonly history: readonly HistoryRecord[];
}

/** Kinds of events the watch reports. */
export const watchEventTypes = [
  'term',
  'leader',
  'member-appeared',
  'member-disappeared',
  'role',
  'state',
  'health',
  'lag',
  'failover',
  'synchronous',
  'history',
  'etcd',
] as const;
export type WatchEventType = (typeof watchEventTypes)[number];

/** One event: when the watch saw it (its clock), what, and the member it concerns. */
export interface WatchEvent {
  readonly at: string;
  readonly type: WatchEventType;
  readonly member: string | null;
  readonly message: string;
}

/** What event derivation needs besides the two views. */
export interface WatchEventOptions {
  /** Wall-clock milliseconds of the read that produced `next`. */
  readonly now: number;
  /** A replica lagging more than this many bytes is an event (and back under it another). */
  readonly lagThresholdBytes: number;
}

function describeLeader(l: ClusterStatus['leader']): string {
  return l === null ? 'none' : `${l.member}${l.writable ? '' : ' (not writable yet)'}`;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * The events between `prev` and `next` (none for the first read, `prev` null), in a
 * fixed order: term, leader, failover, members (appeared, disappeared, role, state,
 * health, lag), synchronous state, new history records. Pure.
 */
export function deriveWatchEvents(prev: WatchView | null, next: WatchView, o: WatchEventOptions): WatchEvent[] {
  if (prev === null) return [];
  const at = new Date(o.now).toISOString();
  const events: WatchEvent[] = [];
  const push = (type: WatchEventType, member: string | null, message: string) =>
    events.push({ at, type, member, message });
  const a = prev.status;
  const b = next.status;

  if (a.term !== b.term) push('term', null, `term ${a.term} -> ${b.term}`);
  if (describeLeader(a.leader) !== describeLeader(b.leader)) {
    push(
      'leader',
      b.leader?.member ?? null,
      b.leader === null
        ? `no leader (was ${a.leader?.member})`
        : a.leader?.member === b.leader.member
          ? `leader ${b.leader.member} ${b.leader.writable ? 'writable' : 'not writable'}`
          : `leader ${describeLeader(a.leader)} -> ${describeLeader(b.leader)}`,
    );
  }
  const target = (s: ClusterStatus) => {
    const t = s.failover.target;
    return t === null ? '' : `${t.reason} to ${t.member} for term ${t.term}`;
  };
  if (a.failover.inProgress !== b.failover.inProgress || target(a) !== target(b)) {
    push(
      'failover',
      b.failover.target?.member ?? null,
      b.failover.inProgress
        ? target(b) === ''
          ? 'waiting for a writable leader'
          : `${target(b)} in progress`
        : 'a writable leader again, no failover or switchover pending',
    );
  }

  const before = new Map(a.members.map((m) => [m.name, m]));
  const after = new Map(b.members.map((m) => [m.name, m]));
  for (const m of b.members) {
    const p = before.get(m.name);
    if (p === undefined) {
      push('member-appeared', m.name, `${m.name} appeared: ${m.role}, ${m.state}`);
      continue;
    }
    if (p.role !== m.role) push('role', m.name, `${m.name} ${p.role} -> ${m.role}`);
    if (p.state !== m.state) push('state', m.name, `${m.name} ${p.state} -> ${m.state}`);
    if (p.healthy !== m.healthy)
      push(
        'health',
        m.name,
        `${m.name} ${m.healthy ? 'healthy again' : `unhealthy: ${m.problem ?? 'no reason given'}`}`,
      );
    const wasOver = p.lagBytes !== null && p.lagBytes > o.lagThresholdBytes;
    const isOver = m.lagBytes !== null && m.lagBytes > o.lagThresholdBytes;
    if (wasOver !== isOver) {
      push(
        'lag',
        m.name,
        isOver
          ? `${m.name} lags ${formatBytes(m.lagBytes!)}${m.lagSeconds ? ` / ${m.lagSeconds}s` : ''}, over ${formatBytes(o.lagThresholdBytes)}`
          : `${m.name} lag back under ${formatBytes(o.lagThresholdBytes)}${m.lagBytes === null ? '' : ` (${formatBytes(m.lagBytes)})`}`,
      );
    }
  }
  for (const m of a.members) if (!after.has(m.name)) push('member-disappeared', m.name, `${m.name} disappeared`);

  const sync = (s: ClusterStatus) =>
    s.synchronous.mode === 'off'
      ? 'off'
      : `${s.synchronous.claim === null ? 'no standby' : `ANY ${s.synchronous.claim.quorum} of ${s.synchronous.claim.standbys.join(', ')}`}${s.synchronous.degraded === null ? '' : ` (DEGRADED: ${s.synchronous.degraded})`}`;
  if (sync(a) !== sync(b)) push('synchronous', null, `synchronous: ${sync(b)}`);

  const seen = new Set(prev.history.map((h) => h.term));
  for (const h of [...next.history].sort((x, y) => x.term - y.term)) {
    if (seen.has(h.term)) continue;
    const t = historyTimings(h);
    const total = t.totalMillis === null ? '' : `, ${(t.totalMillis / 1000).toFixed(2)}s detected to writable`;
    push(
      'history',
      h.newPrimary,
      `history: term ${h.term} ${h.oldPrimary ?? '-'} -> ${h.newPrimary} (${h.reason}${total}${h.lostBytes ? `, ${h.lostBytes} B possibly lost` : ''})`,
    );
  }
  return events;
}

/** The event of etcd becoming unreachable (`error` set) or reachable again. Pure. */
export function etcdEvent(now: number, error: string | null, since: number | null): WatchEvent {
  const at = new Date(now).toISOString();
  return error === null
    ? {
        at,
        type: 'etcd',
        member: null,
        message: `etcd reachable again${since === null ? '' : ` after ${((now - since) / 1000).toFixed(1)}s`}`,
      }
    : { at, type: 'etcd', member: null, message: `etcd unreachable: ${error}` };
}

/** One line of an event: its time and message. Pure. */
export function formatEvent(e: WatchEvent): string {
  return `${e.at}  ${e.message}`;
}

/** What the screen shows besides the view. */
export interface WatchScreen {
  readonly view: WatchView | null;
  /** The most recent events, oldest first (the screen shows the last ten). */
  readonly events: readonly WatchEvent[];
  readonly now: number;
  readonly etcd: string;
  /** Since when etcd has not answered (null while it does), and its last error. */
  readonly unreachable: { readonly since: number; readonly error: string } | null;
}

/** How many recent events the screen keeps. */
export const recentEventCount = 10;

/**
 * The whole terminal screen of `--watch` (redrawn in place on a TTY): the status as
 * `pgha status` prints it, the recent events, and a footer. Pure.
 */
export function formatWatchScreen(s: WatchScreen): string {
  const out: string[] = [];
  if (s.unreachable !== null) {
    out.push(
      `etcd unreachable since ${new Date(s.unreachable.since).toISOString()} (${s.unreachable.error}); ${s.view === null ? 'nothing read yet' : 'showing the last state read'}`,
      '',
    );
  }
  if (s.view !== null) out.push(formatStatus(s.view.status).trimEnd());
  out.push('', 'Recent events:');
  const recent = s.events.slice(-recentEventCount);
  if (recent.length === 0) out.push('  (none since the watch started)');
  for (const e of recent) out.push(`  ${formatEvent(e)}`);
  out.push('', `${new Date(s.now).toISOString()}  watching ${s.etcd}; Ctrl-C to exit`);
  return `${out.join('\n')}\n`;
}
