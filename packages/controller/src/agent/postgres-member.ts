import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { type LeaderRecord, PghaError } from '@pgha/core';
import type pg from 'pg';
import type { OsUser } from '../adapters/os-user.js';
import { observePostgres, type PostgresObservation } from '../adapters/postgres-observe.js';
import {
  baseBackup,
  clearStaleLock,
  connectLocal,
  controlData,
  initdb,
  isStandby,
  logTail,
  markStandby,
  moveAside,
  type PostgresProcess,
  readCheckpointLocation,
  rewind,
  startPostgres,
  writeOwnedFile,
  writeServerFiles,
} from '../adapters/postgres-server.js';
import type { PostgresBinaries } from '../adapters/prerequisites.js';
import type { Clock } from '../clock.js';
import type { PostgresState } from '../decide/agent-role.js';
import {
  type ReplicationConnection,
  renderSynchronousStandbyNames,
  type SynchronousSetting,
} from '../decide/synchronous-standbys.js';
import type { Logger } from '../log.js';
import { readPem } from './api-tls.js';
import {
  type AppRole,
  appDatabaseExistsSql,
  appRoleExistsSql,
  createAppDatabaseSql,
  createAppRoleSql,
} from './app-role.js';
import { writeMarker } from './data-dir.js';
import {
  maxWalSenders,
  replicationUser,
  type ServerSettings,
  type ServerTlsFiles,
  superUser,
  syncfsAvailable,
  type UpstreamSettings,
} from './postgres-config.js';
import { passwordForSql } from './scram-verifier.js';
import {
  configuredFloorValues,
  decideStartParameters,
  describeRaised,
  type FloorValues,
  floorParameters,
  highestOf,
  insufficientSettings,
  parseControlDataSettings,
  parseInsufficientSettings,
  type RaisedSetting,
} from './standby-parameters.js';

/** What {@link PostgresMember} needs besides the binaries. */
export interface PostgresMemberOptions {
  readonly cluster: string;
  readonly name: string;
  readonly memberDir: string;
  readonly listenAddresses: string;
  readonly port: number;
  readonly superuserPassword: string;
  readonly replicationPassword: string;
  /** The application role to create on a writable start (`--app-user`); null: none. */
  readonly appRole: AppRole | null;
  readonly allowedNetworks: readonly string[];
  readonly sharedBuffers: string;
  readonly maxConnections: number;
  /**
   * TLS (`--ssl-cert`, `--ssl-key`, `--ssl-ca`): postgres serves TLS with copies of
   * these files, pg_hba.conf accepts only TLS, and every connection to another member
   * (replication, base backup, pg_rewind, the agent's own) verifies its certificate
   * against the CA (`sslmode=verify-full`). Null: none.
   */
  readonly tls: PostgresTlsFiles | null;
  /** Extra postgresql.conf settings, written after pgha's own (never one of them). */
  readonly postgresParameters: Readonly<Record<string, string>>;
  /** Client-side bound on every query of the agent's own connection (a hung postgres must not hang the agent). */
  readonly queryTimeoutMillis: number;
  readonly bins: PostgresBinaries;
  readonly user: OsUser | null;
  readonly log: Logger;
  readonly clock: Clock;
  /** Called when postgres exits on its own (crash, kill) and when it starts or stops being writable. */
  readonly onChange: () => void;
}

/** The files of `--ssl-cert`, `--ssl-key`, `--ssl-ca` (PEM), where the operator keeps them. */
export interface PostgresTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
}

/** The member a standby streams from. */
export interface Upstream {
  readonly member: string;
  readonly host: string;
  readonly port: number;
}

/** File in the member directory: the data was writable since it last followed anyone, rewind before following. */
const needsRewindFile = 'needs-rewind';

/** Log lines of a standby that cannot follow the timeline it was pointed at: its data must be rewound. */
const divergedPatterns = [
  /requested timeline \d+ does not contain minimum recovery point/,
  /requested timeline \d+ is not a child of this server's history/,
  /new timeline \d+ forked off current database system timeline \d+ before current recovery point/,
  /could not start WAL streaming: ERROR:\s+requested starting point .* is ahead of the WAL flush position/,
];

/**
 * One member's postgres: its process, its data directory and the agent's own
 * connection to it. Every step of its life — initdb, base backup, rewind, start as
 * primary or standby, promote, re-point, stop, and the fence's kill — lives here;
 * *whether* to take a step is decided elsewhere (decide/agent-role.ts) and the
 * agent's control loop calls these.
 *
 * `state` is the agent's label for what postgres is doing. `primary` means "may be
 * writable": it is set before `pg_promote` is sent and before a primary start, so
 * the fence covers those steps too.
 */
