import type { SwitchoverRecord, TargetRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { target as fixtureTarget, leader, member } from './__fixtures__/records.js';
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
        lostBytes: 0x100000,
      },
    });
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

  it('records a promotion nobody targeted as a bootstrap when no history exists yet', () => {
    const decision = decideController(
      snapshot({ term: 1, leader: leader({ term: 1 }), lastHistoryTerm: 0, lastPrimary: null, target: null }),
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
  it('targets the best replica for the next term and consumes the request', () => {
    const decision = decideController(snapshot({ switchover: switchover() }));
    expect(decision).toEqual({
      type: 'set-target',
      target: {
        v: 1,
        term: 4,
        member: 'demo-1',
        reason: 'switchover',
        from: 'demo-0',
        decidedAt: '2024-05-01T12:00:10.000Z',
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
        policy: { maximumLagOnFailoverBytes: 1024, freshReportWaitMillis: 1000, targetInstallTimeoutMillis: 5000, lastPrimaryWaitMillis: 30_000, maximumReportAgeMillis: 3000 },
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
        policy: { maximumLagOnFailoverBytes: 1024, freshReportWaitMillis: 1000, targetInstallTimeoutMillis: 5000, lastPrimaryWaitMillis: 30_000, maximumReportAgeMillis: 3000 },
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
        policy: { maximumLagOnFailoverBytes: 1024, freshReportWaitMillis: 1000, targetInstallTimeoutMillis: 5000, lastPrimaryWaitMillis: 30_000, maximumReportAgeMillis: 3000 },
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
