import type { FailsafeRecord } from '@pgha/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  deadlineValid,
  decideFailsafeAnswer,
  decideFailsafeRecord,
  type FailsafeRequest,
  failsafeDeadline,
  type MemberFacts,
  promiseEnd,
  promiseRunning,
  refuseInstall,
  stallThresholdMillis,
} from './failsafe.js';

const t0 = Date.parse('2026-01-01T00:00:00.000Z');
const minute = 60_000;
const ttl = 30 * minute;

function record(overrides: Partial<FailsafeRecord> = {}): FailsafeRecord {
  return {
    v: 1,
    term: 3,
    leader: 'demo-0',
    members: [
      { name: 'demo-0', api: 'http://127.0.0.1:8008', lastSeen: new Date(t0).toISOString() },
      { name: 'demo-1', api: 'http://127.0.0.1:8009', lastSeen: new Date(t0).toISOString() },
      { name: 'demo-2', api: 'http://127.0.0.1:8010', lastSeen: new Date(t0).toISOString() },
    ],
    ...overrides,
  };
}

const three = [
  { name: 'demo-0', api: 'http://127.0.0.1:8008' },
  { name: 'demo-1', api: 'http://127.0.0.1:8009' },
  { name: 'demo-2', api: 'http://127.0.0.1:8010' },
];

describe('decideFailsafeRecord', () => {
  it('lists every member with an api when there is no record yet (the leader too)', () => {
    const next = decideFailsafeRecord(null, { name: 'demo-0', term: 3 }, [...three, { name: 'demo-3' }], t0, ttl);
    expect(next).toEqual(record());
  });

  it('writes nothing when the stored record is right', () => {
    expect(decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, three, t0 + minute, ttl)).toBeNull();
  });

  it('rewrites the record for a new term or leader', () => {
    const next = decideFailsafeRecord(record(), { name: 'demo-1', term: 4 }, three, t0 + minute, ttl);
    expect(next).toMatchObject({ term: 4, leader: 'demo-1' });
    expect(next?.members.map((m) => m.name)).toEqual(['demo-0', 'demo-1', 'demo-2']);
  });

  it('updates an api that changed', () => {
    const moved = [three[0]!, { name: 'demo-1', api: 'http://10.0.0.9:8008' }, three[2]!];
    const next = decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, moved, t0 + minute, ttl);
    expect(next?.members.find((m) => m.name === 'demo-1')?.api).toBe('http://10.0.0.9:8008');
  });

  it('refreshes lastSeen only after a tenth of the TTL (no write every report)', () => {
    expect(decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, three, t0 + ttl / 10 - 1, ttl)).toBeNull();
    const next = decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, three, t0 + ttl / 10 + 1, ttl);
    expect(next?.members.every((m) => m.lastSeen === new Date(t0 + ttl / 10 + 1).toISOString())).toBe(true);
  });

  it('keeps a member without a record until it has had none for the TTL, then forgets it', () => {
    const two = three.slice(0, 2);
    expect(decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, two, t0 + ttl, ttl)?.members.length).toBe(3);
    const later = decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, two, t0 + ttl + ttl / 10 + 1, ttl);
    expect(later?.members.map((m) => m.name)).toEqual(['demo-0', 'demo-1']);
  });

  it('never forgets a member before the TTL whatever the refresh (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: ttl }), (age) => {
        const next = decideFailsafeRecord(record(), { name: 'demo-0', term: 3 }, three.slice(0, 2), t0 + age, ttl);
        const members = (next ?? record()).members.map((m) => m.name);
        return members.includes('demo-2');
      }),
    );
  });
});

describe('refuseInstall', () => {
  it('a running promise refuses an install', () => {
    const why = refuseInstall({
      self: 'demo-1',
      failsafeMode: true,
      record: record(),
      promised: { leader: 'demo-0', term: 3 },
    });
    expect(why).toMatch(/promised demo-0 \(term 3\)/);
  });

  it('a member the failsafe record does not name may not install while failsafe mode is on', () => {
    expect(refuseInstall({ self: 'demo-3', failsafeMode: true, record: record(), promised: null })).toMatch(
      /does not name this member/,
    );
  });

  it('allows the install without a record (bootstrap), with failsafe mode off, or for a listed member', () => {
    expect(refuseInstall({ self: 'demo-3', failsafeMode: true, record: null, promised: null })).toBeNull();
    expect(refuseInstall({ self: 'demo-3', failsafeMode: false, record: record(), promised: null })).toBeNull();
    expect(refuseInstall({ self: 'demo-1', failsafeMode: true, record: record(), promised: null })).toBeNull();
  });
});

