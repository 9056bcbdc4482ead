import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import {
  type ClusterKeys,
  LastPrimaryRecord,
  LeaderRecord,
  PghaError,
  recordVersion,
  SyncRecord,
  TargetRecord,
  TermRecord,
} from '@pgha/core';
import type { Etcd3, Watcher } from 'etcd3';
import type { Clock } from '../clock.js';
import { decideLeaderView } from '../decide/leader-view.js';
import type { Logger } from '../log.js';
import { type Failsafe, reclaimLeaderRecord } from './failsafe.js';
import { LeaseKeeper, type LeaseTiming } from './lease-keeper.js';
import type { PostgresMember } from './postgres-member.js';
import { Watchdog } from './watchdog.js';

/** What {@link Leadership} needs. */
export interface LeadershipOptions {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly memberDir: string;
  readonly keys: ClusterKeys;
  readonly lease: LeaseTiming;
  /**
   * The primary's lease is renewed only while its postgres was confirmed healthy
   * and writable within this bound (a hung postgres then loses the leader record).
   */
  readonly healthBoundMillis: number;
  readonly cliPath: string;
  readonly log: Logger;
  readonly clock: Clock;
  /** Wakes the control loop (a change of leader, target or lease). */
  readonly poke: () => void;
  /**
   * Called after a new lease was granted. The agent republishes its member record at
   * once: the primary keeps replication slots only for members with a record, and a
   * standby being restarted (a long step of the loop) must not wait for the next tick.
   */
  readonly onRegranted: () => Promise<void>;
  /** Called for each fence of a running postgres or while leading (the agent counts them); must not throw. */
  readonly onFence?: (reason: string) => void;
  /** Failsafe mode's rounds, promises and record (see agent/failsafe.ts); null: none. */
  readonly failsafe?: Failsafe | null;
}

/** The cluster as the agent last read it from etcd. */
export interface ClusterView {
  readonly leader: LeaderRecord | null;
  /** The lease the leader record is bound to (decimal string), null without a record. */
  readonly leaderLease: string | null;
  readonly term: number;
  readonly target: TargetRecord | null;
  /** The target's ModRevision, for the install guard. */
  readonly targetMod: string | null;
  readonly lastPrimary: LastPrimaryRecord | null;
  /** The synchronous claim (`sync`) of whichever primary wrote it last; null when none or malformed. */
  readonly sync: SyncRecord | null;
}

/** The synchronous claim a new leader takes the record with (see decide/synchronous-standbys.ts). */
export interface InitialClaim {
  readonly standbys: readonly string[];
  readonly quorum: number;
  readonly strict: boolean;
}

/**
 * The member's claim to write: its etcd lease, the leader record (install, update,
 * release — every etcd outcome that may have been applied is re-read, never assumed
 * failed), the durable last-primary position, and the fences that enforce the claim
 * on our own clock (a 50 ms timer here, the watchdog process when this process
 * cannot run). It never starts or stops postgres except to fence it.
 *
 * Invariant (contract line 1): while `postgres.state` is `primary`, either we hold
 * the leader record and our lease deadline is ahead, or the fence fires within one
 * timer period.
 */
export class Leadership {
  private keeper: LeaseKeeper | null = null;
  private watchdog: Watchdog | null = null;
  private fenceTimer: NodeJS.Timeout | null = null;
  private healthTimer: NodeJS.Timeout | null = null;
  private watchers: Watcher[] = [];
  private regranting: Promise<void> | null = null;
  private stopping = false;
  /** Set by a fence while we still hold the leader record: renew no more. */
  private fencedWhileLeading = false;
  private lastHealthyAt = Number.NEGATIVE_INFINITY;
  /** Set while the bootstrap's first writable start runs: the health gate holds open. */
  private startGrace = false;
  private probing = false;
  private unhealthyLogged = false;
  /** Whether we installed the leader record and have not seen it deleted or replaced since. */
  holdsLeader = false;
  /** Installing a leader record right now (a failsafe promise is refused meanwhile). */
  installing = false;
  /**
   * Failsafe mode: our lease expired (or our record vanished) while our failsafe
   * deadline was valid; a new lease is being granted to reclaim the record for term+1.
   * Postgres stays writable meanwhile, until the failsafe deadline.
   */
  reclaiming = false;
  /** The leader record we hold (kept when etcd loses it: a reclaim copies it). */
  private held: LeaderRecord | null = null;
  /** The revision of the unreadable leader record warned about: once per change, not every tick. */
  private unreadableLeaderWarned: string | null = null;
  view: ClusterView = {
    leader: null,
    leaderLease: null,
    term: 0,
    target: null,
    targetMod: null,
    lastPrimary: null,
    sync: null,
  };

