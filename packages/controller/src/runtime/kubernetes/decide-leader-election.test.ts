import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decideLeaderElection,
  decideRelease,
  type LeaderElectionSnapshot,
  type LeaseObservation,
  type LeaseSpec,
  leaderElectionTimingProblem,
  leadershipDeadline,
  microTime,
  type ObservedLease,
} from './decide-leader-election.js';

const t0 = '2026-12-01T10:00:00.000000Z';
const t1 = '2026-12-01T10:00:05.000000Z';

const lease = (spec: LeaseSpec = {}, resourceVersion = '7'): ObservedLease => ({
  resourceVersion,
  spec: {
    holderIdentity: 'op-b',
    leaseDurationSeconds: 15,
    acquireTime: t0,
    renewTime: t0,
    leaseTransitions: 2,
    ...spec,
  },
});

const snapshot = (overrides: Partial<LeaderElectionSnapshot> = {}): LeaderElectionSnapshot => ({
  identity: 'op-a',
  leaseDurationSeconds: 15,
  lease: lease(),
  previous: null,
  nowMillis: 1000,
  nowTime: t1,
  ...overrides,
});

describe('decideLeaderElection', () => {
  it('creates the Lease holding it when there is none', () => {
    expect(decideLeaderElection(snapshot({ lease: null }))).toEqual({
      action: {
        type: 'create',
        spec: { holderIdentity: 'op-a', leaseDurationSeconds: 15, acquireTime: t1, renewTime: t1, leaseTransitions: 0 },
      },
      observation: null,
    });
  });

  it("waits for another holder's lease duration, counted from when it first saw the record, not from renewTime", () => {
    // renewTime is an hour old by this candidate's wall clock: clocks may disagree, so it is not used
    const first = decideLeaderElection(snapshot({ lease: lease({ renewTime: '2026-12-01T09:00:00.000000Z' }) }));
    expect(first.action).toEqual({ type: 'wait', holder: 'op-b', expiresAtMillis: 16_000 });
    const later = decideLeaderElection(
      snapshot({
        lease: lease({ renewTime: '2026-12-01T09:00:00.000000Z' }),
        previous: first.observation,
        nowMillis: 15_999,
      }),
    );
    expect(later.action.type).toBe('wait');
    expect(later.observation).toBe(first.observation);
  });

  it('takes an expired lease with the resourceVersion it read, counting a transition and keeping nothing of the old holder', () => {
    const first = decideLeaderElection(snapshot());
    const decision = decideLeaderElection(snapshot({ previous: first.observation, nowMillis: 16_000 }));
    expect(decision.action).toEqual({
      type: 'acquire',
      reason: 'expired',
      from: 'op-b',
      resourceVersion: '7',
      spec: { holderIdentity: 'op-a', leaseDurationSeconds: 15, acquireTime: t1, renewTime: t1, leaseTransitions: 3 },
    });
  });

  it('starts counting again when the holder renews (the record changed)', () => {
    const first = decideLeaderElection(snapshot());
    const renewed = lease({ renewTime: '2026-12-01T10:00:02.000000Z' }, '8');
    const decision = decideLeaderElection(snapshot({ lease: renewed, previous: first.observation, nowMillis: 16_000 }));
    expect(decision.action).toEqual({ type: 'wait', holder: 'op-b', expiresAtMillis: 31_000 });
    expect(decision.observation?.atMillis).toBe(16_000);
  });

  it('does not restart the count for a metadata-only change (a new resourceVersion, the same record)', () => {
    const first = decideLeaderElection(snapshot());
    const decision = decideLeaderElection(
      snapshot({ lease: lease({}, '9'), previous: first.observation, nowMillis: 16_000 }),
    );
    expect(decision.action.type).toBe('acquire');
  });

  it("uses the holder's leaseDurationSeconds, not its own", () => {
    const decision = decideLeaderElection(snapshot({ lease: lease({ leaseDurationSeconds: 60 }) }));
    expect(decision.action).toEqual({ type: 'wait', holder: 'op-b', expiresAtMillis: 61_000 });
  });

  it('takes a released lease (no holder) at once', () => {
    const decision = decideLeaderElection(snapshot({ lease: lease({ holderIdentity: '', leaseDurationSeconds: 1 }) }));
    expect(decision.action).toMatchObject({ type: 'acquire', reason: 'released', from: null, resourceVersion: '7' });
  });

  it('renews its own lease keeping acquireTime and the transition count', () => {
    const decision = decideLeaderElection(snapshot({ lease: lease({ holderIdentity: 'op-a' }) }));
    expect(decision.action).toEqual({
      type: 'renew',
      resourceVersion: '7',
      spec: { holderIdentity: 'op-a', leaseDurationSeconds: 15, acquireTime: t0, renewTime: t1, leaseTransitions: 2 },
    });
  });
});