export class PostgresMember {
  private process: PostgresProcess | null = null;
  private pgState: PostgresState = 'down';
  private connection: pg.Client | null = null;
  /** Unexpected exits since postgres last ran healthy for a while. */
  crashes = 0;
  private runningSince = 0;
  /** Why postgres is not answering, or another problem to report. */
  problem: string | null = null;
  /** The member our standby configuration streams from. */
  upstream: Upstream | null = null;
  /** The floor the running standby started with (a re-point's reload rewrites pgha.conf with it). */
  private floor: Partial<FloorValues> = {};
  /** Values a standby that stopped named in its log as the primary's (the control data's fallback). */
  private stoppedFor: Partial<FloorValues> = {};
  /** What `synchronous_standby_names` says (managed by the primary's agent; none on a standby). */
  private synchronousSetting: SynchronousSetting = { standbys: [], quorum: 0 };

  /**
   * The extra settings pgha.conf carries: `--postgres-parameter`, then the cluster
   * settings' parameters (agent/cluster-settings.ts), which may change while postgres runs.
   */
  private extra: Readonly<Record<string, string>>;

  /** The CA's PEM text for the agent's own TLS connections (read by {@link installCertificates}). */
  private caPem: string | null = null;

  constructor(private readonly o: PostgresMemberOptions) {
    this.extra = o.postgresParameters;
  }

  /**
   * The copies postgres reads (beside the data directory, owned by postgres's OS user,
   * mode 0600: postgres refuses a key others can read); null without TLS.
   */
  get tlsFiles(): ServerTlsFiles | null {
    if (this.o.tls === null) return null;
    return {
      certFile: join(this.o.memberDir, 'server.crt'),
      keyFile: join(this.o.memberDir, 'server.key'),
      caFile: join(this.o.memberDir, 'root.crt'),
    };
  }

  /**
   * Copies the TLS files where postgres reads them, owned by its OS user (the agent
   * may run as root and the operator's files be root's). Called at every agent start,
   * so replaced certificates take effect at the next start.
   *
   * @throws PghaError `invalid-option` naming the flag whose file cannot be read.
   */
  installCertificates(): void {
    const from = this.o.tls;
    const to = this.tlsFiles;
    if (from === null || to === null) return;
    const read = readPem;
    const cert = read(from.certFile, '--ssl-cert');
    const key = read(from.keyFile, '--ssl-key');
    const ca = read(from.caFile, '--ssl-ca');
    writeOwnedFile(to.certFile, cert, this.o.user);
    writeOwnedFile(to.keyFile, key, this.o.user);
    writeOwnedFile(to.caFile, ca, this.o.user);
    this.caPem = ca;
  }

  /** TLS for a connection of the agent's: host-verified to another member, chain-only on loopback. */
  private clientTls(verifyHost: boolean): { ca: string; verifyHost: boolean } | null {
    if (this.o.tls === null) return null;
    if (this.caPem === null) this.caPem = readFileSync(this.tlsFiles!.caFile, 'utf8');
    return { ca: this.caPem, verifyHost };
  }

  get dataDir(): string {
    return join(this.o.memberDir, 'data');
  }

  get passfile(): string {
    return join(this.o.memberDir, 'pgpass');
  }

  get logFile(): string {
    return join(this.o.memberDir, 'postgres.log');
  }

  get state(): PostgresState {
    return this.pgState;
  }

  /** The postmaster's PID (also its process group), or null when none runs. */
  get pid(): number | null {
    return this.process?.pid ?? null;
  }

  get conn(): pg.Client | null {
    return this.connection;
  }

  // ---- the needs-rewind flag --------------------------------------------------

  setNeedsRewind(value: boolean): void {
    const file = join(this.o.memberDir, needsRewindFile);
    if (value) writeOwnedFile(file, `${new Date().toISOString()}\n`, this.o.user);
    else rmSync(file, { force: true });
  }

  needsRewind(): boolean {
    return existsSync(join(this.o.memberDir, needsRewindFile));
  }

  // ---- the fence --------------------------------------------------------------

