import { join } from 'node:path';
import {
  type ClusterKeys,
  clusterKeys,
  InitializeRecord,
  LeaderRecord,
  type MemberState,
  MemberRecord,
  type MemberTags,
  nextTerm,
  PghaError,
  recordVersion,
  slotNameFor,
  TermRecord,
} from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import type pg from 'pg';
import { assertEtcdReachable, castEtcdError, createEtcdClient, type EtcdConnection } from '../adapters/etcd.js';
import { postgresOsUser, type OsUser } from '../adapters/os-user.js';
import { observePostgres, type PostgresObservation } from '../adapters/postgres-observe.js';
import {
  baseBackup,
  connectLocal,
  initdb,
  isStandby,
  logTail,
  makeOwnedDir,
  markStandby,
  type PostgresProcess,
  startPostgres,
  writeOwnedFile,
  writeServerFiles,
} from '../adapters/postgres-server.js';
import { findPostgresBinaries, type PostgresBinaries } from '../adapters/prerequisites.js';
import { runTool } from '../adapters/processes.js';
import { type Clock, systemClock } from '../clock.js';
import { buildMemberRecord } from '../decide/member-report.js';
import { decideStartup } from '../decide/startup.js';
import type { Logger } from '../log.js';
import { inspectDataDir, readSystemId, writeMarker } from './data-dir.js';
import { LeaseKeeper, type LeaseTiming } from './lease-keeper.js';
import { replicationUser, type ServerSettings, type UpstreamSettings } from './postgres-config.js';

/** Everything an agent needs to run one member. */
export interface AgentOptions {
  readonly cluster: string;
  /** This member's name, `<cluster>-<ordinal>`. */
  readonly name: string;
  /** Holds `data/` (PGDATA), `pgpass` and `postgres.log`. */
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
  readonly log: Logger;
  readonly clock?: Clock;
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The agent: runs one member's postgres and reports it into etcd.
 *
 * Roles are static for now: the bootstrapping member leads, the others clone from the
 * leader and stream from it. The agent is the only writer of its member record and,
 * while primary, of the leader record; both live under its own lease.
 */
export class Agent {
  private readonly keys: ClusterKeys;
  private readonly clock: Clock;
  private readonly log: Logger;
  private etcd: Etcd3 | null = null;
  private leaseKeeper: LeaseKeeper | null = null;
  private bins: PostgresBinaries | null = null;
  private user: OsUser | null = null;
  private postgres: PostgresProcess | null = null;
  private conn: pg.Client | null = null;
  private state: MemberState = 'starting';
  private term = 0;
  private problem: string | null = null;
  private stopping = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private leaderRecord: LeaderRecord | null = null;

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

  /**
   * Starts the member: checks prerequisites and etcd, decides how to start, brings
   * postgres up and begins reporting. Resolves once postgres runs; the report loop
   * continues until {@link stop}.
   *
   * @throws PghaError when a prerequisite is missing, etcd is unreachable, or the
   *   data directory belongs to something else (nothing is changed then).
   */
  async start(): Promise<void> {
    const o = this.options;
    this.bins = await findPostgresBinaries();
    this.user = postgresOsUser();
    this.etcd = createEtcdClient(o.etcd);
    await assertEtcdReachable(this.etcd, o.etcd.endpoints);

    const inspection = inspectDataDir(this.dataDir, o.cluster, o.name);
    const initialize = await this.readInitialize();
    const leader = await this.readLeader();
    const localSystemId = inspection.kind === 'ours' ? await readSystemId(this.bins, this.dataDir, this.user) : null;
    const decision = decideStartup({
      self: o.name,
      dataDir: inspection.kind,
      foreignReason: inspection.foreignReason,
      standby: inspection.kind === 'ours' && isStandby(this.dataDir),
      localSystemId,
      clusterSystemId: initialize?.systemId ?? null,
      leader,
      mayBootstrap: o.mayBootstrap,
    });
    this.log.info(`start-up decision: ${decision.action}${decision.action === 'refuse' ? ` (${decision.reason})` : ''}`);
    if (decision.action === 'refuse') throw new PghaError('conflict', decision.reason);

    makeOwnedDir(o.memberDir, this.user);
    writeOwnedFile(this.passfile, `*:*:*:${replicationUser}:${o.replicationPassword.replace(/([:\\])/g, '\\$1')}\n`, this.user);

    this.leaseKeeper = new LeaseKeeper(this.etcd, o.lease, this.clock);
    this.leaseKeeper.on('expired', () => this.log.warn('etcd reports our lease expired'));
    await this.leaseKeeper.grant();
    this.loop = this.reportLoop();

    switch (decision.action) {
      case 'bootstrap':
        await this.bootstrap();
        break;
      case 'clone':
        await this.cloneAndStart();
        break;
      case 'start-primary':
        if (await this.installLeader(await this.timelineOf())) await this.startPrimary();
        else await this.startReplica();
        break;
      case 'start-replica':
        await this.startReplica();
        break;
      default: {
        const unreachable: never = decision;
        throw new Error(`unhandled decision ${JSON.stringify(unreachable)}`);
      }
    }
    this.setState('running');
  }

