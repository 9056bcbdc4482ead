import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decideMemberSlots,
  defaultMemberSlotsTtlMillis,
  type MemberSlotsSnapshot,
  type ObservedSlot,
} from './member-slots.js';

const ttl = 60_000;
const slot = (name: string, extra: Partial<ObservedSlot> = {}): ObservedSlot => ({
  name,
  type: 'physical',
  active: false,
  ...extra,
});
const snapshot = (overrides: Partial<MemberSlotsSnapshot> = {}): MemberSlotsSnapshot => ({
  self: 'demo-0',
  members: ['demo-0', 'demo-1', 'demo-2'],
  removed: [],
  slots: [slot('pgha_demo_1', { active: true }), slot('pgha_demo_2', { active: true })],
  absentSince: new Map(),
  now: 1_000_000,
  ttlMillis: ttl,
  ...overrides,
});

describe('decideMemberSlots', () => {
  it('defaults the TTL to 30 minutes, like Patroni', () => {
    expect(defaultMemberSlotsTtlMillis).toBe(1_800_000);
  });

  it('creates a slot for every other member with a record, none for itself', () => {
    const d = decideMemberSlots(snapshot({ members: ['demo-0', 'demo-1', 'demo-2', 'demo-3'], slots: [] }));
    expect(d.create).toEqual(['pgha_demo_1', 'pgha_demo_2', 'pgha_demo_3']);
    expect(d.drop).toEqual([]);
  });

  it("keeps a restarting member's slot: its record is gone for less than the TTL", () => {
    const slots = [slot('pgha_demo_1', { active: true }), slot('pgha_demo_2')];
    const first = decideMemberSlots(snapshot({ members: ['demo-0', 'demo-1'], slots }));
    expect(first.drop).toEqual([]);
    expect(first.absentSince).toEqual(new Map([['pgha_demo_2', 1_000_000]]));
    const later = decideMemberSlots(
      snapshot({ members: ['demo-0', 'demo-1'], slots, absentSince: first.absentSince, now: 1_000_000 + ttl - 1 }),
    );
    expect(later.drop).toEqual([]);
    // It reports again: the clock is forgotten, the next absence starts from zero.
    const back = decideMemberSlots(snapshot({ slots, absentSince: later.absentSince, now: 1_000_000 + ttl - 1 }));
    expect(back.absentSince.size).toBe(0);
    const again = decideMemberSlots(
      snapshot({ members: ['demo-0', 'demo-1'], slots, absentSince: back.absentSince, now: 1_000_000 + ttl + 5 }),
    );
    expect(again.drop).toEqual([]);
  });

  it('drops an inactive slot whose member has had no record for the TTL', () => {
    const slots = [slot('pgha_demo_1', { active: true }), slot('pgha_demo_2')];
    const first = decideMemberSlots(snapshot({ members: ['demo-0', 'demo-1'], slots }));
    const due = decideMemberSlots(
      snapshot({ members: ['demo-0', 'demo-1'], slots, absentSince: first.absentSince, now: 1_000_000 + ttl }),
    );
    expect(due.drop).toEqual([{ slot: 'pgha_demo_2', reason: 'no member record for 60 s (member slots TTL 60 s)' }]);
    // Remembered until the slot is no longer listed: a failed drop is retried at once.
    expect(due.absentSince).toEqual(new Map([['pgha_demo_2', 1_000_000]]));
    const retried = decideMemberSlots(
      snapshot({ members: ['demo-0', 'demo-1'], slots, absentSince: due.absentSince, now: 1_000_000 + ttl + 1000 }),
    );
    expect(retried.drop.map((d) => d.slot)).toEqual(['pgha_demo_2']);
    const gone = decideMemberSlots(
      snapshot({ members: ['demo-0', 'demo-1'], slots: slots.slice(0, 1), absentSince: retried.absentSince }),
    );
    expect(gone.absentSince.size).toBe(0);
  });

  it('starts the clock at its own first observation: a new primary never drops at once', () => {
    // A long-absent member as a freshly promoted primary sees it: no clock yet.
    const d = decideMemberSlots(snapshot({ members: ['demo-0', 'demo-1'], slots: [slot('pgha_demo_2')] }));
    expect(d.drop).toEqual([]);
    expect(d.absentSince.get('pgha_demo_2')).toBe(1_000_000);
  });

  it('never drops an active slot, and restarts its clock', () => {
    const slots = [slot('pgha_demo_2', { active: true })];
    const d = decideMemberSlots(
      snapshot({
        members: ['demo-0'],
        removed: ['demo-2'],
        slots,
        absentSince: new Map([['pgha_demo_2', 0]]),
        now: 10 * ttl,
      }),
    );
    expect(d.drop).toEqual([]);
    expect(d.absentSince.size).toBe(0);
  });

  it('drops the inactive slot of a member the operator removed as soon as its record is gone', () => {
    const slots = [slot('pgha_demo_1', { active: true }), slot('pgha_demo_3'), slot('pgha_demo_4', { active: true })];
    const d = decideMemberSlots(
      snapshot({ members: ['demo-0', 'demo-1', 'demo-4'], removed: ['demo-3', 'demo-4'], slots }),
    );
    // demo-3: gone and marked; demo-4: marked but still reports (its pod is terminating).
    expect(d.drop).toEqual([
      { slot: 'pgha_demo_3', reason: 'member demo-3 was removed (scaled down) and has no record' },
    ]);
  });

  it("never touches logical slots, other tools' slots or its own member's slot", () => {
    const slots = [
      slot('pgha_demo_0'),
      slot('pgha_demo_9', { type: 'logical' }),
      slot('backup_tool'),
      slot('debezium', { type: 'logical' }),
    ];
    const d = decideMemberSlots(
      snapshot({
        members: ['demo-0'],
        removed: ['demo-9'],
        slots,
        absentSince: new Map(slots.map((s) => [s.name, 0])),
        now: 100 * ttl,
      }),
    );
    expect(d.drop).toEqual([]);
  });

  it('never drops the slot of a member with a record, whatever else it observes', () => {
    const member = fc.integer({ min: 0, max: 6 }).map((i) => `demo-${i}`);
    fc.assert(
      fc.property(
        fc.uniqueArray(member),
        fc.uniqueArray(member),
        fc.uniqueArray(fc.record({ i: fc.integer({ min: 0, max: 6 }), active: fc.boolean() }), {
          selector: (r) => r.i,
        }),
        fc.integer({ min: 0, max: 10 * ttl }),
        fc.integer({ min: 0, max: 10 * ttl }),
        (members, removed, raw, since, now) => {
          const slots = raw.map(({ i, active }) => slot(`pgha_demo_${i}`, { active }));
          const d = decideMemberSlots(
            snapshot({
              members,
              removed,
              slots,
              absentSince: new Map(slots.map((s) => [s.name, Math.min(since, now)])),
              now,
            }),
          );
          for (const { slot: dropped } of d.drop) {
            const name = `demo-${dropped.slice('pgha_demo_'.length)}`;
            expect(members).not.toContain(name);
            expect(slots.find((s) => s.name === dropped)?.active).toBe(false);
            expect(removed.includes(name) || now - Math.min(since, now) >= ttl).toBe(true);
          }
        },
      ),
    );
  });
});