  /**
   * Kills postgres's whole process group at once and makes sure the data can only
   * come back as a rewound standby. Synchronous up to the kill: nothing can be
   * acknowledged after it returns. Filesystem errors after the kill are logged,
   * never thrown (the fence has already done its job).
   */
  fenceKill(reason: string): void {
    const postgres = this.process;
    if (postgres === null) {
      // Nothing runs: only the label can be wrong; it must not stay "primary".
      this.pgState = 'down';
      return;
    }
    this.o.log.warn(`FENCING: ${reason}; killing postgres (process group ${postgres.pid})`);
    postgres.killGroup();
    this.process = null;
    this.pgState = 'down';
    this.connection?.end().catch(() => undefined);
    this.connection = null;
    this.crashes = 0;
    this.problem = `fenced: ${reason}`;
    try {
      this.setNeedsRewind(true);
      markStandby(this.dataDir, this.o.user);
    } catch (error) {
      this.o.log.error(`after the fence: could not mark the data directory: ${(error as Error).message}`);
    }
  }

  // ---- starting ---------------------------------------------------------------

  private serverSettings(upstream: UpstreamSettings | null, floor: Partial<FloorValues>): ServerSettings {
    return {
      member: this.o.name,
      listenAddresses: this.o.listenAddresses,
      port: this.o.port,
      sharedBuffers: this.o.sharedBuffers,
      maxConnections: this.o.maxConnections,
      extraParameters: this.extra,
      floor,
      upstream,
      synchronousStandbyNames: renderSynchronousStandbyNames(this.synchronousSetting),
      ssl: this.tlsFiles,
      syncfs: this.syncfs,
    };
  }

  /**
   * Whether data is written back a file system at a time: postgres's start-up sync
   * (`recovery_init_sync_method`) and, after pg_basebackup or pg_rewind with
   * --no-sync, the agent's own `syncfs` (adapters/file-system-sync.ts). An operator's
   * `recovery_init_sync_method = fsync` (`--postgres-parameter`) turns both back to
   * file-by-file fsync.
   */
  private get syncfs(): boolean {
    return syncfsAvailable(process.platform, this.o.bins.major, this.extra);
  }

  /**
   * The five settings the primary last recorded in this data directory's control file
   * (kept current by replay), plus any a standby that stopped named in its log; {} when
   * the control data cannot be read (postgres then says what is wrong).
   */
  private async recordedSettings(): Promise<Partial<FloorValues>> {
    let recorded: Partial<FloorValues> = {};
    try {
      recorded = parseControlDataSettings(await controlData(this.o.bins, this.dataDir, this.o.user));
    } catch (error) {
      this.o.log.warn(`could not read the control data: ${(error as Error).message.split('\n')[0]}`);
    }
    return highestOf(recorded, this.stoppedFor);
  }

  private upstreamOf(leader: Pick<LeaderRecord, 'host' | 'port'>): UpstreamSettings {
    return {
      host: leader.host,
      port: leader.port,
      passfile: this.passfile,
      member: this.o.name,
      sslRootCert: this.tlsFiles?.caFile ?? null,
    };
  }

  /** initdb into the data directory (through data.partial: an interrupted one never looks like data). */
  async initdb(): Promise<void> {
    this.o.log.info(`initdb into ${this.dataDir} (PostgreSQL ${this.o.bins.version})`);
    await initdb(this.o.bins, this.dataDir, this.o.user, this.o.superuserPassword);
    writeMarker(this.dataDir, this.o.cluster, this.o.name, this.o.user);
  }

  /** Creates the replication role (bootstrap, on the new primary). */
  async createReplicationRole(): Promise<void> {
    const conn = this.connection!;
    // A verifier, not the password: postgres logs a failed statement's text.
    const password = conn.escapeLiteral(passwordForSql(this.o.replicationPassword));
    await conn.query(`CREATE ROLE ${replicationUser} WITH REPLICATION LOGIN PASSWORD ${password}`);
  }

  /**
   * Creates the application role and its database, each only when absent (a bootstrap,
   * or a primary on data that predates `--app-user`). An existing role keeps its
   * password: pgha does not reset what an operator may have changed. Returns what it
   * created.
   */
  async ensureAppRole(): Promise<{ role: boolean; database: boolean }> {
    const role = this.o.appRole;
    if (role === null) return { role: false, database: false };
    const conn = this.connection!;
    const created = { role: false, database: false };
    if ((await conn.query(appRoleExistsSql, [role.name])).rowCount === 0) {
      await conn.query(createAppRoleSql(role, conn));
      created.role = true;
    }
    // CREATE DATABASE cannot run inside a transaction or DO block: checked, then run.
    if ((await conn.query(appDatabaseExistsSql, [role.name])).rowCount === 0) {
      await conn.query(createAppDatabaseSql(role, conn));
      created.database = true;
    }
    return created;
  }

