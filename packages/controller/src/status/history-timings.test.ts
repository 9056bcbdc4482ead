import type { HistoryRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { formatHistory, historyTimings, withTimings } from './history-timings.js';

function history(overrides: Partial<HistoryRecord> = {}): HistoryRecord {
  return {
    v: 1,
    term: 4,
    oldPrimary: 'demo-0',
    newPrimary: 'demo-1',
    timeline: 3,
    reason: 'switchover',
    detectedAt: '2024-05-01T12:00:09.500Z',
    decidedAt: '2024-05-01T12:00:09.600Z',
    promotedAt: '2024-05-01T12:00:10.300Z',
    writableAt: '2024-05-01T12:00:10.700Z',
    lastKnownLsn: {},
    lostBytes: 0,
    ...overrides,
  };
}

describe('historyTimings', () => {
  it('measures detected to decided, decided to promoted, and detected to writable', () => {
    expect(historyTimings(history())).toEqual({
      detectedToDecidedMillis: 100,
      decidedToPromotedMillis: 700,
      totalMillis: 1200,
      clamped: [],
    });
  });

  it('clamps a negative interval to 0 and names it (an earlier switchover record: detected after decided)', () => {
    const t = historyTimings(
      history({ detectedAt: '2024-05-01T12:00:09.700Z', decidedAt: '2024-05-01T12:00:09.600Z', writableAt: undefined }),
    );
    expect(t).toEqual({
      detectedToDecidedMillis: 0,
      decidedToPromotedMillis: 700,
      totalMillis: 600,
      clamped: ['detectedToDecided'],
    });
  });

  it('clamps a promotion stamped before the decision (the agent’s clock behind the controller’s)', () => {
    const t = historyTimings(history({ promotedAt: '2024-05-01T12:00:09.550Z' }));
    expect(t.decidedToPromotedMillis).toBe(0);
    expect(t.clamped).toEqual(['decidedToPromoted']);
    expect(t.totalMillis).toBe(1200);
  });

  it('has no intervals for a bootstrap (nothing detected or decided)', () => {
    expect(historyTimings(history({ reason: 'bootstrap', detectedAt: null, decidedAt: null }))).toEqual({
      detectedToDecidedMillis: null,
      decidedToPromotedMillis: null,
      totalMillis: null,
      clamped: [],
    });
  });

  it('counts the total to promotedAt for a record without writableAt', () => {
    expect(historyTimings(history({ writableAt: undefined })).totalMillis).toBe(800);
  });
});

describe('withTimings', () => {
  it('keeps the raw record and adds its timings, by term', () => {
    const out = withTimings([history({ term: 5 }), history({ term: 2 })]);
    expect(out.map((h) => h.term)).toEqual([2, 5]);
    expect(out[0]).toMatchObject({ detectedAt: '2024-05-01T12:00:09.500Z', timings: { totalMillis: 1200 } });
  });
});

describe('formatHistory', () => {
  it('prints one aligned row per promotion with the three intervals in seconds', () => {
    const lines = formatHistory([
      history({ term: 1, reason: 'bootstrap', oldPrimary: null, detectedAt: null, decidedAt: null }),
      history(),
    ]).split('\n');
    expect(lines.slice(0, 3)).toEqual([
      'TERM  TL  OLD     NEW     REASON      PROMOTED AT               DETECTED→DECIDED  DECIDED→PROMOTED  TOTAL  POSSIBLY LOST',
      '1     3   -       demo-1  bootstrap   2024-05-01T12:00:10.300Z  -                 -                 -      0 B',
      '4     3   demo-0  demo-1  switchover  2024-05-01T12:00:10.300Z  0.10s             0.70s             1.20s  0 B',
    ]);
    expect(formatHistory([history()])).not.toContain('?');
  });

  it('marks a clamped interval with ? and explains it under the table', () => {
    const text = formatHistory([history({ detectedAt: '2024-05-01T12:00:09.700Z' })]);
    expect(text).toContain('0.00s?');
    expect(text).toMatch(/\?: the timestamps gave a negative interval, shown as 0/);
  });

  it('prints control characters of a record (written by whoever can write to etcd) escaped, as status does', () => {
    const out = formatHistory([history({ reason: 'failover\u001b[2J\u001b[31m forged\nTERM  1\u202e' })]);
    expect(out).not.toContain('\u001b');
    expect(out).not.toContain('\u202e');
    expect(out).toContain('failover\\u001b[2J\\u001b[31m forged\\u000aTERM  1\\u202e');
    expect(out.split('\n').slice(1, 3)).toEqual([expect.stringMatching(/^4 {5}3 {3}demo-0 {2}demo-1 {2}failover/), '']); // still one row
  });

  it('says when there is nothing to show', () => {
    expect(formatHistory([])).toBe('no promotions recorded yet\n');
  });
});
