import type { SwitchoverRecord, TargetRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { target as fixtureTarget, lastPrimaryRecord, leader, member } from './__fixtures__/records.js';
import { type ControllerDecision, type ControllerSnapshot, decideController } from './controller.js';

// Literal fixtures built with small override factories. Wall-clock times: the
// snapshot is taken at 12:00:10; the old leader vanished at 12:00:09.2 and every
// member reported at 12:00:09.5 unless a test says otherwise.
const at = (iso: string) => Date.parse(iso);
const now = at('2024-05-01T12:00:10.000Z');

const target = (overrides: Partial<TargetRecord> = {}): TargetRecord =>
  fixtureTarget({ decidedAt: '2024-05-01T12:00:09.800Z', ...overrides });

function switchover(overrides: Partial<SwitchoverRecord> = {}): SwitchoverRecord {
  return { v: 1, from: null, to: null, at: null, requestedAt: '2024-05-01T12:00:08.000Z', ...overrides };
}

const primary0 = member({ name: 'demo-0', role: 'primary', port: 5432, receivedLsn: '0/5000000' });
const replica1 = member({ name: 'demo-1', port: 5433, receivedLsn: '0/4F00000', replayedLsn: '0/4F00000' });
const replica2 = member({ name: 'demo-2', port: 5434, receivedLsn: '0/4E00000', replayedLsn: '0/4E00000' });

/** A healthy cluster: demo-0 leads term 3, history is written up to term 3. */
function snapshot(overrides: Partial<ControllerSnapshot> = {}): ControllerSnapshot {
  return {
    now,
    term: 3,
    leader: leader(),
    target: null,
    targetSeenAt: null,
    members: [primary0, replica1, replica2],
    leaderLostAt: null,
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

/** demo-0 was primary of term 3 and its leader record vanished a second ago. */
function leaderless(overrides: Partial<ControllerSnapshot> = {}): ControllerSnapshot {
  const down = member({ name: 'demo-0', role: 'unknown', state: 'running', receivedLsn: null, replayedLsn: null });
  return snapshot({
    leader: null,
    leaderLostAt: at('2024-05-01T12:00:09.200Z'),
    members: [down, replica1, replica2],
    ...overrides,
  });
}

function expectTarget(decision: ControllerDecision): TargetRecord {
  expect(decision.type).toBe('set-target');
  if (decision.type !== 'set-target') throw new Error('unreachable');
  return decision.target;
}

describe('decideController with a healthy primary', () => {
  it('does nothing when the history is written and no switchover is asked for', () => {
    expect(decideController(snapshot())).toEqual({ type: 'none' });
  });

  it('ignores a leftover target of the current or an older term', () => {
    expect(decideController(snapshot({ target: target({ term: 3, member: 'demo-0' }) }))).toEqual({ type: 'none' });
  });
});

describe('decideController history', () => {
  const promoted = {
    term: 4,
    leader: leader({ term: 4, member: 'demo-1', port: 5433, timeline: 3, since: '2024-05-01T12:00:09.900Z' }),
    target: target(),
    members: [
      member({ name: 'demo-1', role: 'primary', receivedLsn: '0/4F00000', replayedLsn: '0/4F00000' }),
      replica2,
    ],
    lastPrimary: primary0,
    leaderLostAt: at('2024-05-01T12:00:09.000Z'),
  } satisfies Partial<ControllerSnapshot>;

  it('records a promotion once the new leader is writable: old and new primary, term, timeline, reason, timings, LSNs, loss', () => {
    expect(decideController(snapshot(promoted))).toEqual({
      type: 'record-history',
      history: {
        v: 1,
        term: 4,
        oldPrimary: 'demo-0',
        newPrimary: 'demo-1',
        timeline: 3,
        reason: 'failover',
        detectedAt: '2024-05-01T12:00:09.000Z',
        promotedAt: '2024-05-01T12:00:09.900Z',
        lastKnownLsn: { 'demo-0': '0/5000000', 'demo-1': '0/4F00000', 'demo-2': '0/4E00000' },
        decidedAt: '2024-05-01T12:00:09.800Z',
        writableAt: '2024-05-01T12:00:10.000Z',
        lostBytes: 0x100000,
      },
    });
  });

  it('takes detectedAt from the target, so a switchover is detected at its request, before the decision', () => {
    // The controller saw the request at 09.500, wrote the target at 09.800 and saw the
    // old primary release the leader record (leaderLostAt) only after that, at 09.850.
    const decision = decideController(
      snapshot({
        ...promoted,
        target: target({ reason: 'switchover', detectedAt: '2024-05-01T12:00:09.500Z' }),
        leaderLostAt: at('2024-05-01T12:00:09.850Z'),
      }),
    );
    expect(decision).toMatchObject({
      type: 'record-history',
      history: {
        detectedAt: '2024-05-01T12:00:09.500Z',
        decidedAt: '2024-05-01T12:00:09.800Z',
        writableAt: '2024-05-01T12:00:10.000Z',
      },
    });
  });

  it('names the old primary from the target when no last-primary record or remembered primary does', () => {
    const decision = decideController(snapshot({ ...promoted, lastPrimary: null, lastPrimaryRecords: [] }));
    expect(decision).toMatchObject({ type: 'record-history', history: { oldPrimary: 'demo-0' } });
  });

  it('names the old primary from the previous term’s history when nothing else does (a controller started late)', () => {
    const decision = decideController(
      snapshot({
        term: 4,
        leader: leader({ term: 4, member: 'demo-1' }),
        target: null,
        lastPrimary: null,
        lastPrimaryRecords: [],
        lastHistory: { term: 3, newPrimary: 'demo-2' },
      }),
    );
    expect(decision).toMatchObject({ type: 'record-history', history: { reason: 'restart', oldPrimary: 'demo-2' } });
    const older = decideController(
      snapshot({
        term: 4,
        leader: leader({ term: 4, member: 'demo-1' }),
        target: null,
        lastPrimary: null,
        lastPrimaryRecords: [],
        lastHistory: { term: 2, newPrimary: 'demo-2' },
      }),
    );
    expect(older).toMatchObject({ type: 'record-history', history: { oldPrimary: null } });
  });

  it('records history before it considers a switchover request', () => {
    expect(decideController(snapshot({ ...promoted, switchover: switchover() })).type).toBe('record-history');
  });

  it('waits for the new leader to be writable before recording history', () => {
    const decision = decideController(snapshot({ ...promoted, leader: { ...promoted.leader, writable: false } }));
    expect(decision).toEqual({ type: 'none' });
  });

  it('records the loss figure of a switchover too: the old primary’s position minus the new one’s', () => {
    const decision = decideController(snapshot({ ...promoted, target: target({ reason: 'switchover' }) }));
    expect(decision).toMatchObject({ type: 'record-history', history: { reason: 'switchover', lostBytes: 0x100000 } });
  });

  it('records the loss figure of a manual failover too', () => {
    const decision = decideController(snapshot({ ...promoted, target: target({ reason: 'manual-failover' }) }));
    expect(decision).toMatchObject({
      type: 'record-history',
      history: { reason: 'manual-failover', lostBytes: 0x100000 },
    });
  });

  it('records a promotion nobody targeted as a bootstrap when no history exists yet, with nothing detected', () => {
    const decision = decideController(
      snapshot({
        term: 1,
        leader: leader({ term: 1 }),
        lastHistoryTerm: 0,
        lastPrimary: null,
        target: null,
        // A controller that ran before the bootstrap saw no leader: not a fault.
        leaderLostAt: at('2024-05-01T12:00:01.000Z'),
      }),
    );
    expect(decision).toMatchObject({
      type: 'record-history',
      history: {
        term: 1,
        reason: 'bootstrap',
        oldPrimary: null,
        newPrimary: 'demo-0',
        decidedAt: null,
        detectedAt: null,
      },
    });
  });

  it('records a promotion nobody targeted after earlier history as a restart', () => {
    const decision = decideController(snapshot({ term: 4, leader: leader({ term: 4 }), target: null }));
    expect(decision).toMatchObject({
      type: 'record-history',
      history: { term: 4, reason: 'restart', oldPrimary: null },
    });
  });

  it('does not name the new primary as the old one when the same member leads again', () => {
    const decision = decideController(
      snapshot({ term: 4, leader: leader({ term: 4 }), target: target({ member: 'demo-0' }), lastPrimary: primary0 }),
    );
    expect(decision).toMatchObject({ type: 'record-history', history: { oldPrimary: null, lostBytes: null } });
  });

  it('does not take the reason of a target for another term', () => {
    const decision = decideController(snapshot({ ...promoted, target: target({ term: 5, reason: 'switchover' }) }));
    expect(decision).toMatchObject({ type: 'record-history', history: { reason: 'restart', decidedAt: null } });
  });
});

describe('decideController switchover', () => {
  it('targets the best replica for the next term and consumes the request, detected when the request was seen', () => {
    const decision = decideController(
      snapshot({ switchover: switchover(), switchoverSeenAt: at('2024-05-01T12:00:09.500Z') }),
    );
    expect(decision).toEqual({
      type: 'set-target',
      target: {
        v: 1,
        term: 4,
        member: 'demo-1',
        reason: 'switchover',
        from: 'demo-0',
        decidedAt: '2024-05-01T12:00:10.000Z',
        detectedAt: '2024-05-01T12:00:09.500Z',
      },
      consumeSwitchover: true,
    });
  });

  it('targets the requested replica even when another is more advanced', () => {
    expect(expectTarget(decideController(snapshot({ switchover: switchover({ to: 'demo-2' }) }))).member).toBe(
      'demo-2',
    );
  });

  it('accepts a request that names the current primary as the one to leave', () => {
    expect(expectTarget(decideController(snapshot({ switchover: switchover({ from: 'demo-0' }) }))).member).toBe(
      'demo-1',
    );
  });

  it('rejects a request whose from is not the primary', () => {
    expect(decideController(snapshot({ switchover: switchover({ from: 'demo-2' }) }))).toEqual({
      type: 'reject-switchover',
      reason: 'demo-2 is not the primary (demo-0 is)',
    });
  });

  it('rejects a request to switch to a member that does not report', () => {
    expect(decideController(snapshot({ switchover: switchover({ to: 'demo-7' }) }))).toEqual({
      type: 'reject-switchover',
      reason: 'demo-7 is not a member of this cluster',
    });
  });

  it('rejects a request to switch to the primary itself, saying why', () => {
    const decision = decideController(snapshot({ switchover: switchover({ to: 'demo-0' }) }));
    expect(decision).toEqual({
      type: 'reject-switchover',
      reason: 'no eligible replica demo-0: demo-0 excluded (old primary or failed target)',
    });
  });

  it('rejects a request to switch to an ineligible replica, saying why', () => {
    const decision = decideController(
      snapshot({
        members: [primary0, replica1, member({ ...replica2, tags: { noFailover: true } })],
        switchover: switchover({ to: 'demo-2' }),
      }),
    );
    expect(decision).toEqual({
      type: 'reject-switchover',
      reason: 'no eligible replica demo-2: demo-2 tagged noFailover',
    });
  });

  it('rejects a switchover when no replica qualifies, listing every reason', () => {
    const decision = decideController(
      snapshot({
        members: [primary0, member({ ...replica1, state: 'starting' }), member({ ...replica2, receivedLsn: '0/100' })],
        policy: {
          maximumLagOnFailoverBytes: 1024,
          freshReportWaitMillis: 1000,
          targetInstallTimeoutMillis: 5000,
          lastPrimaryWaitMillis: 30_000,
          maximumReportAgeMillis: 3000,
        },
        switchover: switchover(),
      }),
    );
    expect(decision.type).toBe('reject-switchover');
    expect(decision).toHaveProperty('reason', expect.stringMatching(/^no eligible replica: /));
    expect(decision).toHaveProperty('reason', expect.stringContaining('demo-0 excluded'));
    expect(decision).toHaveProperty('reason', expect.stringContaining('demo-1 state is starting'));
    expect(decision).toHaveProperty('reason', expect.stringContaining('demo-2 83885824 bytes behind'));
  });

  it('measures switchover lag against the primary’s own published position', () => {
    const decision = decideController(
      snapshot({
        members: [member({ ...primary0, receivedLsn: '0/9000000' }), replica1],
        policy: {
          maximumLagOnFailoverBytes: 1024,
          freshReportWaitMillis: 1000,
          targetInstallTimeoutMillis: 5000,
          lastPrimaryWaitMillis: 30_000,
          maximumReportAgeMillis: 3000,
        },
        switchover: switchover(),
      }),
    );
    expect(decision.type).toBe('reject-switchover');
  });

  it('waits for a switchover scheduled in the future', () => {
    expect(decideController(snapshot({ switchover: switchover({ at: '2024-05-01T12:05:00.000Z' }) }))).toEqual({
      type: 'wait',
      reason: 'switchover scheduled at 2024-05-01T12:05:00.000Z',
    });
  });

  it('carries out a scheduled switchover once its time has come', () => {
    const decision = decideController(snapshot({ switchover: switchover({ at: '2024-05-01T12:00:10.000Z' }) }));
    expect(expectTarget(decision).reason).toBe('switchover');
  });

  it('waits while the primary is not writable yet', () => {
    expect(decideController(snapshot({ leader: leader({ writable: false }), switchover: switchover() }))).toEqual({
      type: 'wait',
      reason: 'the primary is not writable yet',
    });
  });

  it('waits while a switchover target for the next term is pending', () => {
    const decision = decideController(
      snapshot({ target: target({ reason: 'switchover' }), switchover: switchover({ to: 'demo-2' }) }),
    );
    expect(decision).toEqual({ type: 'wait', reason: 'switchover to demo-1 in progress' });
  });
});

describe('decideController failover', () => {
  it('targets the most advanced replica for the next term once the leader is gone', () => {
    expect(decideController(leaderless())).toEqual({
      type: 'set-target',
      target: {
        v: 1,
        term: 4,
        member: 'demo-1',
        reason: 'failover',
        from: 'demo-0',
        decidedAt: '2024-05-01T12:00:10.000Z',
        detectedAt: '2024-05-01T12:00:09.200Z',
      },
      consumeSwitchover: false,
    });
  });

  it('waits for reports written after the leader vanished, naming the stale members', () => {
    const stale = member({ ...replica2, updatedAt: '2024-05-01T12:00:08.000Z' });
    expect(decideController(leaderless({ members: [replica1, stale] }))).toEqual({
      type: 'wait',
      reason: 'waiting for fresh reports from demo-2',
    });
  });

  it('stops waiting for fresh reports after freshReportWaitMillis and decides with what it has', () => {
    const stale = member({ ...replica2, receivedLsn: '0/6000000', updatedAt: '2024-05-01T12:00:08.000Z' });
    const lostAt = at('2024-05-01T12:00:09.200Z');
    expect(decideController(leaderless({ members: [replica1, stale], now: lostAt + 999 })).type).toBe('wait');
    expect(expectTarget(decideController(leaderless({ members: [replica1, stale], now: lostAt + 1000 }))).member).toBe(
      'demo-2',
    );
  });

  it('does not wait for fresh reports when it never saw the leader vanish', () => {
    const stale = member({ ...replica2, updatedAt: '2024-05-01T12:00:08.000Z' });
    expect(expectTarget(decideController(leaderless({ members: [replica1, stale], leaderLostAt: null }))).member).toBe(
      'demo-1',
    );
  });

  it('may choose the old primary once it is back as a running replica holding the most WAL', () => {
    const rejoined = member({ name: 'demo-0', role: 'replica', receivedLsn: '0/5000000', replayedLsn: '0/5000000' });
    expect(expectTarget(decideController(leaderless({ members: [rejoined, replica1, replica2] }))).member).toBe(
      'demo-0',
    );
  });

  it('gives the old primary as from, or null when it never saw one', () => {
    expect(expectTarget(decideController(leaderless({ lastPrimary: null }))).from).toBeNull();
  });

  it('says no member qualifies and lists why, rather than choosing a lagging one', () => {
    const decision = decideController(
      leaderless({
        lastPrimary: member({ ...primary0, receivedLsn: '1/0' }),
        members: [member({ name: 'demo-0', role: 'unknown', receivedLsn: null, replayedLsn: null }), replica1],
        policy: {
          maximumLagOnFailoverBytes: 1024,
          freshReportWaitMillis: 1000,
          targetInstallTimeoutMillis: 5000,
          lastPrimaryWaitMillis: 30_000,
          maximumReportAgeMillis: 3000,
        },
      }),
    );
    expect(decision).toEqual({
      type: 'no-candidate',
      reason: `no member qualifies for term 4: demo-0 role is unknown, not replica; demo-1 ${2 ** 32 - 0x4f00000} bytes behind, over maximumLagOnFailoverBytes 1024`,
      rejected: [
        { member: 'demo-0', reason: 'role is unknown, not replica' },
        { member: 'demo-1', reason: `${2 ** 32 - 0x4f00000} bytes behind, over maximumLagOnFailoverBytes 1024` },
      ],
    });
  });

  it('says so when no member reports at all', () => {
    expect(decideController(leaderless({ members: [] }))).toEqual({
      type: 'no-candidate',
      reason: 'no member qualifies for term 4: no member reports',
      rejected: [],
    });
  });
});

describe('decideController with a pending target', () => {
  const seenAt = at('2024-05-01T12:00:09.800Z');

  it('waits for a running replica target to take the leader record', () => {
    expect(decideController(leaderless({ target: target(), targetSeenAt: seenAt }))).toEqual({
      type: 'wait',
      reason: 'waiting for demo-1 to take the leader record for term 4',
    });
  });

  it('waits even when it does not know since when the target exists', () => {
    expect(decideController(leaderless({ target: target(), targetSeenAt: null })).type).toBe('wait');
  });

  it('replaces a target that has not installed the leader record within targetInstallTimeoutMillis', () => {
    const decision = decideController(leaderless({ target: target(), targetSeenAt: now - 5000 }));
    const replaced = expectTarget(decision);
    expect(replaced).toMatchObject({ term: 4, member: 'demo-2', reason: 'failover' });
  });

  it('keeps waiting for a target just inside targetInstallTimeoutMillis', () => {
    expect(decideController(leaderless({ target: target(), targetSeenAt: now - 4999 })).type).toBe('wait');
  });

  it('replaces a target at once when its member stopped reporting', () => {
    const decision = decideController(leaderless({ target: target(), targetSeenAt: seenAt, members: [replica2] }));
    expect(expectTarget(decision).member).toBe('demo-2');
  });

  it('replaces a target at once when its member is no longer a running replica', () => {
    for (const failed of [member({ ...replica1, state: 'failed' }), member({ ...replica1, role: 'unknown' })]) {
      const decision = decideController(
        leaderless({ target: target(), targetSeenAt: seenAt, members: [failed, replica2] }),
      );
      expect(expectTarget(decision).member).toBe('demo-2');
    }
  });

  it('says no member qualifies when the failed target was the only candidate, naming it', () => {
    const decision = decideController(leaderless({ target: target(), targetSeenAt: now - 6000, members: [replica1] }));
    expect(decision).toMatchObject({
      type: 'no-candidate',
      rejected: [{ member: 'demo-1', reason: 'excluded (old primary or failed target)' }],
    });
  });

  it('does not treat a target for another term as pending', () => {
    const decision = decideController(
      leaderless({ target: target({ term: 3, member: 'demo-2' }), targetSeenAt: seenAt }),
    );
    expect(expectTarget(decision)).toMatchObject({ term: 4, member: 'demo-1' });
  });
});

describe('decideController manual failover', () => {
  it('targets the requested member without waiting for fresh reports and consumes the request', () => {
    const stale = member({ ...replica2, updatedAt: '2024-05-01T12:00:08.000Z' });
    const decision = decideController(
      leaderless({ members: [replica1, stale], switchover: switchover({ to: 'demo-2' }) }),
    );
    expect(decision).toEqual({
      type: 'set-target',
      target: {
        v: 1,
        term: 4,
        member: 'demo-2',
        reason: 'manual-failover',
        from: 'demo-0',
        decidedAt: '2024-05-01T12:00:10.000Z',
        detectedAt: '2024-05-01T12:00:10.000Z',
      },
      consumeSwitchover: true,
    });
  });

  it('overrides the noFailover tag: a tagged member may be chosen by hand', () => {
    const tagged = member({ ...replica2, tags: { noFailover: true } });
    const decision = decideController(
      leaderless({ members: [replica1, tagged], switchover: switchover({ to: 'demo-2' }) }),
    );
    expect(expectTarget(decision).member).toBe('demo-2');
  });

  it('rejects a member beyond the lag bound unless the request accepts data loss', () => {
    const lagging = member({ ...replica2, receivedLsn: '0/100' });
    const request = { members: [replica1, lagging], switchover: switchover({ to: 'demo-2' }) };
    expect(decideController(leaderless(request))).toEqual({
      type: 'reject-switchover',
      reason: `demo-2 cannot be promoted without risking acknowledged writes: demo-2 ${0x5000000 - 0x100} bytes behind, over maximumLagOnFailoverBytes ${16 * 1024 * 1024}; request it with acceptDataLoss (pgha failover --accept-data-loss) to promote it anyway`,
    });
    const accepted = decideController(
      leaderless({ ...request, switchover: switchover({ to: 'demo-2', acceptDataLoss: true }) }),
    );
    expect(expectTarget(accepted)).toMatchObject({ member: 'demo-2', reason: 'manual-failover' });
  });

  it('replaces a pending target that is still waiting', () => {
    const decision = decideController(
      leaderless({
        target: target({ member: 'demo-1' }),
        targetSeenAt: now - 6000,
        switchover: switchover({ to: 'demo-2' }),
      }),
    );
    expect(expectTarget(decision)).toMatchObject({ member: 'demo-2', reason: 'manual-failover' });
  });

  it('rejects a member that does not report', () => {
    expect(decideController(leaderless({ switchover: switchover({ to: 'demo-7' }) }))).toEqual({
      type: 'reject-switchover',
      reason: 'demo-7 cannot be promoted: it does not report',
    });
  });

  it('rejects a member that is not a running replica', () => {
    const decision = decideController(
      leaderless({ members: [member({ ...replica1, state: 'cloning' })], switchover: switchover({ to: 'demo-1' }) }),
    );
    expect(decision).toEqual({
      type: 'reject-switchover',
      reason: 'demo-1 cannot be promoted: it is cloning as replica',
    });
  });

  it('treats a request without a member as an ordinary failover that leaves the request alone', () => {
    const decision = decideController(leaderless({ switchover: switchover() }));
    expect(decision).toMatchObject({ type: 'set-target', target: { reason: 'failover' }, consumeSwitchover: false });
  });
});

/**
 * A controller that started with no leader (a whole-cluster restart): it remembers no
 * primary and first saw the cluster leaderless at 12:00:09.2; the durable record says
 * demo-0 led term 3; demo-0 does not report yet.
 */
function restarted(overrides: Partial<ControllerSnapshot> = {}): ControllerSnapshot {
  return leaderless({
    lastPrimary: null,
    members: [replica1, replica2],
    lastPrimaryRecords: [lastPrimaryRecord()],
    ...overrides,
  });
}

const lostAt = at('2024-05-01T12:00:09.200Z');

describe('decideController with a clean last-primary record', () => {
  const clean = [lastPrimaryRecord({ clean: true })];

  it('waits, promoting nobody, while no member holds the clean shutdown position, saying what it waits for', () => {
    expect(decideController(restarted({ lastPrimaryRecords: clean }))).toEqual({
      type: 'wait',
      reason:
        "waiting for a member holding 0/5000000, where demo-0 (primary of term 3) shut down cleanly: demo-0 back as a running replica or a replica that received its shutdown checkpoint (demo-1 holds 0/4F00000, short of the last primary's clean shutdown position 0/5000000; demo-2 holds 0/4E00000, short of the last primary's clean shutdown position 0/5000000); pgha failover --to MEMBER --accept-data-loss overrides",
    });
  });

  it('keeps waiting an hour later: no bound, nobody else is lossless', () => {
    expect(decideController(restarted({ lastPrimaryRecords: clean, now: lostAt + 3_600_000 })).type).toBe('wait');
  });

  it('waits even when it saw that primary lead (a clean stop without a switchover)', () => {
    expect(decideController(leaderless({ lastPrimaryRecords: clean })).type).toBe('wait');
  });

  it('elects a replica that received the shutdown checkpoint, without waiting for the last primary', () => {
    const caughtUp = member({ ...replica2, receivedLsn: '0/5000028' });
    const decision = decideController(restarted({ lastPrimaryRecords: clean, members: [replica1, caughtUp] }));
    expect(expectTarget(decision)).toMatchObject({ member: 'demo-2', reason: 'failover', from: 'demo-0' });
  });

  it('elects the last primary once it runs as a replica, holding its own shutdown position', () => {
    const back = member({ name: 'demo-0', receivedLsn: null, replayedLsn: '0/5000028', streaming: false });
    const decision = decideController(restarted({ lastPrimaryRecords: clean, members: [back, replica1, replica2] }));
    expect(expectTarget(decision)).toMatchObject({ member: 'demo-0', from: 'demo-0' });
  });

  it('does not count the last primary while it is still starting', () => {
    const starting = member({ name: 'demo-0', state: 'starting', receivedLsn: null, replayedLsn: '0/5000028' });
    expect(decideController(restarted({ lastPrimaryRecords: clean, members: [starting, replica1] })).type).toBe('wait');
  });
});

describe('decideController with a last-primary record that is not clean', () => {
  it('waits for a last primary it did not see lead to report as a running replica, saying so', () => {
    expect(decideController(restarted())).toEqual({
      type: 'wait',
      reason:
        'waiting for demo-0 (primary of term 3, last known at 0/5000000, not shut down cleanly) to report as a running replica: it does not report; at most 30000 ms since 2024-05-01T12:00:09.200Z',
    });
  });

  it('waits for a last primary that reports but is still starting', () => {
    const starting = member({ name: 'demo-0', state: 'starting', receivedLsn: null, replayedLsn: null });
    expect(decideController(restarted({ members: [starting, replica1, replica2] }))).toMatchObject({
      type: 'wait',
      reason: expect.stringContaining('it reports starting as replica (updated 2024-05-01T12:00:09.500Z)'),
    });
  });

  it('waits for a fresh report from a last primary whose record predates the lost leader', () => {
    const stale = member({ name: 'demo-0', updatedAt: '2024-05-01T12:00:05.000Z' });
    const decision = decideController(restarted({ members: [stale, replica1, replica2], now: lostAt + 2000 }));
    expect(decision.type).toBe('wait');
  });

  it('elects the last primary once it reports as a running replica holding the most WAL', () => {
    const back = member({ name: 'demo-0', receivedLsn: null, replayedLsn: '0/5000000', streaming: false });
    expect(expectTarget(decideController(restarted({ members: [back, replica1, replica2] }))).member).toBe('demo-0');
  });

  it('waits at most lastPrimaryWaitMillis, then elects within the lag bound', () => {
    expect(decideController(restarted({ now: lostAt + 29_999 })).type).toBe('wait');
    expect(expectTarget(decideController(restarted({ now: lostAt + 30_000 })))).toMatchObject({
      member: 'demo-1',
      from: 'demo-0',
    });
  });

  it('stops waiting at once for a last primary that reports failed', () => {
    const failed = member({ name: 'demo-0', state: 'failed', role: 'unknown', receivedLsn: null, replayedLsn: null });
    expect(expectTarget(decideController(restarted({ members: [failed, replica1, replica2] }))).member).toBe('demo-1');
  });

  it('does not wait for a last primary it saw lead and lose (an ordinary failover stays as fast)', () => {
    expect(expectTarget(decideController(leaderless({ lastPrimaryRecords: [lastPrimaryRecord()] }))).member).toBe(
      'demo-1',
    );
  });

  it('measures the lag bound against the record when it is ahead of the remembered position', () => {
    const policy = { ...snapshot().policy, maximumLagOnFailoverBytes: 1024 };
    const decision = decideController(
      leaderless({
        policy,
        lastPrimary: member({ ...primary0, receivedLsn: '0/4F00000' }),
        lastPrimaryRecords: [lastPrimaryRecord()],
      }),
    );
    expect(decision).toMatchObject({
      type: 'no-candidate',
      rejected: [
        { member: 'demo-0', reason: 'role is unknown, not replica' },
        { member: 'demo-1', reason: `${0x100000} bytes behind, over maximumLagOnFailoverBytes 1024` },
        { member: 'demo-2', reason: `${0x200000} bytes behind, over maximumLagOnFailoverBytes 1024` },
      ],
    });
  });

  it('measures the lag bound against the record after a restart, when it remembers no position', () => {
    const policy = { ...snapshot().policy, maximumLagOnFailoverBytes: 0x80000 };
    const decision = decideController(restarted({ policy, now: lostAt + 30_000 }));
    expect(decision).toMatchObject({ type: 'no-candidate' });
  });

  it('never elects a member on a timeline older than the record’s, even when nobody reports a newer one', () => {
    const decision = decideController(leaderless({ lastPrimaryRecords: [lastPrimaryRecord({ timeline: 3 })] }));
    expect(decision).toMatchObject({
      type: 'no-candidate',
      rejected: [
        { member: 'demo-0', reason: 'role is unknown, not replica' },
        { member: 'demo-1', reason: "on timeline 2, older than the last primary's 3" },
        { member: 'demo-2', reason: "on timeline 2, older than the last primary's 3" },
      ],
    });
  });

  it('ignores a record of an older term (a leftover): no wait, no position floor', () => {
    const leftover = [lastPrimaryRecord({ term: 2, clean: true, lsn: '1/0', timeline: 9 })];
    expect(expectTarget(decideController(restarted({ lastPrimaryRecords: leftover })))).toMatchObject({
      member: 'demo-1',
      from: null,
    });
  });
});

describe('decideController manual failover against the last-primary record', () => {
  const clean = [lastPrimaryRecord({ clean: true })];

  it('rejects a member behind the clean shutdown position, naming it and the override', () => {
    expect(
      decideController(restarted({ lastPrimaryRecords: clean, switchover: switchover({ to: 'demo-1' }) })),
    ).toEqual({
      type: 'reject-switchover',
      reason:
        "demo-1 cannot be promoted without risking acknowledged writes: demo-1 holds 0/4F00000, short of the last primary's clean shutdown position 0/5000000 (demo-0, primary of term 3, shut down cleanly at 0/5000000 on timeline 2); request it with acceptDataLoss (pgha failover --accept-data-loss) to promote it anyway",
    });
  });

  it('promotes that member when the request accepts data loss, naming the old primary from the record', () => {
    const decision = decideController(
      restarted({ lastPrimaryRecords: clean, switchover: switchover({ to: 'demo-1', acceptDataLoss: true }) }),
    );
    expect(decision).toMatchObject({
      type: 'set-target',
      target: { member: 'demo-1', reason: 'manual-failover', from: 'demo-0' },
      consumeSwitchover: true,
    });
  });

  it('promotes a member that holds the clean shutdown position without the override', () => {
    const caughtUp = member({ ...replica1, receivedLsn: '0/5000000' });
    const decision = decideController(
      restarted({ lastPrimaryRecords: clean, members: [caughtUp], switchover: switchover({ to: 'demo-1' }) }),
    );
    expect(expectTarget(decision)).toMatchObject({ member: 'demo-1', reason: 'manual-failover' });
  });

  it('rejects a member on a timeline older than the record’s', () => {
    const decision = decideController(
      restarted({ lastPrimaryRecords: [lastPrimaryRecord({ timeline: 3 })], switchover: switchover({ to: 'demo-1' }) }),
    );
    expect(decision).toMatchObject({
      type: 'reject-switchover',
      reason: expect.stringContaining("demo-1 on timeline 2, older than the last primary's 3"),
    });
  });

  it('does not wait for an unreported last primary: the operator chose', () => {
    expect(expectTarget(decideController(restarted({ switchover: switchover({ to: 'demo-1' }) }))).member).toBe(
      'demo-1',
    );
  });
});

describe('decideController history with the last-primary record', () => {
  const promotedAfterRestart = {
    term: 4,
    leader: leader({ term: 4, member: 'demo-1', port: 5433, timeline: 3, since: '2024-05-01T12:00:09.900Z' }),
    target: target(),
    members: [
      member({ name: 'demo-1', role: 'primary', receivedLsn: '0/4F00100', replayedLsn: '0/4F00100' }),
      replica2,
    ],
    lastPrimary: null,
    lastPrimaryRecords: [lastPrimaryRecord({ clean: true }), lastPrimaryRecord({ term: 4, member: 'demo-1' })],
    lastAsReplica: [replica1, replica2],
  } satisfies Partial<ControllerSnapshot>;

  it('names the old primary from the previous term’s record when it remembers none, with the loss', () => {
    expect(decideController(snapshot(promotedAfterRestart))).toMatchObject({
      type: 'record-history',
      history: {
        oldPrimary: 'demo-0',
        newPrimary: 'demo-1',
        lastKnownLsn: { 'demo-0': '0/5000000', 'demo-1': '0/4F00000', 'demo-2': '0/4E00000' },
        lostBytes: 0x100000,
      },
    });
  });

  it('counts the new primary at its last position as a replica, not at its position after promotion', () => {
    const promoted = member({ name: 'demo-1', role: 'primary', receivedLsn: '0/9000000', replayedLsn: '0/9000000' });
    const decision = decideController(snapshot({ ...promotedAfterRestart, members: [promoted, replica2] }));
    expect(decision).toMatchObject({ type: 'record-history', history: { lostBytes: 0x100000 } });
  });

  it('names the re-elected last primary as both old and new, with no loss', () => {
    const decision = decideController(
      snapshot({
        ...promotedAfterRestart,
        leader: leader({ term: 4, member: 'demo-0', timeline: 3 }),
        members: [member({ ...primary0, receivedLsn: '0/5000100' }), replica1],
        lastAsReplica: [member({ name: 'demo-0', receivedLsn: null, replayedLsn: '0/5000028' }), replica1],
      }),
    );
    expect(decision).toMatchObject({
      type: 'record-history',
      history: { oldPrimary: 'demo-0', newPrimary: 'demo-0', lostBytes: 0 },
    });
  });

  it('records no loss for a switchover whose target received the clean shutdown position', () => {
    const decision = decideController(
      snapshot({
        ...promotedAfterRestart,
        target: target({ reason: 'switchover' }),
        lastPrimary: primary0,
        lastAsReplica: [member({ ...replica1, receivedLsn: '0/5000028' })],
      }),
    );
    expect(decision).toMatchObject({ type: 'record-history', history: { reason: 'switchover', lostBytes: 0 } });
  });

  it('measures the loss from the position the new primary took the record with, not its older report', () => {
    // The target's last report as a replica (0/4F00000) predates the old primary's
    // clean shutdown at 0/5000000; it received that position before installing.
    const decision = decideController(
      snapshot({
        ...promotedAfterRestart,
        target: target({ reason: 'switchover' }),
        leader: leader({ term: 4, member: 'demo-1', port: 5433, timeline: 3, fromLsn: '0/5000028' }),
      }),
    );
    expect(decision).toMatchObject({ type: 'record-history', history: { reason: 'switchover', lostBytes: 0 } });
    expect(decision).toMatchObject({ history: { lastKnownLsn: { 'demo-1': '0/5000028' } } });
  });

  it('takes the furthest of the record and the remembered position as the old primary’s', () => {
    const decision = decideController(
      snapshot({
        ...promotedAfterRestart,
        lastPrimary: member({ ...primary0, receivedLsn: '0/5100000' }),
        lastPrimaryRecords: [lastPrimaryRecord()],
      }),
    );
    expect(decision).toMatchObject({ type: 'record-history', history: { oldPrimary: 'demo-0', lostBytes: 0x200000 } });
  });
});

describe('decideController switchover qualification', () => {
  it('rejects a switchover to a replica that is not streaming from the primary', () => {
    const decision = decideController(
      snapshot({
        members: [primary0, member({ ...replica1, streaming: false }), replica2],
        switchover: switchover({ to: 'demo-1' }),
      }),
    );
    expect(decision).toEqual({
      type: 'reject-switchover',
      reason: 'no eligible replica demo-1: demo-1 not streaming from the primary',
    });
  });

  it('rejects a switchover to a replica whose report is older than maximumReportAgeMillis', () => {
    const decision = decideController(
      snapshot({
        members: [primary0, member({ ...replica1, updatedAt: '2024-05-01T12:00:06.999Z' }), replica2],
        switchover: switchover({ to: 'demo-1' }),
      }),
    );
    expect(decision).toEqual({
      type: 'reject-switchover',
      reason: 'no eligible replica demo-1: demo-1 report is stale (updated 2024-05-01T12:00:06.999Z)',
    });
  });

  it('passes over a replica that is not streaming when choosing the best', () => {
    const decision = decideController(
      snapshot({ members: [primary0, member({ ...replica1, streaming: false }), replica2], switchover: switchover() }),
    );
    expect(expectTarget(decision).member).toBe('demo-2');
  });
});

describe('decideController in synchronous quorum mode', () => {
  // demo-0 (term 3) claimed ANY 1 of demo-1, demo-2: both positions are needed, each
  // observed after the leader vanished (12:00:09.200).
  const claim = {
    v: 1 as const,
    term: 3,
    member: 'demo-0',
    standbys: ['demo-1', 'demo-2'],
    quorum: 1,
    strict: false,
    at: '2024-05-01T12:00:00.000Z',
  };
  const observed = '2024-05-01T12:00:09.400Z';
  const r1 = { ...replica1, observedAt: observed, receivedLsn: '0/4E00000', replayedLsn: '0/4E00000' };
  const r2 = { ...replica2, observedAt: observed, receivedLsn: '0/4F00000', replayedLsn: '0/4E00000' };
  const down = member({ name: 'demo-0', role: 'unknown', state: 'running', receivedLsn: null, replayedLsn: null });

  it('promotes the most advanced standby once enough positions count', () => {
    const decision = decideController(leaderless({ sync: claim, members: [down, r1, r2] }));
    expect(expectTarget(decision).member).toBe('demo-2');
  });

  it('waits, saying for whom, while a standby of the claim has no position observed after the loss', () => {
    const stale = { ...r2, observedAt: '2024-05-01T12:00:09.000Z' };
    const decision = decideController(leaderless({ sync: claim, members: [down, r1, stale], now: now + 5000 }));
    expect(decision.type).toBe('wait');
    if (decision.type !== 'wait') throw new Error('unreachable');
    expect(decision.reason).toMatch(
      /synchronous quorum \(ANY 1 of demo-1, demo-2.*needs positions .* from 2 of them, and has 1 \(demo-1\); waiting for demo-2/,
    );
  });

  it('does not count a standby without a WAL receiver position (its replay may trail what it flushed)', () => {
    const restarted = { ...r2, receivedLsn: null };
    const decision = decideController(leaderless({ sync: claim, members: [down, r1, restarted], now: now + 5000 }));
    expect(decision.type).toBe('wait');
  });

  it('waits rather than promote a member short of the most advanced standby (it may lack an acknowledged commit)', () => {
    // demo-2 is the most advanced but tagged noFailover: demo-1 lacks what only demo-2 may hold.
    const tagged = { ...r2, tags: { noFailover: true } };
    const decision = decideController(leaderless({ sync: claim, members: [down, r1, tagged] }));
    expect(decision.type).toBe('wait');
    if (decision.type !== 'wait') throw new Error('unreachable');
    expect(decision.reason).toMatch(/waiting for a member holding 0\/4F00000/);
  });

  it('ignores the asynchronous lag bound for a standby holding the quorum floor', () => {
    const far = { ...r2, receivedLsn: '0/4F00000' };
    const decision = decideController(
      leaderless({
        sync: claim,
        members: [down, r1, far],
        lastPrimaryRecords: [lastPrimaryRecord({ term: 3, lsn: '1/0', clean: false, member: 'demo-0' })],
        lastPrimary: primary0,
      }),
    );
    expect(expectTarget(decision).member).toBe('demo-2');
  });

  it('decides as before with a claim of an older term or one that claims nothing', () => {
    expect(expectTarget(decideController(leaderless({ sync: { ...claim, term: 2 } }))).member).toBe('demo-1');
    expect(expectTarget(decideController(leaderless({ sync: { ...claim, quorum: 0, standbys: [] } }))).member).toBe(
      'demo-1',
    );
  });

  describe('when too few standbys of the claim can ever be counted', () => {
    // demo-0 claimed ANY 1 of demo-1, demo-2 in term 3, and was fenced; demo-1 (the
    // primary of the term before, fenced and restarted with no primary to follow)
    // never streamed from it and has no WAL receiver position.
    const neverStreamed = { ...r1, receivedLsn: null, timeline: 1 };
    const claimantBack = member({
      name: 'demo-0',
      role: 'replica',
      state: 'running',
      timeline: 2,
      receivedLsn: null,
      replayedLsn: '0/5000000',
      observedAt: observed,
      streaming: false,
    });
    const record = lastPrimaryRecord({ term: 3, member: 'demo-0', lsn: '0/4F80000', clean: false, timeline: 2 });

    it("elects the claim's own primary once it is back as a running replica: it holds every commit it acknowledged", () => {
      const decision = decideController(
        leaderless({
          sync: claim,
          members: [claimantBack, neverStreamed, r2],
          lastPrimaryRecords: [record],
          now: now + 5000,
        }),
      );
      expect(expectTarget(decision).member).toBe('demo-0');
    });

    it('elects nobody else, and waits saying why, while the claimant is not back', () => {
      const decision = decideController(
        leaderless({ sync: claim, members: [down, neverStreamed, r2], lastPrimaryRecords: [record], now: now + 5000 }),
      );
      expect(decision.type).toBe('wait');
      if (decision.type !== 'wait') throw new Error('unreachable');
      expect(decision.reason).toMatch(/has 1 \(demo-2\); waiting for demo-1/);
    });

    it('does not take a report of the claimant from before the loss', () => {
      const before = { ...claimantBack, observedAt: '2024-05-01T12:00:09.000Z' };
      const decision = decideController(
        leaderless({
          sync: claim,
          members: [before, neverStreamed, r2],
          lastPrimaryRecords: [record],
          now: now + 5000,
        }),
      );
      expect(decision.type).toBe('wait');
    });
  });

  it('rejects a manual failover that cannot count the quorum unless it accepts data loss', () => {
    const request = switchover({ to: 'demo-1' });
    const decision = decideController(leaderless({ sync: claim, members: [down, r1, replica2], switchover: request }));
    expect(decision.type).toBe('reject-switchover');
    const forced = decideController(
      leaderless({ sync: claim, members: [down, r1, replica2], switchover: { ...request, acceptDataLoss: true } }),
    );
    expect(expectTarget(forced).member).toBe('demo-1');
  });
});
