// Pure formatting of trial results: per-trial lines, min/median/max, and ratios of
// pgha to the baseline. No I/O.
import type { Fault, Mode } from './target.js';
import type { TrialResult } from './trial.js';

export type Metric = 'toWrite' | 'pause' | 'lost' | 'lateOldAcks' | 'rejoin';
export const metrics: readonly { key: Metric; label: string; unit: 's' | '' }[] = [
  { key: 'toWrite', label: 'to first write', unit: 's' },
  { key: 'pause', label: 'write pause', unit: 's' },
  { key: 'lost', label: 'lost acked', unit: '' },
  { key: 'lateOldAcks', label: 'old-primary acks after new', unit: '' },
  { key: 'rejoin', label: 'rejoin', unit: 's' },
];

/** min, median and max of the non-null values, or null when there are none. */
export interface Summary {
  readonly min: number;
  readonly median: number;
  readonly max: number;
  readonly n: number;
}

export function summarize(values: readonly (number | null)[]): Summary | null {
  const xs = values.filter((v): v is number => v !== null).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = Math.floor(xs.length / 2);
  const median = xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2;
  return { min: xs[0]!, median, max: xs[xs.length - 1]!, n: xs.length };
}

/** The mode a result ran in; results saved before modes existed ran asynchronously. */
export const modeOf = (r: TrialResult): Mode => r.mode ?? 'async';

/**
 * The loud line for a trial that lost acknowledged writes in synchronous mode (which
 * must never happen), or null.
 */
export function syncLossAlarm(r: TrialResult): string | null {
  if (modeOf(r) !== 'sync' || r.lost === null || r.lost === 0) return null;
  return `!!! DATA LOSS IN SYNCHRONOUS MODE: ${r.lost} acknowledged write${r.lost === 1 ? '' : 's'} missing after ${r.system}/${r.profile} ${r.fault} #${r.trial} !!!`;
}

const fmt = (v: number, unit: 's' | '') => (unit === 's' ? v.toFixed(2) : String(Math.round(v)));

/** One line per trial. */
export function formatTrial(r: TrialResult): string {
  const head = `${r.system}/${r.profile} ${modeOf(r)} ${r.fault} #${r.trial}: ${r.oldPrimary} -> ${r.newPrimary ?? '?'}`;
  if (r.error !== undefined) return `${head}: FAILED: ${r.error}`;
  const parts = metrics.map(({ key, label, unit }) => {
    const v = r[key];
    return `${label} ${v === null ? '-' : fmt(v, unit) + unit}`;
  });
  const sync = r.syncStandbys === undefined || r.syncStandbys === null ? '' : `, ${r.syncStandbys} sync standbys`;
  const alarm = syncLossAlarm(r);
  return `${head}: ${parts.join(', ')} (${r.acked} acked${sync})${alarm === null ? '' : `\n${alarm}`}`;
}

/** Groups results by system/profile, mode and fault, in first-seen order. */
export function groups(results: readonly TrialResult[]): Map<string, TrialResult[]> {
  const map = new Map<string, TrialResult[]>();
  for (const r of results) {
    const key = `${r.system}/${r.profile}|${modeOf(r)}|${r.fault}`;
    map.set(key, [...(map.get(key) ?? []), r]);
  }
  return map;
}

/** A Markdown table: one row per system/profile, mode and fault, min / median / max per metric. */
export function formatSummary(results: readonly TrialResult[]): string {
  const header = `| system/profile | mode | fault | ok/trials | primary moved | ${metrics.map((m) => `${m.label}${m.unit ? ` (${m.unit})` : ''} min / med / max`).join(' | ')} |`;
  const rule = `|${' --- |'.repeat(5 + metrics.length)}`;
  const rows = [...groups(results)].map(([key, rs]) => {
    const [sp, mode, fault] = key.split('|');
    const ok = rs.filter((r) => r.error === undefined);
    const cells = metrics.map(({ key: k, unit }) => {
      const s = summarize(ok.map((r) => r[k]));
      return s === null ? '-' : `${fmt(s.min, unit)} / ${fmt(s.median, unit)} / ${fmt(s.max, unit)}`;
    });
    const moved = ok.filter((r) => r.newPrimary !== null && r.newPrimary !== r.oldPrimary).length;
    return `| ${sp} | ${mode} | ${fault} | ${ok.length}/${rs.length} | ${moved}/${ok.length} | ${cells.join(' | ')} |`;
  });
  return [header, rule, ...rows].join('\n');
}

