import type { LeaderRecord, PrimaryEndpoint } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import {
  type CheckoutSnapshot,
  classifyQueryFailure,
  type DiscoveryState,
  decideCheckout,
  decideIncarnation,
  decideLeaderObservation,
  decidePromotion,
  decideReplica,
  decideRole,
  initialDiscoveryState,
  type LeaderObservation,
  mayCommit,
  type PromotionSnapshot,
  type QueryFailure,
  type ReplicaCandidate,
  type ReplicaSnapshot,
  reasonFromTarget,
  replicaRejection,
  retryDelayMillis,
  shouldDrain,
} from './routing.js';

const leader = (overrides: Partial<LeaderRecord> = {}): LeaderRecord => ({
  v: 1,
  term: 1,
  member: 'demo-0',
  host: '10.0.0.1',
  port: 5432,
  timeline: 1,
  since: '2026-01-01T00:00:00.000Z',
  writable: true,
  ...overrides,
});

const endpoint = (overrides: Partial<PrimaryEndpoint> = {}): PrimaryEndpoint => ({
  member: 'demo-0',
  host: '10.0.0.1',
  port: 5432,
  term: 1,
  timeline: 1,
  writable: true,
  ...overrides,
});

const put = (record: LeaderRecord, revision: number, reasonHint?: 'switchover'): LeaderObservation => ({
  kind: 'record',
  record,
  revision,
  ...(reasonHint ? { reasonHint } : {}),
});

function run(observations: LeaderObservation[], from: DiscoveryState = initialDiscoveryState) {
  let state = from;
  const events = [];
  for (const o of observations) {
    const d = decideLeaderObservation(state, o);
    state = d.next;
    events.push(...d.events);
  }
  return { state, events };
}

describe('decideLeaderObservation', () => {
  it('announces the first writable leader as the initial primary', () => {
    const { state, events } = run([put(leader(), 5)]);
    expect(events).toEqual([
      { type: 'primary-changed', previous: null, current: endpoint(), term: 1, reason: 'initial' },
    ]);
    expect(state.leader).toEqual(endpoint());
    expect(state.newestTerm).toBe(1);
    expect(state.revision).toBe(5);
  });

  it('announces no primary when the first read finds no leader, once', () => {
    const { events } = run([
      { kind: 'absent', revision: 3 },
      { kind: 'absent', revision: 4 },
    ]);
    expect(events).toEqual([{ type: 'no-primary', previous: null, term: 0 }]);
  });

  it('treats a delete as no primary and keeps the newest term', () => {
    const { state, events } = run([put(leader(), 5), { kind: 'absent', revision: 6 }]);
    expect(events[1]).toEqual({ type: 'no-primary', previous: endpoint(), term: 1 });
    expect(state.leader).toBeNull();
    expect(state.newestTerm).toBe(1);
  });

  it('does not route to a leader that is not writable yet, then announces it once writable', () => {
    const { state, events } = run([
      put(leader(), 5),
      { kind: 'absent', revision: 6 },
      put(leader({ term: 2, member: 'demo-1', host: '10.0.0.2', writable: false }), 7),
      put(leader({ term: 2, member: 'demo-1', host: '10.0.0.2', writable: true, timeline: 2 }), 8),
    ]);
    expect(events.map((e) => e.type)).toEqual(['primary-changed', 'no-primary', 'primary-changed']);
    expect(events[2]).toMatchObject({
      previous: endpoint(),
      current: { member: 'demo-1', term: 2, writable: true },
      reason: 'unknown',
    });
    expect(state.leader?.writable).toBe(true);
  });

  it('announces no primary when a new non-writable term replaces a writable leader without a delete', () => {
    const { events } = run([put(leader(), 5), put(leader({ term: 2, member: 'demo-1', writable: false }), 6)]);
    expect(events[1]).toEqual({ type: 'no-primary', previous: endpoint(), term: 2 });
  });

  it('ignores a record of an older term, reports it and keeps the newer leader', () => {
    const newer = leader({ term: 3, member: 'demo-2' });
    const { state, events } = run([put(newer, 5), put(leader({ term: 2 }), 6)]);
    expect(events[1]?.type).toBe('discovery-error');
    expect(state.leader?.member).toBe('demo-2');
    expect(state.newestTerm).toBe(3);
  });

  it('ignores an observation older than the state (a slow re-read after a newer watch event)', () => {
    const d = decideLeaderObservation(run([put(leader({ term: 2 }), 9)]).state, { kind: 'absent', revision: 8 });
    expect(d.ignored).toBe('older-revision');
    expect(d.events).toEqual([]);
  });

  it('keeps the last good leader on an invalid record and reports it', () => {
    const before = run([put(leader(), 5)]).state;
    const d = decideLeaderObservation(before, { kind: 'invalid', error: new Error('garbage'), revision: 6 });
    expect(d.next.leader).toEqual(endpoint());
    expect(d.events).toEqual([{ type: 'discovery-error', error: new Error('garbage') }]);
  });

  it('emits nothing for the same record read again', () => {
    const before = run([put(leader(), 5)]).state;
    expect(decideLeaderObservation(before, put(leader(), 7)).events).toEqual([]);
  });

  it('labels a new term on the same member a restart and uses the controller reason when known', () => {
    const same = run([put(leader(), 1), put(leader({ term: 2 }), 2)]);
    expect(same.events[1]).toMatchObject({ type: 'primary-changed', reason: 'restart' });
    const sw = run([put(leader(), 1), put(leader({ term: 2, member: 'demo-1' }), 2, 'switchover')]);
    expect(sw.events[1]).toMatchObject({ type: 'primary-changed', reason: 'switchover' });
  });
});

