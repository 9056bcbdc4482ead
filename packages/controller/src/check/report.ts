/**
 * `pgha check`'s report: the JSON document (`--json`) and the summary table printed at
 * the end. Pure: built from what the run recorded and the analysis.
 */
import type { AckEntry, Analysis, FaultEntry, HistoryEntry, TermChange } from './analysis.js';
import type { CheckSettings, FaultKind } from './settings.js';
import type { WriteFailure } from './workload.js';

/** What the runner knows of each injection beyond the analysis's figures. */
export interface FaultRun {
  readonly detail: string;
  readonly injectError: string | null;
}

/** Per fault kind. */
export interface KindFigures {
  readonly faults: number;
  readonly recovered: number;
  readonly recoveryMillis: { readonly median: number | null; readonly max: number | null };
  readonly unavailableMillis: { readonly median: number | null; readonly max: number | null };
  readonly termChanges: number;
  readonly lostAcked: number;
  readonly lostBytes: number;
  readonly supersededAcks: number;
}

/** The `--json` document. */
export interface CheckReport {
  readonly tool: 'pgha check';
  readonly passed: boolean;
  readonly seed: number;
  readonly settings: CheckSettings & { readonly etcd: string | null };
  readonly versions: Readonly<Record<string, string>>;
  readonly stateDir: string;
  readonly startedAt: string;
  readonly durationMillis: number;
  readonly finalPrimary: string;
  readonly table: string;
  readonly unavailableKinds: ReadonlyArray<{ readonly kind: FaultKind; readonly reason: string }>;
  readonly totals: {
    readonly acked: number;
    readonly poolAcked: number;
    readonly directAcked: number;
    /** Acknowledged writes per second over the writers' whole run (compare with `settings.rate`). */
    readonly ackedPerSecond: number;
    readonly lostAcked: number;
    readonly supersededAcks: number;
    readonly falseFailovers: number;
    readonly termChanges: number;
    /** Failed writes by source and type (`pool: no-primary`, `direct: 25006 read-only`). */
    readonly failures: Readonly<Record<string, number>>;
  };
  readonly perKind: Readonly<Record<string, KindFigures>>;
  readonly faults: ReadonlyArray<Analysis['faults'][number] & FaultRun & { readonly injectedAtMillis: number }>;
  readonly violations: Analysis['violations'];
  readonly unrecovered: readonly number[];
  readonly falseFailovers: Analysis['falseFailovers'];
  readonly lostAcked: Analysis['lostAcked'];
  readonly supersededAcks: Analysis['supersededAcks'];
  /** Term changes. Every time in the report (`at`, `ackAt`, `sentAt`, `injectedAtMillis`) is in milliseconds from the start of the faults. */
  readonly termChanges: readonly TermChange[];
  readonly history: readonly HistoryEntry[];
}

/** What {@link buildReport} reads. */
export interface ReportInput {
  readonly settings: CheckSettings;
  readonly etcd: string | null;
  readonly stateDir: string;
  readonly startedAt: Date;
  readonly durationMillis: number;
  readonly unavailable: ReadonlyMap<FaultKind, string>;
  readonly runs: readonly FaultRun[];
  readonly faults: readonly FaultEntry[];
  readonly analysis: Analysis;
  readonly acks: readonly AckEntry[];
  readonly failures: readonly WriteFailure[];
  readonly termChanges: readonly TermChange[];
  readonly history: readonly HistoryEntry[];
  /** Monotonic time every reported time is counted from (the start of the faults). */
  readonly timeBase: number;
  readonly finalPrimary: string;
  readonly table: string;
  readonly versions: Readonly<Record<string, string>>;
}

function stats(values: readonly number[]): { median: number | null; max: number | null } {
  if (values.length === 0) return { median: null, max: null };
  const sorted = [...values].sort((a, b) => a - b);
  return { median: Math.round(sorted[Math.floor(sorted.length / 2)]!), max: Math.round(sorted.at(-1)!) };
}

