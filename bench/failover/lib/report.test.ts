import { describe, expect, test } from 'vitest';
import { formatModeRatios, formatRatios, formatSummary, formatSyncLoss, formatTrial, summarize } from './report.js';
import { longestPause, type TrialResult } from './trial.js';
import type { Ack } from './writer.js';

const trial = (over: Partial<TrialResult> = {}): TrialResult => ({
  system: 'patroni',
  profile: 'defaults',
  mode: 'async',
  fault: 'host-loss',
  trial: 1,
  oldPrimary: 'a',
  newPrimary: 'b',
  toWrite: 10,
  pause: 10,
  lost: 0,
  lateOldAcks: 0,
  rejoin: 5,
  acked: 100,
  ...over,
});

const ack = (at: number): Ack => ({ id: at, member: 'a', sentAt: at, at, connectedAt: 0 });

describe('summarize', () => {
  test('takes the middle value of an odd count and the mean of the middle two of an even count', () => {
    expect(summarize([3, 1, 2])).toEqual({ min: 1, median: 2, max: 3, n: 3 });
    expect(summarize([4, 1, 3, 2])).toEqual({ min: 1, median: 2.5, max: 4, n: 4 });
  });
  test('ignores missing values and gives null when none remain', () => {
    expect(summarize([null, 5, null])).toEqual({ min: 5, median: 5, max: 5, n: 1 });
    expect(summarize([null])).toBeNull();
  });
});

describe('longestPause', () => {
  test('counts the gap from the last write before the fault', () => {
    expect(longestPause([ack(0), ack(10), ack(20), ack(1020), ack(1030)], 15)).toBeCloseTo(1.0);
  });
  test('is null when nothing was acknowledged after the fault', () => {
    expect(longestPause([ack(0), ack(10)], 15)).toBeNull();
  });
});

describe('the report', () => {
  test('counts failed trials but leaves them out of the statistics', () => {
    const table = formatSummary([trial({ toWrite: 2 }), trial({ toWrite: null, error: 'timed out' })]);
    expect(table).toContain('| patroni/defaults | async | host-loss | 1/2 | 1/1 | 2.00 / 2.00 / 2.00 |');
  });
  test('prints ratios of medians only when both systems ran', () => {
    expect(formatRatios([trial()])).toBeNull();
    const ratios = formatRatios([trial({ toWrite: 20 }), trial({ system: 'pgha', toWrite: 2 })]);
    expect(ratios).toContain('| host-loss | async | defaults vs defaults | 0.10x (2.00 / 20.00) |');
  });
  test('keeps the modes apart: a row per mode, each system compared within it', () => {
    const results = [
      trial({ toWrite: 20 }),
      trial({ system: 'pgha', toWrite: 2 }),
      trial({ mode: 'sync', toWrite: 25 }),
      trial({ mode: 'sync', system: 'pgha', toWrite: 5 }),
    ];
    const table = formatSummary(results);
    expect(table).toContain('| patroni/defaults | sync | host-loss | 1/1 | 1/1 | 25.00 / 25.00 / 25.00 |');
    const ratios = formatRatios(results)!;
    expect(ratios).toContain('| host-loss | async | defaults vs defaults | 0.10x (2.00 / 20.00) |');
    expect(ratios).toContain('| host-loss | sync | defaults vs defaults | 0.20x (5.00 / 25.00) |');
    expect(formatModeRatios(results)).toContain('| pgha/defaults | host-loss | 2.50x (5.00 / 2.00) |');
  });
  test('reads results saved before modes existed as asynchronous', () => {
    const { mode: _dropped, ...old } = trial();
    expect(formatSummary([old as TrialResult])).toContain('| patroni/defaults | async | host-loss |');
    expect(formatSyncLoss([old as TrialResult])).toBeNull();
  });
});

describe('data loss in synchronous mode', () => {
  test('is flagged loudly on the trial line and in the verdict', () => {
    const lossy = trial({ mode: 'sync', lost: 2, trial: 3 });
    expect(formatTrial(lossy)).toContain(
      '!!! DATA LOSS IN SYNCHRONOUS MODE: 2 acknowledged writes missing after patroni/defaults host-loss #3 !!!',
    );
    const verdict = formatSyncLoss([trial({ mode: 'sync' }), lossy]);
    expect(verdict?.lost).toBe(true);
    expect(verdict?.text).toContain('DATA LOSS IN SYNCHRONOUS MODE');
  });
  test('is not flagged for an asynchronous trial, whose loss is only reported', () => {
    const line = formatTrial(trial({ lost: 2 }));
    expect(line).toContain('lost acked 2');
    expect(line).not.toContain('DATA LOSS');
  });
  test('says how many synchronous trials were checked when none lost anything', () => {
    const verdict = formatSyncLoss([trial({ mode: 'sync' }), trial({ mode: 'sync', lost: null, error: 'timed out' })]);
    expect(verdict).toEqual({
      text: 'Synchronous mode: no acknowledged write lost in 1 trial (1 failed before the count).',
      lost: false,
    });
  });
});