  constructor(
    private readonly etcd: Etcd3,
    private readonly postgres: PostgresMember,
    private readonly o: LeadershipOptions,
  ) {}

  get lease(): LeaseKeeper {
    if (this.keeper === null) throw new PghaError('etcd-unavailable', 'agent has no lease');
    return this.keeper;
  }

  get hasLease(): boolean {
    return this.keeper !== null;
  }

  /** Our lease deadline, or null before a lease was granted. */
  deadline(): number | null {
    return this.keeper === null ? null : this.keeper.deadline();
  }

  /** Grants the lease and starts the watchdog, the fence timer, the health probe and the watches. */
  async start(): Promise<void> {
    this.keeper = new LeaseKeeper(this.etcd, this.o.lease, this.o.clock);
    this.keeper.on('expired', () => void this.regrant());
    this.keeper.on('renewed', () => this.armWatchdog());
    this.keeper.renewalGate = () => this.mayRenew();
    await this.keeper.grant();
    this.watchdog = new Watchdog(this.o.cliPath, join(this.o.memberDir, 'watchdog.log'), this.o.log, () =>
      this.fence('the watchdog cannot run'),
    );
    this.watchdog.start();
    this.fenceTimer = setInterval(() => this.checkFence(), 50);
    this.healthTimer = setInterval(() => void this.probeHealth(), Math.min(500, this.o.healthBoundMillis / 3));
    for (const key of [this.o.keys.leader, this.o.keys.target]) {
      const watcher = await this.etcd.watch().key(key).create();
      watcher.on('put', () => this.o.poke());
      watcher.on('delete', () => this.o.poke());
      watcher.on('error', () => undefined);
      this.watchers.push(watcher);
    }
  }

  // ---- renewal tied to health ------------------------------------------------

  /**
   * Whether the next keepalive may be sent. A member that is not writable renews
   * freely (its lease only carries its member record). The leading primary renews
   * only while its postgres answered a fresh connection as writable within the
   * health bound, and never after a fence.
   */
  private mayRenew(): boolean {
    if (!this.holdsLeader) return true;
    if (this.fencedWhileLeading) return false;
    if (this.postgres.state !== 'primary' || this.startGrace) return true; // installing, promoting, restarting in place, bootstrapping
    const healthy = this.healthy();
    if (!healthy && !this.unhealthyLogged) {
      this.o.log.warn(
        `postgres has not been confirmed healthy and writable for ${this.o.healthBoundMillis} ms: no longer renewing our lease`,
      );
      this.unhealthyLogged = true;
    }
    return healthy;
  }

  private healthy(): boolean {
    return this.o.clock.now() - this.lastHealthyAt <= this.o.healthBoundMillis;
  }

  // ---- failsafe mode ------------------------------------------------------------

  /** Whether a failsafe deadline (promises from every other member) is ahead. */
  failsafeValid(): boolean {
    return this.o.failsafe?.valid() ?? false;
  }

  /** Whether a writable postgres is covered: our lease, or failsafe promises while leading or reclaiming. */
  claimValid(): boolean {
    const lease = this.keeper?.isValid() ?? false;
    return (this.holdsLeader && lease) || (this.failsafeValid() && (this.holdsLeader || this.reclaiming));
  }

  /** The deadline the watchdog and the role decision use: the later of the lease's and the failsafe one. */
  effectiveDeadline(): number | null {
    if (this.keeper === null) return null;
    const lease = this.keeper.deadline();
    return this.failsafeValid() ? Math.max(lease, this.o.failsafe?.deadlineMono() ?? lease) : lease;
  }

  /**
   * Whether the primary may run a failsafe round: it leads (record held, postgres
   * labelled primary and running, confirmed healthy as for renewal, not fenced) and
   * etcd has acknowledged no keepalive for the stall threshold.
   */
  mayRunFailsafe(stallMillis: number): boolean {
    return (
      this.holdsLeader &&
      !this.fencedWhileLeading &&
      this.postgres.state === 'primary' &&
      this.postgres.pid !== null &&
      this.healthy() &&
      this.keeper !== null &&
      this.keeper.sinceLastAck() > stallMillis
    );
  }