describe('decideIncarnation', () => {
  const state = { ...initialDiscoveryState, newestTerm: 7, observed: true, revision: 40 };
  it('learns the first system id and keeps the same one', () => {
    expect(decideIncarnation(state, null, '123')).toEqual({ action: 'first' });
    expect(decideIncarnation(state, '123', '123')).toEqual({ action: 'same' });
  });
  it('forgets the newest term on another system id (a restored or re-bootstrapped cluster)', () => {
    expect(decideIncarnation(state, '123', '456')).toEqual({
      action: 'reset',
      next: { ...state, newestTerm: 0 },
      previousSystemId: '123',
    });
  });
});

describe('reasonFromTarget', () => {
  it("maps the controller's decision to the event reason", () => {
    expect(reasonFromTarget('failover')).toBe('failover');
    expect(reasonFromTarget('manual-failover')).toBe('failover');
    expect(reasonFromTarget('switchover')).toBe('switchover');
    expect(reasonFromTarget('bootstrap')).toBe('initial');
  });
});

describe('decideCheckout', () => {
  const snap = (overrides: Partial<CheckoutSnapshot> = {}): CheckoutSnapshot => ({
    leader: endpoint(),
    staleSinceMillis: null,
    stalePolicy: 'serve',
    closed: false,
    ending: false,
    observed: true,
    nowMillis: 1000,
    deadlineMillis: 2000,
    preconnect: false,
    ...overrides,
  });

  it('connects to a writable leader', () => {
    expect(decideCheckout(snap())).toEqual({ action: 'connect', endpoint: endpoint() });
  });
  it('serves checkouts made before end() once the leader is read, and fails them at once when there is no primary', () => {
    expect(decideCheckout(snap({ ending: true }))).toEqual({ action: 'connect', endpoint: endpoint() });
    expect(decideCheckout(snap({ ending: true, leader: null, observed: false }))).toEqual({ action: 'wait' });
    expect(decideCheckout(snap({ ending: true, leader: null }))).toEqual({ action: 'fail', code: 'closed' });
    expect(decideCheckout(snap({ ending: true, leader: endpoint({ writable: false }) }))).toEqual({
      action: 'fail',
      code: 'closed',
    });
  });
  it('waits for a leader that is not writable, then fails at the deadline', () => {
    expect(decideCheckout(snap({ leader: endpoint({ writable: false }) }))).toEqual({ action: 'wait' });
    expect(decideCheckout(snap({ leader: null, nowMillis: 2000 }))).toEqual({ action: 'fail', code: 'no-primary' });
  });
  it('keeps serving the last known primary when stale under the serve policy', () => {
    expect(decideCheckout(snap({ staleSinceMillis: 10 }))).toMatchObject({ action: 'connect' });
  });
  it('refuses new checkouts when stale under the refuse policy', () => {
    expect(decideCheckout(snap({ staleSinceMillis: 10, stalePolicy: 'refuse' }))).toEqual({
      action: 'fail',
      code: 'discovery-stale',
    });
  });
  it('fails once discovery is closed', () => {
    expect(decideCheckout(snap({ closed: true }))).toEqual({ action: 'fail', code: 'closed' });
  });
  it('connects early to a leader being promoted when preconnect is on, never when stale or past the deadline', () => {
    const promoting = endpoint({ writable: false });
    expect(decideCheckout(snap({ leader: promoting, preconnect: true }))).toEqual({
      action: 'preconnect',
      endpoint: promoting,
    });
    expect(decideCheckout(snap({ leader: null, preconnect: true }))).toEqual({ action: 'wait' });
    expect(decideCheckout(snap({ leader: promoting, preconnect: true, staleSinceMillis: 10 }))).toEqual({
      action: 'wait',
    });
    expect(decideCheckout(snap({ leader: promoting, preconnect: true, nowMillis: 2000 }))).toEqual({
      action: 'fail',
      code: 'no-primary',
    });
    expect(decideCheckout(snap({ preconnect: true }))).toEqual({ action: 'connect', endpoint: endpoint() });
  });
});