  /**
   * Starts the data directory writable. The caller must hold the leader record (and
   * a valid lease) for the current term: this method does not check.
   */
  async startWritable(): Promise<PostgresObservation> {
    rmSync(join(this.dataDir, 'standby.signal'), { force: true });
    this.setNeedsRewind(false);
    // A primary starts with its configured values, lower ones included: they reach
    // the standbys through WAL (XLOG_PARAMETER_CHANGE).
    this.floor = {};
    writeServerFiles(this.dataDir, this.o.user, this.serverSettings(null, {}), this.o.allowedNetworks);
    this.upstream = null;
    await this.launch('primary');
    const observation = await observePostgres(this.connection!);
    if (observation.inRecovery)
      throw new PghaError('postgres-failed', 'postgres started in recovery although this member leads');
    return observation;
  }

  /** A base backup from `leader` into the data directory (through data.partial). */
  async clone(leader: LeaderRecord): Promise<void> {
    this.o.log.info(`base backup from ${leader.member} (${leader.host}:${leader.port})`);
    const started = this.o.clock.now();
    await baseBackup(
      this.o.bins,
      this.dataDir,
      this.o.user,
      leader,
      this.passfile,
      undefined,
      this.tlsFiles?.caFile ?? null,
      this.syncfs,
    );
    this.o.log.info(`base backup done in ${((this.o.clock.now() - started) / 1000).toFixed(1)} s`);
    writeMarker(this.dataDir, this.o.cluster, this.o.name, this.o.user);
    this.setNeedsRewind(false);
  }

  /**
   * Starts postgres as a standby of `leader` (or of nobody yet). Data that was last
   * writable is first rewound onto the leader's timeline (pg_rewind), or re-cloned
   * when rewinding fails; a standby that cannot start on the leader's history is
   * re-cloned. `onCloning` lets the caller report the state.
   */
  async startStandby(leader: LeaderRecord | null, onCloning: () => void): Promise<void> {
    const rewound = leader !== null && (this.needsRewind() || !isStandby(this.dataDir));
    if (rewound) await this.rewindOnto(leader, onCloning);
    await this.configureStandby(leader);
    try {
      await this.launch('replica');
    } catch (error) {
      if (leader === null) {
        // Nothing to rewind onto yet: remember that the data may have diverged, so
        // the first leader it follows rewinds it first.
        if (this.divergedInLog()) this.setNeedsRewind(true);
        throw error;
      }
      this.o.log.warn(
        `standby did not start (${(error as Error).message.split('\n')[0]}); re-cloning from ${leader.member}`,
      );
      onCloning();
      moveAside(this.dataDir);
      await this.clone(leader);
      await this.configureStandby(leader);
      await this.launch('replica');
    }
    this.o.log.info(
      leader === null
        ? 'standby running, no primary to follow yet'
        : `standby running, following ${leader.member}${rewound ? ' (rewound)' : ''}`,
    );
  }

  /**
   * Writes the standby's configuration for a start: its settings raised to what the
   * primary last recorded in the control data (after any rewind or clone, which bring
   * the source's), so recovery never aborts for "insufficient parameter settings".
   */
  private async configureStandby(leader: LeaderRecord | null): Promise<void> {
    const { overrides, raised } = decideStartParameters({
      as: 'standby',
      configured: configuredFloorValues({
        maxConnections: this.o.maxConnections,
        maxWalSenders,
        extraParameters: this.extra,
      }),
      recorded: await this.recordedSettings(),
    });
    const line = describeRaised(raised);
    if (line !== null) this.o.log.info(line);
    this.floor = overrides;
    this.writeStandbyFiles(leader);
  }

  private writeStandbyFiles(leader: LeaderRecord | null): void {
    markStandby(this.dataDir, this.o.user);
    // A standby waits for nobody; a promotion sets what it waits for first.
    this.synchronousSetting = { standbys: [], quorum: 0 };
    writeServerFiles(
      this.dataDir,
      this.o.user,
      this.serverSettings(leader === null ? null : this.upstreamOf(leader), this.floor),
      this.o.allowedNetworks,
    );
    this.upstream = leader === null ? null : { member: leader.member, host: leader.host, port: leader.port };
  }

