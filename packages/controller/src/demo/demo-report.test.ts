import { describe, expect, it } from 'vitest';
import { type DemoAck, type DemoObservations, formatDemoSummary, summarizeDemo } from './demo-report.js';

const ack = (over: Partial<DemoAck> = {}): DemoAck => ({
  caller: 0,
  seq: 1,
  port: 5432,
  term: 1,
  sentAt: 0,
  ackAt: 1,
  ...over,
});

/** A clean failover from demo-0 (port 5432, term 1) to demo-1 (5433, term 2), fault at 1000. */
const observations = (over: Partial<DemoObservations> = {}): DemoObservations => {
  const acks = over.acks ?? [
    ack({ seq: 1, sentAt: 900, ackAt: 950 }),
    ack({ seq: 2, port: 5433, term: 2, sentAt: 3000, ackAt: 4000 }),
  ];
  return {
    oldPrimary: { member: 'demo-0', port: 5432, term: 1 },
    faultAt: 1000,
    leaderGone: { at: 3000, member: 'demo-0' },
    elected: { at: 3200, member: 'demo-1' },
    promoting: { at: 3300, member: 'demo-1' },
    writable: { at: 3600, member: 'demo-1' },
    rerouted: { at: 3650, member: 'demo-1' },
    firstWrite: { at: 4000, member: 'demo-1' },
    rejoined: { at: 9000, member: 'demo-0' },
    acks,
    errors: {},
    termPorts: new Map([
      [1, 5432],
      [2, 5433],
    ]),
    present: new Set(acks.map((a) => `${a.caller}:${a.seq}`)),
    endedAt: 5000,
    ...over,
  };
};

describe('summarizeDemo', () => {
  it('passes a clean failover and measures the longest pause between acknowledgements', () => {
    const s = summarizeDemo(observations());
    expect(s.problems).toEqual([]);
    expect(s.acked).toBe(2);
    expect(s.writePauseMillis).toBe(3050);
    expect(s.lost).toEqual([]);
    expect(s.wrongNode).toEqual([]);
  });

  it('counts an acknowledged write missing on the final primary as lost', () => {
    const o = observations({ present: new Set(['0:2']) });
    const s = summarizeDemo(o);
    expect(s.lost.map((a) => a.seq)).toEqual([1]);
    expect(s.problems).toContain('1 acknowledged writes are missing on the final primary');
    expect(formatDemoSummary(o, s)).toMatch(/lost acknowledged writes +lost 1 of 2/);
  });

  it('flags a write acknowledged by a server that was not the primary of the term the Pool believed', () => {
    const s = summarizeDemo(
      observations({
        acks: [
          ack({ seq: 1, sentAt: 900, ackAt: 950 }),
          ack({ seq: 2, port: 5432, term: 2, sentAt: 3000, ackAt: 4000 }),
        ],
      }),
    );
    expect(s.wrongNode.map((a) => a.seq)).toEqual([2]);
    expect(s.problems).toContain('1 writes were acknowledged by a server that was not the primary');
  });

  it('flags a write the old primary took after the new one had acknowledged one (two writable primaries)', () => {
    const acks = [
      ack({ seq: 1, port: 5433, term: 2, sentAt: 3900, ackAt: 4000 }),
      ack({ seq: 2, port: 5432, term: 1, sentAt: 4100, ackAt: 4200 }),
    ];
    const s = summarizeDemo(observations({ acks, present: new Set(['0:1', '0:2']) }));
    expect(s.wrongNode.map((a) => a.seq)).toEqual([2]);
  });

  it('fails a run without a new primary, a reroute or a rejoin, and says which', () => {
    const s = summarizeDemo(observations({ writable: null, rerouted: null, rejoined: null, firstWrite: null }));
    expect(s.problems).toEqual([
      'no new primary became writable',
      "the app's Pool never reported the new primary",
      'demo-0 did not come back as a streaming replica',
    ]);
  });
});

describe('formatDemoSummary', () => {
  it('prints every figure relative to the fault, with the step durations', () => {
    const o = observations({ errors: { OutcomeUnknownError: 2, PrimaryChangedError: 1 } });
    const text = formatDemoSummary(o, summarizeDemo(o));
    expect(text).toMatch(/detection +\+2\.00 s {2}lease expired/);
    expect(text).toMatch(/election +\+2\.20 s {2}controller chose demo-1 \(0\.20 s after detection\)/);
    expect(text).toMatch(/promotion +\+2\.60 s {2}demo-1 writable \(0\.40 s after election\)/);
    expect(text).toMatch(/errors +OutcomeUnknownError 2, PrimaryChangedError 1/);
    expect(text).toMatch(/wrong-node writes +wrong node 0/);
    expect(text).toMatch(/rejoin +\+8\.00 s/);
  });
});