  /** A failsafe round moved the deadline: the watchdog gets the later one. */
  failsafeExtended(): void {
    this.armWatchdog();
  }

  /** A fresh connection (through the postmaster) and one query, bounded on our clock. */
  private async probeHealth(): Promise<void> {
    if (this.probing || this.postgres.state !== 'primary' || this.startGrace) {
      if (this.postgres.state !== 'primary' || this.startGrace) this.lastHealthyAt = this.o.clock.now();
      return;
    }
    this.probing = true;
    try {
      if (await this.postgres.probeWritable(Math.max(250, this.o.healthBoundMillis / 2))) {
        this.lastHealthyAt = this.o.clock.now();
        this.unhealthyLogged = false;
      }
    } finally {
      this.probing = false;
    }
  }

  /**
   * Runs the bootstrap's first writable start with the health gate held open: the
   * bound on "confirmed healthy and writable" would otherwise count postgres's own
   * start-up after initdb, which took 3.5 s on a loaded machine (load average 25)
   * and fenced the only member there is (nobody else can take over before the
   * replicas have cloned from it), so the cluster never came up. Postgres accepts
   * no write before it is ready, and the lease deadline and its fences still apply.
   */
  async withStartGrace<T>(work: () => Promise<T>): Promise<T> {
    this.startGrace = true;
    try {
      return await work();
    } finally {
      this.startGrace = false;
      this.lastHealthyAt = this.o.clock.now();
    }
  }

  // ---- fencing ----------------------------------------------------------------

  private armWatchdog(): void {
    const pid = this.postgres.pid;
    // Never after a fence while the leader record is still being released: a standby
    // started meanwhile would be armed with a deadline already past and killed.
    if (this.fencedWhileLeading) return;
    if (pid !== null && this.keeper !== null && (this.postgres.state === 'primary' || this.holdsLeader)) {
      this.watchdog?.arm(pid, (this.effectiveDeadline() ?? this.keeper.deadline()) - this.o.clock.now());
    }
  }

  /** Re-arms (or disarms) the watchdog after postgres started, stopped or changed role. */
  postgresChanged(): void {
    if (
      this.holdsLeader &&
      !this.fencedWhileLeading &&
      this.postgres.pid === null &&
      this.keeper?.isValid() === false &&
      !this.failsafeValid()
    ) {
      // Postgres died past our deadline: the watchdog fenced it (its 20 ms check often
      // beats our 50 ms timer). Without this it merely "exited": renewal would resume
      // (state no longer primary) and keep a dead primary's leader record alive, and a
      // standby restarted meanwhile would be armed with a past deadline and killed.
      // (A transient lapse while postgres is not running, e.g. during initdb, is not
      // a fence: nothing could be written.)
      this.fence('lease deadline passed (postgres already killed)');
      return;
    }
    if (this.postgres.pid === null || (this.postgres.state !== 'primary' && !this.holdsLeader && !this.reclaiming))
      this.watchdog?.disarm();
    else this.armWatchdog();
  }

  /** The fence on our own clock: runs every 50 ms, independent of etcd and the loop. */
  checkFence(): void {
    if (this.postgres.state !== 'primary' || this.postgres.pid === null) return;
    // Failsafe mode: promises from every other member cover the primary past its lease,
    // and while it reclaims the record after etcd expired its lease (see the architecture).
    if (this.claimValid()) return;
    if (!this.holdsLeader)
      this.fence(
        this.reclaiming
          ? 'failsafe deadline passed before the leader record was reclaimed'
          : 'writable without holding the leader record',
      );
    else this.fence('lease deadline passed');
  }

  /**
   * Kills postgres at once (see {@link PostgresMember.fenceKill}); a primary that
   * still holds the leader record renews no more and releases it when etcd answers,
   * so the cluster fails over at once rather than after the TTL.
   */
  fence(reason: string): void {
    // A fence of nothing (postgres not running, not leading) is not counted; the
    // watchdog's kill past the deadline is (we still held the record). Counted after
    // the kill, and nothing the counter does can keep the kill from happening.
    const counts = this.postgres.pid !== null || this.holdsLeader;
    this.o.failsafe?.clear();
    this.reclaiming = false;
    this.postgres.fenceKill(reason);
    if (counts) {
      try {
        this.o.onFence?.(reason);
      } catch {
        /* a metric must never stand in the way of a fence */
      }
    }
    this.watchdog?.disarm();
    if (this.holdsLeader) {
      this.fencedWhileLeading = true;
      void this.releaseLeader(`fenced: ${reason}`).catch(() => undefined);
    }
    this.o.poke();
  }

