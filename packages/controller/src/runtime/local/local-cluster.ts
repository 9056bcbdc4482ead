import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertValidName, type ConfigRecord, clusterKeys, LeaderRecord, memberName, PghaError } from '@pgha/core';
import { assertEtcdReachable, castEtcdError, createEtcdClient, type EtcdConnection } from '../../adapters/etcd.js';
import { applyEtcdAccess } from '../../adapters/etcd-auth.js';
import { postgresOsUser } from '../../adapters/os-user.js';
import { assertPortsFree } from '../../adapters/ports.js';
import { findEtcdBinary, findPostgresBinaries } from '../../adapters/prerequisites.js';
import { spawnOwned, stopChild } from '../../adapters/processes.js';
import { readWritebackLimits, writebackAdvice } from '../../adapters/writeback-limits.js';
import { newApiSecret } from '../../agent/failsafe.js';
import { apiUrl } from '../../agent/health-server.js';
import { etcdConnectionEnv } from '../../cli/etcd-options.js';
import { decideEtcdAccess, etcdUser } from '../../decide/etcd-permissions.js';
import type { Logger, LogLevel } from '../../log.js';
import { type CertificateFiles, ensureCertificates, type TlsLayout } from './certificates.js';
import { type EtcdServer, startEtcdServer } from './etcd-server.js';
import { waitUntilUp } from './start-up-wait.js';
import { assertReachableBy, type LocalClusterState, randomPassword, readState, writeState } from './state-dir.js';
import { describeSynchronous, type SynchronousFlags, settleStoredSettings } from './stored-settings.js';

/** Options of {@link startLocalCluster} (the `pgha up` flags). */
export interface LocalClusterOptions {
  /** Defaults to the state directory's cluster, else `pgha`. */
  readonly cluster?: string;
  /** Defaults to the state directory's count, else 3. */
  readonly members?: number;
  readonly stateDir: string;
  /** First postgres port; member i listens on basePort + i. Default 5432 (or the state's). */
  readonly basePort?: number;
  /** Use this etcd instead of starting one. */
  readonly etcd?: string;
  /**
   * TLS files and credentials for the etcd given by `etcd` (every process of the
   * cluster uses them; the agents and controllers get them through PGHA_ETCD_*
   * variables, never on their command line).
   */
  readonly etcdAuth?: Omit<EtcdConnection, 'endpoints'>;
  /**
   * `pgha up --secure`: generate a CA and certificates under `<state-dir>/tls/`, run
   * etcd with TLS and client-certificate authentication, one etcd user per process
   * with the least rights it needs (decide/etcd-permissions.ts). Remembered in the
   * state directory: undefined means as stored (insecure for a new one); true on a
   * cluster created without it is refused.
   */
  readonly secure?: boolean;
  /** Client port of the etcd pgha starts (peer port is the next one). Default 2379. */
  readonly etcdPort?: number;
  /**
   * First health API port: member i serves it on apiBasePort + i, at its host. Default:
   * none (`pgha up` passes 8008).
   */
  readonly apiBasePort?: number;
  /**
   * First metrics port of the controllers: controller i serves
   * `http://127.0.0.1:<metricsBasePort + i>/metrics`. Default: none (`pgha up` passes
   * the health API's base + 1000).
   */
  readonly metricsBasePort?: number;
  readonly keyRoot?: string;
  /** Lease TTL handed to the agents and controllers. */
  readonly leaseTtlMillis?: number;
  /** Keepalive interval and fencing margin handed to the agents. */
  readonly keepaliveIntervalMillis?: number;
  readonly fencingMarginMillis?: number;
  /**
   * Synchronous replication settings given explicitly (`pgha up --synchronous`,
   * `--synchronous-count`, `--synchronous-strict`): stored in the cluster's `config`
   * record when it is created, and changed in it when they differ. Absent: keep the
   * stored ones (`off` for a new cluster).
   */
  readonly synchronous?: SynchronousFlags;
  /** The lag bound stored when the cluster's `config` record is created. Default 16 MiB. */
  readonly maximumLagOnFailoverBytes?: number;
  /** How many controllers to run (one is active, the others stand by). Default 1. */
  readonly controllers?: number;
  /** Restart an agent or controller that exits unexpectedly, as Kubernetes restarts a pod. Default true. */
  readonly supervise?: boolean;
  /** Delay before restarting a process that died (doubling while it keeps dying). Default 500 ms. */
  readonly restartDelayMillis?: number;
  /**
   * Where a member runs (tests: a network namespace of its own). `netns` runs the
   * agent (and so its postgres) through `ip netns exec NETNS`; `host` is the address
   * it advertises and listens on. Default: this host's loopback, 127.0.0.1.
   */
  readonly placement?: (name: string) => { readonly netns?: string; readonly host?: string } | undefined;
  /** Extra arguments for every agent (tests: --report-interval-millis, --no-failover per member is via memberArgs). */
  readonly memberArgs?: (name: string) => readonly string[];
  /**
   * The application role every agent creates when absent (`--app-user`), with its
   * password (handed over as PGHA_APP_PASSWORD, never on the command line). Default none.
   */
  readonly appRole?: { readonly name: string; readonly password: string };
  /**
   * TLS for every member's PostgreSQL and agent API (`pgha up --secure`): certificates
   * under `<state-dir>/tls/` (runtime/local/certificates.ts; kept across restarts),
   * handed to each agent as `--ssl-cert/--ssl-key/--ssl-ca` and
   * `--api-cert/--api-key/--api-ca`. Default false.
   */
  readonly memberTls?: boolean;
  /** How long to wait for every member to run. Default 300 s. */
  readonly readyTimeoutMillis?: number;
  readonly log: Logger;
  /**
   * The agents' and controllers' `--log-level`. Their files under `logs/` are JSON
   * lines (`--log-format json`, whatever PGHA_LOG_FORMAT says). Default info.
   */
  readonly logLevel?: LogLevel;
  /** Called with one line per visible step (member states, readiness). */
  readonly progress?: (line: string) => void;
  /** Aborting stops the start-up and everything it started (Ctrl-C during bootstrap). */
  readonly signal?: AbortSignal;
}