  /** Whether postgres's log says this standby cannot follow the timeline it was given (its data diverged). */
  divergedInLog(): boolean {
    const tail = logTail(this.logFile, 20);
    return divergedPatterns.some((p) => p.test(tail));
  }

  private async rewindOnto(leader: LeaderRecord, onCloning: () => void): Promise<void> {
    const started = this.o.clock.now();
    try {
      this.o.log.info(`pg_rewind onto ${leader.member} (timeline ${leader.timeline})`);
      await clearStaleLock(this.dataDir);
      // pg_rewind reads the source's timeline from its control file, which a fast
      // promotion updates only at the next checkpoint: without one it may see "the
      // same timeline" and rewind nothing.
      await this.checkpointOn(leader);
      await rewind(
        this.o.bins,
        this.dataDir,
        this.o.user,
        leader,
        this.passfile,
        this.tlsFiles?.caFile ?? null,
        this.syncfs,
      );
      this.o.log.info(`pg_rewind done in ${((this.o.clock.now() - started) / 1000).toFixed(1)} s`);
      await this.flushWalOn(leader);
    } catch (error) {
      this.o.log.warn(`pg_rewind failed; taking a fresh base backup instead. ${(error as Error).message}`);
      onCloning();
      moveAside(this.dataDir);
      await this.clone(leader);
    }
    writeMarker(this.dataDir, this.o.cluster, this.o.name, this.o.user);
    this.setNeedsRewind(false);
  }