  // ---- the lease --------------------------------------------------------------

  /** Grants a new lease after the old one expired; one at a time, retried until etcd answers. */
  private regrant(): Promise<void> {
    this.regranting ??= this.doRegrant().finally(() => {
      this.regranting = null;
    });
    return this.regranting;
  }

  private mayReclaim(): boolean {
    return (
      (this.holdsLeader || this.reclaiming) &&
      !this.fencedWhileLeading &&
      this.held !== null &&
      this.postgres.state === 'primary' &&
      this.failsafeValid()
    );
  }

  private async doRegrant(): Promise<void> {
    if (this.stopping) return;
    this.reclaiming = this.mayReclaim();
    this.o.log.warn(
      `our lease expired in etcd; granting a new one${this.reclaiming ? ' to reclaim the leader record (failsafe deadline still valid)' : ''}`,
    );
    this.holdsLeader = false;
    this.fencedWhileLeading = false;
    this.checkFence();
    try {
      await this.lease.grant();
      if (this.reclaiming) {
        let reclaimed = await this.reclaim().catch(async (error) => {
          // An error does not mean the transaction failed: read back what etcd holds.
          this.o.log.warn(`reclaiming the leader record: ${(error as Error).message}; reading back the outcome`);
          await this.readBack().catch(() => undefined);
          return false;
        });
        reclaimed ||= this.holdsLeader;
        this.reclaiming = false;
        if (!reclaimed) this.checkFence();
      }
      await this.o.onRegranted().catch(() => undefined);
      this.o.poke();
    } catch (error) {
      // etcd unreachable: keep trying; until then we hold no lease, so nothing here
      // can make postgres writable.
      this.o.log.warn(`could not grant a new lease: ${(error as Error).message}; retrying`);
      setTimeout(() => void this.regrant(), 500).unref();
    }
  }

  /**
   * Failsafe mode, etcd back but our lease gone: puts a leader record for term+1
   * naming us, writable, on the same timeline (postgres is writable already: no
   * promotion), with a sync claim copying ours, in one transaction guarded by "no
   * leader record, term unchanged since we led". False when someone else was
   * installed meanwhile (the caller fences) or etcd did not answer in time.
   */
  private async reclaim(): Promise<boolean> {
    const held = this.held;
    if (held === null || !this.failsafeValid()) return false;
    const leaseId = this.lease.id;
    const outcome = await reclaimLeaderRecord(
      this.etcd,
      this.o.keys,
      held,
      this.view.sync,
      leaseId,
      this.o.clock.date(),
    );
    if (typeof outcome === 'string') {
      this.o.log.warn(`cannot reclaim the leader record: ${outcome}`);
      return false;
    }
    const { record, sync } = outcome;
    this.view = { ...this.view, leader: record, leaderLease: leaseId, term: record.term, sync };
    this.held = record;
    this.holdsLeader = true;
    this.fencedWhileLeading = false;
    this.armWatchdog();
    this.o.log.warn(
      `failsafe: reclaimed the leader record for term ${record.term} after etcd expired our lease (postgres stayed writable on the members' promises; timeline ${record.timeline})`,
    );
    void this.o.failsafe?.maintain(leaseId, record.term).catch(() => undefined);
    return true;
  }

  // ---- the cluster view -------------------------------------------------------

