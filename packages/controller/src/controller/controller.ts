import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import {
  type ClusterKeys,
  type ConfigRecord,
  ControllerRecord,
  clusterKeys,
  HistoryRecord,
  type LastPrimaryRecord,
  type MemberRecord,
  recordVersion,
  SwitchoverRecord,
  TargetRecord,
} from '@pgha/core';
import type { Etcd3, Watcher } from 'etcd3';
import { type RecordProblem, readClusterRecords } from '../adapters/cluster-records.js';
import { assertEtcdReachable, createEtcdClient, type EtcdConnection } from '../adapters/etcd.js';
import { LeaseKeeper, type LeaseTiming } from '../agent/lease-keeper.js';
import { type Clock, systemClock } from '../clock.js';
import {
  type ControllerDecision,
  type ControllerPolicy,
  type ControllerSnapshot,
  decideController,
} from '../decide/controller.js';
import { type ControllerDecisionFacts, controllerDecisionFacts } from '../decide/decision-facts.js';
import type { Logger } from '../log.js';
import { ControllerMetrics } from './controller-metrics.js';

/** Options of {@link Controller}. */
export interface ControllerOptions {
  readonly cluster: string;
  readonly etcd: EtcdConnection;
  readonly keyRoot?: string;
  readonly lease: LeaseTiming;
  readonly policy: ControllerPolicy;
  /** How often to re-evaluate without any etcd event. Default 500 ms. */
  readonly intervalMillis?: number;
  /**
   * How long the first etcd call is retried at start (etcd unreachable or slow to
   * answer, e.g. a TLS handshake on a loaded host). Default 20000. Keep it below any
   * start timeout of the caller, so that the caller sees etcd's own error.
   */
  readonly connectPatienceMillis?: number;
  readonly log: Logger;
  readonly clock?: Clock;
}

/**
 * The controller: detects a missing primary, elects the most advanced replica by
 * writing the `target` for term+1, carries out switchover requests, and writes one
 * history record per promotion. Several may run; one is active — the one holding
 * the `controller` key under its lease — and a standby takes over within about one
 * lease TTL when it dies. It never touches a data directory or a member's records.
 */
export class Controller {
  private readonly keys: ClusterKeys;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly id = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private etcd: Etcd3 | null = null;
  private lease: LeaseKeeper | null = null;
  private watcher: Watcher | null = null;
  private stopping = false;
  private active = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private pending = false;
  // What this controller remembers between passes.
  private leaderLostAt: number | null = null;
  private lastPrimary: MemberRecord | null = null;
  /** The `last-primary` records read, newest per term (a few recent terms). */
  private readonly lastPrimaryRecords = new Map<number, LastPrimaryRecord>();
  /** Each member's newest record while it ran as a replica. */
  private readonly lastAsReplica = new Map<string, MemberRecord>();
  /** The malformed records already logged, by key: their mod revision (each is logged once, not every pass). */
  private readonly problemsLogged = new Map<string, string>();
  /** Our `controller` record as last written (its `waiting` is what status shows). */
  private record: ControllerRecord | null = null;
  private targetSeen: { text: string; at: number } | null = null;
  /** The pending switchover request and when this controller first saw it (a switchover's detectedAt). */
  private switchoverSeen: { text: string; at: number } | null = null;
  private lastHistoryTerm = 0;
  /** The newest history record read (its new primary names an old primary no last-primary record names). */
  private lastHistory: { term: number; newPrimary: string } | null = null;
  private lastWait = '';
  private lastProblem: string | null = null;
  private lagBoundSource = '';
  /** Promotions, election durations and time without a primary (`pgha controller --metrics-port`). */
  readonly metrics: ControllerMetrics;
  /** The last pass's decision (a `none` after `none` is not logged). */
  private lastDecision: ControllerDecision['type'] | null = null;

  constructor(private readonly options: ControllerOptions) {
    this.keys = clusterKeys(options.cluster, options.keyRoot);
    this.clock = options.clock ?? systemClock;
    this.log = options.log;
    this.metrics = new ControllerMetrics({ cluster: options.cluster, now: () => this.clock.date().getTime() });
  }

  /** Whether this controller is the active one. */
  get isActive(): boolean {
    return this.active;
  }

  /**
   * Why the last pass failed (etcd unreachable, mostly), or null once a pass has
   * succeeded since. The loop keeps retrying either way; this is for reporting
   * (the Kubernetes operator shows it in the PgHaCluster's status).
   */
  get problem(): string | null {
    return this.lastProblem;
  }

