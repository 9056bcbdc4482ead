import { setTimeout as delay } from 'node:timers/promises';
import {
  type ClusterKeys,
  clusterKeys,
  type LeaderRecord,
  MemberRecord,
  type MemberState,
  type MemberTags,
  PghaError,
} from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { assertEtcdReachable, createEtcdClient, type EtcdConnection } from '../adapters/etcd.js';
import { postgresOsUser } from '../adapters/os-user.js';
import type { PostgresObservation } from '../adapters/postgres-observe.js';
import { makeOwnedDir, writeOwnedFile } from '../adapters/postgres-server.js';
import { findPostgresBinaries } from '../adapters/prerequisites.js';
import { type Clock, systemClock } from '../clock.js';
import { type AgentAction, type AgentSnapshot, decideAgentAction, decideWithoutEtcd } from '../decide/agent-role.js';
import { agentDecisionFacts } from '../decide/decision-facts.js';
import type { HealthObservation, HealthSnapshot } from '../decide/health.js';
import { buildMemberRecord } from '../decide/member-report.js';
import { defaultMemberSlotsTtlMillis } from '../decide/member-slots.js';
import type { Logger } from '../log.js';
import { AgentMetrics } from './agent-metrics.js';
import { type ApiTlsFiles, readApiTls } from './api-tls.js';
import type { AppRole } from './app-role.js';
import { ClusterSettings } from './cluster-settings.js';
import { Failsafe, handleFailsafe } from './failsafe.js';
import { apiUrl, type HealthServer, startHealthServer } from './health-server.js';
import { Leadership, withTimeout } from './leadership.js';
import type { LeaseTiming } from './lease-keeper.js';
import { replicationUser, superUser } from './postgres-config.js';
import { PostgresMember, type PostgresTlsFiles } from './postgres-member.js';
import { RoleChanges } from './role-changes.js';
import { StartUp } from './start-up.js';
import { SynchronousReplication } from './synchronous-replication.js';

/** Everything an agent needs to run one member. */
export interface AgentOptions {
  readonly cluster: string;
  /** This member's name, `<cluster>-<ordinal>`. */
  readonly name: string;
  /** Holds `data/` (PGDATA), `pgpass`, `postgres.log` and `watchdog.log`. */
  readonly memberDir: string;
  /** The address other members and clients reach this postgres at. */
  readonly host: string;
  /** postgres listen_addresses. */
  readonly listenAddresses: string;
  readonly port: number;
  readonly etcd: EtcdConnection;
  readonly keyRoot?: string;
  /** Whether this member may run initdb when the cluster was never initialized. */
  readonly mayBootstrap: boolean;
  readonly superuserPassword: string;
  readonly replicationPassword: string;
  /**
   * The application role (`--app-user`, password from PGHA_APP_PASSWORD): created with
   * a database of its name when the primary starts writable and it is absent. Default none.
   */
  readonly appRole?: AppRole | null;
  /** CIDRs allowed besides loopback in pg_hba.conf. */
  readonly allowedNetworks: readonly string[];
  readonly lease: LeaseTiming;
  readonly reportIntervalMillis: number;
  /**
   * The primary renews its lease only while its postgres answered a fresh
   * connection as writable within this bound. Default 10 000 ms.
   */
  readonly healthTimeoutMillis?: number;
  readonly sharedBuffers: string;
  readonly maxConnections: number;
  /** Extra postgresql.conf settings (`--postgres-parameter`); names pgha owns are refused. Default none. */
  readonly postgresParameters?: Readonly<Record<string, string>>;
  readonly tags: MemberTags;
  /** In-place restarts of a crashed primary before it releases the leader record. Default 1. */
  readonly maxRestarts?: number;
  /**
   * How long an elected member waits to have received the previous primary's clean
   * shutdown position before it declines the election. Default 3000 ms.
   */
  readonly catchUpTimeoutMillis?: number;
  /**
   * The health API (`/primary`, `/replica`, `/readiness`, `/liveness`, `/health`):
   * the address to bind and the port (0: the OS chooses). Null or absent: none. Its
   * address, `http://<host>:<port>`, is published in the member record.
   */
  readonly api?: { readonly listen: string; readonly port: number } | null;
  /**
   * Also export prom-client's default process metrics on the health API's `/metrics`
   * (`--process-metrics`). Default false.
   */
  readonly processMetrics?: boolean;
  /**
   * `/liveness` fails when the control loop has not finished a pass (and is not inside
   * an action) for this long. Default 15 000 ms.
   */
  readonly livenessTimeoutMillis?: number;
  /**
   * While primary, an inactive slot of a member that has had no record for this long
   * (timed by this primary from its own observations) is dropped; a member marked
   * `removed/<name>` loses it as soon as its record is gone. Default 30 min.
   */
  readonly memberSlotsTtlMillis?: number;
  /**
   * The members' shared secret for the agent API's authenticated endpoints (`POST
   * /failsafe`): `--api-secret-file` or PGHA_API_SECRET. Null or absent: failsafe mode
   * cannot run on this member (it fences on an etcd outage, and promises nothing).
   */
  readonly apiSecret?: Buffer | null;
  /**
   * HTTPS for the agent API (`--api-cert`, `--api-key`, `--api-ca`): the record then
   * publishes `https://host:port`, and failsafe requests to other members verify their
   * certificates against the CA. Null or absent: plain HTTP.
   */
  readonly apiTls?: ApiTlsFiles | null;
  /**
   * PostgreSQL TLS (`--ssl-cert`, `--ssl-key`, `--ssl-ca`): see {@link PostgresMemberOptions.tls}.
   * Null or absent: none.
   */
  readonly postgresTls?: PostgresTlsFiles | null;
  /** The pgha CLI (for the watchdog process). */
  readonly cliPath: string;
  readonly log: Logger;
  readonly clock?: Clock;
}