describe('decidePromotion', () => {
  const candidate = { kind: 'candidate', member: 'demo-0', host: '10.0.0.1', port: 5432, term: 1 } as const;
  const promotion = (
    leader: PrimaryEndpoint | null,
    overrides: Partial<PromotionSnapshot> = {},
  ): PromotionSnapshot => ({
    candidate,
    leader,
    closed: false,
    nowMillis: 1000,
    deadlineMillis: 2000,
    ...overrides,
  });
  it('hands the connection out once the same server in the same term is writable', () => {
    expect(decidePromotion(promotion(endpoint({ writable: true })))).toEqual({
      action: 'promoted',
      target: { ...candidate, kind: 'primary' },
    });
  });
  it('keeps waiting while the record is not writable', () => {
    expect(decidePromotion(promotion(endpoint({ writable: false })))).toEqual({ action: 'wait' });
  });
  it('gives up when the leader moved: gone, another term, member or address', () => {
    expect(decidePromotion(promotion(null))).toEqual({ action: 'moved' });
    expect(decidePromotion(promotion(endpoint({ term: 2 })))).toEqual({ action: 'moved' });
    expect(decidePromotion(promotion(endpoint({ member: 'demo-1' })))).toEqual({ action: 'moved' });
    expect(decidePromotion(promotion(endpoint({ host: '10.0.0.2' })))).toEqual({ action: 'moved' });
    expect(decidePromotion(promotion(endpoint({ port: 5433 })))).toEqual({ action: 'moved' });
  });
  it('gives up when the pool closes, and fails at the deadline while the promotion still runs', () => {
    expect(decidePromotion(promotion(endpoint({ writable: false }), { closed: true }))).toEqual({ action: 'moved' });
    expect(decidePromotion(promotion(endpoint({ writable: false }), { nowMillis: 2000 }))).toEqual({ action: 'fail' });
    expect(decidePromotion(promotion(endpoint({ writable: true }), { nowMillis: 2000 }))).toMatchObject({
      action: 'promoted',
    });
  });
});

describe('decideRole', () => {
  it('reads in_hot_standby and asks older servers with a query', () => {
    expect(decideRole('off')).toBe('primary');
    expect(decideRole('on')).toBe('standby');
    expect(decideRole(undefined)).toBe('unknown');
  });
});

