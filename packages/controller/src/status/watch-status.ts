import { type ClusterKeys, HistoryRecord } from '@pgha/core';
import type { Etcd3, Watcher } from 'etcd3';
import { castEtcdError, createEtcdClient, type EtcdConnection } from '../adapters/etcd.js';
import { formatStatus, readClusterStatus, type StatusUrlOptions } from './cluster-status.js';
import {
  deriveWatchEvents,
  etcdEvent,
  formatEvent,
  formatWatchScreen,
  recentEventCount,
  type WatchEvent,
  type WatchView,
} from './watch-events.js';

/** Options of {@link watchStatus}. */
export interface WatchStatusOptions {
  readonly etcd: string;
  /** TLS and authentication for `etcd` (default: none). */
  readonly connection?: EtcdConnection;
  readonly cluster: string;
  readonly keys: ClusterKeys;
  /** One JSON object per change (NDJSON) instead of a screen or lines. */
  readonly json: boolean;
  readonly urlOptions: StatusUrlOptions;
  readonly lagThresholdBytes: number;
  /** Re-read at least this often without a watch event. Default 1000 ms. */
  readonly refreshMillis?: number;
}

/**
 * One line of `pgha status --watch --json`: the events of this change (empty in the
 * first line), the status as read (the last one read while etcd is unreachable; null
 * before the first read) and whether etcd answers.
 */
export interface WatchFrame {
  readonly at: string;
  readonly events: readonly WatchEvent[];
  readonly status: WatchView['status'] | null;
  readonly etcd: { readonly reachable: boolean; readonly since: string | null; readonly error: string | null };
}

async function readView(etcd: Etcd3, o: WatchStatusOptions): Promise<WatchView> {
  const status = await readClusterStatus(etcd, o.cluster, o.keys, o.urlOptions);
  const texts = await etcd.getAll().prefix(o.keys.historyPrefix).strings();
  const history: HistoryRecord[] = [];
  for (const text of Object.values(texts)) {
    try {
      history.push(HistoryRecord.decode(text));
    } catch {
      // A malformed record is `pgha history`'s to report; the watch shows the rest.
    }
  }
  return { status, history };
}

/**
 * `pgha status --watch`: reads the cluster on every etcd watch event and at least
 * every second, until SIGINT or SIGTERM (then resolves). On a TTY it redraws the
 * screen in place; otherwise it prints the status once and then one line per event;
 * with `json` one {@link WatchFrame} per change. etcd not answering is shown ("etcd
 * unreachable since ...") and retried, never fatal.
 */
export async function watchStatus(o: WatchStatusOptions): Promise<void> {
  const out = process.stdout;
  const tty = out.isTTY === true && !o.json;
  const refresh = o.refreshMillis ?? 1000;
  // Calls give up after 2 s, and a watch stream comes back within 1 s of etcd.
  const etcd = createEtcdClient(o.connection ?? { endpoints: o.etcd }, 2000, { maxWatchBackoffMillis: 1000 });
  let stopping = false;
  let wake: (() => void) | null = null;
  // A change seen while a read is under way: read again at once.
  let pending = false;
  const poke = () => {
    pending = true;
    wake?.();
  };
  let watcher: Watcher | null = null;
  // In the background: the watch connects whenever etcd answers; the loop polls meanwhile.
  void etcd
    .watch()
    .prefix(o.keys.prefix)
    .create()
    .then((w) => {
      watcher = w;
      w.on('put', poke);
      w.on('delete', poke);
      w.on('error', () => undefined);
      if (stopping) void w.cancel().catch(() => undefined);
    })
    .catch(() => undefined);
  const onSignal = () => {
    stopping = true;
    poke();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let view: WatchView | null = null;
  let unreachable: { since: number; error: string } | null = null;
  const recent: WatchEvent[] = [];
  const frame = (now: number, events: readonly WatchEvent[]): WatchFrame => ({
    at: new Date(now).toISOString(),
    events,
    status: view?.status ?? null,
    etcd: {
      reachable: unreachable === null,
      since: unreachable === null ? null : new Date(unreachable.since).toISOString(),
      error: unreachable?.error ?? null,
    },
  });
  let first = true;
  try {
    while (!stopping) {
      pending = false;
      const now = Date.now();
      let events: WatchEvent[] = [];
      try {
        const next = await readView(etcd, o);
        if (unreachable !== null) events.push(etcdEvent(now, null, unreachable.since));
        unreachable = null;
        events = [...events, ...deriveWatchEvents(view, next, { now, lagThresholdBytes: o.lagThresholdBytes })];
        view = next;
      } catch (error) {
        const message = castEtcdError(error, o.etcd, 'reading the cluster').message;
        if (unreachable === null) {
          unreachable = { since: now, error: message };
          events.push(etcdEvent(now, message, null));
        } else unreachable.error = message;
      }
      recent.push(...events);
      recent.splice(0, Math.max(0, recent.length - recentEventCount));
      if (tty) {
        // Home, clear to the end, draw: the screen is replaced in place.
        out.write(`\x1b[H\x1b[J${formatWatchScreen({ view, events: recent, now, etcd: o.etcd, unreachable })}`);
      } else if (o.json) {
        if (first || events.length > 0) out.write(`${JSON.stringify(frame(now, events))}\n`);
      } else {
        if (first && view !== null) out.write(formatStatus(view.status));
        for (const e of events) out.write(`${formatEvent(e)}\n`);
      }
      if (view !== null || unreachable !== null) first = false;
      if (stopping) break;
      if (pending) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, refresh);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = null;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const w = watcher as Watcher | null;
    if (w !== null) await Promise.race([w.cancel().catch(() => undefined), delayed(1000)]);
    etcd.close();
  }
}

function delayed(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
