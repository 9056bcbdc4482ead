import { setTimeout as delay } from 'node:timers/promises';
import {
  type ClusterKeys,
  InitializeRecord,
  type LeaderRecord,
  type MemberState,
  PghaError,
  recordVersion,
} from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { castEtcdError } from '../adapters/etcd.js';
import type { OsUser } from '../adapters/os-user.js';
import { clearStaleLock, isStandby } from '../adapters/postgres-server.js';
import type { PostgresBinaries } from '../adapters/prerequisites.js';
import type { Clock } from '../clock.js';
import { decideStartup, type StartupDecision } from '../decide/startup.js';
import type { Logger } from '../log.js';
import { inspectDataDir, readSystemId } from './data-dir.js';
import type { Leadership } from './leadership.js';
import type { PostgresMember } from './postgres-member.js';

/** What the start-up paths need from the agent around them. */
export interface StartUpContext {
  readonly name: string;
  readonly cluster: string;
  /** The application role's name (`--app-user`), for the log; null: none. */
  readonly appRoleName: string | null;
  /** Whether this member may run initdb when the cluster was never initialized. */
  readonly mayBootstrap: boolean;
  readonly etcdEndpoints: string | readonly string[];
  readonly keys: ClusterKeys;
  readonly etcd: Etcd3;
  readonly bins: PostgresBinaries;
  readonly user: OsUser | null;
  readonly postgres: PostgresMember;
  readonly leadership: Leadership;
  readonly clock: Clock;
  readonly log: Logger;
  setState(state: MemberState): void;
  isStopping(): boolean;
  /** The writable leader record of another member, from the last read. */
  writableLeaderOtherThanUs(): LeaderRecord | null;
}

/**
 * How a member comes up: the start-up decision (decide/startup.ts) from its data
 * directory, the cluster's system identifier and the leader record, and the paths
 * it picks — bootstrap (initdb under a freshly taken leader record), clone from the
 * primary, or start existing data as a standby — plus starting existing data
 * writable, which the control loop's `restart` as primary also uses.
 */
export class StartUp {
  constructor(private readonly c: StartUpContext) {}

  /**
   * Decides how to start. A leader record naming us from our previous run (whose
   * postgres died with it) is removed first, so the cluster elects at once.
   *
   * @throws PghaError `conflict` when the data directory belongs to something else.
   */
  async decide(): Promise<Exclude<StartupDecision, { action: 'refuse' }>> {
    const { bins, user, name } = this.c;
    const dataDir = this.c.postgres.dataDir;
    const inspection = inspectDataDir(dataDir, this.c.cluster, name);
    // Reads only: retried (bounded) rather than exit on one slow answer from a
    // loaded etcd, as the first call already is (assertEtcdReachable).
    const initialize = await this.patiently(() => this.readInitialize());
    let view = await this.patiently(() => this.c.leadership.read());
    if (view.leader?.member === name && inspection.kind === 'ours') {
      // Only once every process of our previous postmaster is gone.
      await clearStaleLock(dataDir);
      // A leader record naming us that we did not install is our previous run's,
      // whose postgres died with it: remove it so the cluster elects at once
      // instead of after the TTL.
      const removed = await this.c.etcd
        .if(this.c.keys.leader, 'Lease', '==', view.leaderLease ?? '0')
        .then(this.c.etcd.delete().key(this.c.keys.leader))
        .commit();
      if (removed.succeeded) this.c.log.info('removed the leader record of our previous run');
      view = await this.patiently(() => this.c.leadership.read());
    }
    const localSystemId = inspection.kind === 'ours' ? await readSystemId(bins, dataDir, user) : null;
    const decision = decideStartup({
      self: name,
      dataDir: inspection.kind,
      foreignReason: inspection.foreignReason,
      standby: inspection.kind === 'ours' && isStandby(dataDir),
      localSystemId,
      clusterSystemId: initialize?.systemId ?? null,
      leader: view.leader,
      mayBootstrap: this.c.mayBootstrap,
    });
    this.c.log.info(
      `start-up decision: ${decision.action}${decision.action === 'refuse' ? ` (${decision.reason})` : ''}`,
    );
    if (decision.action === 'refuse') throw new PghaError('conflict', decision.reason);
    return decision;
  }