/**
 * The agent: runs one member's postgres and reports it into etcd.
 *
 * Its parts, each small enough to read on its own:
 * - {@link PostgresMember}: postgres's life (initdb, clone, rewind, start, promote, stop);
 * - {@link Leadership}: the lease, the leader and last-primary records, and the fences;
 * - {@link StartUp} and {@link RoleChanges}: how the member comes up, and the
 *   promotion, step-down and handover;
 * - this class: wiring, and the control loop that reads what is true, asks the
 *   pure {@link decideAgentAction} what to do, does it, and publishes the member record.
 *
 * The loop wakes on every change of the `leader` and `target` keys and at least
 * every report interval; actions never block it for longer than the action itself
 * (a stepping-down primary returns to the loop as a standby at once).
 */
export class Agent {
  private readonly keys: ClusterKeys;
  private readonly clock: Clock;
  private readonly log: Logger;
  private etcd: Etcd3 | null = null;
  private pg: PostgresMember | null = null;
  private lead: Leadership | null = null;
  private roleChanges: RoleChanges | null = null;
  private startUp: StartUp | null = null;
  private settings: ClusterSettings | null = null;
  private synchronous: SynchronousReplication | null = null;
  private failsafe: Failsafe | null = null;
  /** The action the loop is applying (failsafe: a member promoting promises nothing). */
  private acting: AgentAction['type'] | null = null;
  private state: MemberState = 'starting';
  private notStreamingSince: number | null = null;
  private stopping = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private wakePending = false;
  private busy = false;
  // What the health API answers from: the loop's heartbeat and its last facts.
  private healthServer: HealthServer | null = null;
  private apiAddress: string | null = null;
  private lastTickAt: number;
  private actingSince: number | null = null;
  private observation: PostgresObservation | null = null;
  private observedAt: number | null = null;
  /** Wall time of `observation` (published as the member record's observedAt). */
  private observedWall: Date | null = null;
  private lastReport: MemberRecord | null = null;
  /** Served at the health API's `/metrics`; counted whether or not an API runs. */
  readonly metrics: AgentMetrics;
  /** The control loop's last decision (a `none` after `none` is not logged). */
  private lastDecision: AgentAction['type'] | null = null;