/** A member as the local runtime started it. */
export interface LocalMember {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly memberDir: string;
  /** Its health API (`http://host:port`), null when it serves none. */
  readonly api: string | null;
  /** The agent's PID (it changes when the agent is restarted). */
  readonly agentPid: () => number | undefined;
  readonly logFile: string;
}

/** A running local cluster. */
export interface LocalCluster {
  readonly cluster: string;
  readonly stateDir: string;
  readonly etcdEndpoint: string;
  /** PID of the etcd pgha started, or null when an external etcd is used. */
  readonly etcdPid: number | null;
  /**
   * With `secure`: the certificates, and the connection of each etcd user (the
   * read-only client's is what a Pool or `pgha status` needs). Null otherwise.
   */
  readonly tls: {
    readonly layout: TlsLayout;
    /** The client certificate of etcd user `user` (`<cluster>-client`, `<cluster>-admin`, ...). */
    readonly client: (user: string) => CertificateFiles;
    /** The etcd connection as `user` (default the read-only `<cluster>-client`). */
    readonly connection: (user?: string) => EtcdConnection;
  } | null;
  readonly keyRoot: string | undefined;
  readonly members: readonly LocalMember[];
  /** Each controller's metrics URL (`http://127.0.0.1:port/metrics`), by index; empty without metricsBasePort. */
  readonly controllerMetrics: readonly string[];
  /** The member that was the writable primary when the cluster came up (not necessarily the first: a restart keeps the last primary). */
  readonly primaryAtStart: string;
  /** The cluster's stored settings (`config` record) as they were when the agents started. */
  readonly settings: ConfigRecord;
  readonly superuserPassword: string;
  /**
   * The CA file clients verify the members' certificates with (`<state-dir>/tls/ca.crt`),
   * null without {@link LocalClusterOptions.memberTls}.
   */
  readonly caFile: string | null;
  /**
   * `postgresql://` URL of `member` (the superuser; for local use); with TLS it carries
   * `sslmode=verify-full&sslrootcert=<caFile>`. `withPassword` false leaves the
   * password out (for printing beside {@link passfile}).
   */
  connectionString(member: string, withPassword?: boolean): string;
  /**
   * With {@link LocalClusterOptions.memberTls}: `<state-dir>/pgpass` (mode 0600), a
   * libpq passfile holding the superuser's password, so nothing printed has to;
   * null otherwise.
   */
  readonly passfile: string | null;
  /** Stops one member's agent (SIGTERM: it stops postgres and revokes its lease). */
  stopMember(name: string): Promise<void>;
  /** Starts a stopped (or held) member's agent again, unless it runs. */
  startMember(name: string): void;
  /** Keeps a member from being restarted when its agent dies (a host that stays down). */
  hold(name: string): void;
  /** PIDs of the controller processes (undefined while one is down). */
  controllerPids(): Array<number | undefined>;
  /** Stops controller `index` (SIGTERM) without restarting it. */
  stopController(index: number): Promise<void>;
  /** Starts controller `index` again. */
  startController(index: number): void;
  /** Stops every agent, then etcd (if pgha started it). Idempotent. */
  stop(): Promise<void>;
  /** Resolves when stop() has finished. */
  readonly stopped: Promise<void>;
}