  /** Carries out a start-up decision; resolves once postgres runs (or the loop has taken over). */
  async run(decision: Exclude<StartupDecision, { action: 'refuse' }>): Promise<void> {
    switch (decision.action) {
      case 'bootstrap':
        await this.bootstrap();
        break;
      case 'clone':
        await this.cloneAndStart();
        break;
      case 'start-replica': {
        if (decision.rewind) this.c.postgres.setNeedsRewind(true);
        const leader = this.c.writableLeaderOtherThanUs();
        this.c.setState('starting');
        try {
          await this.c.postgres.startStandby(leader, () => this.c.setState('cloning'));
        } catch (error) {
          // Existing data that cannot start yet (its timeline diverged and there is
          // no primary to rewind onto) is not a reason to exit: the loop restarts it,
          // rewinding first, once a primary appears.
          this.c.log.warn(`postgres did not start: ${(error as Error).message.split('\n')[0]}; retrying from the loop`);
        }
        break;
      }
      default: {
        const unreachable: never = decision;
        throw new Error(`unhandled decision ${JSON.stringify(unreachable)}`);
      }
    }
  }

  private async bootstrap(): Promise<void> {
    if (!(await this.takeLeaderToBootstrap())) {
      this.c.log.info('another member is bootstrapping the cluster; cloning from it instead');
      await this.cloneAndStart();
      return;
    }
    this.c.setState('initializing');
    await this.c.postgres.initdb();
    // On a loaded machine the lease can run out during initdb (measured: load
    // average 25). Nothing has been written yet and nobody else can lead this new
    // cluster's data, so take the record again for a new term rather than exit.
    if (!this.c.leadership.holdsLeader || !this.c.leadership.lease.isValid()) {
      this.c.log.warn('our leader record lapsed during initdb (the lease expired); taking it again');
      if (!(await this.takeLeaderToBootstrap()))
        throw new PghaError(
          'conflict',
          "another member bootstrapped the cluster while our lease had lapsed during initdb; remove this member's data directory so that it clones from the primary",
        );
    }
    await this.startPrimary(true);
  }