  /** Connects and starts campaigning; resolves once connected. */
  async start(): Promise<void> {
    this.etcd = createEtcdClient(this.options.etcd, 1500);
    // Patient: under load a first call (over TLS: a handshake) can outlast the call timeout.
    await assertEtcdReachable(this.etcd, this.options.etcd.endpoints, this.options.connectPatienceMillis ?? 20_000);
    this.lease = new LeaseKeeper(this.etcd, this.options.lease, this.clock);
    this.lease.on('expired', () => {
      this.active = false;
    });
    await this.lease.grant();
    this.watcher = await this.etcd.watch().prefix(this.keys.prefix).create();
    this.watcher.on('put', () => this.poke());
    this.watcher.on('delete', () => this.poke());
    this.watcher.on('error', () => undefined);
    this.loop = this.run();
  }

  private poke(): void {
    this.pending = true;
    this.wake?.();
  }

  private async run(): Promise<void> {
    const etcd = this.etcd!;
    while (!this.stopping) {
      this.pending = false;
      try {
        if (!this.active || !this.lease!.isValid()) await this.campaign(etcd);
        // A standby follows the cluster too (without acting), so that on taking over
        // it knows the last primary and when it was lost, for ranking and history.
        await this.pass(etcd, this.active && this.lease!.isValid());
        this.lastProblem = null;
      } catch (error) {
        this.lastProblem = (error as Error).message;
        this.log.warn(`controller pass failed: ${(error as Error).message}`);
        if (String((error as Error).message).includes('lease')) await this.regrant();
      }
      if (this.pending || this.stopping) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.intervalMillis ?? 500);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private async regrant(): Promise<void> {
    this.active = false;
    await this.lease!.grant().catch(() => undefined);
  }

  /** Takes the `controller` key when it is free (create-if-absent under our lease). */
  private async campaign(etcd: Etcd3): Promise<void> {
    if (!this.lease!.isValid()) {
      if (this.active) this.log.warn('our lease deadline passed: no longer active');
      this.active = false;
      await this.regrant();
    }
    const record: ControllerRecord = {
      v: recordVersion,
      id: this.id,
      pid: process.pid,
      since: this.clock.date().toISOString(),
    };
    const res = await etcd
      .if(this.keys.controller, 'Create', '==', 0)
      .then(etcd.put(this.keys.controller).value(ControllerRecord.encode(record)).lease(this.lease!.id))
      .else(etcd.get(this.keys.controller))
      .commit();
    if (res.succeeded) {
      this.record = record;
      this.active = true;
      this.log.info(`active controller (${this.id})`);
      await this.resume(etcd);
      return;
    }
    const holder = res.responses[0]?.response_range?.kvs[0];
    this.active = holder !== undefined && String(holder.lease) === this.lease!.id;
  }

  /** On becoming active: pick up where a previous controller left off. */
  private async resume(etcd: Etcd3): Promise<void> {
    const historyKeys = await etcd.getAll().prefix(this.keys.historyPrefix).keys();
    for (const key of historyKeys) {
      const parsed = this.keys.parse(key);
      if (parsed?.kind === 'history' && parsed.term > this.lastHistoryTerm) this.lastHistoryTerm = parsed.term;
    }
  }

  private async pass(etcd: Etcd3, act: boolean): Promise<void> {
    for (let i = 0; i < 5; i++) {
      const all = await etcd.getAll().prefix(this.keys.prefix).exec();
      const now = this.clock.date().getTime();
      const read = readClusterRecords(
        this.keys,
        all.kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString(), modRevision: kv.mod_revision })),
      );
      this.reportProblems(read.problems);
      const { leader, leaderMod, term, termMod, target, targetText, switchoverText, switchoverMod, members } = read;
      const { config, sync } = read;
      let switchover = read.switchover;
      if (read.lastPrimary !== null) this.lastPrimaryRecords.set(read.lastPrimary.term, read.lastPrimary);
      if (read.newestHistoryTerm > this.lastHistoryTerm) this.lastHistoryTerm = read.newestHistoryTerm;
      if (read.newestHistory !== null && read.newestHistory.term > (this.lastHistory?.term ?? 0))
        this.lastHistory = read.newestHistory;
      if (switchover?.rejected) switchover = null;
      for (const m of members) if (m.role === 'replica') this.lastAsReplica.set(m.name, m);
      // Only the current term's record and the previous one (a new leader's history) matter.
      for (const t of this.lastPrimaryRecords.keys()) if (t < term - 2) this.lastPrimaryRecords.delete(t);
      if (leader !== null) {
        // Kept until the promotion's history record (its detectedAt) is written.
        if (leader.term <= this.lastHistoryTerm) this.leaderLostAt = null;
        // The last primary is the *previous* one until this leadership is in the
        // history (whose oldPrimary it is); from then on it is this one.
        const primary = members.find((m) => m.name === leader!.member);
        if (leader.term <= this.lastHistoryTerm && primary !== undefined && primary.role === 'primary') {
          this.lastPrimary = primary;
        }
      } else if (this.leaderLostAt === null) {
        this.leaderLostAt = now;
        if (act)
          this.log.info(`no leader (last primary ${this.lastPrimary?.name ?? 'unknown'}): failover begins`, {
            term,
            lastPrimary: this.lastPrimary?.name ?? null,
          });
      }
      this.metrics.observe(leader?.writable === true, act);
      if (targetText !== this.targetSeen?.text)
        this.targetSeen = targetText === null ? null : { text: targetText, at: now };
      if (switchoverText !== this.switchoverSeen?.text)
        this.switchoverSeen = switchoverText === null ? null : { text: switchoverText, at: now };
      if (!act) return;