describe('decideFailsafeAnswer', () => {
  const request: FailsafeRequest = {
    cluster: 'demo',
    leader: 'demo-0',
    term: 3,
    timeline: 2,
    nonce: 'n',
    promiseMillis: 2000,
  };
  const facts = (overrides: Partial<MemberFacts> = {}): MemberFacts => ({
    cluster: 'demo',
    self: 'demo-1',
    postgres: 'replica',
    observedInRecovery: true,
    holdsLeader: false,
    takingOver: false,
    viewLeader: { member: 'demo-0', term: 3 },
    sinceLastAckMillis: 900,
    stallThresholdMillis: 500,
    ...overrides,
  });

  it('confirms when it is a running replica of that leader and cannot reach etcd itself', () => {
    expect(decideFailsafeAnswer(request, facts())).toEqual({ confirmed: true });
  });

  it('refuses when etcd is reachable from here: the primary alone is cut off', () => {
    expect(decideFailsafeAnswer(request, facts({ sinceLastAckMillis: 100 }))).toEqual({
      confirmed: false,
      reason: 'etcd is reachable from here: the primary alone is cut off; it must fence',
    });
  });

  it.each<[string, Partial<MemberFacts> | Partial<FailsafeRequest>, 'facts' | 'request', RegExp]>([
    ['another cluster', { cluster: 'other' }, 'request', /wrong cluster/],
    ['a member holding the leader record', { holdsLeader: true }, 'facts', /holds the leader record/],
    ['a member taking over', { takingOver: true }, 'facts', /installing a leader record or promoting/],
    ['a postgres not in recovery', { observedInRecovery: false }, 'facts', /not a running replica/],
    ['a postgres that is down', { postgres: 'down' }, 'facts', /not a running replica/],
    ['another leader in the view', { viewLeader: { member: 'demo-2', term: 3 } }, 'facts', /demo-2/],
    ['another term in the view', { viewLeader: { member: 'demo-0', term: 4 } }, 'facts', /term 4/],
    ['no leader in the view', { viewLeader: null }, 'facts', /no leader record/],
    ['an absurd promise', { promiseMillis: 10 ** 9 }, 'request', /promiseMillis/],
  ])('refuses %s', (_name, change, where, reason) => {
    const answer =
      where === 'facts'
        ? decideFailsafeAnswer(request, facts(change as Partial<MemberFacts>))
        : decideFailsafeAnswer({ ...request, ...(change as Partial<FailsafeRequest>) }, facts());
    expect(answer.confirmed).toBe(false);
    if (!answer.confirmed) expect(answer.reason).toMatch(reason);
  });
});

describe('the windows', () => {
  it('the stall threshold is two keepalive intervals, at least 500 ms', () => {
    expect(stallThresholdMillis(250)).toBe(500);
    expect(stallThresholdMillis(1000)).toBe(2000);
  });

  it("the primary's window is never past a promise's end, by at least the margin (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10 ** 9 }),
        fc.integer({ min: 0, max: 60_000 }),
        fc.integer({ min: 1000, max: 600_000 }),
        fc.integer({ min: 0, max: 60_000 }),
        fc.integer({ min: 0, max: 10 ** 12 }),
        (sent, delay, promise, margin, wallOffset) => {
          const s = { mono: sent, wall: sent + wallOffset };
          const r = { mono: sent + delay, wall: sent + wallOffset + delay };
          const deadline = failsafeDeadline(s, promise, margin);
          const end = promiseEnd(r, promise);
          // Wherever both of the primary's clocks say "valid", the promise still runs.
          const probe = { mono: deadline.mono - 1, wall: deadline.wall - 1 };
          return (
            end.mono - deadline.mono >= margin &&
            end.wall - deadline.wall >= margin &&
            (!deadlineValid(deadline, probe) || promiseRunning(end, probe))
          );
        },
      ),
    );
  });

  it('a deadline needs both clocks before it; a promise runs while either clock is before its end', () => {
    const d = { mono: 100, wall: 1000 };
    expect(deadlineValid(d, { mono: 99, wall: 999 })).toBe(true);
    expect(deadlineValid(d, { mono: 99, wall: 1000 })).toBe(false);
    expect(promiseRunning(d, { mono: 100, wall: 999 })).toBe(true);
    expect(promiseRunning(d, { mono: 100, wall: 1000 })).toBe(false);
  });
});