describe('decideRelease', () => {
  it('gives up its own lease: no holder, a one-second duration, transitions kept', () => {
    expect(decideRelease(lease({ holderIdentity: 'op-a' }), 'op-a', t1)).toEqual({
      resourceVersion: '7',
      spec: { holderIdentity: '', leaseDurationSeconds: 1, acquireTime: t1, renewTime: t1, leaseTransitions: 2 },
    });
  });

  it('never releases a lease someone else holds, or none', () => {
    expect(decideRelease(lease(), 'op-a', t1)).toBeNull();
    expect(decideRelease(null, 'op-a', t1)).toBeNull();
  });
});

describe('timing', () => {
  it('accepts the client-go defaults (15 s, 10 s, 2 s)', () => {
    expect(
      leaderElectionTimingProblem({ leaseDurationSeconds: 15, renewDeadlineMillis: 10_000, retryPeriodMillis: 2000 }),
    ).toBeNull();
  });

  it('refuses a renew deadline that is not shorter than the lease duration', () => {
    expect(
      leaderElectionTimingProblem({ leaseDurationSeconds: 10, renewDeadlineMillis: 10_000, retryPeriodMillis: 2000 }),
    ).toMatch(/must be shorter than the lease duration/);
  });

  it('refuses a renew deadline that leaves no room for a second try', () => {
    expect(
      leaderElectionTimingProblem({ leaseDurationSeconds: 15, renewDeadlineMillis: 2000, retryPeriodMillis: 2000 }),
    ).toMatch(/1.2 × the retry period/);
  });

  it('writes MicroTime with exactly six fractional digits', () => {
    expect(microTime(new Date('2026-12-01T10:00:00.123Z'))).toBe('2026-12-01T10:00:00.123000Z');
  });
});

/**
 * The invariant: two candidates never both act as leader at the same instant.
 * A model API server (compare-and-swap on resourceVersion) and two candidates
 * that run rounds at random times; a write may be lost before the server applies
 * it, or applied with its answer lost; reads may fail. A candidate acts from a
 * successful write until its deadline (send time + renew deadline), or until it
 * reads that someone else holds the Lease.
 */
describe('the election over random schedules', () => {
  const leaseDurationSeconds = 3;
  const renewDeadlineMillis = 2000;

  type Outcome = 'ok' | 'read-fails' | 'write-lost' | 'answer-lost';
  const step = fc.record({
    who: fc.integer({ min: 0, max: 1 }),
    advanceMillis: fc.integer({ min: 0, max: 1500 }),
    outcome: fc.constantFrom<Outcome>('ok', 'ok', 'ok', 'read-fails', 'write-lost', 'answer-lost'),
  });

  it('never has two leaders at once', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 120 }), (steps) => {
        let now = 0;
        let rv = 0;
        let stored: LeaseSpec | null = null;
        const candidates = [0, 1].map((i) => ({
          identity: `op-${i}`,
          previous: null as LeaseObservation | null,
          acting: [] as [number, number][], // intervals [from, to)
          deadline: null as number | null,
        }));
        const endActing = (c: (typeof candidates)[number], at: number) => {
          if (c.deadline === null) return;
          const last = c.acting[c.acting.length - 1]!;
          last[1] = Math.min(c.deadline, at);
          c.deadline = null;
        };
        for (const s of steps) {
          now += s.advanceMillis;
          const c = candidates[s.who]!;
          if (c.deadline !== null && now >= c.deadline) endActing(c, now);
          if (s.outcome === 'read-fails') continue;
          const decision = decideLeaderElection({
            identity: c.identity,
            leaseDurationSeconds,
            lease: stored === null ? null : { resourceVersion: String(rv), spec: stored },
            previous: c.previous,
            nowMillis: now,
            nowTime: microTime(new Date(now)),
          });
          c.previous = decision.observation;
          const a = decision.action;
          if (a.type === 'wait') {
            endActing(c, now);
            continue;
          }
          if (s.outcome === 'write-lost') continue;
          // the server's compare-and-swap
          if (a.type === 'create' ? stored !== null : String(rv) !== a.resourceVersion) continue;
          stored = a.spec;
          rv++;
          if (s.outcome === 'answer-lost') continue;
          if (c.deadline === null) c.acting.push([now, Number.POSITIVE_INFINITY]);
          c.deadline = leadershipDeadline(now, renewDeadlineMillis);
          c.acting[c.acting.length - 1]![1] = c.deadline;
        }
        for (const x of candidates[0]!.acting)
          for (const y of candidates[1]!.acting) expect(x[1] <= y[0] || y[1] <= x[0]).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
