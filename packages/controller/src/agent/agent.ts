import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  type ClusterKeys,
  clusterKeys,
  InitializeRecord,
  LeaderRecord,
  MemberRecord,
  type MemberState,
  type MemberTags,
  PghaError,
  recordVersion,
  SwitchoverRecord,
  slotNameFor,
  TargetRecord,
  TermRecord,
} from '@pgha/core';
import type { Etcd3, Watcher } from 'etcd3';
import type pg from 'pg';
import { assertEtcdReachable, castEtcdError, createEtcdClient, type EtcdConnection } from '../adapters/etcd.js';
import { type OsUser, postgresOsUser } from '../adapters/os-user.js';
import { observePostgres, type PostgresObservation } from '../adapters/postgres-observe.js';
import {
  baseBackup,
  clearStaleLock,
  connectLocal,
  initdb,
  isStandby,
  logTail,
  makeOwnedDir,
  markStandby,
  moveAside,
  type PostgresProcess,
  rewind,
  startPostgres,
  writeOwnedFile,
  writeServerFiles,
} from '../adapters/postgres-server.js';
import { findPostgresBinaries, type PostgresBinaries } from '../adapters/prerequisites.js';
import { type Clock, systemClock } from '../clock.js';
import { type AgentAction, decideAgentAction, type PostgresState } from '../decide/agent-role.js';
import { buildMemberRecord } from '../decide/member-report.js';
import { decideStartup } from '../decide/startup.js';
import type { Logger } from '../log.js';
import { inspectDataDir, readSystemId, writeMarker } from './data-dir.js';
import { LeaseKeeper, type LeaseTiming } from './lease-keeper.js';
import { replicationUser, type ServerSettings, superUser, type UpstreamSettings } from './postgres-config.js';
import { Watchdog } from './watchdog.js';

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
  /** CIDRs allowed besides loopback in pg_hba.conf. */
  readonly allowedNetworks: readonly string[];
  readonly lease: LeaseTiming;
  readonly reportIntervalMillis: number;
  readonly sharedBuffers: string;
  readonly maxConnections: number;
  readonly tags: MemberTags;
  /** In-place restarts of a crashed primary before it releases the leader record. Default 1. */
  readonly maxRestarts?: number;
  /** The pgha CLI (for the watchdog process). */
  readonly cliPath: string;
  readonly log: Logger;
  readonly clock?: Clock;
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** File in the member directory: the data was writable since it last followed anyone, rewind before following. */
const needsRewindFile = 'needs-rewind';

/**
 * The agent: runs one member's postgres and reports it into etcd.
 *
 * It is the only writer of its member record and, while primary, of the leader
 * record; both live under its own lease. Role changes come from one pure function
 * ({@link decideAgentAction}) evaluated on every tick of the control loop, which
 * wakes on every change of the `leader` and `target` keys. Fencing runs apart from
 * the loop on its own 50 ms timer, and a watchdog process fences when this process
 * cannot (frozen or dead).
 */
export class Agent {
  private readonly keys: ClusterKeys;
  private readonly clock: Clock;
  private readonly log: Logger;
  private etcd: Etcd3 | null = null;
  private lease: LeaseKeeper | null = null;
  private watchdog: Watchdog | null = null;
  private bins: PostgresBinaries | null = null;
  private user: OsUser | null = null;
  private postgres: PostgresProcess | null = null;
  private pgState: PostgresState = 'down';
  private conn: pg.Client | null = null;
  private state: MemberState = 'starting';
  private problem: string | null = null;
  private crashes = 0;
  private runningSince = 0;
  private notStreamingSince: number | null = null;
  private following: { member: string; host: string; port: number } | null = null;
  private holdsLeader = false;
  private leader: LeaderRecord | null = null;
  private leaderLease: string | null = null;
  private target: TargetRecord | null = null;
  private term = 0;
  private stopping = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private wakePending = false;
  private fenceTimer: NodeJS.Timeout | null = null;
  private watchers: Watcher[] = [];

  constructor(private readonly options: AgentOptions) {
    this.keys = clusterKeys(options.cluster, options.keyRoot);
    this.clock = options.clock ?? systemClock;
    this.log = options.log;
  }

  private get dataDir(): string {
    return join(this.options.memberDir, 'data');
  }

  private get passfile(): string {
    return join(this.options.memberDir, 'pgpass');
  }

  private get logFile(): string {
    return join(this.options.memberDir, 'postgres.log');
  }

  private get client(): Etcd3 {
    if (this.etcd === null) throw new PghaError('etcd-unavailable', 'agent is not connected to etcd');
    return this.etcd;
  }

