/**
 * Model-based safety test of the pure decisions (contract lines 1–3): three agents
 * deciding with {@link decideAgentAction} and one controller deciding with
 * {@link decideController}, against a small simulated etcd with leases, under random
 * partitions, kills, restarts, freezes, postgres crashes, switchover requests and
 * the passing of time.
 *
 * What is modelled, and how it maps to the shells (agent/agent.ts,
 * agent/lease-keeper.ts, agent/watchdog.ts, controller/controller.ts):
 * - etcd is a map key -> {value, lease, create/mod revision} plus leases with an
 *   expiry time. A keepalive reaches etcd the instant it is sent (the worst case for
 *   safety: the lease expires as early as it can relative to our deadline).
 * - Each agent's deadline is the send time of its last acknowledged keepalive + TTL
 *   − margin (LeaseKeeper). An agent renews every 250 ms unless dead, frozen or cut
 *   off from etcd; a keepalive for a lease etcd no longer has makes it forget the
 *   leader record, fence, and take a new lease (Agent.regrantLease).
 * - The fence timer (every 50 ms, the tick of the simulation) fences a writable
 *   postgres without the leader record or past the deadline, in a live and unfrozen
 *   agent. The watchdog, armed with the deadline after each renewal while the agent
 *   leads, kills postgres at that deadline when the agent cannot (frozen or dead;
 *   a dead agent's watchdog really fires at once — the model assumes only the
 *   deadline).
 * - An agent's view of leader/term/target is what it last read, each key possibly
 *   read at another time (the shell reads them with three separate gets); a
 *   decision may be taken on a view of any age (a freeze between read and decision).
 * - `promote` is three steps as in Agent.promote: the guarded install transaction
 *   (leader absent AND term unchanged AND target value equal); pg_promote (postgres
 *   writable, though the shell's pgState stays 'replica' while it polls, so its
 *   fence timer ignores it); then pgState 'primary', the watchdog armed and the
 *   record marked writable. Between steps the agent may freeze, die or be cut off.
 *   agent.ts as it is arms the watchdog for a new leader only at the next renewal,
 *   which leaves a window; the properties run with the watchdog armed on install
 *   (see the scenario tests at the end for the counterexamples).
 * - Existing data restarts through {@link decideStartup}; a restarted agent removes
 *   the leader record of its previous run, once that run's postgres is gone.
 * - The controller reads everything (possibly long before it decides) and writes a
 *   target guarded by the leader and term revisions it read, as Controller.apply.
 *
 * Invariants after every step and every 50 ms tick: (i) no two members are writable
 * in the same term; (ii) a writable member holds the leader record under its own
 * lease or its own deadline is still ahead; (iii) at most one member is writable at
 * any instant (the model has no clock drift, so the fencing margin leaves no
 * overlap at all).
 */
import {
  formatLsn,
  type LeaderRecord,
  type MemberRecord,
  recordVersion,
  type SwitchoverRecord,
  type TargetRecord,
} from '@pgha/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type AgentAction, type AgentSnapshot, decideAgentAction } from './agent-role.js';
import { type ControllerDecision, type ControllerPolicy, decideController } from './controller.js';
import { decideStartup } from './startup.js';

// The default timing (core defaultConfig): TTL 2 s, keepalive 250 ms, margin 500 ms.
const ttlMillis = 2000;
const keepaliveMillis = 250;
const marginMillis = 500;
/** The simulation's tick: the agent's fence timer period. */
const tickMillis = 50;
const epoch = Date.parse('2024-05-01T12:00:00.000Z');
const iso = (t: number) => new Date(epoch + t).toISOString();
const names = ['demo-0', 'demo-1', 'demo-2'] as const;
const policy: ControllerPolicy = {
  maximumLagOnFailoverBytes: 16 * 1024 * 1024,
  freshReportWaitMillis: 1000,
  targetInstallTimeoutMillis: 3000,
  lastPrimaryWaitMillis: 30_000,
  maximumReportAgeMillis: 3000,
};

// ---- etcd -------------------------------------------------------------------

interface Kv {
  readonly value: string;
  readonly lease: number | null;
  readonly create: number;
  readonly mod: number;
}

class Etcd {
  private revision = 1;
  private nextLease = 100;
  readonly kv = new Map<string, Kv>();
  /** Lease ID -> expiry (simulated milliseconds). */
  readonly leases = new Map<number, number>();

  get(key: string): Kv | undefined {
    return this.kv.get(key);
  }

  /** Fails (false) when bound to a lease etcd does not have, as etcd does. */
  put(key: string, value: string, lease: number | null = null): boolean {
    if (lease !== null && !this.leases.has(lease)) return false;
    this.revision++;
    const old = this.kv.get(key);
    this.kv.set(key, { value, lease, create: old?.create ?? this.revision, mod: this.revision });
    return true;
  }

  delete(key: string): void {
    if (this.kv.delete(key)) this.revision++;
  }

  grant(now: number): number {
    const id = this.nextLease++;
    this.leases.set(id, now + ttlMillis);
    return id;
  }

  /** Extends the lease on receipt; false when etcd no longer has it. */
  keepalive(id: number, now: number): boolean {
    if (!this.leases.has(id)) return false;
    this.leases.set(id, now + ttlMillis);
    return true;
  }

  expire(now: number): void {
    for (const [id, expiry] of this.leases) {
      if (expiry > now) continue;
      this.leases.delete(id);
      for (const [key, kv] of this.kv) if (kv.lease === id) this.delete(key);
    }
  }
}

// ---- members ------------------------------------------------------------------

interface Postgres {
  state: 'down' | 'replica' | 'primary';
  /** The term this postgres was made writable for (while primary). */
  term: number | null;
  lsn: number;
  timeline: number;
}

