// Pure statistics of the synchronous-replication cost benchmark: pgbench's output
// and per-transaction logs in, throughput and latency percentiles out, and the
// report's tables. No I/O.

/** The replication mode of one measurement. */
export type CostMode = 'async' | 'sync';

/** What pgbench's own summary says about one run. */
export interface PgbenchSummary {
  /** `tps = … (without initial connection time)`. */
  readonly tps: number;
  /** `number of transactions actually processed: N`. */
  readonly transactions: number;
  /** `number of failed transactions: N` (0 when pgbench does not print it). */
  readonly failed: number;
}

/**
 * Reads pgbench's summary from its stdout; throws naming what is missing. A run in
 * which no transaction completed (its connections took the whole duration) has no
 * tps line: its tps is 0.
 */
export function parsePgbenchSummary(stdout: string): PgbenchSummary {
  const tps = /^tps = ([\d.]+) \(without initial connection time\)/m.exec(stdout);
  const processed = /^number of transactions actually processed: (\d+)/m.exec(stdout);
  const failed = /^number of failed transactions: (\d+)/m.exec(stdout);
  if (processed === null || (tps === null && processed[1] !== '0'))
    throw new Error(`pgbench printed no tps or transaction count; its output was:\n${stdout.slice(0, 2000)}`);
  return {
    tps: tps === null ? 0 : Number(tps[1]),
    transactions: Number(processed[1]),
    failed: failed === null ? 0 : Number(failed[1]),
  };
}

/**
 * Latencies in milliseconds from pgbench's per-transaction log (`-l`): one line per
 * transaction, `client_id transaction_no time script_no time_epoch time_us [...]`,
 * `time` in microseconds. Transactions logged as `failed`, `skipped` (or, with
 * `--failures-detailed`, `serialization` / `deadlock`) are counted apart, not as
 * latencies.
 */
export function parsePgbenchLog(text: string): { latenciesMillis: number[]; notCompleted: number } {
  const latenciesMillis: number[] = [];
  let notCompleted = 0;
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 6) continue;
    const time = fields[2]!;
    if (time === 'failed' || time === 'skipped' || time === 'serialization' || time === 'deadlock') {
      notCompleted++;
      continue;
    }
    const micros = Number(time);
    if (!Number.isFinite(micros)) throw new Error(`not a pgbench log line: ${line.slice(0, 120)}`);
    latenciesMillis.push(micros / 1000);
  }
  return { latenciesMillis, notCompleted };
}

/** The `p`-th percentile (0 < p ≤ 100) of ascending `sorted` values, nearest rank; null when empty. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  if (!(p > 0 && p <= 100)) throw new Error(`percentile must be in (0, 100], got ${p}`);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** The median of the values (mean of the middle two for an even count), or null when empty. */
export function median(values: readonly number[]): number | null {
  const xs = [...values].sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2;
}

/** One measured run: one system, mode, client count and round. */
export interface CostRun {
  readonly system: string;
  readonly mode: CostMode;
  readonly clients: number;
  readonly round: number;
  readonly seconds: number;
  /** pgbench's tps (without initial connection time). */
  readonly tps: number;
  readonly transactions: number;
  readonly p50Millis: number | null;
  readonly p99Millis: number | null;
  /** Standbys confirming commits (pg_stat_replication sync/quorum) before and after the run. */
  readonly syncStandbys: readonly [number, number];
  /** Set when the run does not count: pgbench failed, or the mode was not in effect throughout. */
  readonly error?: string;
}

/** The latency summary of one run's log. */
export function latencySummary(latenciesMillis: readonly number[]): {
  p50Millis: number | null;
  p99Millis: number | null;
} {
  const sorted = [...latenciesMillis].sort((a, b) => a - b);
  return { p50Millis: percentile(sorted, 50), p99Millis: percentile(sorted, 99) };
}