  constructor(private readonly options: AgentOptions) {
    this.keys = clusterKeys(options.cluster, options.keyRoot);
    this.clock = options.clock ?? systemClock;
    this.log = options.log;
    this.lastTickAt = this.clock.now();
    this.metrics = new AgentMetrics({
      cluster: options.cluster,
      member: options.name,
      processMetrics: options.processMetrics ?? false,
      facts: () => {
        const lead = this.lead;
        const leader = lead?.view.leader ?? null;
        const deadline = lead?.hasLease ? lead.deadline() : null;
        return {
          postgres: this.pg?.state ?? 'down',
          holdsLeader: lead?.holdsLeader ?? false,
          term: Math.max(lead?.view.term ?? 0, leader?.term ?? 0),
          timeline: this.observation?.timeline ?? null,
          lagBytes: this.lastReport?.lagBytes ?? null,
          lagSeconds: this.lastReport?.lagSeconds ?? null,
          millisToDeadline: deadline === null ? null : deadline - this.clock.now(),
        };
      },
    });
  }

  /** The CA other members' API certificates must chain to (`--api-ca`), null: none. */
  private apiCa: string | null = null;

  /** The health API's address (`http://host:port`), null when it runs none. */
  get api(): string | null {
    return this.apiAddress;
  }

  private get client(): Etcd3 {
    if (this.etcd === null) throw new PghaError('etcd-unavailable', 'agent is not connected to etcd');
    return this.etcd;
  }

  private get postgres(): PostgresMember {
    if (this.pg === null) throw new PghaError('conflict', 'the agent has not started');
    return this.pg;
  }

  private get roles(): RoleChanges {
    if (this.roleChanges === null) throw new Error('the agent has not started');
    return this.roleChanges;
  }

  private get leadership(): Leadership {
    if (this.lead === null) throw new PghaError('conflict', 'the agent has not started');
    return this.lead;
  }