describe('shouldDrain', () => {
  it('drains connections of another term or when there is no leader', () => {
    expect(shouldDrain(1, endpoint())).toBe(false);
    expect(shouldDrain(1, endpoint({ term: 2 }))).toBe(true);
    expect(shouldDrain(1, null)).toBe(true);
  });
});

describe('classifyQueryFailure', () => {
  const failure = (overrides: Partial<QueryFailure> = {}): QueryFailure => ({
    sqlState: null,
    connectionLost: true,
    sent: true,
    transactionStatus: 'I',
    text: 'INSERT INTO t VALUES (1)',
    ...overrides,
  });

  it('passes server errors through and discards the connection on the ones proving a non-primary', () => {
    expect(classifyQueryFailure(failure({ sqlState: '23505' }))).toEqual({
      kind: 'pass-through',
      discardConnection: false,
      reread: false,
    });
    for (const code of ['25006', '57P03']) {
      expect(classifyQueryFailure(failure({ sqlState: code }))).toEqual({
        kind: 'pass-through',
        discardConnection: true,
        reread: true,
      });
    }
  });
  it('keeps a connection whose 25006 comes from a read-only session chosen by the application', () => {
    expect(classifyQueryFailure(failure({ sqlState: '25006', connectionLost: false, readOnlyByChoice: true }))).toEqual(
      { kind: 'pass-through', discardConnection: false, reread: false },
    );
  });
  it('classifies a session terminated by the server while the statement ran like a lost connection', () => {
    expect(classifyQueryFailure(failure({ sqlState: '57P01', connectionLost: false }))).toEqual({
      kind: 'outcome-unknown',
    });
    expect(classifyQueryFailure(failure({ sqlState: '57P01', connectionLost: false, transactionStatus: 'T' }))).toEqual(
      { kind: 'primary-changed', rolledBack: true },
    );
  });
  it('passes other errors on a live connection through', () => {
    expect(classifyQueryFailure(failure({ connectionLost: false }))).toMatchObject({ kind: 'pass-through' });
  });
  it('calls an unsent statement outside a transaction safe to retry', () => {
    expect(classifyQueryFailure(failure({ sent: false }))).toEqual({ kind: 'primary-changed', rolledBack: false });
  });
  it('reports an unsent statement inside a transaction (or with an unknown status) as rolled back', () => {
    // BEGIN; INSERT a; (connection lost) INSERT b: retrying b alone would commit b without a.
    for (const transactionStatus of ['T', 'E', null]) {
      expect(classifyQueryFailure(failure({ sent: false, transactionStatus }))).toEqual({
        kind: 'primary-changed',
        rolledBack: true,
      });
    }
  });
  it('never calls a statement outside a transaction safe: its outcome is unknown', () => {
    expect(classifyQueryFailure(failure())).toEqual({ kind: 'outcome-unknown' });
    expect(classifyQueryFailure(failure({ text: 'SELECT f()' }))).toEqual({ kind: 'outcome-unknown' });
  });
  it('calls a COMMIT in flight an unknown outcome', () => {
    for (const text of ['COMMIT', 'end', 'INSERT INTO t VALUES (1); COMMIT', "PREPARE TRANSACTION 'x'", '']) {
      expect(classifyQueryFailure(failure({ transactionStatus: 'T', text }))).toEqual({ kind: 'outcome-unknown' });
    }
  });
  it('calls any other statement inside a transaction a rolled-back transaction', () => {
    expect(classifyQueryFailure(failure({ transactionStatus: 'T' }))).toEqual({
      kind: 'primary-changed',
      rolledBack: true,
    });
    expect(classifyQueryFailure(failure({ transactionStatus: 'E', text: 'COMMIT' }))).toEqual({
      kind: 'primary-changed',
      rolledBack: true,
    });
  });
  it('knows BEGIN and ROLLBACK commit nothing', () => {
    expect(classifyQueryFailure(failure({ text: 'BEGIN' }))).toEqual({ kind: 'primary-changed', rolledBack: false });
    expect(classifyQueryFailure(failure({ text: 'begin isolation level serializable' }))).toMatchObject({
      kind: 'primary-changed',
    });
    expect(classifyQueryFailure(failure({ transactionStatus: 'T', text: 'ROLLBACK' }))).toEqual({
      kind: 'primary-changed',
      rolledBack: true,
    });
  });
});