/**
 * Why a run does not measure `mode`, or null when it does: synchronous needs a
 * standby confirming commits before and after, asynchronous needs none.
 */
export function modeProblem(mode: CostMode, syncStandbys: readonly [number, number]): string | null {
  const [before, after] = syncStandbys;
  if (mode === 'sync' && (before === 0 || after === 0))
    return `synchronous run without a synchronous standby (before ${before}, after ${after})`;
  if (mode === 'async' && (before > 0 || after > 0))
    return `asynchronous run with synchronous standbys (before ${before}, after ${after})`;
  return null;
}

const f = (v: number | null, digits: number) => (v === null ? '-' : v.toFixed(digits));
const ratio = (a: number | null, b: number | null) =>
  a === null || b === null || b === 0 ? '-' : `${(a / b).toFixed(2)}x`;

/** One line per run, for the log as it happens. */
export function formatRun(r: CostRun): string {
  const head = `${r.system} ${r.mode} ${r.clients} client${r.clients === 1 ? '' : 's'} round ${r.round}`;
  const body = `${f(r.tps, 1)} tps, p50 ${f(r.p50Millis, 2)} ms, p99 ${f(r.p99Millis, 2)} ms (${r.transactions} transactions in ${r.seconds} s, ${r.syncStandbys[0]}/${r.syncStandbys[1]} sync standbys before/after)`;
  return r.error === undefined ? `${head}: ${body}` : `${head}: NOT COUNTED: ${r.error}; ${body}`;
}

/**
 * The report: per system and client count, the median over rounds of TPS, p50 and
 * p99 in each mode, and the ratios sync / async (TPS below 1 and latency above 1 are
 * the cost of waiting for a standby). Runs with an error are left out and counted.
 */
export function formatCostTable(runs: readonly CostRun[]): string {
  const lines = [
    '| system | clients | runs async/sync | TPS async | TPS sync | TPS sync/async | p50 ms async | p50 ms sync | p50 sync/async | p99 ms async | p99 ms sync | p99 sync/async |',
    `|${' --- |'.repeat(12)}`,
  ];
  const keys = [...new Set(runs.map((r) => `${r.system}|${r.clients}`))];
  for (const key of keys) {
    const [system, clients] = key.split('|');
    const of = (mode: CostMode) =>
      runs.filter((r) => r.system === system && String(r.clients) === clients && r.mode === mode);
    const counted = (mode: CostMode) => of(mode).filter((r) => r.error === undefined);
    const med = (mode: CostMode, pick: (r: CostRun) => number | null) =>
      median(counted(mode).flatMap((r) => (pick(r) === null ? [] : [pick(r)!])));
    const tps = [med('async', (r) => r.tps), med('sync', (r) => r.tps)] as const;
    const p50 = [med('async', (r) => r.p50Millis), med('sync', (r) => r.p50Millis)] as const;
    const p99 = [med('async', (r) => r.p99Millis), med('sync', (r) => r.p99Millis)] as const;
    const runsCell = `${counted('async').length}/${of('async').length} · ${counted('sync').length}/${of('sync').length}`;
    lines.push(
      `| ${system} | ${clients} | ${runsCell} | ${f(tps[0], 1)} | ${f(tps[1], 1)} | ${ratio(tps[1], tps[0])} | ${f(p50[0], 2)} | ${f(p50[1], 2)} | ${ratio(p50[1], p50[0])} | ${f(p99[0], 2)} | ${f(p99[1], 2)} | ${ratio(p99[1], p99[0])} |`,
    );
  }
  return lines.join('\n');
}

/**
 * The order of the modes in round `round` (1-based): async first in odd rounds, sync
 * first in even ones, so a machine that slows down (or warms up) during the run
 * weighs on both modes alike.
 */
export function modeOrder(round: number): readonly [CostMode, CostMode] {
  return round % 2 === 1 ? ['async', 'sync'] : ['sync', 'async'];
}
