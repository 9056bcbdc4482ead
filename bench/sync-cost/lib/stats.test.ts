import { describe, expect, test } from 'vitest';
import {
  type CostRun,
  formatCostTable,
  formatRun,
  latencySummary,
  median,
  modeOrder,
  modeProblem,
  parsePgbenchLog,
  parsePgbenchSummary,
  percentile,
} from './stats.js';

const run = (over: Partial<CostRun> = {}): CostRun => ({
  system: 'pgha',
  mode: 'async',
  clients: 1,
  round: 1,
  seconds: 30,
  tps: 1000,
  transactions: 30_000,
  p50Millis: 1,
  p99Millis: 4,
  syncStandbys: [0, 0],
  ...over,
});

describe('pgbench output', () => {
  test("reads tps without connection time, the transaction count and the failures from pgbench 15's summary", () => {
    const stdout = [
      'transaction type: /tmp/x/insert.sql',
      'number of clients: 8',
      'duration: 30 s',
      'number of transactions actually processed: 41234',
      'number of failed transactions: 2 (0.005%)',
      'latency average = 5.821 ms',
      'initial connection time = 12.345 ms',
      'tps = 1374.456789 (without initial connection time)',
    ].join('\n');
    expect(parsePgbenchSummary(stdout)).toEqual({ tps: 1374.456789, transactions: 41234, failed: 2 });
  });
  test('a run in which no transaction completed has 0 tps (pgbench prints no tps line then)', () => {
    const stdout = 'number of transactions actually processed: 0\nnumber of failed transactions: 0 (NaN%)\n';
    expect(parsePgbenchSummary(stdout)).toEqual({ tps: 0, transactions: 0, failed: 0 });
  });
  test('says what it got when the summary is missing (pgbench aborted)', () => {
    expect(() => parsePgbenchSummary('pgbench: error: connection refused')).toThrow(/no tps.*connection refused/s);
  });
  test('takes the latency of each logged transaction in milliseconds and counts failed and skipped ones apart', () => {
    const log = [
      '0 1 1520 0 1733050000 123456',
      '1 1 980 0 1733050000 124000',
      '0 2 failed 0 1733050000 200000',
      '',
    ].join('\n');
    expect(parsePgbenchLog(log)).toEqual({ latenciesMillis: [1.52, 0.98], notCompleted: 1 });
  });
  test('refuses a line that is not a pgbench log line rather than count garbage', () => {
    expect(() => parsePgbenchLog('a b c d e f')).toThrow(/not a pgbench log line/);
  });
});

describe('statistics', () => {
  test('percentile is the nearest rank: p50 of 1..10 is 5, p99 is 10, p100 the maximum', () => {
    const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(xs, 50)).toBe(5);
    expect(percentile(xs, 99)).toBe(10);
    expect(percentile(xs, 100)).toBe(10);
    expect(percentile(xs, 10)).toBe(1);
    expect(percentile([], 50)).toBeNull();
    expect(() => percentile(xs, 0)).toThrow();
  });
  test('p99 of 1000 latencies is the 990th smallest, whatever their order', () => {
    const xs = Array.from({ length: 1000 }, (_, i) => 1000 - i);
    expect(latencySummary(xs)).toEqual({ p50Millis: 500, p99Millis: 990 });
  });
  test('median of an odd and an even count', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNull();
  });
  test('alternates which mode runs first, round by round', () => {
    expect(modeOrder(1)).toEqual(['async', 'sync']);
    expect(modeOrder(2)).toEqual(['sync', 'async']);
    expect(modeOrder(3)).toEqual(['async', 'sync']);
  });
});

describe('whether a run measured its mode', () => {
  test('a synchronous run needs a synchronous standby before and after', () => {
    expect(modeProblem('sync', [1, 1])).toBeNull();
    expect(modeProblem('sync', [1, 0])).toMatch(/without a synchronous standby/);
  });
  test('an asynchronous run must have none', () => {
    expect(modeProblem('async', [0, 0])).toBeNull();
    expect(modeProblem('async', [0, 1])).toMatch(/with synchronous standbys/);
  });
});

describe('the report', () => {
  test('gives medians over rounds per mode and the ratios sync / async', () => {
    const runs = [
      run({ tps: 1000, p50Millis: 1, p99Millis: 4 }),
      run({ round: 2, tps: 1200, p50Millis: 0.8, p99Millis: 3 }),
      run({ mode: 'sync', tps: 500, p50Millis: 2, p99Millis: 8, syncStandbys: [1, 1] }),
      run({ mode: 'sync', round: 2, tps: 600, p50Millis: 1.6, p99Millis: 6, syncStandbys: [1, 1] }),
    ];
    expect(formatCostTable(runs)).toContain(
      '| pgha | 1 | 2/2 · 2/2 | 1100.0 | 550.0 | 0.50x | 0.90 | 1.80 | 2.00x | 3.50 | 7.00 | 2.00x |',
    );
  });
  test('leaves runs that did not count out of the medians but shows them in the run count', () => {
    const runs = [
      run({ tps: 1000 }),
      run({ mode: 'sync', tps: 500, syncStandbys: [1, 1] }),
      run({ mode: 'sync', round: 2, tps: 1, error: 'no standby' }),
    ];
    const table = formatCostTable(runs);
    expect(table).toContain('| pgha | 1 | 1/1 · 1/2 | 1000.0 | 500.0 | 0.50x |');
    expect(formatRun(runs[2]!)).toContain('NOT COUNTED: no standby');
  });
  test('keeps systems and client counts in separate rows', () => {
    const runs = [run(), run({ clients: 8 }), run({ system: 'patroni' })];
    const rows = formatCostTable(runs).split('\n').slice(2);
    expect(
      rows.map((r) =>
        r
          .split('|')
          .slice(1, 3)
          .map((c) => c.trim()),
      ),
    ).toEqual([
      ['pgha', '1'],
      ['pgha', '8'],
      ['patroni', '1'],
    ]);
  });
});
