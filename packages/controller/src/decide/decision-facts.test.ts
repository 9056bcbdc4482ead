import { describe, expect, it } from 'vitest';
import { leader, member, target } from './__fixtures__/records.js';
import { type AgentSnapshot, decideAgentAction } from './agent-role.js';
import { type ControllerSnapshot, decideController } from './controller.js';
import { agentDecisionFacts, controllerDecisionFacts } from './decision-facts.js';

// Literal fixtures as in agent-role.test.ts and controller.test.ts: the agent's
// monotonic now is 10 000 ms with its lease deadline at 11 500 ms; the controller's
// wall-clock snapshot is taken at 12:00:10, every member reported at 12:00:09.5.

function agent(overrides: Partial<AgentSnapshot> = {}): AgentSnapshot {
  return {
    self: 'demo-1',
    now: 10_000,
    leaseDeadline: 11_500,
    postgres: 'replica',
    observedWritable: false,
    crashes: 0,
    holdsLeader: false,
    leader: leader(),
    term: 3,
    target: null,
    following: { member: 'demo-0', host: '127.0.0.1', port: 5432 },
    maxRestarts: 1,
    ...overrides,
  };
}

const now = Date.parse('2024-05-01T12:00:10.000Z');
const primary0 = member({ name: 'demo-0', role: 'primary', port: 5432, receivedLsn: '0/5000000' });
const replica1 = member({ name: 'demo-1', port: 5433, receivedLsn: '0/4F00000', replayedLsn: '0/4F00000' });
const replica2 = member({ name: 'demo-2', port: 5434, receivedLsn: '0/4E00000', replayedLsn: '0/4E00000' });

/** demo-0 was primary of term 3 (last seen at 0/5000000); its leader record vanished 3 s ago. */
function leaderless(overrides: Partial<ControllerSnapshot> = {}): ControllerSnapshot {
  const down = member({ name: 'demo-0', role: 'unknown', state: 'running', receivedLsn: null, replayedLsn: null });
  return {
    now,
    term: 3,
    leader: null,
    target: null,
    targetSeenAt: null,
    members: [down, replica1, replica2],
    leaderLostAt: now - 3000,
    lastPrimary: primary0,
    lastPrimaryRecords: [],
    lastAsReplica: [],
    switchover: null,
    lastHistoryTerm: 3,
    policy: {
      maximumLagOnFailoverBytes: 16 * 1024 * 1024,
      freshReportWaitMillis: 1000,
      targetInstallTimeoutMillis: 5000,
      lastPrimaryWaitMillis: 30_000,
      maximumReportAgeMillis: 3000,
    },
    ...overrides,
  };
}

describe('agentDecisionFacts', () => {
  it('carries the term, the target, the lease remaining and what postgres answered for a promotion', () => {
    const s = agent({ leader: null, target: target() });
    const action = decideAgentAction(s);
    expect(action.type).toBe('promote');
    expect(agentDecisionFacts(s, action)).toEqual({
      decision: 'promote',
      term: 3,
      leader: null,
      target: { member: 'demo-1', term: 4, reason: 'failover' },
      holdsLeader: false,
      leaseRemainingMillis: 1500,
      postgres: 'replica',
      observedWritable: false,
      crashes: 0,
      following: 'demo-0',
    });
  });

  it('carries the reason of a fence and a lease deadline already passed (negative)', () => {
    const s = agent({ self: 'demo-0', postgres: 'primary', observedWritable: true, holdsLeader: true, now: 11_600 });
    const facts = agentDecisionFacts(s, decideAgentAction(s));
    expect(facts).toMatchObject({ decision: 'fence', reason: 'lease deadline passed', leaseRemainingMillis: -100 });
  });

  it('rounds the lease remaining to whole milliseconds (the monotonic clock has fractions)', () => {
    const s = agent({ leader: null, target: target(), now: 10_000.4, leaseDeadline: 11_295.9 });
    expect(agentDecisionFacts(s, decideAgentAction(s)).leaseRemainingMillis).toBe(1296);
  });

  it('names the leader to follow and what a restart starts as', () => {
    const moved = leader({ member: 'demo-2', port: 5434, term: 4 });
    const follow = agent({ leader: moved, term: 4 });
    expect(agentDecisionFacts(follow, decideAgentAction(follow))).toMatchObject({
      decision: 'follow',
      leader: { member: 'demo-2', term: 4, writable: true },
      following: 'demo-0',
    });
    const down = agent({ postgres: 'down', observedWritable: null, leaseDeadline: null });
    expect(agentDecisionFacts(down, decideAgentAction(down))).toMatchObject({
      decision: 'restart',
      as: 'replica',
      leaseRemainingMillis: null,
      observedWritable: null,
    });
  });

  it('is plain JSON data', () => {
    const s = agent({ leader: null, target: target() });
    const facts = agentDecisionFacts(s, decideAgentAction(s));
    expect(JSON.parse(JSON.stringify(facts))).toEqual(facts);
  });
});