type ViewKey = 'leader' | 'term' | 'target';

interface Member {
  readonly name: string;
  readonly port: number;
  alive: boolean;
  frozen: boolean;
  partitioned: boolean;
  leaseId: number | null;
  lastAckedSend: number;
  holdsLeader: boolean;
  view: { leader: LeaderRecord | null; leaderLease: number | null; term: number; target: TargetRecord | null };
  following: { member: string; host: string; port: number } | null;
  crashes: number;
  runningSince: number;
  standbySignal: boolean;
  /**
   * A promotion under way (Agent.promote): `installed` the leader record, pg_promote
   * not sent yet; `promoting`: postgres accepts writes but the shell still polls
   * pg_is_in_recovery, its pgState still 'replica', the watchdog not armed for it.
   */
  promoting: { readonly target: TargetRecord; stage: 'installed' | 'promoting' } | null;
  /** The watchdog's armed deadline, or null. */
  watchdog: number | null;
  readonly pg: Postgres;
}

interface ControllerMemory {
  leaderLostAt: number | null;
  lastPrimary: MemberRecord | null;
  targetSeen: { text: string; at: number } | null;
  lastHistoryTerm: number;
  view: {
    now: number;
    leader: LeaderRecord | null;
    leaderMod: number;
    term: number;
    termMod: number;
    target: TargetRecord | null;
    switchover: SwitchoverRecord | null;
    members: MemberRecord[];
  } | null;
}

/**
 * Variations of the system under test. The defaults are the real decisions and the
 * shell as agent/agent.ts is today, which leaves a window between the install
 * transaction and the watchdog's arming (see the scenario tests at the end).
 */
interface ModelOptions {
  readonly decideAgent?: (s: AgentSnapshot) => AgentAction;
  /** The shell checks, right before pg_promote, that it still holds the leader record and its deadline is ahead. */
  readonly recheckBeforePromote?: boolean;
  /** The shell arms the watchdog as soon as it installs the leader record, not at the next renewal. */
  readonly armWatchdogOnInstall?: boolean;
  /** The install transaction's "leader absent" condition (true, as the shell does; false only to show it matters). */
  readonly guardLeaderAbsent?: boolean;
}

/** What the whole run did, to show the property is not vacuous. */
interface Coverage {
  promotions: number;
  switchovers: number;
  fences: number;
  watchdogKills: number;
  maxTerm: number;
}

class Violation extends Error {}

class Model {
  t = 0;
  readonly etcd = new Etcd();
  readonly members: Member[];
  readonly controller: ControllerMemory = {
    leaderLostAt: null,
    lastPrimary: null,
    targetSeen: null,
    lastHistoryTerm: 1,
    view: null,
  };
  private timeline = 1;
  readonly log: string[] = [];
  readonly coverage: Coverage = { promotions: 0, switchovers: 0, fences: 0, watchdogKills: 0, maxTerm: 1 };
  private readonly decideAgent: (s: AgentSnapshot) => AgentAction;
  private readonly recheckBeforePromote: boolean;
  private readonly armWatchdogOnInstall: boolean;
  private readonly guardLeaderAbsent: boolean;

  /** A bootstrapped cluster: demo-0 is the writable primary of term 1, the others follow it. */
  constructor(options: ModelOptions = {}) {
    this.decideAgent = options.decideAgent ?? decideAgentAction;
    this.recheckBeforePromote = options.recheckBeforePromote ?? false;
    this.armWatchdogOnInstall = options.armWatchdogOnInstall ?? false;
    this.guardLeaderAbsent = options.guardLeaderAbsent ?? true;
    this.members = names.map((name, i) => {
      const leaseId = this.etcd.grant(0);
      return {
        name,
        port: 5432 + i,
        alive: true,
        frozen: false,
        partitioned: false,
        leaseId,
        lastAckedSend: 0,
        holdsLeader: i === 0,
        view: { leader: null, leaderLease: null, term: 1, target: null },
        following: i === 0 ? null : { member: 'demo-0', host: '127.0.0.1', port: 5432 },
        crashes: 0,
        runningSince: 0,
        standbySignal: i !== 0,
        promoting: null,
        watchdog: i === 0 ? ttlMillis - marginMillis : null,
        pg: { state: i === 0 ? 'primary' : 'replica', term: i === 0 ? 1 : null, lsn: 0x3000000, timeline: 1 },
      };
    });
    const first = this.members[0]!;
    this.etcd.put('term', JSON.stringify({ v: recordVersion, term: 1 }));
    this.etcd.put('leader', JSON.stringify(this.leaderRecord(first, 1, true)), first.leaseId);
    this.etcd.put('history/1', '{}');
    for (const m of this.members) {
      this.read(m);
      this.publish(m);
    }
  }

  private note(line: string): void {
    this.log.push(`${String(this.t).padStart(6)} ms  ${line}`);
  }

  private deadline(m: Member): number {
    return m.lastAckedSend + ttlMillis - marginMillis;
  }

  private leaderRecord(m: Member, term: number, writable: boolean): LeaderRecord {
    return {
      v: recordVersion,
      term,
      member: m.name,
      host: '127.0.0.1',
      port: m.port,
      timeline: m.pg.timeline,
      since: iso(this.t),
      writable,
    };
  }

  private reaches(m: Member): boolean {
    return m.alive && !m.frozen && !m.partitioned;
  }

  private runs(m: Member): boolean {
    return m.alive && !m.frozen;
  }

  // ---- the agent's pieces ----------------------------------------------------

