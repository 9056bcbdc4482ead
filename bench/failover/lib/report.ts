// Pure formatting of trial results: per-trial lines, min/median/max, and ratios of
// pgha to the baseline. No I/O.
import type { Fault } from './target.js';
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

const fmt = (v: number, unit: 's' | '') => (unit === 's' ? v.toFixed(2) : String(Math.round(v)));

/** One line per trial. */
export function formatTrial(r: TrialResult): string {
  const head = `${r.system}/${r.profile} ${r.fault} #${r.trial}: ${r.oldPrimary} -> ${r.newPrimary ?? '?'}`;
  if (r.error !== undefined) return `${head}: FAILED: ${r.error}`;
  const parts = metrics.map(({ key, label, unit }) => {
    const v = r[key];
    return `${label} ${v === null ? '-' : fmt(v, unit) + unit}`;
  });
  return `${head}: ${parts.join(', ')} (${r.acked} acked)`;
}

/** Groups results by system/profile/fault, in first-seen order. */
export function groups(results: readonly TrialResult[]): Map<string, TrialResult[]> {
  const map = new Map<string, TrialResult[]>();
  for (const r of results) {
    const key = `${r.system}/${r.profile}|${r.fault}`;
    map.set(key, [...(map.get(key) ?? []), r]);
  }
  return map;
}

/** A Markdown table: one row per system/profile and fault, min / median / max per metric. */
export function formatSummary(results: readonly TrialResult[]): string {
  const header = `| system/profile | fault | ok/trials | primary moved | ${metrics.map((m) => `${m.label}${m.unit ? ` (${m.unit})` : ''} min / med / max`).join(' | ')} |`;
  const rule = `|${' --- |'.repeat(4 + metrics.length)}`;
  const rows = [...groups(results)].map(([key, rs]) => {
    const [sp, fault] = key.split('|');
    const ok = rs.filter((r) => r.error === undefined);
    const cells = metrics.map(({ key: k, unit }) => {
      const s = summarize(ok.map((r) => r[k]));
      return s === null ? '-' : `${fmt(s.min, unit)} / ${fmt(s.median, unit)} / ${fmt(s.max, unit)}`;
    });
    const moved = ok.filter((r) => r.newPrimary !== null && r.newPrimary !== r.oldPrimary).length;
    return `| ${sp} | ${fault} | ${ok.length}/${rs.length} | ${moved}/${ok.length} | ${cells.join(' | ')} |`;
  });
  return [header, rule, ...rows].join('\n');
}

/**
 * Ratios pgha / baseline of the medians of the timing metrics, per fault and per
 * baseline profile, when both systems ran. Below 1 means pgha is faster.
 */
export function formatRatios(results: readonly TrialResult[], system = 'pgha', baseline = 'patroni'): string | null {
  const ok = results.filter((r) => r.error === undefined);
  const profilesOf = (s: string) => [...new Set(ok.filter((r) => r.system === s).map((r) => r.profile))];
  const ours = profilesOf(system);
  const theirs = profilesOf(baseline);
  if (ours.length === 0 || theirs.length === 0) return null;
  const timing = metrics.filter((m) => m.unit === 's');
  const lines = [
    `| fault | ${system} vs ${baseline} | ${timing.map((m) => `${m.label} ratio`).join(' | ')} |`,
    `|${' --- |'.repeat(2 + timing.length)}`,
  ];
  const faultsRun = [...new Set(ok.map((r) => r.fault))] as Fault[];
  for (const fault of faultsRun) {
    for (const p of ours) {
      for (const q of theirs) {
        const median = (s: string, prof: string, k: Metric) =>
          summarize(ok.filter((r) => r.system === s && r.profile === prof && r.fault === fault).map((r) => r[k]))
            ?.median;
        const cells = timing.map(({ key }) => {
          const a = median(system, p, key);
          const b = median(baseline, q, key);
          return a === undefined || b === undefined || b === 0
            ? '-'
            : `${(a / b).toFixed(2)}x (${a.toFixed(2)} / ${b.toFixed(2)})`;
        });
        lines.push(`| ${fault} | ${p} vs ${q} | ${cells.join(' | ')} |`);
      }
    }
  }
  return lines.join('\n');
}