describe('controllerDecisionFacts', () => {
  it('lists the candidates an election ranked, with their positions and lag behind the last primary', () => {
    const s = leaderless();
    const decision = decideController(s);
    expect(decision).toMatchObject({ type: 'set-target', target: { member: 'demo-1', term: 4 } });
    const facts = controllerDecisionFacts(s, decision);
    expect(facts).toMatchObject({
      decision: 'set-target',
      reason: 'failover',
      term: 3,
      leader: null,
      target: { member: 'demo-1', term: 4, reason: 'failover' },
      leaderLostForMillis: 3000,
      lastPrimary: 'demo-0',
      lastPrimaryLsn: '0/5000000',
      switchover: null,
    });
    expect(facts.candidates).toEqual([
      {
        member: 'demo-0',
        role: 'unknown',
        state: 'running',
        timeline: 2,
        lsn: null,
        lagBytes: null,
        streaming: true,
        noFailover: false,
        reportAgeMillis: 500,
      },
      {
        member: 'demo-1',
        role: 'replica',
        state: 'running',
        timeline: 2,
        lsn: '0/4F00000',
        lagBytes: 0x100000,
        streaming: true,
        noFailover: false,
        reportAgeMillis: 500,
      },
      {
        member: 'demo-2',
        role: 'replica',
        state: 'running',
        timeline: 2,
        lsn: '0/4E00000',
        lagBytes: 0x200000,
        streaming: true,
        noFailover: false,
        reportAgeMillis: 500,
      },
    ]);
  });

  it('says why each member was refused when no member qualifies', () => {
    const s = leaderless({ policy: { ...leaderless().policy, maximumLagOnFailoverBytes: 1024 } });
    const decision = decideController(s);
    expect(decision.type).toBe('no-candidate');
    const facts = controllerDecisionFacts(s, decision);
    expect(facts.reason).toMatch(/^no member qualifies for term 4/);
    expect(facts.candidates.find((c) => c.member === 'demo-1')?.rejected).toMatch(/bytes behind/);
    expect(facts.candidates.find((c) => c.member === 'demo-2')?.rejected).toMatch(/bytes behind/);
  });

  it('names the switchover request and the leader it moves away from', () => {
    const s = leaderless({
      leader: leader(),
      members: [primary0, replica1, replica2],
      leaderLostAt: null,
      switchover: { v: 1, from: 'demo-0', to: 'demo-2', at: null, requestedAt: '2024-05-01T12:00:08.000Z' },
    });
    const decision = decideController(s);
    expect(decision).toMatchObject({ type: 'set-target', target: { member: 'demo-2', reason: 'switchover' } });
    expect(controllerDecisionFacts(s, decision)).toMatchObject({
      reason: 'switchover',
      leader: { member: 'demo-0', term: 3, writable: true },
      leaderLostForMillis: null,
      lastPrimary: 'demo-0',
      switchover: { from: 'demo-0', to: 'demo-2' },
    });
  });
});