  private killPostgres(m: Member, why: string): void {
    if (m.pg.state === 'down') return;
    this.note(
      `${m.name}: postgres killed (${why}) as ${m.pg.state}${m.pg.term === null ? '' : ` of term ${m.pg.term}`}`,
    );
    m.pg.state = 'down';
    m.pg.term = null;
    // The agent's exit handler: counts the crash and disarms (on resume when frozen).
    if (m.alive) {
      m.crashes++;
      m.watchdog = null;
    }
  }

  private fence(m: Member, reason: string): void {
    if (m.pg.state === 'down') return;
    this.note(`${m.name}: FENCE (${reason})`);
    if (m.pg.state === 'primary') this.coverage.fences++;
    m.pg.state = 'down';
    m.pg.term = null;
    m.watchdog = null;
    m.standbySignal = true;
    m.crashes = 0;
  }

  /** The agent's pgState: still 'replica' while it polls for the end of a promotion. */
  private pgStateOf(m: Member): Postgres['state'] {
    return m.promoting?.stage === 'promoting' ? 'replica' : m.pg.state;
  }

  /** Agent.checkFence, on the 50 ms timer: it looks at pgState, not at postgres itself. */
  private checkFence(m: Member): void {
    if (this.pgStateOf(m) !== 'primary') return;
    if (!m.holdsLeader) this.fence(m, 'writable without holding the leader record');
    else if (this.t >= this.deadline(m)) this.fence(m, 'lease deadline passed');
  }

  /** Agent.armWatchdog. */
  private armWatchdog(m: Member): void {
    if (m.pg.state !== 'down' && (this.pgStateOf(m) === 'primary' || m.holdsLeader)) m.watchdog = this.deadline(m);
  }

  /** One keepalive (LeaseKeeper), or a new lease when etcd forgot ours (Agent.regrantLease). */
  private renew(m: Member): void {
    if (m.leaseId !== null && this.etcd.keepalive(m.leaseId, this.t)) {
      m.lastAckedSend = this.t;
      this.armWatchdog(m);
      return;
    }
    this.note(`${m.name}: lease ${m.leaseId} expired in etcd; granting a new one`);
    m.holdsLeader = false;
    this.checkFence(m);
    m.leaseId = this.etcd.grant(this.t);
    m.lastAckedSend = this.t;
  }

  /**
   * Agent.readClusterState: three separate gets (Promise.all), so a view may mix
   * keys read at different times; `only` reads one of them (the others arrive later).
   */
  private read(m: Member, only: ViewKey | null = null): boolean {
    if (!this.reaches(m)) return false;
    if (only === null || only === 'leader') {
      const leader = this.etcd.get('leader');
      m.view.leader = leader === undefined ? null : (JSON.parse(leader.value) as LeaderRecord);
      m.view.leaderLease = leader?.lease ?? null;
      // From this get's own answer only, as the shell does (never from an older leader read).
      m.holdsLeader = m.view.leader !== null && m.view.leader.member === m.name && m.view.leaderLease === m.leaseId;
    }
    if (only === null || only === 'term') {
      const term = this.etcd.get('term');
      m.view.term = term === undefined ? 0 : (JSON.parse(term.value) as { term: number }).term;
    }
    if (only === null || only === 'target') {
      const target = this.etcd.get('target');
      m.view.target = target === undefined ? null : (JSON.parse(target.value) as TargetRecord);
    }
    return true;
  }

  /** Agent.publish: the member record under the agent's lease. */
  private publish(m: Member): void {
    if (!this.reaches(m)) return;
    const up = m.pg.state !== 'down';
    const lsn = up ? formatLsn(BigInt(m.pg.lsn)) : null;
    const record: MemberRecord = {
      v: recordVersion,
      name: m.name,
      role: m.pg.state === 'primary' ? 'primary' : m.pg.state === 'replica' ? 'replica' : 'unknown',
      state: 'running',
      host: '127.0.0.1',
      port: m.port,
      term: Math.max(m.view.term, m.view.leader?.term ?? 0),
      timeline: up ? m.pg.timeline : null,
      receivedLsn: lsn,
      replayedLsn: lsn,
      lagBytes: up ? 0 : null,
      lagSeconds: up ? 0 : null,
      streaming: m.pg.state === 'replica' && m.following !== null,
      postgresVersion: '15.8',
      systemId: '7365048203312345678',
      healthy: up,
      problem: up ? null : 'postgres is not running',
      tags: {},
      updatedAt: iso(this.t),
    };
    this.etcd.put(`members/${m.name}`, JSON.stringify(record), m.leaseId);
  }

  /** Agent.releaseLeader; false when etcd is unreachable (the shell's call throws). */
  private releaseLeader(m: Member, reason: string): boolean {
    if (!this.reaches(m)) return false;
    const kv = this.etcd.get('leader');
    if (kv !== undefined && kv.lease === m.leaseId) {
      this.etcd.delete('leader');
      this.note(`${m.name}: released the leader record (${reason})`);
    }
    m.holdsLeader = false;
    return true;
  }

  private startAsStandby(m: Member): void {
    const l = m.view.leader;
    m.following = l?.writable && l.member !== m.name ? { member: l.member, host: l.host, port: l.port } : null;
    m.pg.state = 'replica';
    m.pg.term = null;
    m.standbySignal = true;
    m.runningSince = this.t;
  }

  /** Agent.installLeader: one transaction guarded by leader absent, term unchanged, target equal. */
  private installLeader(m: Member, target: TargetRecord): boolean {
    if (!this.reaches(m) || m.leaseId === null) return false;
    const termKv = this.etcd.get('term');
    const current = termKv === undefined ? 0 : (JSON.parse(termKv.value) as { term: number }).term;
    if (current !== target.term - 1) return false;
    const targetKv = this.etcd.get('target');
    // The read and the transaction are one atomic step here: "term unchanged since read" holds trivially.
    if (this.guardLeaderAbsent && this.etcd.get('leader') !== undefined) return false;
    if (targetKv?.value !== JSON.stringify(target)) return false;
    const record = this.leaderRecord(m, target.term, false);
    if (!this.etcd.put('leader', JSON.stringify(record), m.leaseId)) return false;
    this.etcd.put('term', JSON.stringify({ v: recordVersion, term: target.term }));
    m.view = { ...m.view, leader: record, leaderLease: m.leaseId, term: target.term };
    m.holdsLeader = true;
    if (this.armWatchdogOnInstall) this.armWatchdog(m);
    this.note(`${m.name}: installed the leader record for term ${target.term}`);
    return true;
  }