  private async timelineOf(): Promise<number> {
    // Before postgres runs, the control file's timeline is what it will start on.
    const { stdout } = await runTool(this.bins!.path('pg_controldata'), ['-D', this.dataDir], {
      user: this.user,
      env: { ...process.env, LC_ALL: 'C' },
    });
    const match = /Latest checkpoint's TimeLineID:\s+(\d+)/.exec(stdout);
    return match ? Number(match[1]) : 1;
  }

  private setState(state: MemberState): void {
    if (this.state !== state) this.log.info(`state ${this.state} -> ${state}`);
    this.state = state;
    this.wake?.();
  }

  private async readInitialize(): Promise<InitializeRecord | null> {
    try {
      const text = await this.client.get(this.keys.initialize).string();
      return text === null ? null : InitializeRecord.decode(text);
    } catch (error) {
      throw castEtcdError(error, this.options.etcd.endpoints, 'reading the initialize record');
    }
  }

  private async readLeader(): Promise<LeaderRecord | null> {
    const text = await this.client.get(this.keys.leader).string();
    return text === null ? null : LeaderRecord.decode(text);
  }

  /**
   * Installs the leader record under our lease together with term+1, in one
   * transaction guarded by "no leader and the term unchanged since we read it"
   * (contract lines 2 and 3). Returns whether we now lead.
   */
  private async installLeader(timeline: number): Promise<boolean> {
    const response = await this.client.get(this.keys.term).exec();
    const kv = response.kvs[0];
    const current = kv === undefined ? 0 : TermRecord.decode(kv.value.toString()).term;
    const term = nextTerm(current);
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
    const guard = this.client.if(this.keys.leader, 'Create', '==', 0);
    const guarded = kv === undefined ? guard.and(this.keys.term, 'Create', '==', 0) : guard.and(this.keys.term, 'Mod', '==', kv.mod_revision);
    const result = await guarded
      .then(
        this.client.put(this.keys.leader).value(LeaderRecord.encode(record)).lease(this.leaseKeeper!.id),
        this.client.put(this.keys.term).value(TermRecord.encode({ v: recordVersion, term })),
      )
      .commit();
    if (!result.succeeded) {
      this.log.info('another member holds the leader record');
      return false;
    }
    this.term = term;
    this.leaderRecord = record;
    this.log.info(`installed the leader record for term ${term}`);
    return true;
  }