  /** Reads leader, term, target and last-primary; updates whether we hold the leader record. */
  async read(): Promise<ClusterView> {
    const k = this.o.keys;
    const [leaderRes, termText, targetRes, lastText, syncText] = await Promise.all([
      this.etcd.get(k.leader).exec(),
      this.etcd.get(k.term).string(),
      this.etcd.get(k.target).exec(),
      this.etcd.get(k.lastPrimary).string(),
      this.etcd.get(k.sync).string(),
    ]);
    const kv = leaderRes.kvs[0];
    const targetKv = targetRes.kvs[0];
    // A record that does not parse is not a reason to stop reading the cluster (see decideLeaderView).
    const leader = decideLeaderView({
      self: this.o.name,
      key:
        kv === undefined ? null : { value: kv.value.toString(), lease: String(kv.lease), modRevision: kv.mod_revision },
      last: this.view.leader,
      ourLease: this.keeper?.id ?? null,
      warned: this.unreadableLeaderWarned,
    });
    this.unreadableLeaderWarned = leader.warned;
    if (leader.warning !== null) this.o.log.warn(`${leader.warning} (${k.leader})`);
    this.view = {
      leader: leader.leader,
      leaderLease: leader.lease,
      term: termText === null ? 0 : TermRecord.decode(termText).term,
      target: targetKv === undefined ? null : TargetRecord.decode(targetKv.value.toString()),
      targetMod: targetKv === undefined ? null : targetKv.mod_revision,
      lastPrimary: lastText === null ? null : LastPrimaryRecord.decode(lastText),
      sync: this.parseSync(syncText),
    };
    const ours = leader.ours;
    const lost = !ours && this.holdsLeader;
    if (lost && this.mayReclaim() && this.view.leader === null) {
      // Failsafe mode: our record vanished with our lease while the members' promises
      // cover us; reclaim it (a new lease, then term+1) instead of fencing.
      this.reclaiming = true;
      this.holdsLeader = false;
      void this.regrant();
      return this.view;
    }
    if (lost) this.fencedWhileLeading = false;
    this.holdsLeader = ours;
    if (ours) this.held = this.view.leader;
    if (lost) this.postgresChanged();
    return this.view;
  }

  private parseSync(text: string | null): SyncRecord | null {
    if (text === null) return null;
    try {
      return SyncRecord.decode(text);
    } catch (error) {
      this.o.log.warn(`ignoring the sync record: ${(error as Error).message}`);
      return null;
    }
  }

  /**
   * Publishes our synchronous claim for our term, guarded by holding the leader
   * record. False when the guard failed (we no longer lead) or etcd did not answer
   * (the caller decides again on the next pass; a claim is only ever weakened before
   * postgres's setting changes, so an unknown outcome of a weakening blocks the change).
   */
  async publishSync(claim: { standbys: readonly string[]; quorum: number }, strict: boolean): Promise<boolean> {
    const leader = this.view.leader;
    if (!this.holdsLeader || leader === null || this.keeper === null) return false;
    const record: SyncRecord = {
      v: recordVersion,
      term: leader.term,
      member: this.o.name,
      standbys: [...claim.standbys],
      quorum: claim.quorum,
      strict,
      at: this.o.clock.date().toISOString(),
    };
    try {
      const result = await this.etcd
        .if(this.o.keys.leader, 'Lease', '==', this.keeper.id)
        .then(this.etcd.put(this.o.keys.sync).value(SyncRecord.encode(record)))
        .commit();
      if (result.succeeded) this.view = { ...this.view, sync: record };
      return result.succeeded;
    } catch (error) {
      this.o.log.warn(`publishing the synchronous claim: ${(error as Error).message}`);
      await this.readBack().catch(() => undefined);
      return this.view.sync !== null && this.view.sync.term === record.term && this.view.sync.at === record.at;
    }
  }

  // ---- the leader record ------------------------------------------------------

  /**
   * Installs the leader record for `term` under our lease together with the term, in
   * one transaction guarded by "no leader, term unchanged since read" and, for an
   * election, "the target is still the one we read (same ModRevision)" (contract
   * lines 2 and 3). An error from etcd does not mean the transaction failed (it may
   * have been applied and its answer lost): the record is read back to find out.
   */
  async install(
    term: number,
    timeline: number,
    targetMod: string | null,
    fromLsn: string | null = null,
    claim: InitialClaim = { standbys: [], quorum: 0, strict: false },
  ): Promise<boolean> {
    if (this.installing) return false;
    this.installing = true;
    try {
      return await this.doInstall(term, timeline, targetMod, fromLsn, claim);
    } finally {
      this.installing = false;
    }
  }

