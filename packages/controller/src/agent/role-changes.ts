import { setTimeout as delay } from 'node:timers/promises';
import {
  type ClusterKeys,
  compareLsn,
  type LeaderRecord,
  MemberRecord,
  type MemberState,
  PghaError,
  recordVersion,
  SwitchoverRecord,
  type TargetRecord,
} from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import type { PostgresObservation } from '../adapters/postgres-observe.js';
import type { Clock } from '../clock.js';
import { decideMemberSlots, defaultMemberSlotsTtlMillis } from '../decide/member-slots.js';
import type { SynchronousSetting } from '../decide/synchronous-standbys.js';
import type { Logger } from '../log.js';
import type { Leadership } from './leadership.js';
import type { PostgresMember } from './postgres-member.js';
import type { SynchronousReplication } from './synchronous-replication.js';

/** What the role changes need from the agent around them. */
export interface RoleChangeContext {
  readonly name: string;
  readonly keys: ClusterKeys;
  readonly etcd: Etcd3;
  readonly postgres: PostgresMember;
  readonly leadership: Leadership;
  readonly synchronous: SynchronousReplication;
  readonly clock: Clock;
  readonly log: Logger;
  /** How long a candidate waits to receive a clean last primary's shutdown checkpoint (default 3000). */
  readonly catchUpTimeoutMillis?: number;
  /** See `AgentOptions.memberSlotsTtlMillis` (default 30 min). */
  readonly memberSlotsTtlMillis?: number;
  setState(state: MemberState): void;
  /** Remembers postgres's latest answer for the health API. */
  noteObservation(observation: PostgresObservation): void;
  /** The writable leader record of another member, from the last read. */
  writableLeaderOtherThanUs(): LeaderRecord | null;
  isStopping(): boolean;
}

/**
 * The agent's role changes, each an action of the control loop decided in
 * decide/agent-role.ts: taking the leader record and promoting (`promote`,
 * `finish-promotion`) and the planned step-down of a switchover (`step-down`).
 */
export class RoleChanges {
  constructor(private readonly c: RoleChangeContext) {}

  /**
   * Since when (clock ms) each member slot has been seen without a member record, as
   * this member observed while primary. Reset at every promotion: a new primary
   * starts its own clock rather than trust one from an earlier leadership.
   */
  private slotAbsentSince: ReadonlyMap<string, number> = new Map();

  /** Takes the leader record for the target's term, then promotes postgres. */
  async promote(target: TargetRecord): Promise<void> {
    const { clock, postgres, leadership: lead, log } = this.c;
    const started = clock.now();
    const observation = await postgres.observe();
    if (observation === null || !observation.inRecovery)
      throw new PghaError('postgres-failed', 'cannot promote: postgres is not a running standby');
    const caughtUp = await this.caughtUpWithCleanPrimary(target, observation);
    if (!caughtUp.ok) return;
    const initial = await this.c.synchronous.initialClaim();
    if (
      !(await lead.install(
        target.term,
        observation.timeline ?? 1,
        lead.view.targetMod,
        caughtUp.position,
        initial.claim,
      ))
    ) {
      log.info(`could not take the leader record for term ${target.term} (someone else did, or the target changed)`);
      return;
    }
    await this.finishPromotion(started, initial.setting);
  }