  /** Agent.promote after the install: pg_promote (postgres is writable from here on). */
  private sendPromote(m: Member, target: TargetRecord): void {
    if (this.recheckBeforePromote && !(m.holdsLeader && this.t < this.deadline(m))) {
      m.promoting = null;
      this.note(`${m.name}: not promoting for term ${target.term}: leader record or deadline lost meanwhile`);
      this.releaseLeader(m, 'deadline passed before pg_promote');
      return;
    }
    if (m.pg.state !== 'replica') {
      m.promoting = null;
      this.note(`${m.name}: promotion failed: postgres is ${m.pg.state}`);
      this.releaseLeader(m, 'promotion failed');
      return;
    }
    m.promoting = { target, stage: 'promoting' };
    m.pg.state = 'primary';
    m.pg.term = target.term;
    m.pg.timeline = ++this.timeline;
    this.coverage.promotions++;
    if (target.reason === 'switchover') this.coverage.switchovers++;
    this.coverage.maxTerm = Math.max(this.coverage.maxTerm, target.term);
    this.note(`${m.name}: PROMOTED: writable for term ${target.term} (${target.reason})`);
  }

  /** Agent.promote once postgres left recovery: pgState 'primary', arm the watchdog, mark the record writable. */
  private finishPromotion(m: Member): void {
    m.promoting = null;
    if (m.pg.state !== 'primary') {
      this.releaseLeader(m, 'promotion failed');
      return;
    }
    m.following = null;
    m.standbySignal = false;
    this.armWatchdog(m);
    this.updateLeaderWritable(m);
  }

  /** Agent.updateLeader({writable: true}), guarded by our lease. */
  private updateLeaderWritable(m: Member): void {
    if (!this.reaches(m) || m.view.leader === null) return;
    const kv = this.etcd.get('leader');
    if (kv === undefined || kv.lease !== m.leaseId) {
      m.holdsLeader = false;
      return;
    }
    const record = { ...m.view.leader, writable: true, timeline: m.pg.timeline };
    this.etcd.put('leader', JSON.stringify(record), m.leaseId);
    m.view = { ...m.view, leader: record };
  }