  private async doInstall(
    term: number,
    timeline: number,
    targetMod: string | null,
    fromLsn: string | null,
    claim: InitialClaim,
  ): Promise<boolean> {
    const k = this.o.keys;
    // Failsafe mode: not under a promise to a primary riding out an etcd outage, and
    // only as a member the failsafe record names (the primary asked only those).
    const check = (await this.o.failsafe?.installCheck()) ?? { refusal: null, mod: null };
    if (check.refusal !== null) {
      this.o.log.warn(`not installing the leader record for term ${term}: ${check.refusal}`);
      return false;
    }
    const termRes = await this.etcd.get(k.term).exec();
    const kv = termRes.kvs[0];
    const current = kv === undefined ? 0 : TermRecord.decode(kv.value.toString()).term;
    if (current !== term - 1) return false;
    const record: LeaderRecord = {
      v: recordVersion,
      term,
      member: this.o.name,
      host: this.o.host,
      port: this.o.port,
      timeline,
      since: this.o.clock.date().toISOString(),
      writable: false,
      ...(fromLsn === null ? {} : { fromLsn }),
    };
    const sync: SyncRecord = {
      v: recordVersion,
      term,
      member: this.o.name,
      standbys: [...claim.standbys],
      quorum: claim.quorum,
      strict: claim.strict,
      at: record.since,
    };
    let guard = this.etcd.if(k.leader, 'Create', '==', 0);
    guard = kv === undefined ? guard.and(k.term, 'Create', '==', 0) : guard.and(k.term, 'Mod', '==', kv.mod_revision);
    if (targetMod !== null) guard = guard.and(k.target, 'Mod', '==', targetMod);
    if (check.mod !== null) guard = guard.and(k.failsafe, 'Mod', '==', check.mod);
    const leaseId = this.lease.id;
    let succeeded: boolean;
    try {
      const result = await guard
        .then(
          this.etcd.put(k.leader).value(LeaderRecord.encode(record)).lease(leaseId),
          this.etcd.put(k.term).value(TermRecord.encode({ v: recordVersion, term })),
          // The claim is of the new term before anything can be written in it.
          this.etcd.put(k.sync).value(SyncRecord.encode(sync)),
        )
        .commit();
      succeeded = result.succeeded;
      // A failed guard can also be our own earlier attempt, applied by etcd while
      // its answer was lost and retried by the client: the record tells.
      if (!succeeded) {
        await this.readBack();
        succeeded = this.holdsLeader && this.view.leader?.term === term;
        if (succeeded) this.o.log.info(`the leader record for term ${term} is ours (an earlier attempt applied)`);
      }
    } catch (error) {
      this.o.log.warn(`installing the leader record: ${(error as Error).message}; reading back the outcome`);
      await this.readBack();
      succeeded = this.holdsLeader && this.view.leader?.term === term;
      this.o.log.info(`the leader record for term ${term} was ${succeeded ? '' : 'not '}installed`);
    }
    if (!succeeded) return false;
    if (this.view.leader !== null && this.view.leader.since !== record.since) {
      // Read back: keep what etcd holds (an earlier attempt's `since`).
      this.holdsLeader = true;
      this.held = this.view.leader;
      this.fencedWhileLeading = false;
      this.lastHealthyAt = this.o.clock.now();
      this.armWatchdog();
      return true;
    }
    this.view = { ...this.view, leader: record, leaderLease: leaseId, term, sync };
    this.holdsLeader = true;
    this.held = record;
    this.fencedWhileLeading = false;
    this.lastHealthyAt = this.o.clock.now();
    // The failsafe record names the new leader's members before an outage can need it.
    if (this.o.failsafe?.enabled) void this.o.failsafe.maintain(leaseId, term).catch(() => undefined);
    // Armed from the moment we may become writable: if this process freezes or dies
    // between here and the end of promotion, the watchdog still fences at the deadline.
    this.armWatchdog();
    this.o.log.info(`installed the leader record for term ${term}`);
    return true;
  }