  /**
   * Promotes postgres (unless it already left recovery) and marks our leader record
   * writable. Before the promotion postgres is set to wait for the standbys our claim
   * names (`setting`; by default what our published claim of this term says), so no
   * commit of the new term is acknowledged outside the claim.
   */
  async finishPromotion(
    started: number,
    setting: SynchronousSetting = this.c.synchronous.settingForPromotion(),
  ): Promise<void> {
    const { clock, postgres, leadership: lead, log } = this.c;
    const term = lead.view.leader?.term ?? lead.view.term;
    try {
      if (!lead.holdsLeader || !lead.lease.isValid()) {
        throw new PghaError('conflict', 'lost the leader record or passed the lease deadline before promoting');
      }
      this.c.synchronous.reset(setting);
      await postgres.applySynchronous(setting);
      const after = await postgres.promote();
      this.c.noteObservation(after);
      lead.postgresChanged();
      // Slots before announcing: replicas re-pointed by the announcement find theirs.
      this.slotAbsentSince = new Map();
      await this.ensureSlots().catch((error) => log.warn(`slots: ${(error as Error).message}`));
      await lead.update({ writable: true, timeline: after.timeline ?? lead.view.leader?.timeline ?? 1 });
      log.info(
        `promoted in ${Math.round(clock.now() - started)} ms: primary of term ${term} on timeline ${after.timeline}`,
      );
      if (after.currentLsn !== null)
        await lead.recordPosition(after.currentLsn, after.timeline ?? 1).catch(() => undefined);
      // A checkpoint records the new timeline in the control file, which pg_rewind
      // on the old primary reads. After announcing: it takes a moment.
      void postgres.conn?.query('CHECKPOINT').catch(() => undefined);
    } catch (error) {
      log.warn(`promotion failed: ${(error as Error).message}; releasing the leader record`);
      if (postgres.state === 'primary') lead.fence('promotion failed');
      await lead.releaseLeader('promotion failed').catch(() => undefined);
      throw error;
    }
  }

  /**
   * Planned switchover: clean shutdown (connected standbys receive every WAL record
   * up to the shutdown checkpoint), release the leader record together with that
   * exact position, and start again as a standby of nobody yet. The loop then keeps
   * reporting (so this member can be elected again if the target fails) and follows
   * the new primary once it is writable.
   */
  async stepDown(target: TargetRecord): Promise<void> {
    const { clock, postgres, leadership: lead, log } = this.c;
    log.info(`switchover to ${target.member}: shutting down cleanly`);
    const started = clock.now();
    this.c.setState('stopping');
    const cleanLsn = await postgres.stop();
    await lead.releaseLeader(`switchover to ${target.member}`, cleanLsn);
    log.info(`stepped down in ${Math.round(clock.now() - started)} ms`);
    this.c.setState('starting');
    // Not at once: starting postgres competes for the CPU with the target's promotion,
    // which is the write pause. Wait (bounded) for the new primary to be writable, so
    // this start follows it directly; if the target fails to take over, start as a
    // standby of nobody, electable again.
    const deadline = clock.now() + 2000;
    while (this.c.writableLeaderOtherThanUs() === null && clock.now() < deadline && !this.c.isStopping()) {
      await delay(25);
      await lead.read().catch(() => undefined);
    }
    await postgres.startStandby(this.c.writableLeaderOtherThanUs(), () => this.c.setState('cloning'));
    this.c.setState('running');
  }

  /**
   * Keeps a physical slot on the primary for every other member that reports, and
   * drops the inactive slots of members gone for good (decide/member-slots.ts): those
   * without a record for `memberSlotsTtlMillis`, and those the operator marked
   * `removed/<name>` once their record is gone.
   */
  async ensureSlots(): Promise<void> {
    const { clock, etcd, keys, log, name, postgres } = this.c;
    // Both reads before the slots: a slot of a member that reports after the read is
    // active or is created by the next call; one whose member registers between the
    // reads and the drop is inactive only while its walsender has not attached, and
    // the drop is guarded by "NOT active" (postgres-member.ts).
    const [memberKeys, removedKeys] = await Promise.all([
      etcd.getAll().prefix(keys.membersPrefix).keys(),
      etcd.getAll().prefix(keys.removedPrefix).keys(),
    ]);
    const namesOf = (list: string[], kind: 'member' | 'removed') =>
      list.flatMap((key) => {
        const parsed = keys.parse(key);
        return parsed?.kind === kind ? [parsed.name] : [];
      });
    const slots = await postgres.listSlots();
    if (slots === null) return;
    const decision = decideMemberSlots({
      self: name,
      members: namesOf(memberKeys, 'member'),
      removed: namesOf(removedKeys, 'removed'),
      slots,
      absentSince: this.slotAbsentSince,
      now: clock.now(),
      ttlMillis: this.c.memberSlotsTtlMillis ?? defaultMemberSlotsTtlMillis,
    });
    this.slotAbsentSince = decision.absentSince;
    await postgres.ensureSlots(decision.create);
    // A failed drop is logged and tried again with the next report, never a reason to
    // miss this report (the caller publishes the member record after this).
    for (const { slot, reason } of decision.drop) {
      try {
        if (await postgres.dropInactiveSlot(slot)) log.info(`dropped replication slot ${slot}: ${reason}`);
        else log.info(`kept replication slot ${slot}: it became active (${reason})`);
      } catch (error) {
        log.warn(`could not drop replication slot ${slot} (${reason}): ${(error as Error).message}`);
      }
    }
  }