      const snapshot: ControllerSnapshot = {
        now,
        term,
        leader,
        target,
        targetSeenAt: this.targetSeen?.at ?? null,
        members,
        leaderLostAt: this.leaderLostAt,
        lastPrimary: this.lastPrimary,
        lastPrimaryRecords: [...this.lastPrimaryRecords.values()],
        lastAsReplica: [...this.lastAsReplica.values()],
        switchover,
        switchoverSeenAt: this.switchoverSeen?.at ?? null,
        lastHistoryTerm: this.lastHistoryTerm,
        lastHistory: this.lastHistory,
        sync,
        policy: this.policyWith(config),
      };
      const decision = decideController(snapshot);
      const facts = () => controllerDecisionFacts(snapshot, decision);
      if (decision.type === 'none' && this.lastDecision !== 'none') this.log.debug('decision: none', facts());
      this.lastDecision = decision.type;
      if (!(await this.apply(etcd, decision, { leaderMod, termMod, switchover, switchoverMod }, facts))) return;
    }
  }

  /** Logs each skipped record once (per key and mod revision), not at every pass. */
  private reportProblems(problems: readonly RecordProblem[]): void {
    const current = new Set<string>();
    for (const problem of problems) {
      current.add(problem.key);
      if (this.problemsLogged.get(problem.key) === problem.modRevision) continue;
      this.problemsLogged.set(problem.key, problem.modRevision);
      this.log.warn(`ignoring a malformed record: ${problem.message}`, { key: problem.key });
    }
    for (const key of [...this.problemsLogged.keys()]) if (!current.has(key)) this.problemsLogged.delete(key);
  }

  /**
   * The policy of this pass: the cluster's stored lag bound (the `config` record, read
   * with every pass) when there is one, else the flag's. Logs where it comes from
   * whenever that changes.
   */
  private policyWith(config: ConfigRecord | null): ControllerPolicy {
    const policy =
      config === null
        ? this.options.policy
        : { ...this.options.policy, maximumLagOnFailoverBytes: config.maximumLagOnFailoverBytes };
    const source =
      config === null
        ? `${policy.maximumLagOnFailoverBytes} B (flag; no cluster settings stored)`
        : `${policy.maximumLagOnFailoverBytes} B (cluster settings, version ${config.version})`;
    if (source !== this.lagBoundSource) this.log.info(`failover lag bound: ${source}`);
    this.lagBoundSource = source;
    return policy;
  }

  /**
   * Applies one decision; returns whether to decide again at once.
   *
   * Every write is one transaction guarded by "the `controller` key is held under my
   * lease": a controller that lost the key (its lease expired while it was frozen or
   * cut off, and another took over) cannot write a target, history or a rejection,
   * whatever it still believes. The target is written under that lease, so a
   * controller that dies takes its target with it and no stale target outlives it.
   */
  private async apply(
    etcd: Etcd3,
    decision: ControllerDecision,
    seen: { leaderMod: string; termMod: string; switchover: SwitchoverRecord | null; switchoverMod: string },
    facts: () => ControllerDecisionFacts,
  ): Promise<boolean> {
    const leaseId = this.lease!.id;
    switch (decision.type) {
      case 'none':
        this.lastWait = '';
        await this.publishWaiting(etcd, null);
        return false;
      case 'wait':
      case 'no-candidate':
        if (decision.reason !== this.lastWait)
          this.log.info(`${decision.type === 'wait' ? 'waiting' : 'NO CANDIDATE'}: ${decision.reason}`, facts());
        this.lastWait = decision.reason;
        await this.publishWaiting(etcd, decision.reason);
        return false;
      case 'set-target': {
        // Guarded: the leader and term we decided on are still what etcd holds, and we
        // still hold the controller key.
        const leaderGuard =
          seen.leaderMod === '0'
            ? etcd.if(this.keys.leader, 'Create', '==', 0)
            : etcd.if(this.keys.leader, 'Mod', '==', seen.leaderMod);
        const guard = (
          seen.termMod === '0'
            ? leaderGuard.and(this.keys.term, 'Create', '==', 0)
            : leaderGuard.and(this.keys.term, 'Mod', '==', seen.termMod)
        ).and(this.keys.controller, 'Lease', '==', leaseId);
        const ops = [etcd.put(this.keys.target).value(TargetRecord.encode(decision.target)).lease(leaseId)];
        if (decision.consumeSwitchover) ops.push(etcd.delete().key(this.keys.switchover) as never);
        const res = await guard.then(...ops).commit();
        if (res.succeeded) {
          this.log.info(
            `target for term ${decision.target.term}: ${decision.target.member} (${decision.target.reason})`,
            facts(),
          );
          this.lastWait = '';
          await this.publishWaiting(etcd, null);
        } else await this.checkHeld(etcd, 'a target');
        return res.succeeded;
      }
      case 'reject-switchover': {
        if (seen.switchover === null) return false;
        // Guarded on the request we decided on (a new request is decided afresh).
        const res = await etcd
          .if(this.keys.switchover, 'Mod', '==', seen.switchoverMod)
          .and(this.keys.controller, 'Lease', '==', leaseId)
          .then(
            etcd
              .put(this.keys.switchover)
              .value(SwitchoverRecord.encode({ ...seen.switchover, rejected: decision.reason.slice(0, 1024) })),
          )
          .commit();
        if (res.succeeded) this.log.warn(`switchover rejected: ${decision.reason}`, facts());
        else await this.checkHeld(etcd, 'a switchover rejection');
        return res.succeeded;
      }
      case 'record-history': {
        const h = decision.history;
        const res = await etcd
          .if(this.keys.history(h.term), 'Create', '==', 0)
          .and(this.keys.controller, 'Lease', '==', leaseId)
          .then(etcd.put(this.keys.history(h.term)).value(HistoryRecord.encode(h)))
          .commit();
        if (!res.succeeded && !(await this.checkHeld(etcd, 'history'))) return false;
        this.lastHistoryTerm = h.term;
        if (res.succeeded) this.metrics.promoted(h);
        if (res.succeeded)
          this.log.info(
            `history: term ${h.term} ${h.oldPrimary ?? '-'} -> ${h.newPrimary} (${h.reason}, timeline ${h.timeline}${h.lostBytes ? `, ${h.lostBytes} bytes possibly lost` : ''})`,
            { decision: 'record-history', history: h },
          );
        return true;
      }
      default: {
        const unreachable: never = decision;
        throw new Error(`unhandled decision ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /**
   * After a guarded write failed: whether we still hold the controller key. When we
   * do not, we are no longer active (the next pass campaigns again).
   */
  private async checkHeld(etcd: Etcd3, what: string): Promise<boolean> {
    const res = await etcd.get(this.keys.controller).exec();
    const kv = res.kvs[0];
    const held = kv !== undefined && String(kv.lease) === this.lease!.id;
    if (!held) {
      this.log.warn(`not writing ${what}: the controller key is no longer held under our lease; not active`);
      this.active = false;
      this.record = null;
    }
    return held;
  }

  /**
   * Publishes what the election waits for in our `controller` record (for `pgha
   * status`), only when it changes; guarded like every controller write.
   */
  private async publishWaiting(etcd: Etcd3, reason: string | null): Promise<void> {
    const current = this.record;
    if (current === null || (current.waiting?.reason ?? null) === reason) return;
    const next: ControllerRecord = {
      ...current,
      waiting: reason === null ? null : { reason: reason.slice(0, 1024), since: this.clock.date().toISOString() },
    };
    const leaseId = this.lease!.id;
    const res = await etcd
      .if(this.keys.controller, 'Lease', '==', leaseId)
      .then(etcd.put(this.keys.controller).value(ControllerRecord.encode(next)).lease(leaseId))
      .commit();
    if (res.succeeded) this.record = next;
    else await this.checkHeld(etcd, 'the wait reason');
  }

  /** Stops campaigning and acting; releases the controller key so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop?.catch(() => undefined);
    await this.watcher?.cancel().catch(() => undefined);
    await this.lease?.revoke().catch(() => undefined);
    this.etcd?.close();
    await delay(0);
  }
}