/** The package's built CLI, which runs the agents. */
export function cliPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === '@pgha/controller') {
      const cli = join(dir, 'dist', 'cli.js');
      if (!existsSync(cli)) throw new PghaError('missing-prerequisite', `${cli} is missing: run \`pnpm build\` first`);
      return cli;
    }
    const parent = dirname(dir);
    if (parent === dir)
      throw new PghaError('missing-prerequisite', 'cannot find the @pgha/controller package directory');
    dir = parent;
  }
}

/**
 * Starts a local cluster: etcd (unless one is given), then one agent process per
 * member, and waits until the primary is writable and every replica streams.
 * Running it again on the same state directory brings the same cluster back.
 *
 * Checks everything it can before starting anything: binaries, the state
 * directory's owner, free ports, etcd reachability.
 */
export async function startLocalCluster(options: LocalClusterOptions): Promise<LocalCluster> {
  const progress = options.progress ?? (() => undefined);
  const stateDir = resolve(options.stateDir);
  if (options.cluster !== undefined) assertValidName('cluster', options.cluster);
  const previous = readState(stateDir, options.cluster);
  const cluster = options.cluster ?? previous?.cluster ?? 'pgha';
  const members = options.members ?? previous?.members ?? 3;
  if (!Number.isInteger(members) || members < 1 || members > 9) {
    throw new PghaError('invalid-option', `--members must be a whole number from 1 to 9, got ${members}`);
  }
  const basePort = options.basePort ?? previous?.basePort ?? 5432;
  if (!Number.isInteger(basePort) || basePort < 1024 || basePort + members - 1 > 65535) {
    throw new PghaError(
      'invalid-option',
      `--port must leave room for ${members} ports between 1024 and 65535, got ${basePort}`,
    );
  }
  const apiBasePort = options.apiBasePort;
  if (
    apiBasePort !== undefined &&
    (!Number.isInteger(apiBasePort) || apiBasePort < 1024 || apiBasePort + members - 1 > 65535)
  ) {
    throw new PghaError(
      'invalid-option',
      `--api-port must leave room for ${members} ports between 1024 and 65535 (or be 0: none), got ${apiBasePort}`,
    );
  }
  const metricsBasePort = options.metricsBasePort;
  const controllers = options.controllers ?? 1;
  if (
    metricsBasePort !== undefined &&
    (!Number.isInteger(metricsBasePort) || metricsBasePort < 1024 || metricsBasePort + controllers - 1 > 65535)
  ) {
    throw new PghaError(
      'invalid-option',
      `--metrics-port must leave room for ${controllers} ports between 1024 and 65535 (or be 0: none), got ${metricsBasePort}`,
    );
  }
  const ownEtcd = options.etcd === undefined;
  if (options.secure === true && previous !== null && previous.secure !== true) {
    throw new PghaError(
      'conflict',
      `the cluster in ${stateDir} was created without --secure, and pgha up cannot secure an existing cluster yet: run it without --secure, or start a new cluster with --secure in another --state-dir`,
    );
  }
  const secure = options.secure === true || previous?.secure === true;
  if (secure && !ownEtcd) {
    throw new PghaError(
      'invalid-option',
      '--secure starts its own etcd with TLS and authentication, so it cannot be combined with --etcd: for an existing etcd, set up its users with `pgha etcd-auth` and pass --etcd-ca, --etcd-cert and --etcd-key (or --etcd-user) instead',
    );
  }
  const etcdPort = ownEtcd ? (options.etcdPort ?? previous?.etcdPort ?? 2379) : null;

  // Prerequisites first: fail before anything is written or started.
  await findPostgresBinaries();
  if (ownEtcd) findEtcdBinary();
  const user = postgresOsUser();
  assertReachableBy(stateDir, user);
  const names = Array.from({ length: members }, (_, i) => memberName(cluster, i));
  await assertPortsFree([
    ...names.map((name, i) => ({ port: basePort + i, use: `postgres of ${name}` })),
    ...(apiBasePort === undefined
      ? []
      : names.map((name, i) => ({ port: apiBasePort + i, use: `the health API of ${name} (--api-port)` }))),
    ...(metricsBasePort === undefined
      ? []
      : Array.from({ length: controllers }, (_, i) => ({
          port: metricsBasePort + i,
          use: `the metrics of controller ${i} (--metrics-port)`,
        }))),
    ...(etcdPort === null
      ? []
      : [
          { port: etcdPort, use: 'etcd clients' },
          { port: etcdPort + 1, use: 'etcd peers' },
        ]),
  ]);
  if (!ownEtcd) {
    const probe = createEtcdClient({ endpoints: options.etcd!, ...options.etcdAuth }, 3000);
    try {
      await assertEtcdReachable(probe, options.etcd!);
    } finally {
      probe.close();
    }
  }

  const state: LocalClusterState = previous ?? {
    v: 1,
    cluster,
    members,
    basePort,
    etcdPort,
    superuserPassword: randomPassword(),
    replicationPassword: randomPassword(),
    createdAt: new Date().toISOString(),
  };
  writeState(stateDir, { ...state, members, basePort, etcdPort, ...(secure ? { secure: true } : {}) });
  const logDir = join(stateDir, 'logs');
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  // The members' shared API secret (failsafe mode's authenticated requests), kept
  // for the next `pgha up`; only this user reads it.
  const apiSecretFile = join(stateDir, 'api-secret');
  if (!existsSync(apiSecretFile)) writeFileSync(apiSecretFile, `${newApiSecret()}\n`, { mode: 0o600 });

  const hostOf = (name: string) => options.placement?.(name)?.host ?? '127.0.0.1';
  // Certificates: with --secure for etcd, PostgreSQL and the API; with memberTls alone
  // for PostgreSQL and the API (etcd stays plain).
  let memberLayout: TlsLayout | null = null;
  if (secure || options.memberTls === true) {
    const ensured = ensureCertificates({
      stateDir,
      cluster,
      members: names.map((name) => ({ name, host: hostOf(name) })),
      postgresUser: user,
    });
    memberLayout = ensured.layout;
    if (ensured.generated.length > 0)
      progress(
        `wrote ${ensured.generated.length} certificates and keys to ${memberLayout.dir} (CA: ${memberLayout.ca.cert})`,
      );
  }
  /** The certificates etcd and its clients use: only with --secure. */
  const layout = secure ? memberLayout : null;
  const tlsAs = (etcdUserName: string) =>
    layout === null
      ? undefined
      : {
          caFile: layout.ca.cert,
          certFile: layout.client(etcdUserName).cert,
          keyFile: layout.client(etcdUserName).key,
        };

  let etcdServer: EtcdServer | null = null;
  if (ownEtcd) {
    progress(`starting etcd on 127.0.0.1:${etcdPort}${secure ? ' (TLS, client certificates)' : ''}`);
    // Its data shares the disk with postgres's: say so when the kernel's write-back
    // limits let fsyncs stall behind gigabytes (docs/failure-modes.md).
    const limits = readWritebackLimits();
    const advice = limits === null ? null : writebackAdvice(limits);
    if (advice !== null) progress(advice);
    etcdServer = await startEtcdServer({
      dataDir: join(stateDir, 'etcd'),
      clientPort: etcdPort!,
      peerPort: etcdPort! + 1,
      logFile: join(logDir, 'etcd.log'),
      detached: true,
      name: `${cluster}-etcd`,
      ...(layout === null
        ? {}
        : {
            tls: {
              certFile: layout.etcd.cert,
              keyFile: layout.etcd.key,
              caFile: layout.ca.cert,
              probe: tlsAs('root')!,
            },
          }),
    });
  }
  const etcdEndpoint = etcdServer?.endpoint ?? options.etcd!;
  /** The connection of etcd user `name` (secure), else the one given for everything. */
  const connectionAs = (name: string): EtcdConnection =>
    layout === null ? { endpoints: etcdEndpoint, ...options.etcdAuth } : { endpoints: etcdEndpoint, tls: tlsAs(name) };
  const adminConnection = connectionAs(etcdUser.admin(cluster));
  if (secure) {
    // Users and roles on every start (idempotent): a member added since gets its own.
    const root = createEtcdClient(connectionAs('root'), 5000);
    try {
      const result = await applyEtcdAccess(
        root,
        decideEtcdAccess(cluster, clusterKeys(cluster, options.keyRoot), names),
        {
          enable: true,
        },
      );
      if (result.created.length > 0) progress(`etcd: created ${result.created.join(', ')}; authentication on`);
    } catch (error) {
      await etcdServer?.stop();
      throw castEtcdError(error, etcdEndpoint, 'setting up etcd users and roles');
    } finally {
      root.close();
    }
  }
  // The settings are stored before any agent starts: agents take their lease timing
  // from the record at start.
  let settings: ConfigRecord;
  {
    const etcd = createEtcdClient(adminConnection, 5000);
    try {
      settings = await settleStoredSettings(
        etcd,
        clusterKeys(cluster, options.keyRoot),
        {
          leaseTtlMillis: options.leaseTtlMillis,
          keepaliveIntervalMillis: options.keepaliveIntervalMillis,
          fencingMarginMillis: options.fencingMarginMillis,
          maximumLagOnFailoverBytes: options.maximumLagOnFailoverBytes,
        },
        options.synchronous ?? {},
        progress,
      ).catch((error) => {
        throw castEtcdError(error, etcdEndpoint, 'storing the cluster settings');
      });
    } catch (error) {
      await etcdServer?.stop();
      throw error;
    } finally {
      etcd.close();
    }
  }
  progress(describeSynchronous(settings));
  if (settings.synchronousMode !== 'off' && settings.synchronousCount > members - 1)
    progress(
      `warning: synchronousCount ${settings.synchronousCount} needs at least ${settings.synchronousCount + 1} members, and this cluster has ${members}: ${settings.synchronousStrict ? 'commits will wait' : 'replication degrades to asynchronous'} (change it with pgha config set synchronousCount=N)`,
    );
  const cli = cliPath();
  const agents = new Map<string, ChildProcess>();
  // PostgreSQL and API TLS: always with --secure; alone (etcd stays plain) with memberTls.
  const certificates =
    memberLayout === null
      ? null
      : new Map(
          names.map((name) => [
            name,
            {
              postgresCert: memberLayout.postgres(name).cert,
              postgresKey: memberLayout.postgres(name).key,
              apiCert: memberLayout.api(name).cert,
              apiKey: memberLayout.api(name).key,
              ca: memberLayout.ca.cert,
            },
          ]),
        );
  const caFile = memberLayout === null ? null : memberLayout.ca.cert;
  const passfile = certificates === null ? null : join(stateDir, 'pgpass');
  if (passfile !== null)
    writeFileSync(passfile, `*:*:*:postgres:${state.superuserPassword.replace(/([:\\])/g, '\\$1')}\n`, {
      mode: 0o600,
    });
  const memberList: LocalMember[] = names.map((name, i) => ({
    name,
    host: hostOf(name),
    port: basePort + i,
    memberDir: join(stateDir, name),
    api: apiBasePort === undefined ? null : apiUrl(hostOf(name), apiBasePort + i, certificates !== null),
    agentPid: () => agents.get(name)?.pid,
    logFile: join(logDir, `${name}.log`),
  }));

  const supervise = options.supervise ?? true;
  const held = new Set<string>(); // members and controllers stopped on purpose
  const restarts = new Map<string, { count: number; last: number }>();
  let shuttingDown = false;
  const restartLater = (key: string, start: () => void) => {
    if (!supervise || shuttingDown || held.has(key)) return;
    const r = restarts.get(key) ?? { count: 0, last: 0 };
    // Back off when a process keeps dying: 0.5 s, doubling to 10 s; reset after 30 s up.
    r.count = Date.now() - r.last > 30_000 ? 1 : r.count + 1;
    r.last = Date.now();
    restarts.set(key, r);
    const base = options.restartDelayMillis ?? 500;
    const wait = Math.min(Math.max(10_000, base), base * 2 ** (r.count - 1));
    progress(`${key} exited; restarting in ${(wait / 1000).toFixed(1)} s`);
    setTimeout(() => {
      if (!shuttingDown && !held.has(key)) start();
    }, wait).unref();
  };
  const logArgs = ['--log-format', 'json', '--log-level', options.logLevel ?? 'info'];
  const controllerProcs: Array<ChildProcess | undefined> = [];
  const startController = (index: number) => {
    const args = [cli, 'controller', '--cluster', cluster, '--etcd', etcdEndpoint, ...logArgs];
    if (options.keyRoot !== undefined) args.push('--key-root', options.keyRoot);
    if (options.leaseTtlMillis !== undefined) args.push('--lease-ttl-millis', String(options.leaseTtlMillis));
    if (metricsBasePort !== undefined) args.push('--metrics-port', String(metricsBasePort + index));
    const child = spawnOwned(process.execPath, args, {
      logFile: join(logDir, `controller-${index}.log`),
      detached: true,
      env: { ...process.env, ...etcdConnectionEnv(connectionAs(etcdUser.controller(cluster))) },
    });
    controllerProcs[index] = child;
    child.once('exit', () => {
      if (controllerProcs[index] === child) controllerProcs[index] = undefined;
      restartLater(`controller-${index}`, () => startController(index));
    });
  };

  const startAgent = (member: LocalMember, index: number) => {
    const args = [
      cli,
      'agent',
      '--cluster',
      cluster,
      '--name',
      member.name,
      '--member-dir',
      member.memberDir,
      '--host',
      member.host,
      '--port',
      String(member.port),
      '--etcd',
      etcdEndpoint,
      ...logArgs,
    ];
    if (index === 0) args.push('--bootstrap');
    if (apiBasePort !== undefined) args.push('--api-port', String(apiBasePort + index));
    args.push('--api-secret-file', apiSecretFile);
    const files = certificates?.get(member.name);
    if (files !== undefined)
      // File paths only: no secret is ever on an agent's command line.
      args.push(
        '--ssl-cert',
        files.postgresCert,
        '--ssl-key',
        files.postgresKey,
        '--ssl-ca',
        files.ca,
        '--api-cert',
        files.apiCert,
        '--api-key',
        files.apiKey,
        '--api-ca',
        files.ca,
      );
    if (options.keyRoot !== undefined) args.push('--key-root', options.keyRoot);
    if (options.leaseTtlMillis !== undefined) args.push('--lease-ttl-millis', String(options.leaseTtlMillis));
    if (options.keepaliveIntervalMillis !== undefined)
      args.push('--keepalive-interval-millis', String(options.keepaliveIntervalMillis));
    if (options.fencingMarginMillis !== undefined)
      args.push('--fencing-margin-millis', String(options.fencingMarginMillis));
    args.push(...(options.memberArgs?.(member.name) ?? []));
    const netns = options.placement?.(member.name)?.netns;
    const [command, argv] =
      netns === undefined ? [process.execPath, args] : ['ip', ['netns', 'exec', netns, process.execPath, ...args]];
    const child = spawnOwned(command, argv, {
      logFile: member.logFile,
      detached: true,
      env: {
        ...process.env,
        ...etcdConnectionEnv(connectionAs(etcdUser.member(cluster, member.name))),
        PGHA_SUPERUSER_PASSWORD: state.superuserPassword,
        PGHA_REPLICATION_PASSWORD: state.replicationPassword,
        ...(options.appRole === undefined
          ? {}
          : { PGHA_APP_USER: options.appRole.name, PGHA_APP_PASSWORD: options.appRole.password }),
      },
    });
    agents.set(member.name, child);
    child.once('exit', () => {
      if (agents.get(member.name) === child && !ready) return; // start-up failures are reported, not retried
      restartLater(member.name, () => startAgent(member, index));
    });
    return child;
  };
  let ready = false;

  let stopping: Promise<void> | null = null;
  let resolveStopped: () => void = () => undefined;
  const stopped = new Promise<void>((r) => {
    resolveStopped = r;
  });
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      shuttingDown = true;
      // Controllers first (no failover while the cluster shuts down), then the
      // replicas, then the primary: no one hands over to a member that is leaving.
      await Promise.all(
        controllerProcs.map((child) => (child === undefined ? undefined : stopChild(child, 'SIGTERM', 10_000))),
      );
      let leaderName: string | null = null;
      const probe = createEtcdClient(adminConnection, 2000);
      try {
        const text = await probe.get(clusterKeys(cluster, options.keyRoot).leader).string();
        leaderName = text === null ? null : LeaderRecord.decode(text).member;
      } catch {
        leaderName = null;
      } finally {
        probe.close();
      }
      await Promise.all(
        [...agents].filter(([name]) => name !== leaderName).map(([, child]) => stopChild(child, 'SIGTERM', 60_000)),
      );
      await Promise.all(
        [...agents].filter(([name]) => name === leaderName).map(([, child]) => stopChild(child, 'SIGTERM', 60_000)),
      );
      await etcdServer?.stop();
      resolveStopped();
    })();
    return stopping;
  };

  memberList.forEach(startAgent);
  for (let i = 0; i < controllers; i++) startController(i);

  const etcd = createEtcdClient(adminConnection);
  let primaryAtStart: string;
  try {
    primaryAtStart = await waitUntilUp({
      etcd,
      etcdEndpoint,
      keys: clusterKeys(cluster, options.keyRoot),
      names,
      agents,
      logFileOf: (name) => memberList.find((m) => m.name === name)!.logFile,
      timeoutMillis: options.readyTimeoutMillis ?? 300_000,
      logDir,
      signal: options.signal,
      progress,
    });
  } catch (error) {
    etcd.close();
    await stop();
    throw error;
  }
  etcd.close();
  ready = true;

  return {
    cluster,
    stateDir,
    etcdEndpoint,
    etcdPid: etcdServer?.pid ?? null,
    tls: ((l) =>
      l === null
        ? null
        : {
            layout: l,
            client: (name: string) => l.client(name),
            connection: (name = etcdUser.client(cluster)) => connectionAs(name),
          })(layout),
    keyRoot: options.keyRoot,
    members: memberList,
    primaryAtStart,
    settings,
    superuserPassword: state.superuserPassword,
    caFile,
    passfile,
    connectionString(member: string, withPassword = true) {
      const m = memberList.find((x) => x.name === member);
      if (m === undefined) throw new PghaError('invalid-option', `no member ${member} in ${cluster}`);
      const tls = caFile === null ? '' : `?sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`;
      const password = withPassword ? `:${encodeURIComponent(state.superuserPassword)}` : '';
      return `postgresql://postgres${password}@${m.host}:${m.port}/postgres${tls}`;
    },
    async stopMember(name: string) {
      held.add(name);
      const child = agents.get(name);
      if (child !== undefined) await stopChild(child, 'SIGTERM', 60_000);
    },
    startMember(name: string) {
      const index = memberList.findIndex((m) => m.name === name);
      if (index < 0) throw new PghaError('invalid-option', `no member ${name} in ${cluster}`);
      held.delete(name);
      const current = agents.get(name);
      if (current !== undefined && current.exitCode === null && current.signalCode === null) return;
      startAgent(memberList[index]!, index);
    },
    hold(name: string) {
      held.add(name);
    },
    controllerMetrics:
      metricsBasePort === undefined
        ? []
        : Array.from({ length: controllers }, (_, i) => `http://127.0.0.1:${metricsBasePort + i}/metrics`),
    controllerPids: () => controllerProcs.map((c) => c?.pid),
    async stopController(index: number) {
      held.add(`controller-${index}`);
      const child = controllerProcs[index];
      if (child !== undefined) await stopChild(child, 'SIGTERM', 10_000);
    },
    startController(index: number) {
      held.delete(`controller-${index}`);
      if (controllerProcs[index] === undefined) startController(index);
    },
    stop,
    stopped,
  };
}
