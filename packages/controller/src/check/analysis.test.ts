import { describe, expect, test } from 'vitest';
import { type AckEntry, type AnalysisInput, analyzeRun, type FaultEntry, longestGap, rowKey } from './analysis.js';

/** Pool acks every 10 ms from `from` to `to` by `member` on `timeline`, believing `term`. */
function acks(member: string, term: number, timeline: number, from: number, to: number, writer = 'pool-0'): AckEntry[] {
  const out: AckEntry[] = [];
  for (let t = from; t < to; t += 10)
    out.push({ writer, seq: t, source: 'pool', member, term, timeline, sentAt: t, ackAt: t + 2 });
  return out;
}

const fault = (overrides: Partial<FaultEntry> = {}): FaultEntry => ({
  index: 0,
  kind: 'host-loss',
  target: 'c-0',
  role: 'primary',
  injectedAt: 1000,
  recoveredAt: 4000,
  ...overrides,
});

/**
 * A clean run: c-0 leads until a host loss at 1000, c-1 takes over (term 3) at 3000
 * and acknowledges from 3000; every acknowledged row is present.
 */
function clean(overrides: Partial<AnalysisInput> = {}): AnalysisInput {
  const all = [...acks('c-0', 2, 1, 0, 1000), ...acks('c-1', 3, 2, 3000, 5000)];
  return {
    mode: 'off',
    acks: all,
    faults: [fault()],
    initial: { member: 'c-0', term: 2 },
    termChanges: [{ term: 3, member: 'c-1', at: 2900 }],
    history: [{ term: 3, newPrimary: 'c-1', oldPrimary: 'c-0', reason: 'failover', lostBytes: 0 }],
    present: new Set(all.map((a) => rowKey(a.writer, a.seq))),
    falseFailoverGraceMillis: 5000,
    endedAt: 5000,
    ...overrides,
  };
}