  /** Rewrites our leader record (same lease, same term), only while it is still ours. */
  private async updateLeader(changes: Partial<Pick<LeaderRecord, 'writable' | 'timeline'>>): Promise<void> {
    if (this.leaderRecord === null) return;
    const record: LeaderRecord = { ...this.leaderRecord, ...changes };
    const result = await this.client
      .if(this.keys.leader, 'Lease', '==', this.leaseKeeper!.id)
      .then(this.client.put(this.keys.leader).value(LeaderRecord.encode(record)).lease(this.leaseKeeper!.id))
      .commit();
    if (!result.succeeded) throw new PghaError('conflict', 'the leader record is no longer ours');
    this.leaderRecord = record;
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
    if (!(await this.installLeader(1))) {
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

  /** Starts the data directory writable: only ever called while we hold the leader record. */
  private async startPrimary(afterStart?: (conn: pg.Client) => Promise<void>): Promise<void> {
    this.setState('starting');
    writeServerFiles(this.dataDir, this.user, this.serverSettings(null), this.options.allowedNetworks);
    await this.launchPostgres();
    if (afterStart) await afterStart(this.conn!);
    const observation = await observePostgres(this.conn!);
    if (observation.inRecovery) throw new PghaError('postgres-failed', 'postgres started in recovery although this member leads');
    await this.publishInitialize(observation.systemId);
    await this.updateLeader({ writable: true, timeline: observation.timeline ?? 1 });
    this.log.info(`primary is writable (timeline ${observation.timeline}, term ${this.term})`);
  }

  private async publishInitialize(systemId: string): Promise<void> {
    const record: InitializeRecord = { v: recordVersion, member: this.options.name, systemId, at: this.clock.date().toISOString() };
    const result = await this.client
      .if(this.keys.initialize, 'Create', '==', 0)
      .then(this.client.put(this.keys.initialize).value(InitializeRecord.encode(record)))
      .commit();
    if (result.succeeded) this.log.info(`published the cluster's system identifier ${systemId}`);
  }

  /** Waits (bounded only by stop) for a writable leader other than us. */
  private async waitForLeader(): Promise<LeaderRecord> {
    let announced = false;
    while (!this.stopping) {
      const leader = await this.readLeader().catch(() => null);
      if (leader !== null && leader.writable && leader.member !== this.options.name) {
        this.leaderRecord = leader;
        if (leader.term > this.term) this.term = leader.term;
        return leader;
      }
      if (!announced) this.log.info('waiting for a writable primary to follow');
      announced = true;
      await delay(300);
    }
    throw new PghaError('timeout', 'stopped while waiting for a primary');
  }

  private upstreamOf(leader: LeaderRecord): UpstreamSettings {
    return { host: leader.host, port: leader.port, passfile: this.passfile, member: this.options.name };
  }

  private async cloneAndStart(): Promise<void> {
    this.setState('cloning');
    const leader = await this.waitForLeader();
    this.log.info(`base backup from ${leader.member} (${leader.host}:${leader.port})`);
    const started = this.clock.now();
    await baseBackup(this.bins!, this.dataDir, this.user, leader, this.passfile);
    this.log.info(`base backup done in ${((this.clock.now() - started) / 1000).toFixed(1)} s`);
    writeMarker(this.dataDir, this.options.cluster, this.options.name, this.user);
    await this.startAsStandbyOf(leader);
  }

  private async startReplica(): Promise<void> {
    this.setState('starting');
    const leader = await this.waitForLeader();
    markStandby(this.dataDir, this.user);
    await this.startAsStandbyOf(leader);
  }

  private async startAsStandbyOf(leader: LeaderRecord): Promise<void> {
    this.setState('starting');
    writeServerFiles(this.dataDir, this.user, this.serverSettings(this.upstreamOf(leader)), this.options.allowedNetworks);
    await this.launchPostgres();
    this.log.info(`hot standby running, following ${leader.member}`);
  }

  /** Starts the postmaster and waits until it accepts our connection. */
  private async launchPostgres(): Promise<void> {
    const postgres = startPostgres(this.bins!, this.dataDir, this.user, this.logFile);
    this.postgres = postgres;
    postgres.exited.then(() => {
      if (this.postgres === postgres) this.postgres = null;
      if (!this.stopping) {
        this.log.warn(`postgres (pid ${postgres.pid}) exited unexpectedly: ${logTail(this.logFile, 3).replace(/\n/g, ' | ')}`);
        this.problem = 'postgres exited';
        this.setState('failed');
      }
    });
    const deadline = this.clock.now() + 120_000;
    for (;;) {
      if (this.postgres !== postgres) {
        throw new PghaError('postgres-failed', `postgres exited while starting; its log says:\n${logTail(this.logFile)}`);
      }
      try {
        this.conn = await connectLocal({ host: '127.0.0.1', port: this.options.port, password: this.options.superuserPassword });
        await this.conn.query('SELECT 1');
        break;
      } catch (error) {
        await this.conn?.end().catch(() => undefined);
        this.conn = null;
        if (this.clock.now() > deadline) {
          throw new PghaError('postgres-failed', `postgres did not accept connections within 120 s; its log says:\n${logTail(this.logFile)}`, {
            cause: error,
          });
        }
        await delay(100);
      }
    }
    this.problem = null;
  }

  /** Publishes the member record every interval (and at once on state changes). */
  private async reportLoop(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.reportOnce();
      } catch (error) {
        this.log.warn(`report failed: ${(error as Error).message}`);
      }
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

  private async observe(): Promise<PostgresObservation | null> {
    if (this.conn === null || this.postgres === null) return null;
    try {
      return await observePostgres(this.conn);
    } catch (error) {
      this.problem = `postgres does not answer: ${(error as Error).message}`;
      await this.conn.end().catch(() => undefined);
      this.conn = null;
      if (this.postgres !== null) {
        this.conn = await connectLocal({ host: '127.0.0.1', port: this.options.port, password: this.options.superuserPassword }).catch(
          () => null,
        );
      }
      return null;
    }
  }

  private async reportOnce(): Promise<void> {
    const observation = await this.observe();
    const isLeader = this.leaderRecord?.member === this.options.name;
    let primaryLsn: string | null = null;
    if (observation !== null && observation.inRecovery && this.leaderRecord !== null) {
      const text = await this.client.get(this.keys.member(this.leaderRecord.member)).string();
      if (text !== null) primaryLsn = MemberRecord.decode(text).receivedLsn;
    }
    if (observation !== null && !observation.inRecovery && isLeader) await this.ensureSlots();
    const record = buildMemberRecord({
      name: this.options.name,
      host: this.options.host,
      port: this.options.port,
      state: this.state,
      term: this.term,
      tags: this.options.tags,
      observation,
      problem: observation === null && this.state === 'running' ? this.problem : null,
      primaryLsn,
      isLeader,
      now: this.clock.date(),
    });
    await this.client.put(this.keys.member(this.options.name)).value(MemberRecord.encode(record)).lease(this.leaseKeeper!.id);
  }

  /** Keeps a physical slot on the primary for every other member that reports. */
  private async ensureSlots(): Promise<void> {
    const members = await this.client.getAll().prefix(this.keys.membersPrefix).keys();
    const wanted = members
      .map((key) => this.keys.parse(key))
      .flatMap((parsed) => (parsed?.kind === 'member' && parsed.name !== this.options.name ? [slotNameFor(parsed.name)] : []));
    if (wanted.length === 0 || this.conn === null) return;
    await this.conn.query(
      `SELECT pg_create_physical_replication_slot(s, true)
         FROM unnest($1::text[]) AS s
        WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = s)`,
      [wanted],
    );
  }

  /**
   * Stops the member: postgres shuts down (fast), the lease is revoked so the member
   * and leader records vanish at once, and the etcd client closes.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.wake?.();
    this.state = 'stopping';
    await this.loop?.catch(() => undefined);
    if (this.etcd !== null && this.leaseKeeper !== null) {
      await this.client
        .put(this.keys.member(this.options.name))
        .value(
          MemberRecord.encode(
            buildMemberRecord({
              name: this.options.name,
              host: this.options.host,
              port: this.options.port,
              state: 'stopping',
              term: this.term,
              tags: this.options.tags,
              observation: null,
              problem: null,
              primaryLsn: null,
              isLeader: false,
              now: this.clock.date(),
            }),
          ),
        )
        .lease(this.leaseKeeper.id)
        .catch(() => undefined);
    }
    await this.conn?.end().catch(() => undefined);
    this.conn = null;
    await this.postgres?.stop();
    this.postgres = null;
    await this.leaseKeeper?.revoke().catch((error) => this.log.warn(`could not revoke the lease: ${(error as Error).message}`));
    this.etcd?.close();
    this.etcd = null;
    this.log.info('stopped');
  }
}
