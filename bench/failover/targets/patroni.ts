// The baseline: three Patroni members (Debian's `patroni` package) on loopback,
// with etcd v3 as the DCS, run as the unprivileged postgres OS user.
//
// Configuration is written from Patroni's documented settings; nothing here is
// taken from Patroni's code. Two profiles differ only in the timing triple that
// governs failover: Patroni's defaults, and the smallest values its documentation
// accepts (ttl ≥ 20, loop_wait ≥ 1, retry_timeout ≥ 3, loop_wait + 2·retry_timeout ≤ ttl).
//
// Synchronous mode is Patroni's `synchronous_mode: true` (one synchronous standby:
// `synchronous_node_count` 1, its default; not strict), a dynamic (DCS) setting:
// given at bootstrap in `bootstrap.dcs` for a cluster that starts in it, and changed
// on a running cluster with the REST API's `PATCH /config`, as `patronictl
// edit-config` does.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { type Etcd, startEtcd } from '../lib/etcd.js';
import { freePort } from '../lib/ports.js';
import { postgresBinDir } from '../lib/postgres-bin.js';
import {
  isAlive,
  killAndWait,
  type OsUser,
  pidsMentioning,
  postgresOsUser,
  postmasterPid,
  signalPid,
  spawnDaemon,
  waitFor,
} from '../lib/processes.js';
import { queryOnce, sqlHealth, synchronousStandbys } from '../lib/sql.js';
import type { MemberPids, Mode, Settings, Target, TargetMember } from '../lib/target.js';
import { createWritesTable } from '../lib/writer.js';

/** A Patroni settings profile: the dynamic (DCS) timing settings in seconds. */
export interface PatroniSettings extends Settings {
  readonly ttl: number;
  readonly loopWait: number;
  readonly retryTimeout: number;
}

const profile = (name: string, ttl: number, loopWait: number, retryTimeout: number): PatroniSettings => ({
  name,
  ttl,
  loopWait,
  retryTimeout,
  description: `ttl ${ttl} s, loop_wait ${loopWait} s, retry_timeout ${retryTimeout} s`,
});

export const patroniProfiles: readonly PatroniSettings[] = [
  profile('defaults', 30, 10, 10),
  // Documented minimums: ttl 20, loop_wait 1, retry_timeout 3 (1 + 2·3 ≤ 20 holds).
  profile('tightest', 20, 1, 3),
];

interface PatroniMember extends TargetMember {
  readonly dir: string;
  readonly dataDir: string;
  readonly configFile: string;
  readonly restPort: number;
}