describe('analyzeRun', () => {
  test('passes a clean log and measures the unavailability around the fault', () => {
    const result = analyzeRun(clean());
    expect(result.violations).toEqual([]);
    expect(result.passed).toBe(true);
    expect(result.falseFailovers).toEqual([]);
    expect(result.faults).toHaveLength(1);
    const f = result.faults[0]!;
    // Last ack before the fault at 992, first after at 3002: the gap from the injection.
    expect(f.unavailableMillis).toBe(2002);
    expect(f.termBefore).toBe(2);
    expect(f.termAfter).toBe(3);
    expect(f.newPrimaries).toEqual(['c-1']);
    expect(f.lostAcked).toBe(0);
    expect(f.lostBytes).toBe(0);
    expect(f.recoveryMillis).toBe(3000);
  });

  test('detects a lost acknowledged write: reported in off mode, a violation in quorum mode', () => {
    const input = clean();
    const present = new Set(input.present);
    present.delete(rowKey('pool-0', 990)); // c-0's last ack before the host loss
    const off = analyzeRun({ ...input, present, history: [{ ...input.history[0]!, lostBytes: 120 }] });
    expect(off.lostAcked).toEqual([{ writer: 'pool-0', seq: 990, member: 'c-0', ackAt: 992 }]);
    expect(off.faults[0]!.lostAcked).toBe(1);
    expect(off.faults[0]!.lostBytes).toBe(120);
    expect(off.violations).toEqual([]);
    expect(off.passed).toBe(true);
    const quorum = analyzeRun({ ...input, present, mode: 'quorum' });
    expect(quorum.violations).toHaveLength(1);
    expect(quorum.violations[0]!.kind).toBe('lost-acked-write');
    expect(quorum.violations[0]!.fault).toBe(0);
    expect(quorum.passed).toBe(false);
  });

  test('detects a superseded acknowledgement: sent after the new primary had acknowledged, in either mode', () => {
    const late: AckEntry = {
      writer: 'direct-c-0',
      seq: 1,
      source: 'direct',
      member: 'c-0',
      term: 3,
      timeline: 1,
      sentAt: 3100, // c-1 acknowledged its first write (timeline 2) at 3002
      ackAt: 3150,
    };
    const input = clean();
    const result = analyzeRun({
      ...input,
      acks: [...input.acks, late],
      present: new Set([...input.present, rowKey('direct-c-0', 1)]),
    });
    expect(result.supersededAcks).toHaveLength(1);
    expect(result.supersededAcks[0]).toMatchObject({ member: 'c-0', supersededBy: 'c-1', supersededAt: 3002 });
    expect(result.violations.map((v) => v.kind)).toEqual(['superseded-ack']);
    expect(result.faults[0]!.supersededAcks).toBe(1);
    expect(result.passed).toBe(false);
  });

  test('an acknowledgement in flight across the takeover (sent before the new primary acknowledged) is not superseded', () => {
    const inFlight: AckEntry = {
      writer: 'pool-1',
      seq: 1,
      source: 'pool',
      member: 'c-0',
      term: 2,
      timeline: 1,
      sentAt: 2990,
      ackAt: 3050,
    };
    const input = clean();
    const result = analyzeRun({
      ...input,
      acks: [...input.acks, inFlight],
      present: new Set([...input.present, 'pool-1:1']),
    });
    expect(result.supersededAcks).toEqual([]);
    expect(result.passed).toBe(true);
  });

  test('the old primary elected again later acknowledges legitimately', () => {
    const input = clean();
    const back = acks('c-0', 4, 3, 6000, 7000);
    const all = [...input.acks, ...back];
    const result = analyzeRun({
      ...input,
      acks: all,
      faults: [
        ...input.faults,
        fault({ index: 1, kind: 'switchover', target: 'c-1', injectedAt: 5500, recoveredAt: 6500 }),
      ],
      termChanges: [...input.termChanges, { term: 4, member: 'c-0', at: 5900 }],
      history: [
        ...input.history,
        { term: 4, newPrimary: 'c-0', oldPrimary: 'c-1', reason: 'switchover', lostBytes: 0 },
      ],
      present: new Set(all.map((a) => rowKey(a.writer, a.seq))),
      endedAt: 7000,
    });
    expect(result.violations).toEqual([]);
    expect(result.faults[1]!.termAfter).toBe(4);
  });

  test('a late acknowledgement of an earlier reign is superseded even when that member leads again', () => {
    const input = clean();
    const back = acks('c-0', 4, 3, 6000, 7000);
    // Sent by a connection still on c-0's first reign (timeline 1), answered after c-0
    // was promoted again (timeline 3): a member-based reading would call it legitimate.
    const late: AckEntry = {
      writer: 'pool-9',
      seq: 1,
      source: 'pool',
      member: 'c-0',
      term: 2,
      timeline: 1,
      sentAt: 6500,
      ackAt: 6510,
    };
    const all = [...input.acks, ...back, late];
    const result = analyzeRun({
      ...input,
      acks: all,
      termChanges: [...input.termChanges, { term: 4, member: 'c-0', at: 5900 }],
      present: new Set(all.map((a) => rowKey(a.writer, a.seq))),
      endedAt: 7000,
    });
    expect(result.supersededAcks.map((a) => `${a.writer}:${a.seq}`)).toEqual(['pool-9:1']);
    expect(result.supersededAcks[0]!.supersededBy).toBe('c-1');
  });

  test('detects a false failover: a term change outside every fault, from injection to recovery and a grace after it', () => {
    const input = clean();
    const result = analyzeRun({
      ...input,
      termChanges: [
        ...input.termChanges,
        { term: 4, member: 'c-2', at: 8_900 }, // within 5 s of the recovery at 4000
        { term: 5, member: 'c-0', at: 9_100 }, // after it: nothing explains it
      ],
      endedAt: 50_000,
    });
    expect(result.falseFailovers).toEqual([{ term: 5, member: 'c-0', at: 9_100 }]);
    // Reported, not a violation of either mode's contract.
    expect(result.violations).toEqual([]);
  });

  test('a fault that did not recover fails the run', () => {
    const result = analyzeRun(clean({ faults: [fault({ recoveredAt: null })] }));
    expect(result.unrecovered).toEqual([0]);
    expect(result.faults[0]!.recoveryMillis).toBeNull();
    expect(result.passed).toBe(false);
  });
});

describe('longestGap', () => {
  test('counts from the injection, between acks, and to the window end', () => {
    expect(longestGap([0, 10, 20, 500, 510], 15, 600)).toBe(480);
    expect(longestGap([0, 10], 15, 600)).toBe(585);
    expect(longestGap([], 0, 100)).toBe(100);
    expect(longestGap([0, 50, 100, 150], 0, 160)).toBe(50);
  });
});