  private async checkpointOn(leader: LeaderRecord): Promise<void> {
    const client = await connectLocal(
      { host: leader.host, port: leader.port, password: this.o.superuserPassword, tls: this.clientTls(true) },
      5000,
    );
    try {
      await client.query('CHECKPOINT');
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Makes the leader flush its WAL past the point this rewind must replay to. pg_rewind
   * sets the rewound standby's minimum recovery point to the source's WAL *insert*
   * position, which can lie past what the source has flushed (a running-xacts record
   * its bgwriter wrote, left in the WAL buffers while nothing commits), and a walsender
   * sends flushed WAL only: the standby then refuses connections ("consistent recovery
   * state has not been yet reached") until the primary flushes more, seen taking 10 s
   * in a failover test. A commit flushes everything before it: one tiny transaction that
   * takes an xid, committed locally (no wait for synchronous standbys), costs a commit
   * record — not a CHECKPOINT's I/O. Best effort: without it the standby only waits.
   */
  private async flushWalOn(leader: LeaderRecord): Promise<void> {
    let client: pg.Client | null = null;
    try {
      client = await connectLocal(
        { host: leader.host, port: leader.port, password: this.o.superuserPassword, tls: this.clientTls(true) },
        5000,
      );
      await client.query('BEGIN');
      await client.query('SET LOCAL synchronous_commit = local');
      await client.query('SELECT txid_current()');
      await client.query('COMMIT');
    } catch (error) {
      this.o.log.warn(
        `could not make ${leader.member} flush its WAL after pg_rewind (${(error as Error).message}); this standby may wait for its next WAL flush before it accepts connections`,
      );
    } finally {
      await client?.end().catch(() => undefined);
    }
  }

  private connectOwn(timeoutMillis: number): Promise<pg.Client> {
    return connectLocal(
      { host: '127.0.0.1', port: this.o.port, password: this.o.superuserPassword, tls: this.clientTls(false) },
      timeoutMillis,
      this.o.queryTimeoutMillis,
    );
  }

  /** Starts the postmaster and waits until it accepts our connection. */
  private async launch(as: 'primary' | 'replica'): Promise<void> {
    await clearStaleLock(this.dataDir);
    this.runningSince = 0;
    const postgres = startPostgres(this.o.bins, this.dataDir, this.o.user, this.logFile);
    this.process = postgres;
    this.pgState = as === 'primary' ? 'primary' : 'starting';
    this.o.onChange();
    postgres.exited.then(() => this.exited(postgres)).catch(() => undefined);
    const deadline = this.o.clock.now() + 120_000;
    for (;;) {
      if (this.process !== postgres) {
        await delay(100); // let its last log lines reach the file
        throw new PghaError(
          'postgres-failed',
          `postgres exited while starting; its log says:\n${logTail(this.logFile)}`,
        );
      }
      try {
        this.connection = await this.connectOwn(3000);
        await this.connection.query('SELECT 1');
        break;
      } catch (error) {
        await this.connection?.end().catch(() => undefined);
        this.connection = null;
        if (this.o.clock.now() > deadline) {
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
    this.stoppedFor = {};
    this.runningSince = this.o.clock.now();
    this.problem = null;
  }

  private exited(postgres: PostgresProcess): void {
    if (this.process !== postgres) return;
    try {
      if (this.pgState !== 'primary')
        // A standby that stopped for "insufficient parameter settings": the values its
        // log names are the next start's floor too, should the control data lag.
        this.stoppedFor = highestOf(this.stoppedFor, parseInsufficientSettings(logTail(this.logFile, 20)));
      if (this.pgState === 'primary') this.setNeedsRewind(true);
      // A standby that stopped because it cannot follow its timeline must be rewound
      // (or re-cloned) before it can follow anyone: never left to fail again.
      else if (this.divergedInLog()) {
        this.o.log.warn('postgres cannot follow the timeline it was given: its data will be rewound');
        this.setNeedsRewind(true);
      }
    } catch (error) {
      this.o.log.error(`after postgres exited: ${(error as Error).message}`);
    }
    this.process = null;
    this.pgState = 'down';
    // A postgres that ran for a while before this exit restarted fine last time:
    // count from 1 again. Exits during start-up (or right after) keep counting, so a
    // restart that cannot work ends in releasing the leader record.
    const ranFor = this.runningSince === 0 ? 0 : this.o.clock.now() - this.runningSince;
    this.crashes = ranFor > 1000 ? 1 : this.crashes + 1;
    this.o.log.warn(
      `postgres (pid ${postgres.pid}) exited unexpectedly: ${logTail(this.logFile, 3).replace(/\n/g, ' | ')}`,
    );
    this.problem = 'postgres exited';
    this.o.onChange();
  }

  // ---- running ----------------------------------------------------------------

  /** One status query on the agent's connection; null when postgres does not answer. */
  async observe(): Promise<PostgresObservation | null> {
    if (this.process === null) return null;
    if (this.connection === null) {
      this.connection = await this.connectOwn(1000).catch(() => null);
      if (this.connection === null) {
        this.problem = 'postgres does not accept connections';
        return null;
      }
    }
    try {
      const observation = await observePostgres(this.connection);
      if (this.pgState === 'starting') this.pgState = observation.inRecovery ? 'replica' : 'primary';
      return observation;
    } catch (error) {
      this.problem = `postgres does not answer: ${(error as Error).message}`;
      await this.dropConnection();
      return null;
    }
  }

  /**
   * Whether postgres accepts a *new* connection (through the postmaster: a stopped
   * postmaster with live backends fails this) and answers it as writable, within
   * `timeoutMillis` on our own clock.
   */
  async probeWritable(timeoutMillis: number): Promise<boolean> {
    if (this.process === null) return false;
    let client: pg.Client | null = null;
    try {
      client = await connectLocal(
        { host: '127.0.0.1', port: this.o.port, password: this.o.superuserPassword, tls: this.clientTls(false) },
        timeoutMillis,
        timeoutMillis,
      );
      const { rows } = await client.query('SELECT pg_is_in_recovery() AS r');
      return rows[0]?.r === false;
    } catch {
      return false;
    } finally {
      void client?.end().catch(() => undefined);
    }
  }

  private async dropConnection(): Promise<void> {
    const conn = this.connection;
    this.connection = null;
    await conn?.end().catch(() => undefined);
  }

  /**
   * `pg_promote` and the wait until postgres leaves recovery. The state is
   * `primary` from the moment the request is sent, so the fence covers the
   * promotion itself. The caller holds the leader record for the new term.
   */
  async promote(): Promise<PostgresObservation> {
    const started = this.o.clock.now();
    // A postgres that died before the promotion cannot be labelled writable: the
    // label must never name a process that does not exist.
    if (this.process === null || this.connection === null)
      throw new PghaError('postgres-failed', 'cannot promote: postgres is not running');
    this.pgState = 'primary';
    this.o.onChange();
    // Already out of recovery (a promotion whose "writable" update was lost is being
    // finished): pg_promote would fail on a primary.
    const { rows: before } = await this.connection.query('SELECT pg_is_in_recovery() AS r');
    let requested = this.o.clock.now();
    if (before[0]?.r === true) await this.connection.query('SELECT pg_promote(false)');
    for (;;) {
      const { rows } = await this.connection!.query('SELECT pg_is_in_recovery() AS r');
      if (rows[0]?.r === false) break;
      const now = this.o.clock.now();
      if (now - started > 60_000) throw new PghaError('timeout', 'postgres did not leave recovery within 60 s');
      // PostgreSQL can sleep through the request: when it arrives while the startup
      // process waits out wal_retrieve_retry_interval after its walreceiver lost the
      // upstream (a switchover's target, just after the old primary's clean
      // shutdown), the startup process waited once more, the whole interval (1 s),
      // before ending recovery. Asking again wakes it.
      if (now - requested >= 100) {
        requested = now;
        await this.connection!.query('SELECT pg_promote(false)').catch(() => undefined);
      }
      await delay(5);
    }
    // A request repeated as recovery ended leaves its signal file: postgres ignores it
    // outside recovery and deletes it at its next start; delete it now all the same.
    rmSync(join(this.dataDir, 'promote'), { force: true });
    this.upstream = null;
    return observePostgres(this.connection!);
  }

  /** Keeps a physical slot for each of `members` (on the primary). */
  async ensureSlots(slots: readonly string[]): Promise<void> {
    if (slots.length === 0 || this.connection === null) return;
    await this.connection.query(
      `SELECT pg_create_physical_replication_slot(s, true)
         FROM unnest($1::text[]) AS s
        WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = s)`,
      [slots],
    );
  }

  /** The replication slots (null when postgres is not connected). */
  async listSlots(): Promise<{ name: string; type: 'physical' | 'logical'; active: boolean }[] | null> {
    if (this.connection === null) return null;
    const { rows } = await this.connection.query<{ name: string; type: 'physical' | 'logical'; active: boolean }>(
      'SELECT slot_name AS name, slot_type AS type, active FROM pg_replication_slots',
    );
    return rows;
  }

  /**
   * Drops a physical slot only if nothing streams from it, in one statement (a
   * walsender attaching between a check and the drop would make the drop fail, not
   * take the slot from under it). True when it was dropped.
   */
  async dropInactiveSlot(slot: string): Promise<boolean> {
    if (this.connection === null) return false;
    try {
      const { rowCount } = await this.connection.query(
        `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
          WHERE slot_name = $1 AND slot_type = 'physical' AND NOT active`,
        [slot],
      );
      return (rowCount ?? 0) > 0;
    } catch (error) {
      // 55006 object_in_use: it became active in between.
      if ((error as { code?: string }).code === '55006') return false;
      throw error;
    }
  }

  /**
   * The settings this running standby has less of than the primary recorded, read
   * when its replay is paused: PostgreSQL (14 and later) pauses a hot standby's
   * replay at an XLOG_PARAMETER_CHANGE record that raises one above its own value
   * ("hot standby is not possible because of insufficient parameter settings"), and
   * replay has already written the new values into the control file. Empty when it
   * is paused for another reason (pg_wal_replay_pause by hand), which is left alone.
   */
  async pausedForSettings(): Promise<RaisedSetting[]> {
    const conn = this.connection;
    if (conn === null || this.pgState !== 'replica') return [];
    const { rows } = await conn.query(
      `SELECT ${floorParameters.map((n) => `current_setting('${n}')::int AS ${n}`).join(', ')}`,
    );
    const running = rows[0] as FloorValues;
    return insufficientSettings(running, await this.recordedSettings());
  }

  /**
   * Replaces the extra settings (the cluster settings changed) and, while postgres
   * runs, rewrites pgha.conf with them — keeping the upstream and the floor this start
   * used — and reloads. Returns whether postgres was reloaded (false: not running; its
   * next start writes them).
   */
  async applyExtraParameters(parameters: Readonly<Record<string, string>>): Promise<boolean> {
    this.extra = parameters;
    const conn = this.connection;
    if (this.process === null || conn === null) return false;
    const up = this.upstream;
    const upstream = up === null ? null : this.upstreamOf(up);
    writeServerFiles(this.dataDir, this.o.user, this.serverSettings(upstream, this.floor), this.o.allowedNetworks);
    await conn.query('SELECT pg_reload_conf()');
    return true;
  }

  /**
   * What postgres makes of its configuration files: the parameters whose new value
   * waits for a restart (`pg_settings.pending_restart`), and the settings it refuses
   * (`pg_file_settings.error`, other than "could not be applied" for those). Null when
   * postgres does not answer.
   */
  async configurationState(): Promise<{
    pendingRestart: string[];
    refused: Array<{ name: string; error: string }>;
  } | null> {
    const conn = this.connection;
    if (conn === null) return null;
    const pending = await conn.query<{ name: string }>(
      'SELECT name FROM pg_settings WHERE pending_restart ORDER BY name',
    );
    const refused = await conn.query<{ name: string; error: string }>(
      "SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL AND name IS NOT NULL AND error <> 'setting could not be applied' ORDER BY name",
    );
    return { pendingRestart: pending.rows.map((r) => r.name), refused: refused.rows };
  }

  /** What `synchronous_standby_names` says now. */
  get synchronous(): SynchronousSetting {
    return this.synchronousSetting;
  }

  /**
   * Sets `synchronous_standby_names` (pgha.conf, then a reload) and waits until a new
   * backend sees it: the postmaster has reloaded, and every process it starts from
   * now on (a walsender, a backend) has the setting. Running walsenders reload on
   * their own; the caller checks their `sync_priority` before relying on it.
   */
  async applySynchronous(setting: SynchronousSetting): Promise<void> {
    this.synchronousSetting = setting;
    writeServerFiles(
      this.dataDir,
      this.o.user,
      this.serverSettings(this.upstream === null ? null : this.upstreamOf(this.upstream), this.floor),
      this.o.allowedNetworks,
    );
    if (this.connection === null) return;
    const wanted = renderSynchronousStandbyNames(setting);
    // What postgres runs with now (a backend takes a pending reload before its next
    // command). When it is already the wanted value, every backend started from now
    // on has it whenever the reload lands: no fresh connection needed to confirm it
    // (a promotion in asynchronous mode, every time; it saves a connection's setup).
    const running = await this.connection
      .query<{ synchronous_standby_names: string }>('SHOW synchronous_standby_names')
      .then((r) => r.rows[0]?.synchronous_standby_names ?? null)
      .catch(() => null);
    await this.connection.query('SELECT pg_reload_conf()');
    if (running === wanted) return;
    const deadline = this.o.clock.now() + 5000;
    for (;;) {
      let seen: string | null = null;
      const client = await connectLocal(
        { host: '127.0.0.1', port: this.o.port, password: this.o.superuserPassword, tls: this.clientTls(false) },
        1000,
        1000,
      ).catch(() => null);
      if (client !== null) {
        try {
          const { rows } = await client.query('SHOW synchronous_standby_names');
          seen = (rows[0] as { synchronous_standby_names: string }).synchronous_standby_names;
        } catch {
          // try again
        } finally {
          void client.end().catch(() => undefined);
        }
      }
      if (seen === wanted) return;
      if (this.o.clock.now() > deadline)
        throw new PghaError('timeout', `postgres did not take synchronous_standby_names '${wanted}' within 5 s`);
      await delay(20);
    }
  }

  /** The walsenders (`pg_stat_replication`); null when postgres is not connected. */
  async replicationConnections(): Promise<ReplicationConnection[] | null> {
    if (this.connection === null) return null;
    const { rows } = await this.connection.query<{
      member: string;
      state: string;
      flush: string | null;
      priority: number;
    }>(
      `SELECT application_name AS member, state, flush_lsn::text AS flush, sync_priority AS priority
         FROM pg_stat_replication`,
    );
    return rows.map((r) => ({ member: r.member, state: r.state, flushLsn: r.flush, syncPriority: r.priority }));
  }

  /** Re-points a running standby at `leader` with a reload (no restart). */
  async repoint(leader: LeaderRecord): Promise<void> {
    // The settings a reload cannot change keep the values this start used.
    this.writeStandbyFiles(leader);
    await this.connection?.query('SELECT pg_reload_conf()');
  }

  /**
   * Stops postgres (fast shutdown: connected standbys receive everything up to the
   * shutdown checkpoint). When it was writable, the data is marked as a standby that
   * needs a rewind first, so nothing can restart it writable by itself. Returns the
   * shutdown checkpoint's location when the shutdown was clean (null otherwise).
   */
  async stop(): Promise<string | null> {
    const postgres = this.process;
    const wasWritable = this.pgState === 'primary';
    // Stop counting as running first so neither the fence nor the exit handler
    // treats this shutdown as a failure.
    this.process = null;
    this.pgState = 'down';
    this.o.onChange();
    await this.dropConnection();
    if (wasWritable) {
      markStandby(this.dataDir, this.o.user);
      this.setNeedsRewind(true);
    }
    if (postgres === null) return null;
    const clean = await postgres.stop();
    if (!clean) return null;
    return readCheckpointLocation(this.o.bins, this.dataDir, this.o.user).catch(() => null);
  }
}

export { superUser };