  /**
   * Starts the member: checks prerequisites and etcd, decides how to start, brings
   * postgres up, then runs the control loop until {@link stop}. Resolves once
   * postgres runs (or, for existing data that cannot start yet, once the loop has
   * taken over: it rewinds or re-clones it when a primary appears).
   *
   * @throws PghaError when a prerequisite is missing, etcd is unreachable, or the
   *   data directory belongs to something else (nothing is changed then).
   */
  async start(): Promise<void> {
    const o = this.options;
    // First: a port in use is a configuration error, found before anything is touched.
    const apiTls = o.apiTls == null ? null : readApiTls(o.apiTls);
    this.apiCa = apiTls?.ca ?? null;
    if (o.api != null) {
      this.lastTickAt = this.clock.now();
      this.healthServer = await startHealthServer({
        tls: apiTls,
        host: o.api.listen,
        port: o.api.port,
        snapshot: () => this.healthSnapshot(),
        metrics: () => this.metrics.scrape(),
        failsafe: (req, res) => handleFailsafe(req, res, this.failsafe, this.clock),
        log: this.log,
      });
      this.apiAddress = apiUrl(o.host, this.healthServer.port, apiTls !== null);
    }
    const bins = await findPostgresBinaries();
    const user = postgresOsUser();
    // Calls shorter than the fencing budget: a tick must not hang past a deadline.
    this.etcd = createEtcdClient(o.etcd, 1500);
    // Patient: under load a first call (over TLS: a handshake) can outlast the call timeout.
    await assertEtcdReachable(this.etcd, o.etcd.endpoints, 20_000);
    // The cluster's stored settings (lease timing, postgres parameters) win over flags.
    this.settings = new ClusterSettings({
      etcd: this.etcd,
      keys: this.keys,
      lease: o.lease,
      postgresParameters: o.postgresParameters ?? {},
      log: this.log,
      clock: this.clock,
      poke: () => this.poke(),
    });
    await this.settings.load();

    this.pg = new PostgresMember({
      cluster: o.cluster,
      name: o.name,
      memberDir: o.memberDir,
      listenAddresses: o.listenAddresses,
      port: o.port,
      superuserPassword: o.superuserPassword,
      replicationPassword: o.replicationPassword,
      appRole: o.appRole ?? null,
      allowedNetworks: o.allowedNetworks,
      sharedBuffers: o.sharedBuffers,
      maxConnections: o.maxConnections,
      tls: o.postgresTls ?? null,
      postgresParameters: this.settings.postgresParameters,
      queryTimeoutMillis: 5000,
      bins,
      user,
      log: this.log,
      clock: this.clock,
      onChange: () => {
        // The last answer no longer describes this postgres: the health API fails
        // closed until the next status query (the poke makes that at once).
        this.noteObservation(null);
        this.lead?.postgresChanged();
        this.poke();
      },
    });
    this.failsafe = new Failsafe({
      cluster: o.cluster,
      name: o.name,
      keys: this.keys,
      etcd: this.etcd,
      secret: o.apiSecret ?? null,
      apiCa: this.apiCa,
      lease: this.settings.lease,
      enabled: () => this.settings?.record?.failsafeMode === true,
      forgetAfterMillis: o.memberSlotsTtlMillis ?? defaultMemberSlotsTtlMillis,
      clock: this.clock,
      log: this.log,
    });
    this.lead = new Leadership(this.etcd, this.pg, {
      name: o.name,
      host: o.host,
      port: o.port,
      memberDir: o.memberDir,
      keys: this.keys,
      lease: this.settings.lease,
      healthBoundMillis: o.healthTimeoutMillis ?? 10_000,
      cliPath: o.cliPath,
      log: this.log,
      clock: this.clock,
      poke: () => this.poke(),
      onRegranted: async () => this.publish(await this.postgres.observe()),
      onFence: (reason) => this.metrics.fenced(reason),
      failsafe: this.failsafe,
    });
    this.failsafe.host = this.failsafeHost(this.lead, this.pg);
    this.synchronous = new SynchronousReplication({
      name: o.name,
      keys: this.keys,
      etcd: this.etcd,
      postgres: this.pg,
      leadership: this.lead,
      config: () => this.settings?.record ?? null,
      clock: this.clock,
      log: this.log,
    });
    this.roleChanges = new RoleChanges({
      name: o.name,
      keys: this.keys,
      etcd: this.etcd,
      postgres: this.pg,
      leadership: this.lead,
      synchronous: this.synchronous,
      clock: this.clock,
      log: this.log,
      catchUpTimeoutMillis: o.catchUpTimeoutMillis,
      ...(o.memberSlotsTtlMillis !== undefined ? { memberSlotsTtlMillis: o.memberSlotsTtlMillis } : {}),
      setState: (state) => this.setState(state),
      noteObservation: (observation) => void this.noteObservation(observation),
      writableLeaderOtherThanUs: () => this.writableLeaderOtherThanUs(),
      isStopping: () => this.stopping,
    });

    this.startUp = new StartUp({
      name: o.name,
      cluster: o.cluster,
      appRoleName: o.appRole?.name ?? null,
      mayBootstrap: o.mayBootstrap,
      etcdEndpoints: o.etcd.endpoints,
      keys: this.keys,
      etcd: this.etcd,
      bins,
      user,
      postgres: this.pg,
      leadership: this.lead,
      clock: this.clock,
      log: this.log,
      setState: (state) => this.setState(state),
      isStopping: () => this.stopping,
      writableLeaderOtherThanUs: () => this.writableLeaderOtherThanUs(),
    });
    const decision = await this.startUp.decide();

    makeOwnedDir(o.memberDir, user);
    const pgpassField = (v: string) => v.replace(/([:\\])/g, '\\$1');
    writeOwnedFile(
      this.pg.passfile,
      `*:*:*:${replicationUser}:${pgpassField(o.replicationPassword)}\n*:*:*:${superUser}:${pgpassField(o.superuserPassword)}\n`,
      user,
    );
    this.pg.installCertificates();

    await this.leadership.start();
    this.leadership.lease.on('acknowledged', (millis: number) => this.metrics.keepaliveAcknowledged(millis));
    this.failsafe.start();
    this.loop = this.controlLoop();

    await this.startUp.run(decision);
    this.setState('running');
  }