  private get leaseKeeper(): LeaseKeeper {
    if (this.lease === null) throw new PghaError('etcd-unavailable', 'agent has no lease');
    return this.lease;
  }

  /**
   * Starts the member: checks prerequisites and etcd, decides how to start, brings
   * postgres up, then runs the control loop until {@link stop}. Resolves once
   * postgres runs.
   *
   * @throws PghaError when a prerequisite is missing, etcd is unreachable, or the
   *   data directory belongs to something else (nothing is changed then).
   */
  async start(): Promise<void> {
    const o = this.options;
    this.bins = await findPostgresBinaries();
    this.user = postgresOsUser();
    // Calls shorter than the fencing budget: a tick must not hang past a deadline.
    this.etcd = createEtcdClient(o.etcd, 1500);
    await assertEtcdReachable(this.etcd, o.etcd.endpoints);

    const inspection = inspectDataDir(this.dataDir, o.cluster, o.name);
    const initialize = await this.readInitialize();
    await this.readClusterState();
    if (this.leader?.member === o.name && inspection.kind === 'ours') {
      // Only once every process of our previous postmaster is gone.
      await clearStaleLock(this.dataDir);
      // A leader record naming us that we did not install is our previous run's,
      // whose postgres died with it: remove it so the cluster elects at once
      // instead of after the TTL.
      const removed = await this.client
        .if(this.keys.leader, 'Lease', '==', this.leaderLease ?? '0')
        .then(this.client.delete().key(this.keys.leader))
        .commit();
      if (removed.succeeded) this.log.info('removed the leader record of our previous run');
      await this.readClusterState();
    }
    const localSystemId = inspection.kind === 'ours' ? await readSystemId(this.bins, this.dataDir, this.user) : null;
    const decision = decideStartup({
      self: o.name,
      dataDir: inspection.kind,
      foreignReason: inspection.foreignReason,
      standby: inspection.kind === 'ours' && isStandby(this.dataDir),
      localSystemId,
      clusterSystemId: initialize?.systemId ?? null,
      leader: this.leader,
      mayBootstrap: o.mayBootstrap,
    });
    this.log.info(
      `start-up decision: ${decision.action}${decision.action === 'refuse' ? ` (${decision.reason})` : ''}`,
    );
    if (decision.action === 'refuse') throw new PghaError('conflict', decision.reason);

    makeOwnedDir(o.memberDir, this.user);
    const pgpassField = (v: string) => v.replace(/([:\\])/g, '\\$1');
    writeOwnedFile(
      this.passfile,
      `*:*:*:${replicationUser}:${pgpassField(o.replicationPassword)}\n*:*:*:${superUser}:${pgpassField(o.superuserPassword)}\n`,
      this.user,
    );

    this.lease = new LeaseKeeper(this.etcd, o.lease, this.clock);
    this.lease.on('expired', () => void this.regrantLease());
    this.lease.on('renewed', () => this.armWatchdog());
    await this.lease.grant();
    this.watchdog = new Watchdog(o.cliPath, join(o.memberDir, 'watchdog.log'), this.log);
    this.watchdog.start();
    this.fenceTimer = setInterval(() => this.checkFence(), 50);
    await this.watchKeys();
    this.loop = this.reportLoop();

    switch (decision.action) {
      case 'bootstrap':
        await this.bootstrap();
        break;
      case 'clone':
        await this.cloneAndStart();
        break;
      case 'start-replica':
        if (decision.rewind) this.setNeedsRewind(true);
        await this.startAsStandby(
          this.leader !== null && this.leader.writable && this.leader.member !== o.name ? this.leader : null,
        );
        break;
      default: {
        const unreachable: never = decision;
        throw new Error(`unhandled decision ${JSON.stringify(unreachable)}`);
      }
    }
    this.setState('running');
  }

  // ---- etcd state ---------------------------------------------------------

  private async readInitialize(): Promise<InitializeRecord | null> {
    try {
      const text = await this.client.get(this.keys.initialize).string();
      return text === null ? null : InitializeRecord.decode(text);
    } catch (error) {
      throw castEtcdError(error, this.options.etcd.endpoints, 'reading the initialize record');
    }
  }

  /** Reads leader, term and target; updates whether we hold the leader record. */
  private async readClusterState(): Promise<void> {
    const [leaderRes, termText, targetText] = await Promise.all([
      this.client.get(this.keys.leader).exec(),
      this.client.get(this.keys.term).string(),
      this.client.get(this.keys.target).string(),
    ]);
    const kv = leaderRes.kvs[0];
    this.leader = kv === undefined ? null : LeaderRecord.decode(kv.value.toString());
    this.leaderLease = kv === undefined ? null : String(kv.lease);
    this.term = termText === null ? 0 : TermRecord.decode(termText).term;
    this.target = targetText === null ? null : TargetRecord.decode(targetText);
    this.holdsLeader =
      this.leader !== null && this.leader.member === this.options.name && this.leaderLease === this.lease?.id;
  }