const timing = metrics.filter((m) => m.unit === 's');

/** The median of `key` over the successful trials that `pick` selects, or undefined. */
function medianOf(ok: readonly TrialResult[], pick: (r: TrialResult) => boolean, key: Metric): number | undefined {
  return summarize(ok.filter(pick).map((r) => r[key]))?.median;
}

const ratioCell = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x (${a.toFixed(2)} / ${b.toFixed(2)})`;

/**
 * Ratios pgha / baseline of the medians of the timing metrics, per fault and mode and
 * per pair of profiles, when both systems ran (a mode is compared only with itself).
 * Below 1 means pgha is faster.
 */
export function formatRatios(results: readonly TrialResult[], system = 'pgha', baseline = 'patroni'): string | null {
  const ok = results.filter((r) => r.error === undefined);
  const profilesOf = (s: string) => [...new Set(ok.filter((r) => r.system === s).map((r) => r.profile))];
  const ours = profilesOf(system);
  const theirs = profilesOf(baseline);
  if (ours.length === 0 || theirs.length === 0) return null;
  const lines = [
    `| fault | mode | ${system} vs ${baseline} | ${timing.map((m) => `${m.label} ratio`).join(' | ')} |`,
    `|${' --- |'.repeat(3 + timing.length)}`,
  ];
  const faultsRun = [...new Set(ok.map((r) => r.fault))] as Fault[];
  const modesRun = [...new Set(ok.map(modeOf))];
  for (const fault of faultsRun) {
    for (const mode of modesRun) {
      for (const p of ours) {
        for (const q of theirs) {
          const of = (s: string, prof: string) => (r: TrialResult) =>
            r.system === s && r.profile === prof && r.fault === fault && modeOf(r) === mode;
          const a = (key: Metric) => medianOf(ok, of(system, p), key);
          const b = (key: Metric) => medianOf(ok, of(baseline, q), key);
          if (timing.every(({ key }) => a(key) === undefined || b(key) === undefined)) continue;
          const cells = timing.map(({ key }) => ratioCell(a(key), b(key)));
          lines.push(`| ${fault} | ${mode} | ${p} vs ${q} | ${cells.join(' | ')} |`);
        }
      }
    }
  }
  return lines.length > 2 ? lines.join('\n') : null;
}

/**
 * Ratios sync / async of the medians of the timing metrics, per system/profile and
 * fault, when both modes ran: what synchronous replication costs (or saves) in
 * failover time. Null when no system ran in both modes.
 */
export function formatModeRatios(results: readonly TrialResult[]): string | null {
  const ok = results.filter((r) => r.error === undefined);
  const lines = [
    `| system/profile | fault | ${timing.map((m) => `${m.label} sync / async`).join(' | ')} |`,
    `|${' --- |'.repeat(2 + timing.length)}`,
  ];
  const keys = [...new Set(ok.map((r) => `${r.system}/${r.profile}|${r.fault}`))];
  for (const key of keys) {
    const [sp, fault] = key.split('|');
    const of = (mode: Mode) => (r: TrialResult) =>
      `${r.system}/${r.profile}` === sp && r.fault === fault && modeOf(r) === mode;
    if (!ok.some(of('sync')) || !ok.some(of('async'))) continue;
    const cells = timing.map(({ key: k }) => ratioCell(medianOf(ok, of('sync'), k), medianOf(ok, of('async'), k)));
    lines.push(`| ${sp} | ${fault} | ${cells.join(' | ')} |`);
  }
  return lines.length > 2 ? lines.join('\n') : null;
}

/**
 * The data-loss verdict of the synchronous trials: one line saying none was lost, or
 * one loud line per trial that lost acknowledged writes. Null when no trial ran in
 * synchronous mode.
 */
export function formatSyncLoss(results: readonly TrialResult[]): { text: string; lost: boolean } | null {
  const sync = results.filter((r) => modeOf(r) === 'sync');
  if (sync.length === 0) return null;
  const alarms = sync.map(syncLossAlarm).filter((line): line is string => line !== null);
  const checked = sync.filter((r) => r.lost !== null);
  if (alarms.length > 0) return { text: alarms.join('\n'), lost: true };
  const unchecked = sync.length - checked.length;
  return {
    text: `Synchronous mode: no acknowledged write lost in ${checked.length} trial${checked.length === 1 ? '' : 's'}${unchecked > 0 ? ` (${unchecked} failed before the count)` : ''}.`,
    lost: false,
  };
}
