import { describe, expect, test } from 'vitest';
import { formatRatios, formatSummary, summarize } from './report.js';
import { longestPause, type TrialResult } from './trial.js';
import type { Ack } from './writer.js';

const trial = (over: Partial<TrialResult> = {}): TrialResult => ({
  system: 'patroni',
  profile: 'defaults',
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
    expect(table).toContain('| patroni/defaults | host-loss | 1/2 | 1/1 | 2.00 / 2.00 / 2.00 |');
  });
  test('prints ratios of medians only when both systems ran', () => {
    expect(formatRatios([trial()])).toBeNull();
    const ratios = formatRatios([trial({ toWrite: 20 }), trial({ system: 'pgha', toWrite: 2 })]);
    expect(ratios).toContain('| host-loss | defaults vs defaults | 0.10x (2.00 / 20.00) |');
  });
});