  private async watchKeys(): Promise<void> {
    for (const key of [this.keys.leader, this.keys.target]) {
      const watcher = await this.client.watch().key(key).create();
      watcher.on('put', () => this.poke());
      watcher.on('delete', () => this.poke());
      watcher.on('error', () => undefined);
      this.watchers.push(watcher);
    }
  }

  private poke(): void {
    this.wakePending = true;
    this.wake?.();
  }

  private regranting: Promise<void> | null = null;

  /** Grants a new lease after the old one expired; one at a time, retried until etcd answers. */
  private regrantLease(): Promise<void> {
    this.regranting ??= this.doRegrant().finally(() => {
      this.regranting = null;
    });
    return this.regranting;
  }

  private async doRegrant(): Promise<void> {
    if (this.stopping) return;
    this.log.warn('our lease expired in etcd; granting a new one');
    this.holdsLeader = false;
    this.checkFence();
    try {
      await this.leaseKeeper.grant();
      // Republish at once: the primary keeps slots only for members with a record,
      // and a standby being restarted (a long step) must not wait for the next tick.
      await this.publish(await this.observe()).catch(() => undefined);
      this.poke();
    } catch (error) {
      // etcd unreachable: keep trying; until then we hold no lease, so nothing here
      // can make postgres writable.
      this.log.warn(`could not grant a new lease: ${(error as Error).message}; retrying`);
      setTimeout(() => void this.regrantLease(), 500).unref();
    }
  }

  // ---- fencing --------------------------------------------------------------

  private armWatchdog(): void {
    if (this.postgres !== null && (this.pgState === 'primary' || this.holdsLeader)) {
      this.watchdog?.arm(this.postgres.pid, this.leaseKeeper.deadline() - this.clock.now());
    }
  }

  /** The fence on our own clock: runs every 50 ms, independent of etcd and the loop. */
  private checkFence(): void {
    if (this.pgState !== 'primary' || this.postgres === null) return;
    if (!this.holdsLeader) this.fence('writable without holding the leader record');
    else if (!this.leaseKeeper.isValid()) this.fence('lease deadline passed');
  }

  /** Kills postgres's whole process group at once and makes sure it can only come back as a standby. */
  private fence(reason: string): void {
    const postgres = this.postgres;
    if (postgres === null) return;
    this.log.warn(`FENCING: ${reason}; killing postgres (process group ${postgres.pid})`);
    postgres.killGroup();
    this.watchdog?.disarm();
    this.pgState = 'down';
    this.postgres = null;
    this.conn?.end().catch(() => undefined);
    this.conn = null;
    this.setNeedsRewind(true);
    markStandby(this.dataDir, this.user);
    this.crashes = 0;
    this.problem = `fenced: ${reason}`;
    this.poke();
  }

  private setNeedsRewind(value: boolean): void {
    const file = join(this.options.memberDir, needsRewindFile);
    if (value) writeOwnedFile(file, `${new Date().toISOString()}\n`, this.user);
    else rmSync(file, { force: true });
  }

  private needsRewind(): boolean {
    return existsSync(join(this.options.memberDir, needsRewindFile));
  }

  // ---- start-up paths -------------------------------------------------------

  private setState(state: MemberState): void {
    if (this.state !== state) this.log.info(`state ${this.state} -> ${state}`);
    this.state = state;
    this.poke();
  }

  /**
   * Installs the leader record for `term` under our lease together with the term, in
   * one transaction guarded by "no leader, term unchanged since read" and, for an
   * election, "the target still names us" (contract lines 2 and 3).
   */
  private async installLeader(term: number, timeline: number, targetText: string | null): Promise<boolean> {
    const termRes = await this.client.get(this.keys.term).exec();
    const kv = termRes.kvs[0];
    const current = kv === undefined ? 0 : TermRecord.decode(kv.value.toString()).term;
    if (current !== term - 1) return false;
    const record: LeaderRecord = {
      v: recordVersion,
      term,
      member: this.options.name,
      host: this.options.host,
      port: this.options.port,
      timeline,
      since: this.clock.date().toISOString(),
      writable: false,
    };
    let guard = this.client.if(this.keys.leader, 'Create', '==', 0);
    guard =
      kv === undefined
        ? guard.and(this.keys.term, 'Create', '==', 0)
        : guard.and(this.keys.term, 'Mod', '==', kv.mod_revision);
    if (targetText !== null) guard = guard.and(this.keys.target, 'Value', '==', targetText);
    const result = await guard
      .then(
        this.client.put(this.keys.leader).value(LeaderRecord.encode(record)).lease(this.leaseKeeper.id),
        this.client.put(this.keys.term).value(TermRecord.encode({ v: recordVersion, term })),
      )
      .commit();
    if (!result.succeeded) return false;
    this.term = term;
    this.leader = record;
    this.leaderLease = this.leaseKeeper.id;
    this.holdsLeader = true;
    // Armed from the moment we may become writable: if this process freezes or dies
    // between here and the end of promotion, the watchdog still fences at the deadline.
    this.armWatchdog();
    this.log.info(`installed the leader record for term ${term}`);
    return true;
  }