  /**
   * Installs the leader record for the next term to bootstrap with. False when another
   * member holds it (it bootstraps, we clone). A failure of our own — our lease expired
   * before the install reached etcd, or etcd did not answer, both measured under load
   * (load average 25) — is retried, bounded: it used to send the only bootstrapping
   * member off to clone from nobody, and the cluster never came up.
   */
  private async takeLeaderToBootstrap(): Promise<boolean> {
    const deadline = this.c.clock.now() + 120_000;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        const view = await this.c.leadership.read().catch(() => null);
        const other = view?.leader;
        if (other != null && other.member !== this.c.name) return false;
      }
      const installed = await this.c.leadership
        .install(this.c.leadership.view.term + 1, 1, null)
        .catch((error: unknown) => {
          this.c.log.warn(`bootstrap: installing the leader record: ${(error as Error).message}`);
          return false;
        });
      if (installed) return true;
      const view = await this.c.leadership.read().catch(() => null);
      if (view?.leader != null && view.leader.member !== this.c.name) return false;
      if (this.c.clock.now() > deadline)
        throw new PghaError(
          'etcd-unavailable',
          'could not take the leader record to bootstrap the cluster within 120 s (our lease kept expiring or etcd did not answer); check that etcd answers promptly',
        );
      this.c.log.warn('bootstrap: the leader record was not installed and no other member holds it; trying again');
      await delay(500);
    }
  }

  /** Starts the data directory writable: only while we hold the leader record. */
  async startPrimary(bootstrap = false): Promise<void> {
    if (!this.c.leadership.holdsLeader || !this.c.leadership.lease.isValid())
      throw new PghaError('conflict', 'refusing to start writable without the leader record');
    this.c.setState('starting');
    const observation = bootstrap
      ? await this.c.leadership.withStartGrace(() => this.c.postgres.startWritable())
      : await this.c.postgres.startWritable();
    if (bootstrap) await this.c.postgres.createReplicationRole();
    await this.ensureAppRole(bootstrap);
    await this.publishInitialize(observation.systemId);
    await this.c.leadership.update({ writable: true, timeline: observation.timeline ?? 1 });
    this.c.log.info(`primary is writable (timeline ${observation.timeline}, term ${this.c.leadership.view.term})`);
  }

  /**
   * Creates the application role when absent. At bootstrap a failure fails the
   * bootstrap (as the replication role's would); on a later writable start of
   * existing data it is only logged: a missing application role must never keep the
   * cluster without a primary. (A promotion needs none: a standby's data already has
   * the role its primary created.)
   */
  private async ensureAppRole(bootstrap: boolean): Promise<void> {
    try {
      const created = await this.c.postgres.ensureAppRole();
      if (created.role) this.c.log.info(`created the application role ${this.c.appRoleName}`);
      if (created.database) this.c.log.info(`created the database ${this.c.appRoleName}`);
    } catch (error) {
      if (bootstrap) throw error;
      this.c.log.error(`could not create the application role: ${(error as Error).message}`);
    }
  }

  private async publishInitialize(systemId: string): Promise<void> {
    const record: InitializeRecord = {
      v: recordVersion,
      member: this.c.name,
      systemId,
      at: this.c.clock.date().toISOString(),
    };
    const result = await this.c.etcd
      .if(this.c.keys.initialize, 'Create', '==', 0)
      .then(this.c.etcd.put(this.c.keys.initialize).value(InitializeRecord.encode(record)))
      .commit();
    if (result.succeeded) this.c.log.info(`published the cluster's system identifier ${systemId}`);
  }

  /** Waits (until stopped) for a writable leader other than us. */
  private async waitForLeader(): Promise<LeaderRecord> {
    let announced = false;
    while (!this.c.isStopping()) {
      await this.c.leadership.read().catch(() => undefined);
      const leader = this.c.writableLeaderOtherThanUs();
      if (leader !== null) return leader;
      if (!announced) this.c.log.info('waiting for a writable primary');
      announced = true;
      await delay(50);
    }
    throw new PghaError('timeout', 'stopped while waiting for a primary');
  }

  private async cloneAndStart(): Promise<void> {
    this.c.setState('cloning');
    const leader = await this.waitForLeader();
    await this.c.postgres.clone(leader);
    this.c.setState('starting');
    await this.c.postgres.startStandby(leader, () => this.c.setState('cloning'));
  }

  /** `read()`, tried again every 250 ms while etcd does not answer, for at most 20 s. */
  private async patiently<T>(read: () => Promise<T>): Promise<T> {
    const deadline = this.c.clock.now() + 20_000;
    for (;;) {
      try {
        return await read();
      } catch (error) {
        const cast = castEtcdError(error, this.c.etcdEndpoints, 'reading the cluster state at start-up');
        if (cast.code !== 'etcd-unavailable' || this.c.clock.now() > deadline) throw cast;
        this.c.log.warn(`${cast.message.split('\n')[0]}; trying again`);
        await delay(250);
      }
    }
  }

  private async readInitialize(): Promise<InitializeRecord | null> {
    try {
      const text = await this.c.etcd.get(this.c.keys.initialize).string();
      return text === null ? null : InitializeRecord.decode(text);
    } catch (error) {
      throw castEtcdError(error, this.c.etcdEndpoints, 'reading the initialize record');
    }
  }
}
