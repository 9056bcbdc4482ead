// Replication slots of members that are gone for good are dropped by the primary;
// a member that only restarts keeps its slot. Real etcd and postgres, a short
// --member-slots-ttl-millis.
//
// Not a test file of its own: these cases run last in local-cluster.test.ts, on
// that file's three-member cluster (one cluster start fewer in the serial group).
// They restart the cluster with their own agent arguments first, and leave it with
// one member removed and another stopped, so nothing may run after them.
import { type ClusterKeys, MemberRecord, RemovedMemberRecord, recordVersion, slotNameFor } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import { beforeAll, describe, expect, test } from 'vitest';
import { waitFor } from '../../../testing/cluster.js';
import type { LocalCluster } from '../src/runtime/local/local-cluster.js';

/** What the cases need from the file that runs them. */
export interface MemberSlotsFixture {
  readonly keys: ClusterKeys;
  /** The running cluster (after {@link restart}: the restarted one). */
  cluster(): LocalCluster;
  /** A client of the cluster's etcd (after {@link restart}: the current one). */
  etcd(): Etcd3;
  /**
   * Stops the cluster and starts it again on the same state, giving every agent
   * started from then on `args(name)` (read at each start of an agent, as a pod's
   * args are at each start of a pod).
   */
  restart(args: (name: string) => readonly string[]): Promise<void>;
}

/** Defines the member-slots cases on `fixture`'s cluster; call it last in its file. */
export function describeMemberSlots(fixture: MemberSlotsFixture): void {
  const ttlMillis = 8000;
  const keys = fixture.keys;
  let running: LocalCluster;
  let etcd: Etcd3;
  let primary: string;
  /** max_locks_per_transaction (a parameter postgres reads only at start) per member, when set. */
  const locks = new Map<string, number>();

  async function show(member: string, setting: string): Promise<string> {
    const client = new pg.Client({ connectionString: running.connectionString(member), connectionTimeoutMillis: 5000 });
    await client.connect();
    try {
      const { rows } = await client.query<{ v: string }>(`SELECT current_setting($1) AS v`, [setting]);
      return rows[0]!.v;
    } finally {
      await client.end();
    }
  }

  async function slots(): Promise<Map<string, boolean>> {
    const client = new pg.Client({
      connectionString: running.connectionString(primary),
      connectionTimeoutMillis: 5000,
    });
    await client.connect();
    try {
      const { rows } = await client.query<{ slot_name: string; active: boolean }>(
        'SELECT slot_name, active FROM pg_replication_slots',
      );
      return new Map(rows.map((r) => [r.slot_name, r.active]));
    } finally {
      await client.end();
    }
  }

  async function record(name: string): Promise<MemberRecord | null> {
    const text = await etcd.get(keys.member(name)).string();
    return text === null ? null : MemberRecord.decode(text);
  }

  /** Resolves once the primary has published `n` more reports (each report runs the slot upkeep first). */
  async function primaryReports(n: number): Promise<void> {
    let seen = (await record(primary))?.updatedAt;
    for (let i = 0; i < n; i++)
      seen = await waitFor(
        `a new report of ${primary}`,
        async () => {
          const at = (await record(primary))?.updatedAt;
          return at !== undefined && at !== seen ? at : undefined;
        },
        10_000,
        50,
      );
  }

  describe('member slots on the primary', () => {
    beforeAll(async () => {
      await fixture.restart((name) => [
        '--member-slots-ttl-millis',
        String(ttlMillis),
        ...(locks.has(name) ? ['--postgres-parameter', `max_locks_per_transaction=${locks.get(name)}`] : []),
      ]);
      running = fixture.cluster();
      etcd = fixture.etcd();
      primary = running.primaryAtStart;
    });

    test('a restarting member keeps its slot; a member gone for the TTL loses it; a removed one at once', async () => {
      const [a, b] = running.members.map((m) => m.name).filter((n) => n !== primary) as [string, string];
      await waitFor(
        'active slots for both replicas',
        async () => {
          const s = await slots();
          return s.get(slotNameFor(a)) === true && s.get(slotNameFor(b)) === true;
        },
        20_000,
      );

      // 1. A restarts (with a changed parameter that postgres reads only at start, as a
      //    rolling update restarts a pod): its record is gone for several of the primary's
      //    slot passes, and its slot stays throughout; it streams from it again afterwards,
      //    and runs with the new setting.
      expect(await show(a, 'max_locks_per_transaction')).toBe('64');
      await running.stopMember(a);
      locks.set(a, 128);
      expect(await record(a)).toBeNull();
      await primaryReports(3);
      expect((await slots()).get(slotNameFor(a))).toBe(false); // still there, inactive
      running.startMember(a);
      await waitFor(
        `${a} streaming from its slot again`,
        async () => (await record(a))?.streaming === true && (await slots()).get(slotNameFor(a)) === true,
        60_000,
      );
      expect(await show(a, 'max_locks_per_transaction')).toBe('128');

      // 2. B stops for good (no removal mark): its slot stays for the TTL, counted from
      //    no earlier than the moment its record went, and goes soon after.
      const stoppedAt = Date.now();
      await running.stopMember(b);
      expect(await record(b)).toBeNull();
      const droppedAt = await waitFor(
        `${slotNameFor(b)} dropped after the TTL`,
        async () => ((await slots()).has(slotNameFor(b)) ? undefined : Date.now()),
        ttlMillis + 15_000,
        100,
      );
      expect(droppedAt - stoppedAt).toBeGreaterThanOrEqual(ttlMillis);
      expect((await slots()).get(slotNameFor(a))).toBe(true); // A's untouched

      // 3. A is removed on purpose (the operator's mark): its slot goes as soon as its
      //    record is gone, long before the TTL.
      await etcd
        .put(keys.removed(a))
        .value(
          RemovedMemberRecord.encode({ v: recordVersion, member: a, reason: 'test', at: new Date().toISOString() }),
        );
      await primaryReports(2);
      expect((await slots()).get(slotNameFor(a))).toBe(true); // marked, but it still runs: kept
      const removedAt = Date.now();
      await running.stopMember(a);
      const goneAt = await waitFor(
        `${slotNameFor(a)} dropped once ${a} is gone`,
        async () => ((await slots()).has(slotNameFor(a)) ? undefined : Date.now()),
        ttlMillis,
        100,
      );
      expect(goneAt - removedAt).toBeLessThan(ttlMillis / 2);
    });
  });
}