  /** Rewrites our leader record (same lease, same term), only while it is still ours. */
  private async updateLeader(changes: Partial<Pick<LeaderRecord, 'writable' | 'timeline'>>): Promise<void> {
    if (this.leader === null || !this.holdsLeader) throw new PghaError('conflict', 'we do not hold the leader record');
    const record: LeaderRecord = { ...this.leader, ...changes };
    const result = await this.client
      .if(this.keys.leader, 'Lease', '==', this.leaseKeeper.id)
      .then(this.client.put(this.keys.leader).value(LeaderRecord.encode(record)).lease(this.leaseKeeper.id))
      .commit();
    if (!result.succeeded) {
      this.holdsLeader = false;
      throw new PghaError('conflict', 'the leader record is no longer ours');
    }
    this.leader = record;
  }

  private async releaseLeader(reason: string): Promise<void> {
    const result = await this.client
      .if(this.keys.leader, 'Lease', '==', this.leaseKeeper.id)
      .then(this.client.delete().key(this.keys.leader))
      .commit();
    this.holdsLeader = false;
    if (result.succeeded) this.log.info(`released the leader record: ${reason}`);
  }

  private serverSettings(upstream: UpstreamSettings | null): ServerSettings {
    const o = this.options;
    return {
      member: o.name,
      listenAddresses: o.listenAddresses,
      port: o.port,
      sharedBuffers: o.sharedBuffers,
      maxConnections: o.maxConnections,
      upstream,
    };
  }

  private async bootstrap(): Promise<void> {
    if (!(await this.installLeader(this.term + 1, 1, null))) {
      this.log.info('another member is bootstrapping the cluster; cloning from it instead');
      await this.cloneAndStart();
      return;
    }
    this.setState('initializing');
    this.log.info(`initdb into ${this.dataDir} (PostgreSQL ${this.bins!.version})`);
    await initdb(this.bins!, this.dataDir, this.user, this.options.superuserPassword);
    writeMarker(this.dataDir, this.options.cluster, this.options.name, this.user);
    await this.startPrimary(async (conn) => {
      const password = conn.escapeLiteral(this.options.replicationPassword);
      await conn.query(`CREATE ROLE ${replicationUser} WITH REPLICATION LOGIN PASSWORD ${password}`);
    });
  }

  /** Starts the data directory writable: only while we hold the leader record. */
  private async startPrimary(afterStart?: (conn: pg.Client) => Promise<void>): Promise<void> {
    if (!this.holdsLeader) throw new PghaError('conflict', 'refusing to start writable without the leader record');
    this.setState('starting');
    rmSync(join(this.dataDir, 'standby.signal'), { force: true });
    this.setNeedsRewind(false);
    writeServerFiles(this.dataDir, this.user, this.serverSettings(null), this.options.allowedNetworks);
    this.following = null;
    await this.launchPostgres('primary');
    if (afterStart) await afterStart(this.conn!);
    const observation = await observePostgres(this.conn!);
    if (observation.inRecovery)
      throw new PghaError('postgres-failed', 'postgres started in recovery although this member leads');
    await this.publishInitialize(observation.systemId);
    await this.updateLeader({ writable: true, timeline: observation.timeline ?? 1 });
    this.log.info(`primary is writable (timeline ${observation.timeline}, term ${this.term})`);
  }

  private async publishInitialize(systemId: string): Promise<void> {
    const record: InitializeRecord = {
      v: recordVersion,
      member: this.options.name,
      systemId,
      at: this.clock.date().toISOString(),
    };
    const result = await this.client
      .if(this.keys.initialize, 'Create', '==', 0)
      .then(this.client.put(this.keys.initialize).value(InitializeRecord.encode(record)))
      .commit();
    if (result.succeeded) this.log.info(`published the cluster's system identifier ${systemId}`);
  }