describe('mayCommit', () => {
  it('finds commits, not lookalikes', () => {
    expect(mayCommit('commit')).toBe(true);
    expect(mayCommit('SELECT 1; END')).toBe(true);
    expect(mayCommit('SELECT CASE WHEN true THEN 1 END')).toBe(false);
    expect(mayCommit('SELECT committed FROM t')).toBe(false);
  });
});

describe('retryDelayMillis', () => {
  it('backs off exponentially up to one second', () => {
    expect([1, 2, 3, 10].map(retryDelayMillis)).toEqual([25, 50, 100, 1000]);
  });
});

describe('decideReplica', () => {
  const member = (overrides: Partial<ReplicaCandidate> = {}): ReplicaCandidate => ({
    name: 'demo-1',
    role: 'replica',
    state: 'running',
    host: '10.0.0.2',
    port: 5432,
    term: 1,
    lagBytes: 0,
    lagSeconds: 0,
    streaming: true,
    healthy: true,
    ...overrides,
  });
  const snap = (overrides: Partial<ReplicaSnapshot> = {}): ReplicaSnapshot => ({
    members: [member(), member({ name: 'demo-2', host: '10.0.0.3' })],
    leader: endpoint(),
    maxLagBytes: 1000,
    maxLagMillis: 1000,
    fallback: 'primary',
    pick: 0,
    ...overrides,
  });

  it('spreads connections over the eligible replicas in name order', () => {
    const picks = [0, 1, 2].map((pick) => decideReplica(snap({ pick })));
    expect(picks.map((d) => (d.action === 'connect' ? d.target.member : d.action))).toEqual([
      'demo-1',
      'demo-2',
      'demo-1',
    ]);
    expect(picks[0]).toEqual({
      action: 'connect',
      target: { kind: 'replica', member: 'demo-1', host: '10.0.0.2', port: 5432, term: 1 },
    });
  });

  it('skips replicas that lag, are unhealthy, not streaming, of an older term or without lag figures', () => {
    const bad = [
      member({ name: 'a', lagBytes: 5000 }),
      member({ name: 'b', lagSeconds: 2 }),
      member({ name: 'c', healthy: false }),
      member({ name: 'd', streaming: false }),
      member({ name: 'e', term: 0 }),
      member({ name: 'f', lagBytes: null }),
      member({ name: 'g', state: 'starting' }),
      member({ name: 'demo-0', role: 'primary' }),
    ];
    const decision = decideReplica(snap({ members: [...bad, member({ name: 'ok' })] }));
    expect(decision).toMatchObject({ action: 'connect', target: { member: 'ok' } });
    for (const m of bad) expect(replicaRejection(m, snap())).not.toBeNull();
  });

  it('honours "no limit" lag settings', () => {
    const laggy = member({ lagBytes: 1e12, lagSeconds: 1e6 });
    expect(replicaRejection(laggy, snap({ maxLagBytes: null, maxLagMillis: null }))).toBeNull();
  });

  it('falls back to the writable primary, or waits, as configured', () => {
    const none = snap({ members: [member({ lagBytes: 1e9 })] });
    expect(decideReplica(none)).toEqual({
      action: 'connect',
      target: { kind: 'primary', member: 'demo-0', host: '10.0.0.1', port: 5432, term: 1 },
    });
    const waiting = decideReplica({ ...none, fallback: 'fail' });
    expect(waiting.action).toBe('wait');
    expect(waiting.action === 'wait' && waiting.reason).toMatch(/lags 1000000000 bytes/);
    expect(decideReplica({ ...none, leader: endpoint({ writable: false }) }).action).toBe('wait');
  });
});
