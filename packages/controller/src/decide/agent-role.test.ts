import { describe, expect, it } from 'vitest';
import { leader, target } from './__fixtures__/records.js';
import { type AgentSnapshot, decideAgentAction, decideWithoutEtcd, postgresStates } from './agent-role.js';

// Literal fixtures built with small override factories. Monotonic time: now is
// 10 000 ms, the lease deadline 11 500 ms unless a test says otherwise.

/** demo-1, a replica following the primary demo-0 of term 3. */
function replica(overrides: Partial<AgentSnapshot> = {}): AgentSnapshot {
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

/** demo-0, the primary of term 3, holding the leader record. */
function primary(overrides: Partial<AgentSnapshot> = {}): AgentSnapshot {
  return replica({
    self: 'demo-0',
    postgres: 'primary',
    observedWritable: true,
    holdsLeader: true,
    following: null,
    ...overrides,
  });
}

/** demo-1, a replica whose primary's leader record is gone, named by the target for term 4. */
function electable(overrides: Partial<AgentSnapshot> = {}): AgentSnapshot {
  return replica({ leader: null, target: target(), ...overrides });
}

describe('decideAgentAction fencing', () => {
  it('fences a writable postgres that does not hold the leader record', () => {
    expect(decideAgentAction(primary({ holdsLeader: false }))).toEqual({
      type: 'fence',
      reason: 'writable without holding the leader record',
    });
  });

  it('fences a writable postgres once its lease deadline has passed', () => {
    expect(decideAgentAction(primary({ now: 11_501 }))).toEqual({ type: 'fence', reason: 'lease deadline passed' });
  });

  it('fences a writable postgres exactly at its lease deadline', () => {
    expect(decideAgentAction(primary({ now: 11_500 })).type).toBe('fence');
  });

  it('keeps a writable postgres one millisecond before its lease deadline', () => {
    expect(decideAgentAction(primary({ now: 11_499 }))).toEqual({ type: 'none' });
  });

  it('fences a writable postgres without any lease', () => {
    expect(decideAgentAction(primary({ leaseDeadline: null }))).toEqual({
      type: 'fence',
      reason: 'lease deadline passed',
    });
  });

  it('fences before anything else: a switchover, a pending promotion or a newer leader', () => {
    const busy = {
      target: target({ member: 'demo-2' }),
      leader: leader({ member: 'demo-2', term: 4 }),
      crashes: 5,
    } satisfies Partial<AgentSnapshot>;
    expect(decideAgentAction(primary({ ...busy, now: 20_000 })).type).toBe('fence');
    expect(decideAgentAction(primary({ ...busy, holdsLeader: false })).type).toBe('fence');
    expect(
      decideAgentAction(primary({ self: 'demo-1', leader: null, target: target(), holdsLeader: false })).type,
    ).toBe('fence');
  });

  it('never fences a postgres that is not writable', () => {
    for (const postgres of postgresStates.filter((p) => p !== 'primary')) {
      for (const holdsLeader of [true, false]) {
        const action = decideAgentAction(replica({ postgres, holdsLeader, leaseDeadline: null }));
        expect(action.type, `${postgres} ${holdsLeader}`).not.toBe('fence');
      }
    }
  });
});

describe('decideAgentAction on facts and unfinished promotions', () => {
  it('fences a standby that postgres says is out of recovery (promoted out of band) without the leader record', () => {
    expect(decideAgentAction(replica({ observedWritable: true }))).toEqual({
      type: 'fence',
      reason: 'postgres is out of recovery but we hold no leader record',
    });
  });

  it('fences a standby out of recovery while it holds the leader record past its lease deadline (found by the model)', () => {
    // The model's counterexample: the primary, cut off, fenced itself at its deadline;
    // reconnected while etcd still had its lease, it restarted as a standby holding
    // its writable record; an operator then promoted that standby.
    const own = leader({ member: 'demo-1', writable: true });
    const s = replica({ holdsLeader: true, leader: own, following: null, observedWritable: true, now: 11_550 });
    expect(decideAgentAction(s)).toEqual({
      type: 'fence',
      reason: 'postgres is out of recovery but our lease deadline passed',
    });
    expect(decideAgentAction({ ...s, leaseDeadline: null }).type).toBe('fence');
    expect(decideAgentAction({ ...s, now: 11_000 }).type).toBe('none');
  });

  it('does not fence on the facts while it holds the leader record', () => {
    expect(decideAgentAction(primary()).type).toBe('none');
  });

  it('finishes a promotion when it holds a leader record of this term that is not writable yet', () => {
    const own = leader({ member: 'demo-1', writable: false });
    expect(decideAgentAction(replica({ holdsLeader: true, leader: own, following: null }))).toEqual({
      type: 'finish-promotion',
    });
    expect(
      decideAgentAction(replica({ holdsLeader: true, leader: own, postgres: 'primary', observedWritable: true })),
    ).toEqual({ type: 'finish-promotion' });
  });

  it('restarts as a standby (not writable) when its unfinished promotion finds postgres down', () => {
    const own = leader({ member: 'demo-1', writable: false });
    expect(
      decideAgentAction(replica({ holdsLeader: true, leader: own, postgres: 'down', observedWritable: null })),
    ).toEqual({ type: 'restart', as: 'replica' });
  });

  it('releases a leader record that is not writable once its lease deadline has passed', () => {
    const own = leader({ member: 'demo-1', writable: false });
    expect(decideAgentAction(replica({ holdsLeader: true, leader: own, now: 12_000 })).type).toBe('release-leader');
  });

  it('restarts as primary only with a writable leader record of the current term', () => {
    const stale = leader({ term: 2 });
    expect(decideAgentAction(primary({ postgres: 'down', observedWritable: null, leader: stale, term: 3 }))).toEqual({
      type: 'restart',
      as: 'replica',
    });
  });
});

describe('decideAgentAction after a postgres crash', () => {
  it('restarts a crashed primary in place as primary while it holds the leader record and its lease', () => {
    expect(decideAgentAction(primary({ postgres: 'down', crashes: 1 }))).toEqual({ type: 'restart', as: 'primary' });
  });

  it('releases the leader record once postgres failed more often than maxRestarts', () => {
    expect(decideAgentAction(primary({ postgres: 'down', crashes: 2 }))).toEqual({
      type: 'release-leader',
      reason: 'postgres failed 2 times in a row',
    });
  });

  it('honours a maxRestarts of zero: releases after the first crash', () => {
    expect(decideAgentAction(primary({ postgres: 'down', crashes: 1, maxRestarts: 0 })).type).toBe('release-leader');
  });

  it('restarts as a replica when it holds the leader record but its lease deadline has passed', () => {
    expect(decideAgentAction(primary({ postgres: 'down', observedWritable: null, crashes: 1, now: 12_000 }))).toEqual({
      type: 'restart',
      as: 'replica',
    });
  });

  it('restarts as a replica when it holds the leader record but has no lease', () => {
    expect(decideAgentAction(primary({ postgres: 'down', observedWritable: null, leaseDeadline: null }))).toEqual({
      type: 'restart',
      as: 'replica',
    });
  });

  it('restarts a member that does not hold the leader record as a replica, whatever the records say', () => {
    for (const l of [null, leader(), leader({ member: 'demo-1' })]) {
      expect(decideAgentAction(replica({ postgres: 'down', leader: l, crashes: 9 }))).toEqual({
        type: 'restart',
        as: 'replica',
      });
    }
  });

  it('restarts a fenced former primary as a replica', () => {
    expect(decideAgentAction(primary({ postgres: 'down', observedWritable: null, holdsLeader: false }))).toEqual({
      type: 'restart',
      as: 'replica',
    });
  });

  it('never restarts as primary without both the leader record and a lease deadline ahead', () => {
    for (const holdsLeader of [true, false]) {
      for (const now of [0, 11_499, 11_500, 20_000]) {
        for (const leaseDeadline of [null, 11_500]) {
          const action = decideAgentAction(replica({ postgres: 'down', holdsLeader, now, leaseDeadline }));
          if (action.type === 'restart' && action.as === 'primary') {
            expect(holdsLeader).toBe(true);
            expect(leaseDeadline !== null && now < leaseDeadline).toBe(true);
          }
        }
      }
    }
  });
});

describe('decideAgentAction switchover', () => {
  it('steps down when a target for a newer term names another member', () => {
    const t = target({ reason: 'switchover' });
    expect(decideAgentAction(primary({ target: t }))).toEqual({ type: 'step-down', target: t });
  });

  it('compares the target with the term it read when the leader record is missing from its view', () => {
    const t = target({ reason: 'switchover' });
    expect(decideAgentAction(primary({ target: t, leader: null, term: 3 }))).toEqual({ type: 'step-down', target: t });
    expect(decideAgentAction(primary({ target: t, leader: null, term: 4 }))).toEqual({ type: 'none' });
  });

  it('does not step down for a target of its own term or older', () => {
    expect(decideAgentAction(primary({ target: target({ term: 3 }) }))).toEqual({ type: 'none' });
    expect(decideAgentAction(primary({ target: target({ term: 2 }) }))).toEqual({ type: 'none' });
  });

  it('does not step down for a target that names itself', () => {
    expect(decideAgentAction(primary({ target: target({ member: 'demo-0' }) }))).toEqual({ type: 'none' });
  });

  it('does not step down while postgres is not writable', () => {
    expect(decideAgentAction(primary({ postgres: 'starting', target: target() }))).toEqual({ type: 'none' });
  });
});

describe('decideAgentAction promotion', () => {
  it('promotes when no leader exists, the target names it for the next term, it runs as a replica and its lease is valid', () => {
    expect(decideAgentAction(electable())).toEqual({ type: 'promote', target: target() });
  });

  it('does not promote while a leader record exists, even one that is not writable', () => {
    expect(decideAgentAction(electable({ leader: leader() }))).toEqual({ type: 'none' });
    expect(decideAgentAction(electable({ leader: leader({ writable: false, member: 'demo-2', term: 4 }) }))).toEqual({
      type: 'none',
    });
  });

  it('does not promote for a target that names another member', () => {
    expect(decideAgentAction(electable({ target: target({ member: 'demo-2' }) }))).toEqual({ type: 'none' });
  });

  it('does not promote for a target that is not exactly for the next term', () => {
    for (const term of [2, 3, 5]) {
      expect(decideAgentAction(electable({ target: target({ term }) })), String(term)).toEqual({ type: 'none' });
    }
  });

  it('does not promote without a target', () => {
    expect(decideAgentAction(electable({ target: null }))).toEqual({ type: 'none' });
  });

  it('does not promote once its lease deadline has passed or without a lease', () => {
    expect(decideAgentAction(electable({ now: 11_500 }))).toEqual({ type: 'none' });
    expect(decideAgentAction(electable({ leaseDeadline: null }))).toEqual({ type: 'none' });
  });

  it('does not promote a postgres that is still starting', () => {
    expect(decideAgentAction(electable({ postgres: 'starting' }))).toEqual({ type: 'none' });
  });

  it('starts a down postgres as a replica first instead of promoting it', () => {
    expect(decideAgentAction(electable({ postgres: 'down' }))).toEqual({ type: 'restart', as: 'replica' });
  });

  it('does not promote again when it already holds the leader record', () => {
    expect(decideAgentAction(electable({ holdsLeader: true }))).toEqual({ type: 'none' });
  });
});

describe('decideAgentAction following', () => {
  it('follows a writable leader it does not follow yet', () => {
    const l = leader();
    expect(decideAgentAction(replica({ following: null }))).toEqual({ type: 'follow', leader: l });
  });

  it('re-points when the leader is another member, or moved host or port', () => {
    const l = leader({ member: 'demo-2', host: '10.0.0.3', port: 5434, term: 4 });
    expect(decideAgentAction(replica({ leader: l }))).toEqual({ type: 'follow', leader: l });
    const moved = leader({ host: '10.0.0.9' });
    expect(decideAgentAction(replica({ leader: moved }))).toEqual({ type: 'follow', leader: moved });
    const port = leader({ port: 6432 });
    expect(decideAgentAction(replica({ leader: port }))).toEqual({ type: 'follow', leader: port });
  });

  it('does nothing when it already follows the leader', () => {
    expect(decideAgentAction(replica())).toEqual({ type: 'none' });
  });

  it('does not follow a leader that is not writable yet', () => {
    expect(decideAgentAction(replica({ following: null, leader: leader({ writable: false }) }))).toEqual({
      type: 'none',
    });
  });

  it('does not follow itself', () => {
    expect(decideAgentAction(replica({ following: null, leader: leader({ member: 'demo-1' }) }))).toEqual({
      type: 'none',
    });
  });

  it('does not re-point a postgres that is still starting', () => {
    expect(decideAgentAction(replica({ postgres: 'starting', following: null }))).toEqual({ type: 'none' });
  });

  it('keeps following its old upstream when no leader exists (waiting for an election)', () => {
    expect(decideAgentAction(replica({ leader: null }))).toEqual({ type: 'none' });
  });
});

describe('decideAgentAction steady states', () => {
  it('does nothing as a primary holding the leader record with its lease ahead', () => {
    expect(decideAgentAction(primary())).toEqual({ type: 'none' });
  });

  it('does nothing while postgres is starting', () => {
    expect(decideAgentAction(replica({ postgres: 'starting' }))).toEqual({ type: 'none' });
  });
});

describe('decideWithoutEtcd (a tick whose etcd read failed)', () => {
  const reason = 'postgres is out of recovery but we hold no valid leader record';

  it('fences a writable postgres when we hold no leader record', () => {
    expect(decideWithoutEtcd({ observedWritable: true, holdsLeader: false, leaseValid: true })).toEqual({
      type: 'fence',
      reason,
    });
  });

  it('fences a writable postgres past our lease deadline even while we hold the record', () => {
    expect(decideWithoutEtcd({ observedWritable: true, holdsLeader: true, leaseValid: false })).toEqual({
      type: 'fence',
      reason,
    });
  });

  it('leaves a writable primary alone while its claim is valid', () => {
    expect(decideWithoutEtcd({ observedWritable: true, holdsLeader: true, leaseValid: true })).toBeNull();
  });

  it('decides nothing for a standby or a postgres that did not answer', () => {
    for (const observedWritable of [false, null]) {
      expect(decideWithoutEtcd({ observedWritable, holdsLeader: false, leaseValid: false })).toBeNull();
    }
  });
});