  private apply(m: Member, action: AgentAction): void {
    if (action.type !== 'none') {
      this.note(`${m.name}: action ${action.type}${'as' in action ? ` as ${action.as}` : ''}`);
    }
    switch (action.type) {
      case 'none':
        return;
      case 'fence':
        this.fence(m, action.reason);
        return;
      case 'release-leader':
        if (this.releaseLeader(m, action.reason)) m.standbySignal = true;
        return;
      case 'step-down':
        // Clean shutdown first, then release; the next step starts it as a standby.
        m.pg.state = 'down';
        m.pg.term = null;
        m.watchdog = null;
        m.standbySignal = true;
        this.releaseLeader(m, `switchover to ${action.target.member}`);
        return;
      case 'promote':
        if (m.pg.state === 'replica' && this.installLeader(m, action.target)) {
          m.promoting = { target: action.target, stage: 'installed' };
        }
        return;
      case 'restart':
        if (action.as === 'primary') {
          if (!m.holdsLeader) throw new Error('Agent.startPrimary refuses to start writable without the leader record');
          m.pg.state = 'primary';
          m.pg.term = m.view.leader?.term ?? m.view.term;
          m.following = null;
          m.standbySignal = false;
          m.runningSince = this.t;
          this.armWatchdog(m);
          this.updateLeaderWritable(m);
        } else this.startAsStandby(m);
        return;
      case 'follow':
        m.following = { member: action.leader.member, host: action.leader.host, port: action.leader.port };
        return;
      case 'finish-promotion':
        // Agent.finishPromotion: the leader record of this term is ours but not writable.
        if (m.pg.state === 'primary') this.finishPromotion(m);
        else if (m.view.leader !== null)
          m.promoting = {
            target: {
              v: 1,
              term: m.view.leader.term,
              member: m.name,
              reason: 'failover',
              decidedAt: new Date(0).toISOString(),
            },
            stage: 'installed',
          };
        return;
      default: {
        const unreachable: never = action;
        throw new Error(`unhandled action ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /** Decides from the agent's current view (however old) and applies; or takes a promotion one step on. */
  agentAct(m: Member): void {
    if (!this.runs(m)) return;
    if (m.promoting !== null) {
      if (m.promoting.stage === 'installed') this.sendPromote(m, m.promoting.target);
      else this.finishPromotion(m);
      return;
    }
    if (m.crashes > 0 && m.pg.state !== 'down' && this.t - m.runningSince > 30_000) m.crashes = 0;
    const action = this.decideAgent({
      self: m.name,
      now: this.t,
      leaseDeadline: m.leaseId === null ? null : this.deadline(m),
      postgres: m.pg.state,
      observedWritable: m.pg.state === 'down' ? null : m.pg.state === 'primary',
      crashes: m.crashes,
      holdsLeader: m.holdsLeader,
      leader: m.view.leader,
      term: m.view.term,
      target: m.view.target,
      following: m.following,
      maxRestarts: 1,
    });
    this.apply(m, action);
  }

  agentRead(m: Member, only: ViewKey | null): void {
    if (this.read(m, only)) this.publish(m);
  }

  /** One pass of Agent.tick: read, decide only when the read succeeded, publish. */
  agentTick(m: Member): void {
    if (!this.runs(m)) return;
    if (m.promoting !== null) {
      this.agentAct(m);
      this.publish(m);
      return;
    }
    if (!this.read(m)) return;
    this.agentAct(m);
    this.publish(m);
  }

  // ---- faults -------------------------------------------------------------------

  partition(m: Member, cut: boolean): void {
    if (m.partitioned !== cut) this.note(`${m.name}: ${cut ? 'cut off from etcd' : 'reaches etcd again'}`);
    m.partitioned = cut;
  }

  freeze(m: Member, frozen: boolean): void {
    if (!m.alive || m.frozen === frozen) return;
    this.note(`${m.name}: agent ${frozen ? 'frozen (SIGSTOP)' : 'resumed (SIGCONT)'}`);
    m.frozen = frozen;
    // On resume the overdue fence timer runs before any keepalive can be answered.
    if (!frozen) this.checkFence(m);
  }

  kill(m: Member): void {
    if (!m.alive) return;
    this.note(`${m.name}: agent killed (postgres stays ${m.pg.state})`);
    m.alive = false;
    m.frozen = false;
    m.promoting = null;
  }

  /** The supervisor restarts the agent: Agent.start with existing data. */
  restart(m: Member): void {
    if (m.alive || m.partitioned) return; // unreachable etcd: start() fails, the supervisor retries
    // clearStaleLock waits until the old postmaster is gone; the supervisor stops an orphan standby.
    if (m.pg.state === 'primary') return;
    m.pg.state = 'down';
    m.pg.term = null;
    m.alive = true;
    m.frozen = false;
    m.leaseId = null;
    m.holdsLeader = false;
    m.crashes = 0;
    m.watchdog = null;
    m.following = null;
    this.read(m);
    if (m.view.leader?.member === m.name) {
      // Our previous run's record; its postgres is gone, so remove it and let the cluster elect at once.
      if (this.etcd.get('leader')?.lease === m.view.leaderLease) this.etcd.delete('leader');
      this.note(`${m.name}: removed the leader record of its previous run`);
      this.read(m);
    }
    const decision = decideStartup({
      self: m.name,
      dataDir: 'ours',
      foreignReason: null,
      standby: m.standbySignal,
      localSystemId: '7365048203312345678',
      clusterSystemId: '7365048203312345678',
      leader: m.view.leader,
      mayBootstrap: false,
    });
    if (decision.action !== 'start-replica') throw new Violation(`${m.name}: start-up decided ${decision.action}`);
    m.leaseId = this.etcd.grant(this.t);
    m.lastAckedSend = this.t;
    this.startAsStandby(m);
    this.note(`${m.name}: agent restarted, postgres started as a standby`);
    this.publish(m);
  }

  crash(m: Member): void {
    this.killPostgres(m, 'crash');
  }

  requestSwitchover(from: string | null, to: string | null): void {
    const record: SwitchoverRecord = { v: recordVersion, from, to, at: null, requestedAt: iso(this.t) };
    this.etcd.put('switchover', JSON.stringify(record));
    this.note(`switchover requested (from ${from ?? 'any'} to ${to ?? 'any'})`);
  }

  // ---- the controller -----------------------------------------------------------

  /** The read half of Controller.pass, with its memory updates. */
  controllerRead(): void {
    const now = epoch + this.t;
    const c = this.controller;
    const leaderKv = this.etcd.get('leader');
    const termKv = this.etcd.get('term');
    const targetKv = this.etcd.get('target');
    const switchoverKv = this.etcd.get('switchover');
    const members = [...this.etcd.kv]
      .filter(([key]) => key.startsWith('members/'))
      .map(([, kv]) => JSON.parse(kv.value) as MemberRecord);
    const leader = leaderKv === undefined ? null : (JSON.parse(leaderKv.value) as LeaderRecord);
    let switchover = switchoverKv === undefined ? null : (JSON.parse(switchoverKv.value) as SwitchoverRecord);
    if (switchover?.rejected) switchover = null;
    if (leader !== null) {
      if (leader.term <= c.lastHistoryTerm) c.leaderLostAt = null;
      const primary = members.find((m) => m.name === leader.member);
      if (primary !== undefined && primary.role === 'primary') c.lastPrimary = primary;
    } else if (c.leaderLostAt === null) c.leaderLostAt = now;
    const targetText = targetKv?.value ?? null;
    if (targetText !== (c.targetSeen?.text ?? null))
      c.targetSeen = targetText === null ? null : { text: targetText, at: now };
    c.view = {
      now,
      leader,
      leaderMod: leaderKv?.mod ?? 0,
      term: termKv === undefined ? 0 : (JSON.parse(termKv.value) as { term: number }).term,
      termMod: termKv?.mod ?? 0,
      target: targetText === null ? null : (JSON.parse(targetText) as TargetRecord),
      switchover,
      members,
    };
  }

  /** The decide-and-apply half of Controller.pass, on the last read (however old); whether to go on. */
  controllerAct(): boolean {
    const c = this.controller;
    const v = c.view;
    if (v === null) return false;
    const decision: ControllerDecision = decideController({
      now: v.now,
      term: v.term,
      leader: v.leader,
      target: v.target,
      targetSeenAt: c.targetSeen?.at ?? null,
      members: v.members,
      leaderLostAt: c.leaderLostAt,
      lastPrimary: c.lastPrimary,
      // The model has no last-primary key (agents do not write it here).
      lastPrimaryRecords: [],
      lastAsReplica: [],
      switchover: v.switchover,
      lastHistoryTerm: c.lastHistoryTerm,
      policy,
    });
    switch (decision.type) {
      case 'none':
      case 'wait':
      case 'no-candidate':
        return false;
      case 'set-target': {
        const leader = this.etcd.get('leader');
        const term = this.etcd.get('term');
        const leaderSame = v.leaderMod === 0 ? leader === undefined : leader?.mod === v.leaderMod;
        const termSame = v.termMod === 0 ? term === undefined : term?.mod === v.termMod;
        if (!leaderSame || !termSame) return false;
        this.etcd.put('target', JSON.stringify(decision.target));
        if (decision.consumeSwitchover) this.etcd.delete('switchover');
        this.note(
          `controller: target ${decision.target.member} for term ${decision.target.term} (${decision.target.reason})`,
        );
        return true;
      }
      case 'reject-switchover':
        if (v.switchover !== null) {
          this.etcd.put('switchover', JSON.stringify({ ...v.switchover, rejected: decision.reason }));
        }
        return true;
      case 'record-history':
        if (this.etcd.get(`history/${decision.history.term}`) === undefined) {
          this.etcd.put(`history/${decision.history.term}`, JSON.stringify(decision.history));
        }
        c.lastHistoryTerm = decision.history.term;
        return true;
      default: {
        const unreachable: never = decision;
        throw new Error(`unhandled decision ${JSON.stringify(unreachable)}`);
      }
    }
  }

  controllerPass(): void {
    for (let i = 0; i < 5; i++) {
      this.controllerRead();
      if (!this.controllerAct()) return;
    }
  }

  // ---- time ---------------------------------------------------------------------

  /** One 50 ms tick; `auto` runs every control loop on its own schedule too. */
  tick(auto: boolean): void {
    this.t += tickMillis;
    this.etcd.expire(this.t);
    for (const m of this.members) if (this.runs(m)) this.checkFence(m);
    for (const m of this.members) {
      if (m.watchdog !== null && this.t >= m.watchdog) {
        m.watchdog = null;
        if (m.pg.state !== 'down') {
          if (m.pg.state === 'primary') this.coverage.watchdogKills++;
          this.killPostgres(m, 'watchdog: deadline passed without renewal');
        }
      }
    }
    if (this.t % keepaliveMillis === 0) for (const m of this.members) if (this.reaches(m)) this.renew(m);
    for (const m of this.members) {
      if (m.pg.state === 'primary') m.pg.lsn += 0x40;
      const up = this.members.find((x) => x.name === m.following?.member);
      if (
        m.pg.state === 'replica' &&
        up !== undefined &&
        up.pg.state === 'primary' &&
        !m.partitioned &&
        !up.partitioned
      ) {
        m.pg.lsn = up.pg.lsn;
        m.pg.timeline = up.pg.timeline;
      }
    }
    if (auto) {
      // Each agent's loop every 250 ms, staggered; the controller every 500 ms.
      this.members.forEach((m, i) => {
        if ((this.t / tickMillis + i) % 5 === 0) this.agentTick(m);
      });
      if (this.t % 500 === 0) this.controllerPass();
    }
  }

  // ---- the invariants ---------------------------------------------------------

  check(): void {
    const writers = this.members.filter((m) => m.pg.state === 'primary');
    const fail = (why: string): never => {
      throw new Violation(`at ${this.t} ms: ${why}\n${this.log.slice(-40).join('\n')}`);
    };
    const terms = new Set<number | null>();
    for (const w of writers) {
      if (w.pg.term === null) fail(`${w.name} is writable without a term`);
      if (terms.has(w.pg.term)) fail(`two members are writable in term ${w.pg.term}`);
      terms.add(w.pg.term);
      const kv = this.etcd.get('leader');
      const holds =
        kv !== undefined && kv.lease === w.leaseId && (JSON.parse(kv.value) as LeaderRecord).member === w.name;
      if (!holds && this.t >= this.deadline(w)) {
        fail(
          `${w.name} is writable (term ${w.pg.term}) without the leader record, ${this.t - this.deadline(w)} ms past its deadline`,
        );
      }
    }
    if (writers.length > 1) {
      fail(`${writers.map((w) => `${w.name} (term ${w.pg.term})`).join(' and ')} are writable at the same time`);
    }
  }
}

// ---- events ---------------------------------------------------------------------

type Event =
  | { readonly type: 'advance'; readonly ticks: number; readonly auto: boolean }
  | { readonly type: 'agent-tick' | 'agent-act'; readonly m: number }
  | { readonly type: 'agent-read'; readonly m: number; readonly only: ViewKey | null }
  | { readonly type: 'controller-pass' | 'controller-read' | 'controller-act' }
  | { readonly type: 'partition' | 'heal' | 'kill' | 'restart' | 'freeze' | 'unfreeze' | 'crash'; readonly m: number }
  | { readonly type: 'switchover'; readonly from: number | null; readonly to: number | null };

function run(model: Model, event: Event): void {
  const m = 'm' in event ? model.members[event.m]! : null;
  switch (event.type) {
    case 'advance':
      for (let i = 0; i < event.ticks; i++) {
        model.tick(event.auto);
        model.check();
      }
      return;
    case 'agent-tick':
      model.agentTick(m!);
      break;
    case 'agent-read':
      model.agentRead(m!, event.only);
      break;
    case 'agent-act':
      model.agentAct(m!);
      break;
    case 'controller-pass':
      model.controllerPass();
      break;
    case 'controller-read':
      model.controllerRead();
      break;
    case 'controller-act':
      model.controllerAct();
      break;
    case 'partition':
      model.partition(m!, true);
      break;
    case 'heal':
      model.partition(m!, false);
      break;
    case 'kill':
      model.kill(m!);
      break;
    case 'restart':
      model.restart(m!);
      break;
    case 'freeze':
      model.freeze(m!, true);
      break;
    case 'unfreeze':
      model.freeze(m!, false);
      break;
    case 'crash':
      model.crash(m!);
      break;
    case 'switchover':
      model.requestSwitchover(
        event.from === null ? null : names[event.from]!,
        event.to === null ? null : names[event.to]!,
      );
      break;
    default: {
      const unreachable: never = event;
      throw new Error(`unhandled event ${JSON.stringify(unreachable)}`);
    }
  }
  model.check();
}

const member = fc.integer({ min: 0, max: names.length - 1 });
const onMember = <T extends string>(type: T) => fc.record({ type: fc.constant(type), m: member });
const eventArb: fc.Arbitrary<Event> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      type: fc.constant('advance' as const),
      // Short steps, and steps longer than the TTL.
      ticks: fc.oneof(fc.integer({ min: 1, max: 10 }), fc.integer({ min: 30, max: 80 })),
      auto: fc.boolean(),
    }),
  },
  { weight: 6, arbitrary: onMember('agent-tick' as const) },
  {
    weight: 3,
    arbitrary: fc.record({
      type: fc.constant('agent-read' as const),
      m: member,
      only: fc.constantFrom<ViewKey | null>(null, 'leader', 'term', 'target'),
    }),
  },
  { weight: 3, arbitrary: onMember('agent-act' as const) },
  { weight: 4, arbitrary: fc.record({ type: fc.constant('controller-pass' as const) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('controller-read' as const) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('controller-act' as const) }) },
  { weight: 2, arbitrary: onMember('partition' as const) },
  { weight: 2, arbitrary: onMember('heal' as const) },
  { weight: 1, arbitrary: onMember('kill' as const) },
  { weight: 2, arbitrary: onMember('restart' as const) },
  { weight: 2, arbitrary: onMember('freeze' as const) },
  { weight: 2, arbitrary: onMember('unfreeze' as const) },
  { weight: 1, arbitrary: onMember('crash' as const) },
  {
    weight: 2,
    arbitrary: fc.record({
      type: fc.constant('switchover' as const),
      from: fc.option(member, { nil: null }),
      to: fc.option(member, { nil: null }),
    }),
  },
);
const eventsArb = fc.array(eventArb, { minLength: 1, maxLength: 200, size: 'max' });

/** Runs events through a fresh model; throws a Violation with a trace on the first broken invariant. */
function simulate(events: readonly Event[], options: ModelOptions = {}): Model {
  const model = new Model(options);
  model.check();
  for (const e of events) run(model, e);
  return model;
}

function violationOf(events: readonly Event[], options: ModelOptions = {}): string | null {
  try {
    simulate(events, options);
    return null;
  } catch (error) {
    if (error instanceof Violation) return error.message;
    throw error;
  }
}

/** Runs the property over random event sequences and checks the runs were eventful. */
function assertSafe(options: ModelOptions, numRuns: number): void {
  const total: Coverage = { promotions: 0, switchovers: 0, fences: 0, watchdogKills: 0, maxTerm: 0 };
  let runsWithFailover = 0;
  fc.assert(
    fc.property(eventsArb, (events) => {
      const model = simulate(events, options);
      total.promotions += model.coverage.promotions;
      total.switchovers += model.coverage.switchovers;
      total.fences += model.coverage.fences;
      total.watchdogKills += model.coverage.watchdogKills;
      total.maxTerm = Math.max(total.maxTerm, model.coverage.maxTerm);
      if (model.coverage.promotions > 0) runsWithFailover++;
    }),
    { numRuns },
  );
  // Not vacuous: most runs promote someone; switchovers, fences and watchdog kills
  // happen many times, and some runs go through several terms.
  expect(runsWithFailover).toBeGreaterThan(numRuns / 2);
  expect(total.switchovers).toBeGreaterThan(numRuns / 20);
  expect(total.fences).toBeGreaterThan(numRuns / 10);
  expect(total.watchdogKills).toBeGreaterThan(numRuns / 10);
  expect(total.maxTerm).toBeGreaterThanOrEqual(5);
}

// A few seconds per property on an idle machine.
describe('safety of the pure decisions under faults (model-based)', { timeout: 60_000 }, () => {
  it('never makes two members writable at once, in the same term or past a deadline, when the shell arms the watchdog on install', () => {
    assertSafe({ armWatchdogOnInstall: true }, 1500);
  });

  it('stays safe when the shell also re-checks its claim right before pg_promote', () => {
    assertSafe({ armWatchdogOnInstall: true, recheckBeforePromote: true }, 700);
  });

  it('catches an agent that restarts postgres writable without checking its deadline (the model can fail)', () => {
    const careless = (s: AgentSnapshot): AgentAction => {
      const action = decideAgentAction(s);
      return action.type === 'restart' && s.holdsLeader ? { type: 'restart', as: 'primary' } : action;
    };
    const result = fc.check(
      fc.property(
        eventsArb,
        (events) => violationOf(events, { decideAgent: careless, armWatchdogOnInstall: true }) === null,
      ),
      { numRuns: 2000, seed: 42, endOnFailure: true },
    );
    expect(result.failed).toBe(true);
  });
});

describe('a promotion between the install transaction and arming the watchdog (agent.ts promote)', () => {
  // Shrunk by fast-check from the property run against the shell as it is: demo-1,
  // the switchover target, installs the leader record for term 2 and its agent
  // freezes before pg_promote, before any renewal armed the watchdog. The lease
  // expires; on resume the agent runs pg_promote 1.7 s past its deadline.
  const frozenBeforePromote: Event[] = [
    { type: 'switchover', from: null, to: null },
    { type: 'controller-pass' },
    { type: 'agent-read', m: 0, only: null },
    { type: 'agent-act', m: 0 },
    { type: 'agent-tick', m: 1 },
    { type: 'freeze', m: 1 },
    { type: 'advance', ticks: 60, auto: false },
    { type: 'unfreeze', m: 1 },
    { type: 'advance', ticks: 30, auto: true },
  ];
  // Shrunk by fast-check from the property run against a shell that only re-checks
  // before pg_promote: demo-2's agent freezes right after sending pg_promote.
  // postgres is writable, the fence timer ignores it (pgState is still 'replica')
  // and the watchdog was never armed for it; the lease expires, postgres stays writable.
  const frozenAfterPromote: Event[] = [
    { type: 'advance', ticks: 43, auto: false },
    { type: 'switchover', from: null, to: 2 },
    { type: 'controller-pass' },
    { type: 'advance', ticks: 5, auto: true },
    { type: 'agent-tick', m: 2 },
    { type: 'freeze', m: 2 },
    { type: 'advance', ticks: 37, auto: false },
  ];
  // With a second writer: demo-0 is cut off and fenced; demo-1 is elected, installs
  // term 2 and freezes; its lease expires, demo-2 is elected for term 3 and
  // promotes; then demo-1 resumes and promotes for term 2.
  const twoWriters: Event[] = [
    { type: 'partition', m: 0 },
    { type: 'advance', ticks: 45, auto: false },
    { type: 'agent-tick', m: 1 },
    { type: 'agent-tick', m: 2 },
    { type: 'controller-pass' },
    { type: 'agent-tick', m: 1 },
    { type: 'freeze', m: 1 },
    { type: 'advance', ticks: 45, auto: false },
    { type: 'agent-tick', m: 2 },
    { type: 'controller-pass' },
    { type: 'agent-tick', m: 2 },
    { type: 'agent-act', m: 2 },
    { type: 'unfreeze', m: 1 },
    { type: 'agent-act', m: 1 },
  ];

  it('lets a target frozen after the install promote past its deadline with the shell as it is', () => {
    expect(violationOf(frozenBeforePromote)).toMatch(
      /^at 3200 ms: demo-1 is writable \(term 2\) without the leader record, 1700 ms past its deadline/,
    );
    expect(violationOf(twoWriters)).toMatch(/demo-1 is writable \(term 2\) without the leader record/);
    expect(() => simulate(twoWriters.slice(0, -1))).not.toThrow();
  });

  it('re-checking the claim right before pg_promote closes the first window but not the second', () => {
    expect(violationOf(frozenBeforePromote, { recheckBeforePromote: true })).toBeNull();
    const model = simulate(twoWriters, { recheckBeforePromote: true });
    expect(model.members.map((m) => m.pg.state)).toEqual(['down', 'replica', 'primary']);
    expect(model.log.join('\n')).toContain('demo-1: not promoting for term 2');
    expect(violationOf(frozenAfterPromote, { recheckBeforePromote: true })).toMatch(
      /demo-2 is writable \(term 2\) without the leader record, 500 ms past its deadline/,
    );
  });

  it('arming the watchdog as soon as the leader record is installed closes both', () => {
    for (const events of [frozenBeforePromote, frozenAfterPromote, twoWriters]) {
      expect(violationOf(events, { armWatchdogOnInstall: true })).toBeNull();
    }
    const model = simulate(twoWriters, { armWatchdogOnInstall: true });
    expect(model.log.join('\n')).toContain(
      'demo-1: postgres killed (watchdog: deadline passed without renewal) as replica',
    );
    expect(model.members.map((m) => m.pg.state)).toEqual(['down', 'down', 'primary']);
    const frozen = simulate(frozenAfterPromote, { armWatchdogOnInstall: true });
    expect(frozen.log.join('\n')).toContain(
      'demo-2: postgres killed (watchdog: deadline passed without renewal) as primary of term 2',
    );
  });
});

describe('the install transaction', () => {
  // demo-0 is cut off and fenced. demo-2's leader get answers "none" just before
  // demo-1 is elected for term 2 and promotes; a switchover then targets demo-2
  // for term 3, and demo-2's term and target gets answer only now. Its view — no
  // leader, term 2, target demo-2 for term 3 — is one no single instant had.
  const skewedRead: Event[] = [
    { type: 'partition', m: 0 },
    { type: 'advance', ticks: 45, auto: false },
    { type: 'agent-tick', m: 1 },
    { type: 'agent-tick', m: 2 },
    { type: 'agent-read', m: 2, only: 'leader' },
    { type: 'controller-pass' },
    { type: 'agent-tick', m: 1 },
    { type: 'agent-act', m: 1 },
    { type: 'agent-act', m: 1 },
    { type: 'switchover', from: null, to: 2 },
    { type: 'controller-pass' },
    { type: 'agent-read', m: 2, only: 'term' },
    { type: 'agent-read', m: 2, only: 'target' },
    { type: 'agent-act', m: 2 },
    { type: 'agent-act', m: 2 },
  ];

  it('refuses a promotion decided on a view skewed across the three gets, by its "leader absent" condition', () => {
    const model = simulate(skewedRead, { armWatchdogOnInstall: true });
    expect(model.members.map((m) => m.pg.state)).toEqual(['down', 'primary', 'replica']);
    expect(model.log.join('\n')).toContain('demo-2: action promote');
    expect(model.log.join('\n')).not.toContain('demo-2: installed');
  });

  it('would make two writers without that condition: term and target alone do not prevent it', () => {
    expect(violationOf(skewedRead, { armWatchdogOnInstall: true, guardLeaderAbsent: false })).toMatch(
      /demo-1 \(term 2\) and demo-2 \(term 3\) are writable at the same time/,
    );
  });
});
