import type { HistoryRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import type { ClusterStatus, MemberStatus } from './cluster-status.js';
import { deriveWatchEvents, etcdEvent, formatWatchScreen, type WatchView } from './watch-events.js';

const now = Date.parse('2024-05-01T12:00:10.000Z');
const options = { now, lagThresholdBytes: 1024 * 1024 };

function member(overrides: Partial<MemberStatus> = {}): MemberStatus {
  return {
    name: 'demo-0',
    role: 'primary',
    state: 'running',
    host: '127.0.0.1',
    port: 5432,
    timeline: 1,
    lagBytes: 0,
    lagSeconds: 0,
    streaming: false,
    healthy: true,
    problem: null,
    updatedAt: '2024-05-01T12:00:00.000Z',
    api: null,
    pendingRestart: [],
    ...overrides,
  };
}

function status(overrides: Partial<ClusterStatus> = {}): ClusterStatus {
  return {
    cluster: 'demo',
    term: 1,
    leader: { member: 'demo-0', host: '127.0.0.1', port: 5432, writable: true },
    members: [
      member(),
      member({ name: 'demo-1', role: 'replica', port: 5433, streaming: true }),
      member({ name: 'demo-2', role: 'replica', port: 5434, streaming: true }),
    ],
    failover: { inProgress: false, target: null },
    controller: { id: '4242-0a1b2c3d', waiting: null },
    config: null,
    synchronous: { mode: 'off', count: 1, strict: false, claim: null, degraded: null },
    urls: null,
    problems: [],
    ...overrides,
  };
}

function history(overrides: Partial<HistoryRecord> = {}): HistoryRecord {
  return {
    v: 1,
    term: 2,
    oldPrimary: 'demo-0',
    newPrimary: 'demo-1',
    timeline: 2,
    reason: 'switchover',
    detectedAt: '2024-05-01T12:00:09.000Z',
    decidedAt: '2024-05-01T12:00:09.100Z',
    promotedAt: '2024-05-01T12:00:09.600Z',
    writableAt: '2024-05-01T12:00:09.900Z',
    lastKnownLsn: {},
    lostBytes: 0,
    ...overrides,
  };
}

const view = (s: Partial<ClusterStatus> = {}, h: HistoryRecord[] = []): WatchView => ({
  status: status(s),
  history: h,
});
const messages = (prev: WatchView | null, next: WatchView) =>
  deriveWatchEvents(prev, next, options).map((e) => e.message);

describe('deriveWatchEvents', () => {
  it('reports nothing for the first read, nor for two identical reads', () => {
    expect(deriveWatchEvents(null, view(), options)).toEqual([]);
    expect(
      deriveWatchEvents(view(), view({ members: status().members.map((m) => ({ ...m, updatedAt: 'x' })) }), options),
    ).toEqual([]);
  });

  it('reports a switchover as it goes: the leader gone, the new term and leader, roles, the history record', () => {
    const before = view();
    const gone = view({
      leader: null,
      failover: { inProgress: true, target: { member: 'demo-1', term: 2, reason: 'switchover' } },
    });
    expect(messages(before, gone)).toEqual(['no leader (was demo-0)', 'switchover to demo-1 for term 2 in progress']);
    const after = view(
      {
        term: 2,
        leader: { member: 'demo-1', host: '127.0.0.1', port: 5433, writable: true },
        members: [
          member({ role: 'replica' }),
          member({ name: 'demo-1', port: 5433 }),
          member({ name: 'demo-2', role: 'replica', port: 5434 }),
        ],
      },
      [history()],
    );
    const events = deriveWatchEvents(gone, after, options);
    expect(events.map((e) => [e.type, e.member, e.message])).toEqual([
      ['term', null, 'term 1 -> 2'],
      ['leader', 'demo-1', 'leader none -> demo-1'],
      ['failover', null, 'a writable leader again, no failover or switchover pending'],
      ['role', 'demo-0', 'demo-0 primary -> replica'],
      ['role', 'demo-1', 'demo-1 replica -> primary'],
      ['history', 'demo-1', 'history: term 2 demo-0 -> demo-1 (switchover, 0.90s detected to writable)'],
    ]);
    expect(events.every((e) => e.at === '2024-05-01T12:00:10.000Z')).toBe(true);
  });

  it('reports a leader that becomes writable', () => {
    const installing = view({ leader: { member: 'demo-0', host: '127.0.0.1', port: 5432, writable: false } });
    expect(messages(installing, view())).toEqual(['leader demo-0 writable']);
  });

  it('reports members appearing and disappearing, state and health changes', () => {
    const two = view({ members: status().members.slice(0, 2) });
    expect(messages(two, view())).toEqual(['demo-2 appeared: replica, running']);
    expect(messages(view(), two)).toEqual(['demo-2 disappeared']);
    const sick = view({
      members: [
        member(),
        member({
          name: 'demo-1',
          role: 'replica',
          state: 'starting',
          healthy: false,
          problem: 'postgres does not answer',
        }),
        status().members[2]!,
      ],
    });
    expect(messages(view(), sick)).toEqual([
      'demo-1 running -> starting',
      'demo-1 unhealthy: postgres does not answer',
    ]);
    expect(messages(sick, view())).toEqual(['demo-1 starting -> running', 'demo-1 healthy again']);
  });

  it('reports lag crossing the threshold, once each way', () => {
    const lagging = (bytes: number) =>
      view({
        members: [
          member(),
          member({ name: 'demo-1', role: 'replica', lagBytes: bytes, lagSeconds: 3 }),
          status().members[2]!,
        ],
      });
    expect(messages(view(), lagging(2 * 1024 * 1024))).toEqual(['demo-1 lags 2.0 MiB / 3s, over 1.0 MiB']);
    expect(messages(lagging(2 * 1024 * 1024), lagging(3 * 1024 * 1024))).toEqual([]);
    expect(messages(lagging(2 * 1024 * 1024), lagging(1024))).toEqual(['demo-1 lag back under 1.0 MiB (1.0 KiB)']);
  });

  it('reports the synchronous state changing', () => {
    const quorum = view({
      synchronous: {
        mode: 'quorum',
        count: 1,
        strict: false,
        claim: { standbys: ['demo-1', 'demo-2'], quorum: 1, term: 1 },
        degraded: null,
      },
    });
    const degraded = view({
      synchronous: { mode: 'quorum', count: 1, strict: false, claim: null, degraded: 'no standby confirms commits' },
    });
    expect(messages(view(), quorum)).toEqual(['synchronous: ANY 1 of demo-1, demo-2']);
    expect(messages(quorum, degraded)).toEqual(['synchronous: no standby (DEGRADED: no standby confirms commits)']);
  });

  it('reports only history records it had not seen', () => {
    expect(
      messages(view({}, [history()]), view({}, [history(), history({ term: 3, reason: 'failover', lostBytes: 10 })])),
    ).toEqual(['history: term 3 demo-0 -> demo-1 (failover, 0.90s detected to writable, 10 B possibly lost)']);
  });
});

describe('etcdEvent and formatWatchScreen', () => {
  it('says since when etcd is unreachable, keeping the last state read, and how long it was gone', () => {
    const down = etcdEvent(now, 'cannot reach etcd', null);
    expect(down).toEqual({
      at: '2024-05-01T12:00:10.000Z',
      type: 'etcd',
      member: null,
      message: 'etcd unreachable: cannot reach etcd',
    });
    expect(etcdEvent(now + 4000, null, now).message).toBe('etcd reachable again after 4.0s');
    const screen = formatWatchScreen({
      view: view(),
      events: [down],
      now: now + 1000,
      etcd: 'http://127.0.0.1:2379',
      unreachable: { since: now, error: 'cannot reach etcd' },
    });
    const lines = screen.split('\n');
    expect(lines[0]).toBe(
      'etcd unreachable since 2024-05-01T12:00:10.000Z (cannot reach etcd); showing the last state read',
    );
    expect(screen).toContain('Cluster demo  term 1  leader demo-0');
    expect(screen).toContain('Recent events:\n  2024-05-01T12:00:10.000Z  etcd unreachable: cannot reach etcd\n');
    expect(lines.at(-2)).toBe('2024-05-01T12:00:11.000Z  watching http://127.0.0.1:2379; Ctrl-C to exit');
  });

  it('shows the last ten events only', () => {
    const events = Array.from({ length: 15 }, (_, i) => etcdEvent(now + i, `error ${i}`, null));
    const screen = formatWatchScreen({ view: null, events, now, etcd: 'e', unreachable: null });
    expect(screen).not.toContain('error 4\n');
    expect(screen).toContain('error 5\n');
    expect(screen).toContain('error 14\n');
  });
});