/** Builds the Patroni target. Setup is per profile: a fresh etcd, data and scope each time. */
export function patroniTarget(): Target {
  let dir: string | null = null;
  let etcd: Etcd | null = null;
  let members: PatroniMember[] = [];
  const daemons = new Map<string, number>();
  const everyPid = new Set<number>();
  let user: OsUser | null = null;
  const superuserPassword = randomBytes(12).toString('hex');
  const replicationPassword = randomBytes(12).toString('hex');

  const clientConfig = (m: TargetMember): pg.ClientConfig => ({
    host: m.host,
    port: m.port,
    user: 'postgres',
    password: superuserPassword,
    database: 'postgres',
  });

  const startDaemon = (m: PatroniMember) => {
    const child = spawnDaemon('patroni', [m.configFile], {
      logFile: join(m.dir, 'patroni.log'),
      user,
      cwd: m.dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: m.dir, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
    });
    if (child.pid === undefined) throw new Error('patroni did not start (apt-get install -y patroni)');
    daemons.set(m.name, child.pid);
    everyPid.add(child.pid);
  };

  const pids = (m: TargetMember): MemberPids => {
    const member = members.find((x) => x.name === m.name)!;
    const daemon = daemons.get(m.name) ?? null;
    const postmaster = postmasterPid(member.dataDir);
    if (postmaster !== null) everyPid.add(postmaster);
    return {
      daemon: daemon !== null && isAlive(daemon) ? daemon : null,
      postmaster: postmaster !== null && isAlive(postmaster) ? postmaster : null,
    };
  };

  /** Patroni's own view: a leader, and every member running. */
  const patroniHealth = async (): Promise<string | null> => {
    const m = members[0]!;
    const response = await fetch(`http://127.0.0.1:${m.restPort}/cluster`, { signal: AbortSignal.timeout(1000) });
    const body = (await response.json()) as { members?: { name: string; role: string; state: string }[] };
    const list = body.members ?? [];
    const notRunning = list.filter((x) => x.state !== 'running' && x.state !== 'streaming');
    if (list.length !== members.length || !list.some((x) => x.role === 'leader') || notRunning.length > 0) {
      return `patroni reports ${list.map((x) => `${x.name}=${x.role}/${x.state}`).join(', ') || 'no members'}`;
    }
    return null;
  };

  /** The leader's name and the members Patroni calls `sync_standby`, from its REST API. */
  const patroniRoles = async (): Promise<{ leader: string | null; sync: string[] }> => {
    const m = members[0]!;
    const response = await fetch(`http://127.0.0.1:${m.restPort}/cluster`, { signal: AbortSignal.timeout(1000) });
    const body = (await response.json()) as { members?: { name: string; role: string; state: string }[] };
    const list = body.members ?? [];
    return {
      leader: list.find((x) => x.role === 'leader')?.name ?? null,
      sync: list
        .filter((x) => x.role === 'sync_standby' && (x.state === 'running' || x.state === 'streaming'))
        .map((x) => x.name),
    };
  };

  const waitSynchronous = async (timeoutMillis: number): Promise<void> => {
    await waitFor(
      `Patroni to name a synchronous standby of its leader (logs in ${dir})`,
      async () => {
        const { leader, sync } = await patroniRoles();
        const primary = members.find((x) => x.name === leader);
        if (primary === undefined) throw new Error('no leader');
        if (sync.length === 0) throw new Error(`no member has the sync_standby role (leader ${leader})`);
        const n = await synchronousStandbys(clientConfig(primary));
        if (n === 0) throw new Error(`Patroni names ${sync.join(', ')}, but ${leader} has no synchronous walsender`);
        return true;
      },
      timeoutMillis,
      200,
    );
  };

  const setMode = async (mode: Mode, timeoutMillis: number): Promise<void> => {
    const m = members[0]!;
    const response = await fetch(`http://127.0.0.1:${m.restPort}/config`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ synchronous_mode: mode === 'sync' }),
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok)
      throw new Error(`Patroni refused PATCH /config: HTTP ${response.status} ${await response.text()}`);
    if (mode === 'sync') return waitSynchronous(timeoutMillis);
    await waitFor(
      `the Patroni leader to stop waiting for standbys (logs in ${dir})`,
      async () => {
        const { leader } = await patroniRoles();
        const primary = members.find((x) => x.name === leader);
        if (primary === undefined) throw new Error('no leader');
        const n = await synchronousStandbys(clientConfig(primary));
        if (n > 0) throw new Error(`${leader} still has ${n} synchronous standbys`);
        return true;
      },
      timeoutMillis,
      200,
    );
  };

  const waitHealthy = async (timeoutMillis: number): Promise<TargetMember> => {
    return waitFor(
      `the Patroni cluster to be healthy (logs in ${dir})`,
      async () => {
        const sql = await sqlHealth(members, clientConfig);
        if ('problem' in sql) throw new Error(sql.problem);
        const problem = await patroniHealth();
        if (problem !== null) throw new Error(problem);
        return sql.primary;
      },
      timeoutMillis,
      200,
    );
  };

  const teardown = async () => {
    const root = dir;
    // The daemons first, so none of them restarts a postgres we are about to stop.
    await killAndWait([...daemons.values()], 'SIGKILL', 2000);
    const postmasters = members.map((m) => postmasterPid(m.dataDir)).filter((p): p is number => p !== null);
    const leftovers = root === null ? [] : pidsMentioning(root);
    // SIGQUIT is postgres's immediate shutdown: it takes its children down with it.
    await killAndWait([...new Set([...postmasters, ...leftovers, ...everyPid])].filter(isAlive), 'SIGQUIT', 5000);
    await etcd?.stop();
    etcd = null;
    daemons.clear();
    if (root !== null) rmSync(root, { recursive: true, force: true });
    dir = null;
  };

  return {
    system: 'patroni',
    profiles: patroniProfiles,
    get logDir() {
      return dir;
    },
    async setup(settings: Settings, mode: Mode) {
      const s = settings as PatroniSettings;
      if (dir !== null) await teardown();
      user = postgresOsUser();
      const bin = postgresBinDir();
      dir = mkdtempSync('/tmp/bench-patroni-');
      chmodSync(dir, 0o711);
      etcd = await startEtcd(dir);
      const scope = `bench-${s.name}-${randomBytes(3).toString('hex')}`;
      members = [];
      for (let i = 0; i < 3; i++) {
        const name = `patroni${i}`;
        const memberDir = join(dir, name);
        mkdirSync(memberDir, { mode: 0o700 });
        const port = await freePort();
        const restPort = await freePort();
        const m: PatroniMember = {
          name,
          host: '127.0.0.1',
          port,
          restPort,
          dir: memberDir,
          dataDir: join(memberDir, 'data'),
          configFile: join(memberDir, 'patroni.yml'),
        };
        // JSON is YAML: Patroni reads this file with a YAML loader.
        const config = {
          scope,
          namespace: '/bench/',
          name,
          log: { level: 'INFO' },
          restapi: { listen: `127.0.0.1:${restPort}`, connect_address: `127.0.0.1:${restPort}` },
          etcd3: { hosts: [etcd.hostPort] },
          bootstrap: {
            dcs: {
              ttl: s.ttl,
              loop_wait: s.loopWait,
              retry_timeout: s.retryTimeout,
              maximum_lag_on_failover: 1048576,
              // Patroni's synchronous mode: one synchronous standby (synchronous_node_count
              // 1), not strict, like pgha's quorum 1 without synchronousStrict.
              synchronous_mode: mode === 'sync',
              synchronous_node_count: 1,
              // pg_rewind is what lets a failed primary rejoin by itself; without it
              // Patroni would leave it down and the rejoin metric would not exist.
              postgresql: { use_pg_rewind: true, use_slots: true },
            },
            initdb: [{ encoding: 'UTF8' }, 'data-checksums'],
          },
          postgresql: {
            listen: `127.0.0.1:${port}`,
            connect_address: `127.0.0.1:${port}`,
            data_dir: m.dataDir,
            bin_dir: bin.dir,
            pgpass: join(memberDir, 'pgpass'),
            authentication: {
              superuser: { username: 'postgres', password: superuserPassword },
              replication: { username: 'replicator', password: replicationPassword },
            },
            parameters: { unix_socket_directories: memberDir },
            pg_hba: [
              'local all all trust',
              'host all all 127.0.0.1/32 scram-sha-256',
              'host replication replicator 127.0.0.1/32 scram-sha-256',
            ],
            remove_data_directory_on_rewind_failure: true,
            remove_data_directory_on_diverged_timelines: true,
          },
          watchdog: { mode: 'off' },
        };
        writeFileSync(m.configFile, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
        if (user !== null) {
          chownSync(memberDir, user.uid, user.gid);
          chownSync(m.configFile, user.uid, user.gid);
        }
        members.push(m);
      }
      for (const m of members) startDaemon(m);
      const primary = await waitHealthy(180_000);
      if (mode === 'sync') await waitSynchronous(60_000);
      await queryOnce(clientConfig(primary), createWritesTable, [], 10_000);
      await waitHealthy(60_000);
      return members;
    },
    setMode,
    waitSynchronous,
    pids,
    clientConfig,
    async hostLoss(m) {
      const { daemon, postmaster } = pids(m);
      if (daemon === null || postmaster === null)
        throw new Error(`${m.name} is not running (patroni ${daemon}, postmaster ${postmaster})`);
      signalPid(daemon, 'SIGKILL');
      signalPid(postmaster, 'SIGKILL');
    },
    async postgresCrash(m) {
      const { postmaster } = pids(m);
      if (postmaster === null) throw new Error(`${m.name} has no running postmaster`);
      signalPid(postmaster, 'SIGKILL');
    },
    switchover(primary) {
      const m = members.find((x) => x.name === primary.name)!;
      return new Promise((resolve, reject) => {
        execFile(
          'patronictl',
          ['-c', m.configFile, 'switchover', '--leader', primary.name, '--force'],
          { timeout: 120_000, killSignal: 'SIGKILL', env: { ...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' } },
          (error, stdout, stderr) => {
            if (error !== null) reject(new Error(`patronictl switchover failed: ${error.message}\n${stdout}${stderr}`));
            else if (!/switched over|successfully/i.test(stdout))
              reject(new Error(`patronictl switchover did not confirm: ${stdout}${stderr}`));
            else resolve();
          },
        );
      });
    },
    async restartHost(m) {
      const member = members.find((x) => x.name === m.name)!;
      const old = daemons.get(m.name);
      if (old !== undefined && isAlive(old)) throw new Error(`patroni of ${m.name} is still running`);
      startDaemon(member);
    },
    waitHealthy,
    teardown,
  };
}