  /** Waits (until stopped) for a writable leader other than us. */
  private async waitForLeader(): Promise<LeaderRecord> {
    let announced = false;
    while (!this.stopping) {
      await this.readClusterState().catch(() => undefined);
      const leader = this.leader;
      if (leader !== null && leader.writable && leader.member !== this.options.name) return leader;
      if (!announced) this.log.info('waiting for a writable primary');
      announced = true;
      await delay(50);
    }
    throw new PghaError('timeout', 'stopped while waiting for a primary');
  }

  private upstreamOf(leader: LeaderRecord): UpstreamSettings {
    return { host: leader.host, port: leader.port, passfile: this.passfile, member: this.options.name };
  }

  private async cloneAndStart(): Promise<void> {
    this.setState('cloning');
    const leader = await this.waitForLeader();
    await this.clone(leader);
    await this.startAsStandby(leader);
  }

  private async clone(leader: LeaderRecord): Promise<void> {
    this.log.info(`base backup from ${leader.member} (${leader.host}:${leader.port})`);
    const started = this.clock.now();
    await baseBackup(this.bins!, this.dataDir, this.user, leader, this.passfile);
    this.log.info(`base backup done in ${((this.clock.now() - started) / 1000).toFixed(1)} s`);
    writeMarker(this.dataDir, this.options.cluster, this.options.name, this.user);
    this.setNeedsRewind(false);
  }

  /**
   * Starts postgres as a standby of `leader` (or of nobody yet). Data that was last
   * writable is first rewound onto the leader's timeline (pg_rewind), or re-cloned
   * when rewinding fails.
   */
  private async startAsStandby(leader: LeaderRecord | null): Promise<void> {
    this.setState('starting');
    // Data last writable (a crashed or fenced primary) may hold WAL the leader's
    // timeline does not: rewind it before following.
    const rewound = leader !== null && (this.needsRewind() || !isStandby(this.dataDir));
    if (rewound) await this.rewindOnto(leader);
    markStandby(this.dataDir, this.user);
    writeServerFiles(
      this.dataDir,
      this.user,
      this.serverSettings(leader === null ? null : this.upstreamOf(leader)),
      this.options.allowedNetworks,
    );
    this.following = leader === null ? null : { member: leader.member, host: leader.host, port: leader.port };
    try {
      await this.launchPostgres('replica');
    } catch (error) {
      if (leader === null) throw error;
      // A standby that cannot start on the leader's history (a rewind that found
      // nothing to do, a missing WAL segment) is re-cloned: its data is a replica's.
      this.log.warn(
        `standby did not start (${(error as Error).message.split('\n')[0]}); re-cloning from ${leader.member}`,
      );
      this.setState('cloning');
      moveAside(this.dataDir);
      await this.clone(leader);
      markStandby(this.dataDir, this.user);
      writeServerFiles(
        this.dataDir,
        this.user,
        this.serverSettings(this.upstreamOf(leader)),
        this.options.allowedNetworks,
      );
      await this.launchPostgres('replica');
    }
    this.log.info(
      leader === null
        ? 'standby running, no primary to follow yet'
        : `standby running, following ${leader.member}${rewound ? ' (rewound)' : ''}`,
    );
  }

  private async rewindOnto(leader: LeaderRecord): Promise<void> {
    const started = this.clock.now();
    try {
      this.log.info(`pg_rewind onto ${leader.member} (timeline ${leader.timeline})`);
      await clearStaleLock(this.dataDir);
      // pg_rewind reads the source's timeline from its control file, which a fast
      // promotion updates only at the next checkpoint: without one it may see "the
      // same timeline" and rewind nothing.
      await this.checkpointOn(leader);
      await rewind(this.bins!, this.dataDir, this.user, leader, this.passfile);
      this.log.info(`pg_rewind done in ${((this.clock.now() - started) / 1000).toFixed(1)} s`);
    } catch (error) {
      this.log.warn(`pg_rewind failed; taking a fresh base backup instead. ${(error as Error).message}`);
      this.setState('cloning');
      moveAside(this.dataDir);
      await this.clone(leader);
    }
    writeMarker(this.dataDir, this.options.cluster, this.options.name, this.user);
    this.setNeedsRewind(false);
  }