  /**
   * When the previous primary shut down cleanly (a switchover, a stopped cluster),
   * waits (bounded) until this standby has received its shutdown checkpoint; not ok
   * when it has not, so the election is declined and nothing acknowledged is lost.
   * `position` is what this standby has received (the end of what it promotes).
   */
  private async caughtUpWithCleanPrimary(
    target: TargetRecord,
    now: PostgresObservation,
  ): Promise<{ ok: boolean; position: string | null }> {
    const { clock, postgres, leadership: lead, log, name } = this.c;
    const last = lead.view.lastPrimary;
    const mustHold = last !== null && last.clean && last.member !== name && last.term === target.term - 1 ? last : null;
    if (mustHold === null) return { ok: true, position: now.receivedLsn ?? now.replayedLsn };
    const deadline = clock.now() + (this.c.catchUpTimeoutMillis ?? 3000);
    // The caller's observation is fresh (taken as the promotion began): often enough
    // already, without one more round trip inside the write pause.
    let o: PostgresObservation | null = now;
    for (;;) {
      const position = o === null ? null : (o.receivedLsn ?? o.replayedLsn);
      if (position !== null && compareLsn(position, mustHold.lsn) >= 0) return { ok: true, position };
      if (clock.now() > deadline) {
        log.warn(
          `declining term ${target.term}: ${mustHold.member} shut down cleanly at ${mustHold.lsn} and we have only ${position ?? 'nothing'}`,
        );
        return { ok: false, position };
      }
      await delay(20);
      o = await postgres.observe();
    }
  }

  /**
   * A primary about to stop asks for a switchover and waits (bounded) until the
   * control loop has stepped down; throws when the controller rejects the request, no
   * running replica is left to take over, or nothing happens within `timeoutMillis`.
   */
  async handOver(timeoutMillis: number): Promise<void> {
    const { clock, etcd, keys, leadership, log, name } = this.c;
    const deadline = clock.now() + timeoutMillis;
    const runningReplicas = async () => {
      const members = await etcd.getAll().prefix(keys.membersPrefix).strings();
      // A record that does not parse is skipped, as the controller skips it.
      return Object.values(members)
        .flatMap((v) => {
          try {
            return [MemberRecord.decode(v)];
          } catch {
            return [];
          }
        })
        .filter((m) => m.name !== name && m.role === 'replica' && m.state === 'running').length;
    };
    if ((await runningReplicas()) === 0) return;
    log.info('stopping as primary: requesting a switchover first');
    await etcd.put(keys.switchover).value(
      SwitchoverRecord.encode({
        v: recordVersion,
        from: name,
        to: null,
        at: null,
        requestedAt: clock.date().toISOString(),
      }),
    );
    let polls = 0;
    while (clock.now() < deadline) {
      if (!leadership.holdsLeader) return; // stepped down through the control loop
      // A request the controller rejected (no replica streams, stale reports) is not
      // waited out: say why and stop without a handover.
      if (++polls % 5 === 0) {
        const text = await etcd
          .get(keys.switchover)
          .string()
          .catch(() => null);
        const rejected = text === null ? null : SwitchoverRecord.decode(text).rejected;
        if (rejected) throw new PghaError('conflict', `the controller rejected the handover: ${rejected}`);
        // The replicas are stopping too (a whole cluster or a PgHaCluster deleted):
        // with none left to take over, waiting out the timeout only delays the stop.
        if ((await runningReplicas().catch(() => 1)) === 0)
          throw new PghaError('conflict', 'no running replica is left to hand over to');
      }
      await delay(50);
    }
    throw new PghaError('timeout', `no switchover within ${timeoutMillis} ms`);
  }
}