/** Builds the JSON document. */
export function buildReport(input: ReportInput): CheckReport {
  const a = input.analysis;
  const perKind: Record<string, KindFigures> = {};
  for (const kind of new Set(a.faults.map((f) => f.kind))) {
    const of = a.faults.filter((f) => f.kind === kind);
    perKind[kind] = {
      faults: of.length,
      recovered: of.filter((f) => f.recovered).length,
      recoveryMillis: stats(of.flatMap((f) => (f.recoveryMillis === null ? [] : [f.recoveryMillis]))),
      unavailableMillis: stats(of.map((f) => f.unavailableMillis)),
      termChanges: of.reduce((n, f) => n + f.newPrimaries.length, 0),
      lostAcked: of.reduce((n, f) => n + f.lostAcked, 0),
      lostBytes: of.reduce((n, f) => n + (f.lostBytes ?? 0), 0),
      supersededAcks: of.reduce((n, f) => n + f.supersededAcks, 0),
    };
  }
  const failures: Record<string, number> = {};
  for (const f of input.failures) {
    const key = `${f.source}: ${f.type}`;
    failures[key] = (failures[key] ?? 0) + 1;
  }
  const base = input.timeBase;
  const ms = (at: number) => Math.round(at - base);
  // A loop, not Math.max(...): a long run holds more acknowledgements than a call's arguments may.
  let low = Number.POSITIVE_INFINITY;
  let high = Number.NEGATIVE_INFINITY;
  for (const x of input.acks) {
    low = Math.min(low, x.ackAt);
    high = Math.max(high, x.ackAt);
  }
  const span = input.acks.length < 2 ? 0 : high - low;
  return {
    tool: 'pgha check',
    passed: a.passed,
    seed: input.settings.seed,
    settings: { ...input.settings, etcd: input.etcd },
    versions: input.versions,
    stateDir: input.stateDir,
    startedAt: input.startedAt.toISOString(),
    durationMillis: Math.round(input.durationMillis),
    finalPrimary: input.finalPrimary,
    table: input.table,
    unavailableKinds: [...input.unavailable].map(([kind, reason]) => ({ kind, reason })),
    totals: {
      acked: a.acked,
      poolAcked: input.acks.filter((x) => x.source === 'pool').length,
      directAcked: input.acks.filter((x) => x.source === 'direct').length,
      ackedPerSecond: span === 0 ? 0 : Math.round((input.acks.length * 10_000) / span) / 10,
      lostAcked: a.lostAcked.length,
      supersededAcks: a.supersededAcks.length,
      falseFailovers: a.falseFailovers.length,
      termChanges: input.termChanges.length,
      failures,
    },
    perKind,
    faults: a.faults.map((f, i) => ({
      ...f,
      ...input.runs[i]!,
      injectedAtMillis: ms(input.faults[i]!.injectedAt),
      unavailableMillis: Math.round(f.unavailableMillis),
      recoveryMillis: f.recoveryMillis === null ? null : Math.round(f.recoveryMillis),
    })),
    violations: a.violations,
    unrecovered: a.unrecovered,
    falseFailovers: a.falseFailovers.map((f) => ({ ...f, at: ms(f.at) })),
    lostAcked: a.lostAcked.map((l) => ({ ...l, ackAt: ms(l.ackAt) })),
    supersededAcks: a.supersededAcks.map((x) => ({
      ...x,
      sentAt: ms(x.sentAt),
      ackAt: ms(x.ackAt),
      supersededAt: ms(x.supersededAt),
    })),
    termChanges: input.termChanges.map((t) => ({ ...t, at: ms(t.at) })),
    history: input.history,
  };
}

const seconds = (millis: number | null) => (millis === null ? '-' : (millis / 1000).toFixed(2));

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '))
    .join('\n');
}

/** The summary printed at the end: a table per fault kind, the totals and the verdict. */
export function formatSummary(report: CheckReport): string {
  const mode = report.settings.synchronousMode;
  const rows: string[][] = [
    [
      'fault kind',
      'faults',
      'recovered',
      'recovery s (med/max)',
      'unavail s (med/max)',
      'new terms',
      'lost acked',
      'lost bytes',
      'superseded',
    ],
  ];
  for (const [kind, k] of Object.entries(report.perKind)) {
    rows.push([
      kind,
      String(k.faults),
      String(k.recovered),
      `${seconds(k.recoveryMillis.median)}/${seconds(k.recoveryMillis.max)}`,
      `${seconds(k.unavailableMillis.median)}/${seconds(k.unavailableMillis.max)}`,
      String(k.termChanges),
      String(k.lostAcked),
      String(k.lostBytes),
      String(k.supersededAcks),
    ]);
  }
  const t = report.totals;
  const lines = [
    '',
    table(rows),
    '',
    `writes acknowledged: ${t.acked} (Pool ${t.poolAcked}, direct ${t.directAcked}; ${t.ackedPerSecond}/s of ${report.settings.rate}/s asked); lost: ${t.lostAcked}; superseded acknowledgements: ${t.supersededAcks}; false failovers: ${t.falseFailovers}; term changes: ${t.termChanges}`,
    `failed writes: ${
      Object.entries(t.failures)
        .sort((x, y) => y[1] - x[1])
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'none'
    }`,
    ...report.unavailableKinds.map((u) => `not run: ${u.kind} (${u.reason})`),
    `mode ${mode}${mode === 'quorum' ? ` (count ${report.settings.synchronousCount}${report.settings.synchronousStrict ? ', strict' : ''})` : ''}; lease ${report.settings.leaseTtlMillis} ms, keepalive ${report.settings.keepaliveIntervalMillis} ms, fencing margin ${report.settings.fencingMarginMillis} ms${report.settings.etcdElectionTimeoutMillis !== null ? `, etcd election ${report.settings.etcdElectionTimeoutMillis} ms` : ''}${report.settings.etcdHeartbeatMillis !== null ? `, etcd heartbeat ${report.settings.etcdHeartbeatMillis} ms` : ''}; CPU hog: ${report.settings.cpuHog === 0 ? 'none' : `${report.settings.cpuHog} processes`}; seed ${report.seed} (repeat with --seed ${report.seed}); versions: ${Object.entries(
      report.versions,
    )
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  ];
  for (const v of report.violations.slice(0, 20))
    lines.push(`VIOLATION (${v.kind}, fault ${v.fault === null || v.fault < 0 ? '-' : v.fault + 1}): ${v.detail}`);
  if (report.violations.length > 20)
    lines.push(`... and ${report.violations.length - 20} more violations (see --json)`);
  for (const i of report.unrecovered) {
    const f = report.faults[i]!;
    lines.push(`NOT RECOVERED: fault ${i + 1} ${f.kind} on ${f.target}`);
  }
  for (const f of report.falseFailovers)
    lines.push(`false failover: term ${f.term} (${f.member}) began while no fault was in progress`);
  lines.push(
    report.passed
      ? `PASSED: ${report.faults.length} faults, no violation of the ${mode === 'quorum' ? 'quorum' : 'asynchronous'} contract${mode === 'off' && t.lostAcked > 0 ? ` (${t.lostAcked} acknowledged writes lost: the asynchronous loss window, reported, not a violation)` : ''}`
      : `FAILED: ${report.violations.length} violation(s), ${report.unrecovered.length} fault(s) not recovered`,
    '',
  );
  return lines.join('\n');
}