  /** Reads the cluster view until etcd answers (bounded by our lease: past it nothing we read matters). */
  private async readBack(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.read();
        return;
      } catch (error) {
        if (this.stopping || attempt >= 20) throw error;
        await delay(100);
      }
    }
  }

  /** Rewrites our leader record (same lease, same term), only while it is still ours. */
  async update(changes: Partial<Pick<LeaderRecord, 'writable' | 'timeline'>>): Promise<void> {
    const leader = this.view.leader;
    if (leader === null || !this.holdsLeader) throw new PghaError('conflict', 'we do not hold the leader record');
    const record: LeaderRecord = { ...leader, ...changes };
    const leaseId = this.lease.id;
    let succeeded: boolean;
    try {
      const result = await this.etcd
        .if(this.o.keys.leader, 'Lease', '==', leaseId)
        .then(this.etcd.put(this.o.keys.leader).value(LeaderRecord.encode(record)).lease(leaseId))
        .commit();
      succeeded = result.succeeded;
    } catch (error) {
      this.o.log.warn(`updating the leader record: ${(error as Error).message}; reading back the outcome`);
      await this.readBack();
      if (!this.holdsLeader) throw new PghaError('conflict', 'the leader record is no longer ours');
      // Applied or not, the next tick sees the record as it is and finishes the job.
      return;
    }
    if (!succeeded) {
      this.holdsLeader = false;
      throw new PghaError('conflict', 'the leader record is no longer ours');
    }
    this.view = { ...this.view, leader: record };
    this.held = record;
  }

  /**
   * Deletes our leader record (guarded by our lease). With `cleanLsn` (postgres shut
   * down cleanly at that checkpoint), the exact last-primary position is written in
   * the same transaction, so a later election knows nothing after it was acknowledged.
   */
  async releaseLeader(reason: string, cleanLsn: string | null = null): Promise<void> {
    if (this.keeper === null) return;
    const leader = this.view.leader;
    const leaseId = this.keeper.id;
    const ops = [this.etcd.delete().key(this.o.keys.leader)] as unknown[];
    // Only a leadership that really was writable in this term has a final position to
    // publish (a release in the middle of a promotion does not).
    if (cleanLsn !== null && leader !== null && leader.member === this.o.name && leader.writable) {
      const position: LastPrimaryRecord = {
        v: recordVersion,
        term: leader.term,
        member: this.o.name,
        timeline: leader.timeline,
        lsn: cleanLsn,
        clean: true,
        at: this.o.clock.date().toISOString(),
      };
      ops.push(this.etcd.put(this.o.keys.lastPrimary).value(LastPrimaryRecord.encode(position)));
    }
    try {
      const result = await this.etcd
        .if(this.o.keys.leader, 'Lease', '==', leaseId)
        .then(...(ops as never[]))
        .commit();
      this.holdsLeader = false;
      this.postgresChanged();
      if (result.succeeded)
        this.o.log.info(`released the leader record: ${reason}${cleanLsn === null ? '' : ` (clean at ${cleanLsn})`}`);
    } catch (error) {
      this.o.log.warn(`releasing the leader record: ${(error as Error).message}; reading back the outcome`);
      await this.readBack();
      if (this.holdsLeader) throw error;
    }
  }

  /**
   * Publishes our current WAL position as the last primary's (not clean), guarded by
   * holding the leader record, so a whole-cluster restart knows whose data is newest.
   */
  async recordPosition(lsn: string, timeline: number): Promise<void> {
    const leader = this.view.leader;
    if (!this.holdsLeader || leader === null || !leader.writable || this.keeper === null) return;
    const position: LastPrimaryRecord = {
      v: recordVersion,
      term: leader.term,
      member: this.o.name,
      timeline,
      lsn,
      clean: false,
      at: this.o.clock.date().toISOString(),
    };
    await this.etcd
      .if(this.o.keys.leader, 'Lease', '==', this.keeper.id)
      .then(this.etcd.put(this.o.keys.lastPrimary).value(LastPrimaryRecord.encode(position)))
      .commit();
  }

  /** Stops watches, timers and the watchdog, and revokes the lease (bounded: etcd may be gone). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.fenceTimer !== null) clearInterval(this.fenceTimer);
    if (this.healthTimer !== null) clearInterval(this.healthTimer);
    await Promise.all(this.watchers.map((w) => withTimeout(w.cancel(), 1000).catch(() => undefined)));
    this.watchdog?.stop();
    if (this.keeper !== null) {
      await withTimeout(this.keeper.revoke(), 2000).catch((error) =>
        this.o.log.warn(`could not revoke the lease: ${(error as Error).message}`),
      );
      this.keeper.stop();
    }
  }
}

/** `promise`, or a rejection after `millis`. */
export function withTimeout<T>(promise: Promise<T>, millis: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new PghaError('timeout', `no answer within ${millis} ms`)), millis);
    }),
  ]).finally(() => clearTimeout(timer));
}