  private async checkpointOn(leader: LeaderRecord): Promise<void> {
    const client = await connectLocal(
      { host: leader.host, port: leader.port, password: this.options.superuserPassword },
      5000,
    );
    try {
      await client.query('CHECKPOINT');
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Starts the postmaster and waits until it accepts our connection. */
  private async launchPostgres(as: 'primary' | 'replica'): Promise<void> {
    await clearStaleLock(this.dataDir);
    this.runningSince = 0;
    const postgres = startPostgres(this.bins!, this.dataDir, this.user, this.logFile);
    this.postgres = postgres;
    this.pgState = as === 'primary' ? 'primary' : 'starting';
    this.armWatchdog();
    postgres.exited.then(() => {
      if (this.postgres !== postgres) return;
      if (this.pgState === 'primary') this.setNeedsRewind(true);
      this.postgres = null;
      this.pgState = 'down';
      this.watchdog?.disarm();
      if (!this.stopping) {
        // A postgres that ran for a while before this exit restarted fine last time:
        // count from 1 again. Exits during start-up (or right after) keep counting,
        // so a restart that cannot work ends in releasing the leader record.
        const ranFor = this.runningSince === 0 ? 0 : this.clock.now() - this.runningSince;
        this.crashes = ranFor > 1000 ? 1 : this.crashes + 1;
        this.log.warn(
          `postgres (pid ${postgres.pid}) exited unexpectedly: ${logTail(this.logFile, 3).replace(/\n/g, ' | ')}`,
        );
        this.problem = 'postgres exited';
        this.poke();
      }
    });
    const deadline = this.clock.now() + 120_000;
    for (;;) {
      if (this.postgres !== postgres) {
        await delay(100); // let its last log lines reach the file
        throw new PghaError(
          'postgres-failed',
          `postgres exited while starting; its log says:\n${logTail(this.logFile)}`,
        );
      }
      try {
        this.conn = await connectLocal({
          host: '127.0.0.1',
          port: this.options.port,
          password: this.options.superuserPassword,
        });
        await this.conn.query('SELECT 1');
        break;
      } catch (error) {
        await this.conn?.end().catch(() => undefined);
        this.conn = null;
        if (this.clock.now() > deadline) {
          throw new PghaError(
            'postgres-failed',
            `postgres did not accept connections within 120 s; its log says:\n${logTail(this.logFile)}`,
            { cause: error },
          );
        }
        await delay(50);
      }
    }
    if (as === 'replica') this.pgState = 'replica';
    this.runningSince = this.clock.now();
    this.problem = null;
  }

  // ---- the control loop -----------------------------------------------------

  private async reportLoop(): Promise<void> {
    while (!this.stopping) {
      this.wakePending = false;
      try {
        await this.tick();
      } catch (error) {
        this.log.warn(`tick failed: ${(error as Error).message}`);
      }
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

  private busy = false;

  private async tick(): Promise<void> {
    const observation = await this.observe();
    let etcdOk = true;
    try {
      await this.readClusterState();
    } catch {
      etcdOk = false;
    }
    if (observation !== null && observation.inRecovery && observation.receiverStatus !== 'streaming') {
      this.notStreamingSince ??= this.clock.now();
    } else this.notStreamingSince = null;

    // Actions run only once start() has brought postgres up (state 'running').
    if (etcdOk && !this.busy && this.state === 'running') {
      const action = decideAgentAction({
        self: this.options.name,
        now: this.clock.now(),
        leaseDeadline: this.lease === null ? null : this.leaseKeeper.deadline(),
        postgres: this.pgState,
        crashes: this.crashes,
        holdsLeader: this.holdsLeader,
        leader: this.leader,
        term: this.term,
        target: this.target,
        following: this.following,
        maxRestarts: this.options.maxRestarts ?? 1,
      });
      if (action.type !== 'none') {
        this.busy = true;
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
        }
        this.poke();
      } else if (this.shouldResync()) {
        this.log.warn('not streaming from the primary for 10 s; rewinding and following again');
        this.setNeedsRewind(true);
        this.following = null;
        this.poke();
      }
    }
    await this.publish(observation === null ? await this.observe() : observation);
  }

  private shouldResync(): boolean {
    return (
      this.pgState === 'replica' &&
      this.following !== null &&
      this.leader !== null &&
      this.leader.writable &&
      this.leader.member === this.following.member &&
      this.notStreamingSince !== null &&
      this.clock.now() - this.notStreamingSince > 10_000
    );
  }

  private async apply(action: Exclude<AgentAction, { type: 'none' }>): Promise<void> {
    this.log.info(`action: ${action.type}${'reason' in action ? ` (${action.reason})` : ''}`);
    switch (action.type) {
      case 'fence':
        this.fence(action.reason);
        return;
      case 'release-leader':
        await this.releaseLeader(action.reason);
        this.setNeedsRewind(true);
        markStandby(this.dataDir, this.user);
        return;
      case 'step-down':
        await this.stepDown(action.target);
        return;
      case 'promote':
        await this.promote(action.target);
        return;
      case 'restart':
        this.setState('starting');
        if (action.as === 'primary') await this.startPrimary();
        else
          await this.startAsStandby(
            this.leader !== null && this.leader.writable && this.leader.member !== this.options.name
              ? this.leader
              : null,
          );
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

  /** Takes the leader record for the target's term, then promotes postgres. */
  private async promote(target: TargetRecord): Promise<void> {
    const started = this.clock.now();
    const observation = await this.observe();
    if (observation === null || !observation.inRecovery)
      throw new PghaError('postgres-failed', 'cannot promote: postgres is not a running standby');
    if (!(await this.installLeader(target.term, observation.timeline ?? 1, TargetRecord.encode(target)))) {
      this.log.info(
        `could not take the leader record for term ${target.term} (someone else did, or the target changed)`,
      );
      return;
    }
    try {
      if (!this.holdsLeader || !this.leaseKeeper.isValid()) {
        throw new PghaError('conflict', 'lost the leader record or passed the lease deadline before promoting');
      }
      // Counted as writable from the moment pg_promote is sent, so the fence timer
      // covers the promotion itself.
      this.pgState = 'primary';
      await this.conn!.query('SELECT pg_promote(false)');
      for (;;) {
        const { rows } = await this.conn!.query('SELECT pg_is_in_recovery() AS r');
        if (rows[0]?.r === false) break;
        if (this.clock.now() - started > 60_000)
          throw new PghaError('timeout', 'postgres did not leave recovery within 60 s');
        await delay(5);
      }
      this.pgState = 'primary';
      this.following = null;
      this.armWatchdog();
      // Slots before announcing: replicas re-pointed by the announcement find theirs.
      await this.ensureSlots().catch((error) => this.log.warn(`slots: ${(error as Error).message}`));
      const after = await observePostgres(this.conn!);
      await this.updateLeader({ writable: true, timeline: after.timeline ?? observation.timeline ?? 1 });
      this.log.info(
        `promoted in ${Math.round(this.clock.now() - started)} ms: primary of term ${target.term} on timeline ${after.timeline}`,
      );
      // A checkpoint records the new timeline in the control file, which pg_rewind
      // on the old primary reads. After announcing: it takes a moment.
      void this.conn?.query('CHECKPOINT').catch(() => undefined);
    } catch (error) {
      this.log.warn(`promotion failed: ${(error as Error).message}; releasing the leader record`);
      await this.releaseLeader('promotion failed');
      throw error;
    }
  }

  /** Planned switchover: clean shutdown (replicas receive every WAL record), release, follow. */
  private async stepDown(target: TargetRecord): Promise<void> {
    this.log.info(`switchover to ${target.member}: shutting down cleanly`);
    const started = this.clock.now();
    this.setState('stopping');
    this.watchdog?.disarm();
    const postgres = this.postgres;
    // Stop counting as primary first so neither the fence timer nor the exit handler
    // treats this shutdown as a failure.
    this.postgres = null;
    this.pgState = 'down';
    await this.conn?.end().catch(() => undefined);
    this.conn = null;
    markStandby(this.dataDir, this.user);
    this.setNeedsRewind(true);
    await postgres?.stop();
    await this.releaseLeader(`switchover to ${target.member}`);
    this.log.info(`stepped down in ${Math.round(this.clock.now() - started)} ms`);
    this.setState('starting');
    const leader = await this.waitForLeader();
    await this.startAsStandby(leader);
    this.setState('running');
  }

  /** Points the standby at `leader`: a reload when nothing else is needed, a rewind first when the data was writable. */
  private async follow(leader: LeaderRecord): Promise<void> {
    if (this.needsRewind()) {
      this.setState('starting');
      await this.stopPostgres();
      await this.startAsStandby(leader);
      this.setState('running');
      return;
    }
    writeServerFiles(
      this.dataDir,
      this.user,
      this.serverSettings(this.upstreamOf(leader)),
      this.options.allowedNetworks,
    );
    await this.conn?.query('SELECT pg_reload_conf()');
    this.following = { member: leader.member, host: leader.host, port: leader.port };
    this.notStreamingSince = null;
    this.log.info(`following ${leader.member} (${leader.host}:${leader.port}) after a reload`);
  }

  private async stopPostgres(): Promise<void> {
    const postgres = this.postgres;
    this.postgres = null;
    this.pgState = 'down';
    this.watchdog?.disarm();
    await this.conn?.end().catch(() => undefined);
    this.conn = null;
    await postgres?.stop();
  }

  private async observe(): Promise<PostgresObservation | null> {
    if (this.postgres === null) return null;
    if (this.conn === null) {
      this.conn = await connectLocal(
        { host: '127.0.0.1', port: this.options.port, password: this.options.superuserPassword },
        1000,
      ).catch(() => null);
      if (this.conn === null) return null;
    }
    try {
      const observation = await observePostgres(this.conn);
      if (this.pgState === 'starting') this.pgState = observation.inRecovery ? 'replica' : 'primary';
      return observation;
    } catch (error) {
      this.problem = `postgres does not answer: ${(error as Error).message}`;
      await this.conn?.end().catch(() => undefined);
      this.conn = null;
      return null;
    }
  }

  private async publish(observation: PostgresObservation | null): Promise<void> {
    if (this.lease === null) return;
    let primaryLsn: string | null = null;
    if (observation !== null && observation.inRecovery && this.leader !== null) {
      const text = await this.client.get(this.keys.member(this.leader.member)).string();
      if (text !== null) primaryLsn = MemberRecord.decode(text).receivedLsn;
    }
    if (observation !== null && !observation.inRecovery && this.holdsLeader) await this.ensureSlots();
    const record = buildMemberRecord({
      name: this.options.name,
      host: this.options.host,
      port: this.options.port,
      state: this.state,
      term: Math.max(this.term, this.leader?.term ?? 0),
      tags: this.options.tags,
      observation,
      problem: observation === null && this.state === 'running' ? (this.problem ?? 'postgres is not running') : null,
      primaryLsn,
      isLeader: this.holdsLeader,
      now: this.clock.date(),
    });
    await this.client
      .put(this.keys.member(this.options.name))
      .value(MemberRecord.encode(record))
      .lease(this.leaseKeeper.id);
  }

  /** Keeps a physical slot on the primary for every other member that reports. */
  private async ensureSlots(): Promise<void> {
    const members = await this.client.getAll().prefix(this.keys.membersPrefix).keys();
    const wanted = members
      .map((key) => this.keys.parse(key))
      .flatMap((parsed) =>
        parsed?.kind === 'member' && parsed.name !== this.options.name ? [slotNameFor(parsed.name)] : [],
      );
    if (wanted.length === 0 || this.conn === null) return;
    await this.conn.query(
      `SELECT pg_create_physical_replication_slot(s, true)
         FROM unnest($1::text[]) AS s
        WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = s)`,
      [wanted],
    );
  }

  /**
   * Stops the member. A primary first hands over: it asks for a switchover and
   * waits (bounded) for the controller to target another member, then steps down
   * cleanly. Then postgres shuts down, the lease is revoked (member and leader
   * records vanish at once) and the etcd client closes.
   */
  async stop(options: { handover?: boolean; handoverTimeoutMillis?: number } = {}): Promise<void> {
    if (this.stopping) return;
    if ((options.handover ?? true) && this.holdsLeader && this.pgState === 'primary' && this.etcd !== null) {
      await this.handOver(options.handoverTimeoutMillis ?? 10_000).catch((error) =>
        this.log.warn(`handover failed: ${(error as Error).message}; stopping anyway`),
      );
    }
    this.stopping = true;
    this.wake?.();
    this.state = 'stopping';
    await this.loop?.catch(() => undefined);
    if (this.fenceTimer !== null) clearInterval(this.fenceTimer);
    for (const w of this.watchers) await w.cancel().catch(() => undefined);
    await this.conn?.end().catch(() => undefined);
    this.conn = null;
    const postgres = this.postgres;
    this.postgres = null;
    this.pgState = 'down';
    this.watchdog?.disarm();
    if (this.holdsLeader) {
      // A primary stopping without a handover: release first, so no one waits for the TTL.
      markStandby(this.dataDir, this.user);
      this.setNeedsRewind(true);
      await postgres?.stop();
      await this.releaseLeader('agent stopping').catch(() => undefined);
    } else await postgres?.stop();
    this.watchdog?.stop();
    await this.lease
      ?.revoke()
      .catch((error) => this.log.warn(`could not revoke the lease: ${(error as Error).message}`));
    this.etcd?.close();
    this.etcd = null;
    this.log.info('stopped');
  }

  private async handOver(timeoutMillis: number): Promise<void> {
    const deadline = this.clock.now() + timeoutMillis;
    const members = await this.client.getAll().prefix(this.keys.membersPrefix).strings();
    const others = Object.values(members)
      .map((v) => MemberRecord.decode(v))
      .filter((m) => m.name !== this.options.name && m.role === 'replica' && m.state === 'running');
    if (others.length === 0) return;
    this.log.info('stopping as primary: requesting a switchover first');
    await this.client.put(this.keys.switchover).value(
      SwitchoverRecord.encode({
        v: recordVersion,
        from: this.options.name,
        to: null,
        at: null,
        requestedAt: this.clock.date().toISOString(),
      }),
    );
    while (this.clock.now() < deadline) {
      if (!this.holdsLeader) return; // stepped down through the control loop
      await delay(50);
    }
    throw new PghaError('timeout', `no switchover within ${timeoutMillis} ms`);
  }
}