  // ---- failsafe mode --------------------------------------------------------

  /** What failsafe rounds and answers ask of this agent (see agent/failsafe.ts). */
  private failsafeHost(lead: Leadership, pg: PostgresMember): Failsafe['host'] {
    const failsafe = this.failsafe!;
    return {
      primaryFacts: () => ({
        eligible: lead.mayRunFailsafe(failsafe.stallThresholdMillis),
        term: lead.view.leader?.term ?? lead.view.term,
        timeline: lead.view.leader?.timeline ?? 1,
      }),
      memberFacts: () => {
        // The last status query, however old: it is cleared whenever postgres starts,
        // stops or is promoted, so while it is there it describes this postgres (during
        // an outage the loop's passes are slow: each etcd call waits for its timeout).
        const leader = lead.view.leader;
        return {
          postgres: pg.state,
          observedInRecovery: pg.pid === null ? null : (this.observation?.inRecovery ?? null),
          holdsLeader: lead.holdsLeader || lead.reclaiming,
          takingOver: lead.installing || this.acting === 'promote' || this.acting === 'finish-promotion',
          viewLeader: leader === null ? null : { member: leader.member, term: leader.term },
          sinceLastAckMillis: lead.hasLease ? lead.lease.sinceLastAck() : 0,
        };
      },
      extended: () => lead.failsafeExtended(),
    };
  }

  // ---- etcd state ---------------------------------------------------------

  private readView() {
    return this.leadership.read();
  }

  private writableLeaderOtherThanUs(): LeaderRecord | null {
    const leader = this.leadership.view.leader;
    return leader !== null && leader.writable && leader.member !== this.options.name ? leader : null;
  }

  private poke(): void {
    this.wakePending = true;
    this.wake?.();
  }

  private setState(state: MemberState): void {
    if (this.state !== state) this.log.info(`state ${this.state} -> ${state}`);
    this.state = state;
    this.poke();
  }

  // ---- the control loop -----------------------------------------------------

