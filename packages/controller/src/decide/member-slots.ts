/**
 * The primary's replication slots for the other members (`slotNameFor(member)`,
 * `pgha_<member>`): which to create and which to drop. Pure: the agent reads the
 * member records, the removal marks and `pg_replication_slots`, and keeps the clock
 * state (`absentSince`) between calls.
 *
 * Safety rules (tested in member-slots.test.ts):
 * - A slot is created for every member with a record, except the primary itself.
 * - Only inactive physical `pgha_` slots whose member has no record are ever dropped.
 *   A slot something streams from is never dropped, and its absence clock restarts.
 * - A member that only restarts (its record gone for less than the TTL) keeps its slot:
 *   without a removal mark a slot is dropped only after its member has had no record
 *   for `ttlMillis`, as timed by this primary from its own observations. A new primary
 *   starts its own clock (the agent resets `absentSince` at promotion), so a failover
 *   can delay a drop by up to one TTL but never hasten it.
 * - A member marked `removed/<name>` by the operator (scaled away on purpose) has its
 *   inactive slot dropped as soon as its record is gone.
 */
import { slotNameFor } from '@pgha/core';

/** A replication slot as `pg_replication_slots` shows it. */
export interface ObservedSlot {
  readonly name: string;
  readonly type: 'physical' | 'logical';
  readonly active: boolean;
}

export interface MemberSlotsSnapshot {
  /** This primary's member name (it needs no slot of its own). */
  readonly self: string;
  /** Members with a record in etcd (`members/<name>`), this one included. */
  readonly members: readonly string[];
  /** Members the operator marked removed (`removed/<name>`). */
  readonly removed: readonly string[];
  readonly slots: readonly ObservedSlot[];
  /** Since when (ms) each slot has been seen without a member record; the previous decision's. */
  readonly absentSince: ReadonlyMap<string, number>;
  readonly now: number;
  /** `--member-slots-ttl-millis`: how long a member may have no record before its slot goes. */
  readonly ttlMillis: number;
}

export interface SlotDrop {
  readonly slot: string;
  readonly reason: string;
}

export interface MemberSlotsDecision {
  readonly create: readonly string[];
  readonly drop: readonly SlotDrop[];
  /** The clock state to pass to the next call. */
  readonly absentSince: ReadonlyMap<string, number>;
}

/** The prefix every pgha member slot has (see `slotNameFor`); other slots are never touched. */
export const memberSlotPrefix = 'pgha_';

/** The default `--member-slots-ttl-millis`: 30 minutes, as Patroni's `member_slots_ttl`. */
export const defaultMemberSlotsTtlMillis = 30 * 60 * 1000;

export function decideMemberSlots(s: MemberSlotsSnapshot): MemberSlotsDecision {
  const own = slotNameFor(s.self);
  const wanted = new Set(s.members.filter((m) => m !== s.self).map(slotNameFor));
  // Our own slot name counts as present: a member with a record keeps its slot.
  const present = new Set([...wanted, own]);
  const removed = new Map(s.removed.map((m) => [slotNameFor(m), m]));
  const existing = new Set(s.slots.map((slot) => slot.name));
  const create = [...wanted].filter((slot) => !existing.has(slot)).sort();
  const drop: SlotDrop[] = [];
  const absentSince = new Map<string, number>();
  for (const slot of s.slots) {
    if (slot.type !== 'physical' || !slot.name.startsWith(memberSlotPrefix) || present.has(slot.name)) continue;
    // Something streams from it (its member runs, its record is missing for another
    // reason): keep it, and count the absence from when it stops.
    if (slot.active) continue;
    const since = s.absentSince.get(slot.name) ?? s.now;
    // Kept for dropped slots too: a drop that fails is retried with the next call
    // without restarting the clock; a dropped slot is not listed again, so it goes.
    absentSince.set(slot.name, since);
    const member = removed.get(slot.name);
    if (member !== undefined)
      drop.push({ slot: slot.name, reason: `member ${member} was removed (scaled down) and has no record` });
    else if (s.now - since >= s.ttlMillis)
      drop.push({
        slot: slot.name,
        reason: `no member record for ${Math.round((s.now - since) / 1000)} s (member slots TTL ${Math.round(s.ttlMillis / 1000)} s)`,
      });
  }
  return { create, drop, absentSince };
}
