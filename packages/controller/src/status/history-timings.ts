import type { HistoryRecord } from '@pgha/core';
import { printable } from './printable.js';

/**
 * The intervals of one promotion, from its history record. Pure.
 *
 * - detected → decided: the controller's reaction (both on the controller's clock):
 *   from seeing the request (switchover, manual failover) or the leader record gone
 *   (failover) to writing the target.
 * - decided → promoted: the handover (the old primary's step-down, for a switchover)
 *   and the new primary's agent taking the leader record; `promotedAt` is on the
 *   agent's clock, so clocks that disagree show here.
 * - total: from detected to the controller seeing the new primary writable
 *   (`writableAt`, the controller's clock); records without `writableAt` (earlier
 *   versions) count to `promotedAt` instead.
 *
 * A negative interval (clocks of two processes or hosts that disagree, or records
 * of earlier versions whose detectedAt came after the decision) is reported as 0 and
 * named in `clamped`, never shown negative.
 */
export interface HistoryTimings {
  readonly detectedToDecidedMillis: number | null;
  readonly decidedToPromotedMillis: number | null;
  readonly totalMillis: number | null;
  /** Which intervals were negative and are shown as 0. */
  readonly clamped: readonly HistoryInterval[];
}

export const historyIntervals = ['detectedToDecided', 'decidedToPromoted', 'total'] as const;
export type HistoryInterval = (typeof historyIntervals)[number];

function interval(from: string | null | undefined, to: string | null | undefined): number | null {
  if (from == null || to == null) return null;
  const a = Date.parse(from);
  const b = Date.parse(to);
  return Number.isNaN(a) || Number.isNaN(b) ? null : b - a;
}

/** The intervals of `h`'s promotion, never negative. Pure. */
export function historyTimings(h: HistoryRecord): HistoryTimings {
  const raw: Record<HistoryInterval, number | null> = {
    detectedToDecided: interval(h.detectedAt, h.decidedAt),
    decidedToPromoted: interval(h.decidedAt, h.promotedAt),
    total: interval(h.detectedAt, h.writableAt ?? h.promotedAt),
  };
  const clamped = historyIntervals.filter((k) => raw[k] !== null && raw[k] < 0);
  const value = (k: HistoryInterval) => (raw[k] === null ? null : Math.max(0, raw[k]));
  return {
    detectedToDecidedMillis: value('detectedToDecided'),
    decidedToPromotedMillis: value('decidedToPromoted'),
    totalMillis: value('total'),
    clamped,
  };
}

/** A history record with its computed timings: what `pgha history --json` prints per promotion. */
export type HistoryWithTimings = HistoryRecord & { readonly timings: HistoryTimings };

/** Each record with its timings, by term. Pure. */
export function withTimings(records: readonly HistoryRecord[]): HistoryWithTimings[] {
  return [...records].sort((a, b) => a.term - b.term).map((h) => ({ ...h, timings: historyTimings(h) }));
}

function seconds(ms: number | null, clamped: boolean): string {
  if (ms === null) return '-';
  return `${(ms / 1000).toFixed(2)}s${clamped ? '?' : ''}`;
}

/** The `pgha history` table (control characters escaped, as in `pgha status`), with a note under it when an interval was clamped. Pure. */
export function formatHistory(records: readonly HistoryRecord[]): string {
  if (records.length === 0) return 'no promotions recorded yet\n';
  const rows = withTimings(records).map((h) => {
    const t = h.timings;
    return [
      String(h.term),
      String(h.timeline),
      h.oldPrimary ?? '-',
      h.newPrimary,
      h.reason,
      h.promotedAt,
      seconds(t.detectedToDecidedMillis, t.clamped.includes('detectedToDecided')),
      seconds(t.decidedToPromotedMillis, t.clamped.includes('decidedToPromoted')),
      seconds(t.totalMillis, t.clamped.includes('total')),
      h.lostBytes == null ? '-' : `${h.lostBytes} B`,
      // Whoever can write to etcd writes these fields: no escape sequence reaches the terminal.
    ].map(printable);
  });
  const header = [
    'TERM',
    'TL',
    'OLD',
    'NEW',
    'REASON',
    'PROMOTED AT',
    'DETECTED→DECIDED',
    'DECIDED→PROMOTED',
    'TOTAL',
    'POSSIBLY LOST',
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const lines = [header, ...rows].map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd(),
  );
  if (rows.some((r) => r.some((c) => c.endsWith('s?')))) {
    lines.push(
      '',
      '?: the timestamps gave a negative interval, shown as 0 (clocks of different processes or hosts disagree, or a record written by an earlier pgha); see `pgha history --json` for the raw times',
    );
  }
  lines.push(
    '',
    'DETECTED: the controller saw the request (switchover) or the leader gone (failover); TOTAL: detected to the new primary writable',
  );
  return `${lines.join('\n')}\n`;
}