  private async controlLoop(): Promise<void> {
    while (!this.stopping) {
      this.wakePending = false;
      try {
        await this.tick();
      } catch (error) {
        this.log.warn(`tick failed: ${(error as Error).message}`);
      }
      // A failed pass still proves the loop runs (etcd down is not a reason to be
      // restarted: the fences work without the loop, and a restart cannot fix etcd).
      this.lastTickAt = this.clock.now();
      if (this.wakePending || this.stopping) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.reportIntervalMillis);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private async tick(): Promise<void> {
    const pg = this.postgres;
    const observation = this.noteObservation(await pg.observe());
    let etcdOk = true;
    try {
      await this.readView();
    } catch {
      etcdOk = false;
    }
    if (observation !== null && observation.inRecovery && observation.receiverStatus !== 'streaming') {
      this.notStreamingSince ??= this.clock.now();
    } else this.notStreamingSince = null;

    if (!etcdOk) {
      // Failsafe mode: the members' promises are a valid claim too (Leadership.claimValid).
      const fence = decideWithoutEtcd({
        observedWritable: observation === null ? null : !observation.inRecovery,
        holdsLeader: this.leadership.holdsLeader || this.leadership.reclaiming,
        leaseValid: this.leadership.claimValid(),
      });
      if (fence !== null) {
        this.log.info(`action: fence (${fence.reason})`, {
          decision: 'fence',
          reason: fence.reason,
          etcd: 'unreachable',
          observedWritable: observation === null ? null : !observation.inRecovery,
          holdsLeader: this.leadership.holdsLeader,
          leaseRemainingMillis: this.leaseRemaining(),
        });
        this.leadership.fence(fence.reason);
      }
    }
    // Actions run only once start() has brought postgres up (state 'running').
    // While reclaiming (failsafe mode) the leader record is briefly not ours: no action.
    if (etcdOk && !this.busy && this.state === 'running' && !this.leadership.reclaiming) {
      const lead = this.leadership;
      const snapshot: AgentSnapshot = {
        self: this.options.name,
        now: this.clock.now(),
        leaseDeadline: lead.effectiveDeadline(),
        postgres: pg.state,
        observedWritable: observation === null ? null : !observation.inRecovery,
        crashes: pg.crashes,
        holdsLeader: lead.holdsLeader,
        leader: lead.view.leader,
        term: lead.view.term,
        target: lead.view.target,
        following: pg.upstream,
        maxRestarts: this.options.maxRestarts ?? 1,
      };
      const action = decideAgentAction(snapshot);
      this.logDecision(snapshot, action);
      if (action.type !== 'none') {
        this.busy = true;
        this.acting = action.type;
        this.actingSince = this.clock.now();
        try {
          await this.apply(action);
        } catch (error) {
          this.log.warn(`${action.type} failed: ${(error as Error).message}`);
          // Back in the loop: the next tick decides again from what is true now
          // (postgres down -> restart); a pause keeps a failing action from spinning.
          this.setState('running');
          await delay(1000);
        } finally {
          this.busy = false;
          this.acting = null;
          this.actingSince = null;
          this.lastTickAt = this.clock.now();
        }
        this.poke();
      } else if (observation?.replayPaused === true && (await this.restartForSettings())) {
        this.poke();
      } else if (this.shouldResync()) {
        this.log.warn('not streaming from the primary for 10 s; rewinding and following again');
        pg.setNeedsRewind(true);
        pg.upstream = null;
        this.poke();
      }
      if (!this.busy && this.state === 'running')
        await this.settings
          ?.sync(pg)
          .catch((error) => this.log.warn(`applying the cluster settings failed: ${(error as Error).message}`));
    }
    await this.publish(observation === null ? this.noteObservation(await pg.observe()) : observation);
  }

  /** Remembers postgres's last answer (null: none) for the health API. */
  private noteObservation(observation: PostgresObservation | null): PostgresObservation | null {
    this.observation = observation;
    this.observedAt = observation === null ? null : this.clock.now();
    this.observedWall = observation === null ? null : this.clock.date();
    return observation;
  }

  /** What the health API decides from: live facts plus the loop's last observation and report. */
  private healthSnapshot(): HealthSnapshot {
    const o = this.observation;
    const pg = this.pg;
    const lead = this.lead;
    const observation: HealthObservation | null =
      o === null
        ? null
        : {
            inRecovery: o.inRecovery,
            receiverStatus: o.receiverStatus,
            timeline: o.timeline,
            lsn: o.inRecovery ? o.receivedLsn : o.currentLsn,
            replayedLsn: o.inRecovery ? o.replayedLsn : o.currentLsn,
          };
    const problem = pg?.problem ?? null;
    return {
      member: this.options.name,
      now: this.clock.now(),
      lastTickAt: this.lastTickAt,
      actingSince: this.actingSince,
      livenessTimeoutMillis: this.options.livenessTimeoutMillis ?? 15_000,
      state: this.state,
      postgres: pg?.state ?? 'down',
      postgresRunning: pg?.pid != null,
      observation,
      observedAt: this.observedAt,
      // The loop queries postgres at least every report interval; three missed passes
      // (or 3 s) and its last answer is not trusted.
      observationMaxAgeMillis: Math.max(3000, 3 * this.options.reportIntervalMillis),
      holdsLeader: lead?.holdsLeader ?? false,
      leaseValid: lead !== null && lead.hasLease && lead.claimValid(),
      leader: lead?.view.leader ?? null,
      term: lead?.view.term ?? 0,
      fenced: problem?.startsWith('fenced: ') ? problem.slice('fenced: '.length) : null,
      lagBytes: this.lastReport?.lagBytes ?? null,
      lagSeconds: this.lastReport?.lagSeconds ?? null,
    };
  }

  /**
   * A standby whose replay PostgreSQL paused because the primary raised a setting
   * above its own is stopped; the next tick restarts it (`restart` as replica), and
   * that start takes the primary's values from the control data. True when stopped.
   */
  private async restartForSettings(): Promise<boolean> {
    const pg = this.postgres;
    const short = await pg.pausedForSettings().catch(() => []);
    if (short.length === 0) return false;
    this.log.warn(
      `replay paused: the primary raised ${short
        .map((s) => `${s.name} to ${s.recorded} (this standby has ${s.configured})`)
        .join(', ')}; restarting postgres with the primary's values`,
    );
    this.busy = true;
    try {
      await pg.stop();
    } finally {
      this.busy = false;
    }
    return true;
  }

  private shouldResync(): boolean {
    const leader = this.leadership.view.leader;
    const following = this.postgres.upstream;
    return (
      this.postgres.state === 'replica' &&
      following !== null &&
      leader !== null &&
      leader.writable &&
      leader.member === following.member &&
      this.notStreamingSince !== null &&
      this.clock.now() - this.notStreamingSince > 10_000
    );
  }

  /**
   * One line per decision, at info, with the facts it was made from; `none` (the
   * steady state, decided every tick) only at debug and only when it follows another
   * decision. Rewinding or re-cloning happen inside `restart` and `follow`:
   * `needsRewind` says whether one is due.
   */
  private logDecision(snapshot: AgentSnapshot, action: AgentAction): void {
    const previous = this.lastDecision;
    this.lastDecision = action.type;
    if (action.type === 'none' && previous === 'none') return;
    const facts = { ...agentDecisionFacts(snapshot, action), needsRewind: this.postgres.needsRewind() };
    if (action.type === 'none') this.log.debug('decision: none', facts);
    else this.log.info(`action: ${action.type}${'reason' in action ? ` (${action.reason})` : ''}`, facts);
  }

  /** Milliseconds until our lease deadline (negative: passed), null without a lease. */
  private leaseRemaining(): number | null {
    const deadline = this.lead?.deadline() ?? null;
    return deadline === null ? null : Math.round(deadline - this.clock.now());
  }

  private async apply(action: Exclude<AgentAction, { type: 'none' }>): Promise<void> {
    switch (action.type) {
      case 'fence':
        this.leadership.fence(action.reason);
        return;
      case 'release-leader':
        await this.leadership.releaseLeader(action.reason);
        this.postgres.setNeedsRewind(true);
        return;
      case 'step-down':
        await this.roles.stepDown(action.target);
        return;
      case 'promote':
        await this.roles.promote(action.target);
        return;
      case 'finish-promotion':
        await this.roles.finishPromotion(this.clock.now());
        return;
      case 'restart':
        this.metrics.restarted();
        this.setState('starting');
        if (action.as === 'primary') await this.startUp!.startPrimary();
        else await this.postgres.startStandby(this.writableLeaderOtherThanUs(), () => this.setState('cloning'));
        this.setState('running');
        return;
      case 'follow':
        await this.follow(action.leader);
        return;
      default: {
        const unreachable: never = action;
        throw new Error(`unhandled action ${JSON.stringify(unreachable)}`);
      }
    }
  }

  /** Points the standby at `leader`: a reload when nothing else is needed, a rewind first when the data was writable. */
  private async follow(leader: LeaderRecord): Promise<void> {
    const pg = this.postgres;
    if (pg.needsRewind()) {
      this.setState('starting');
      await pg.stop();
      await pg.startStandby(leader, () => this.setState('cloning'));
      this.setState('running');
      return;
    }
    await pg.repoint(leader);
    this.notStreamingSince = null;
    this.log.info(`following ${leader.member} (${leader.host}:${leader.port}) after a reload`);
  }

  // ---- reports ---------------------------------------------------------------

  private async publish(observation: PostgresObservation | null): Promise<void> {
    const lead = this.lead;
    if (lead === null || !lead.hasLease) return;
    const leader = lead.view.leader;
    let primaryLsn: string | null = null;
    if (observation !== null && observation.inRecovery && leader !== null) {
      const text = await this.client.get(this.keys.member(leader.member)).string();
      // The primary's own report; one that does not parse (the controller skips it too)
      // must not keep this member from publishing its own.
      if (text !== null) primaryLsn = readableMember(text)?.receivedLsn ?? null;
    }
    if (observation !== null && !observation.inRecovery && lead.holdsLeader) {
      await this.roles.ensureSlots();
      if (observation.currentLsn !== null) await lead.recordPosition(observation.currentLsn, observation.timeline ?? 1);
      if (this.settings?.record?.failsafeMode === true && leader !== null)
        await this.failsafe
          ?.maintain(lead.lease.id, leader.term)
          .catch((error) => this.log.warn(`failsafe record: ${(error as Error).message}`));
      // Never a reason to miss this report: logged, and decided again with the next.
      await this.synchronous
        ?.tick(observation)
        .catch((error) => this.log.warn(`synchronous replication: ${(error as Error).message}`));
    }
    const pg = this.postgres;
    const record = buildMemberRecord({
      name: this.options.name,
      host: this.options.host,
      port: this.options.port,
      state: this.state,
      term: Math.max(lead.view.term, leader?.term ?? 0),
      tags: this.options.tags,
      observation,
      problem: observation === null && this.state === 'running' ? (pg.problem ?? 'postgres is not running') : null,
      primaryLsn,
      isLeader: lead.holdsLeader,
      api: this.apiAddress,
      pendingRestart: this.settings?.pendingRestart ?? [],
      // Only for the observation it was taken with (a later time would overstate it).
      observedAt: observation !== null && observation === this.observation ? this.observedWall : null,
      now: this.clock.date(),
    });
    this.lastReport = record;
    await this.client.put(this.keys.member(this.options.name)).value(MemberRecord.encode(record)).lease(lead.lease.id);
  }

  // ---- stopping --------------------------------------------------------------

  /**
   * Stops the member. A primary first hands over: it asks for a switchover and
   * waits (bounded) for the controller to target another member, then steps down
   * cleanly. Then postgres shuts down, the lease is revoked (member and leader
   * records vanish at once) and the etcd client closes. Bounded even when etcd
   * does not answer.
   */
  async stop(options: { handover?: boolean; handoverTimeoutMillis?: number } = {}): Promise<void> {
    if (this.stopping) return;
    const lead = this.lead;
    if ((options.handover ?? true) && lead?.holdsLeader && this.pg?.state === 'primary' && this.etcd !== null) {
      await this.roles
        .handOver(options.handoverTimeoutMillis ?? 10_000)
        .catch((error) => this.log.warn(`handover failed: ${(error as Error).message}; stopping anyway`));
    }
    this.stopping = true;
    this.wake?.();
    this.state = 'stopping';
    // An action in progress (a base backup) is not waited for beyond a bound.
    if (this.loop !== null) await withTimeout(this.loop, 5000).catch(() => undefined);
    const held = lead?.holdsLeader === true;
    const cleanLsn = (await this.pg?.stop().catch(() => null)) ?? null;
    if (held) {
      // A primary stopping without a handover: release first (with its exact final
      // position when the shutdown was clean), so no one waits for the TTL.
      await withTimeout(lead.releaseLeader('agent stopping', cleanLsn), 3000).catch((error) =>
        this.log.warn(`could not release the leader record: ${(error as Error).message}`),
      );
    }
    this.failsafe?.stop();
    await lead?.stop();
    await this.settings?.stop();
    this.etcd?.close();
    this.etcd = null;
    await this.healthServer?.close();
    this.healthServer = null;
    this.log.info('stopped');
  }
}

/** A member record, or null for one that does not parse (skipped, as the controller skips it). */
function readableMember(text: string): MemberRecord | null {
  try {
    return MemberRecord.decode(text);
  } catch {
    return null;
  }
}
