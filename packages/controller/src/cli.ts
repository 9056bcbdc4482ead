#!/usr/bin/env node
/**
 * The `pgha` command: `up` (local runtime), `agent` (beside each postgres),
 * `controller`, `operator` (Kubernetes), `kube-sim` (a simulated Kubernetes, from a clone), `status`, `switchover`, `failover`, `history`, `config`, `check` (the consistency checker), `demo` (a narrated failover). Every command takes its etcd and cluster from flags, else PGHA_ETCD and
 * PGHA_CLUSTER.
 */
import { resolve } from 'node:path';
import { clusterKeys, defaultConfig, PghaError, type SynchronousMode, synchronousModes } from '@pgha/core';
import { Command, InvalidArgumentError, Option } from 'commander';
import { assertEtcdReachable, castEtcdError, createEtcdClient } from './adapters/etcd.js';
import { postgresOsUser } from './adapters/os-user.js';
import { Agent } from './agent/agent.js';
import { apiTlsFiles } from './agent/api-tls.js';
import { type AppRole, assertAppUserName } from './agent/app-role.js';
import { readApiSecret } from './agent/failsafe.js';
import { addPostgresParameter, assertNetworks } from './agent/postgres-config.js';
import type { PostgresTlsFiles } from './agent/postgres-member.js';
import { registerCheck } from './cli/check-command.js';
import { registerConfig } from './cli/config-command.js';
import { registerDemo } from './cli/demo-command.js';
import { registerEtcdAuth } from './cli/etcd-auth-command.js';
import { addEtcdConnectionOptions, type EtcdConnectionFlags, etcdConnectionFrom } from './cli/etcd-options.js';
import { registerKubeSim } from './cli/kube-sim-command.js';
import { commandLogger, logFormatOption, logLevelOption } from './cli/log-options.js';
import { registerOperations } from './cli/operations.js';
import { registerOperator } from './cli/operator-command.js';
import { defaultMemberSlotsTtlMillis } from './decide/member-slots.js';
import { createLogger, logLevels, resolveLogSettings } from './log.js';
import { cliPath, startLocalCluster } from './runtime/local/local-cluster.js';
import { defaultStateDir } from './runtime/local/state-dir.js';
import { describeSynchronous } from './runtime/local/stored-settings.js';
import { formatStatus, readClusterStatus } from './status/cluster-status.js';
import { clusterUrls } from './status/connection-urls.js';
import { watchStatus } from './status/watch-status.js';

const env = process.env;
const defaultEtcd = env.PGHA_ETCD ?? 'http://127.0.0.1:2379';
const defaultCluster = env.PGHA_CLUSTER ?? 'pgha';

function integer(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max)
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

/**
 * The application role of `--app-user` (or PGHA_APP_USER; empty: none), its password
 * from PGHA_APP_PASSWORD: never from argv, where `ps` would show it.
 */
function appRoleOption(name: string | undefined): AppRole | null {
  if (name === undefined || name === '') return null;
  assertAppUserName(name);
  const password = env.PGHA_APP_PASSWORD;
  if (password === undefined || password === '') {
    throw new PghaError(
      'invalid-option',
      `--app-user ${name} needs its password in PGHA_APP_PASSWORD, which is not set: set it (the password is never read from the command line)`,
    );
  }
  return { name, password };
}

/**
 * PostgreSQL TLS from `--ssl-cert`, `--ssl-key`, `--ssl-ca`: all three or none (a
 * member serving TLS must verify the others' certificates too).
 */
function postgresTlsFiles(o: { sslCert?: string; sslKey?: string; sslCa?: string }): PostgresTlsFiles | null {
  const given = [o.sslCert, o.sslKey, o.sslCa].filter((v) => v !== undefined).length;
  if (given === 0) return null;
  if (given < 3) {
    const missing = [
      ['--ssl-cert', o.sslCert],
      ['--ssl-key', o.sslKey],
      ['--ssl-ca', o.sslCa],
    ]
      .filter(([, v]) => v === undefined)
      .map(([flag]) => flag);
    throw new PghaError(
      'invalid-option',
      `PostgreSQL TLS needs --ssl-cert, --ssl-key and --ssl-ca together; missing ${missing.join(', ')}`,
    );
  }
  return { certFile: resolve(o.sslCert!), keyFile: resolve(o.sslKey!), caFile: resolve(o.sslCa!) };
}

function required(name: string): string {
  const value = env[name];
  if (value === undefined || value === '') {
    throw new PghaError(
      'invalid-option',
      `${name} is not set: the agent reads its passwords from the environment (pgha up sets them)`,
    );
  }
  return value;
}

/**
 * The controllers' first metrics port for `pgha up`: as given (0: none), else 1000
 * above the health API's base (9008 beside the default 8008), none without a health API.
 */
/** The etcd TLS flags of `pgha status`/`config` against a secure local cluster, as etcd user `<cluster>-<kind>`. */
function etcdFlags(
  c: {
    cluster: string;
    tls: { client(user: string): { cert: string; key: string }; layout: { ca: { cert: string } } } | null;
  },
  kind: 'client' | 'admin',
): string {
  if (c.tls === null) return '';
  const files = c.tls.client(`${c.cluster}-${kind}`);
  return ` --etcd-ca ${c.tls.layout.ca.cert} --etcd-cert ${files.cert} --etcd-key ${files.key}`;
}

function upMetricsPort(apiBase: number, metricsPort: number | undefined): number | undefined {
  if (metricsPort !== undefined) return metricsPort === 0 ? undefined : metricsPort;
  if (apiBase === 0 || apiBase + 1000 > 65535) return undefined;
  return apiBase + 1000;
}

const program = new Command('pgha')
  .description('Highly available PostgreSQL for Node applications')
  .showHelpAfterError('(add --help for usage)')
  .configureOutput({ outputError: (text, write) => write(`pgha: ${text.replace(/^error: /, '')}`) });

const upCommand = program
  .command('up')
  .description('start a local cluster (etcd, one agent and postgres per member) in the foreground; Ctrl-C stops it')
  .option('--cluster <name>', 'cluster name (default: the state directory\'s, else PGHA_CLUSTER or "pgha")')
  .addOption(new Option('--members <n>', 'number of members (default 3)').argParser(integer(1, 9)))
  .option('--state-dir <dir>', 'where data, logs and secrets live (default .pgha/<cluster>)')
  .addOption(
    new Option('--port <base>', 'first postgres port; member i uses base+i (default 5432)').argParser(
      integer(1024, 65535),
    ),
  )
  .option('--etcd <url>', 'use this etcd instead of starting one')
  .addOption(
    new Option(
      '--api-port <base>',
      "first health API port (curl http://127.0.0.1:<port>/primary); member i uses base+i; 0: none (default 8008, Patroni's)",
    ).argParser(integer(0, 65535)),
  )
  .addOption(
    new Option(
      '--metrics-port <base>',
      "first port of the controllers' Prometheus metrics (curl http://127.0.0.1:<port>/metrics); controller i uses base+i; 0: none (default: --api-port base + 1000, so 9008; none with --api-port 0)",
    ).argParser(integer(0, 65535)),
  )
  .addOption(
    new Option(
      '--etcd-port <port>',
      'client port of the etcd pgha starts; peer port is the next (default 2379)',
    ).argParser(integer(1024, 65534)),
  )
  .addOption(
    new Option(
      '--synchronous <mode>',
      "synchronous replication: off, or quorum (ANY n of the replicas confirms each commit); stored in the cluster's settings (default: keep the stored setting; off for a new cluster)",
    ).choices(synchronousModes),
  )
  .addOption(
    new Option(
      '--synchronous-count <n>',
      'quorum: how many replicas confirm each commit (default: keep the stored setting; 1 for a new cluster)',
    ).argParser(integer(1, 64)),
  )
  .option(
    '--synchronous-strict',
    'quorum: commits wait while too few replicas can confirm them, instead of degrading to asynchronous',
  )
  .option('--no-synchronous-strict', 'quorum: degrade to asynchronous while too few replicas can confirm commits')
  .addOption(
    new Option(
      '--log-level <level>',
      'least severe level the agents and controllers log; their files under <state-dir>/logs/ are JSON lines whatever PGHA_LOG_FORMAT says (env PGHA_LOG_LEVEL; default info)',
    ).choices(logLevels),
  )
  .option(
    '--failsafe',
    "failsafe mode: while etcd is unreachable the primary stays writable as long as every member promises not to take over; stored in the cluster's settings (default: keep the stored setting; off for a new cluster)",
  )
  .option('--no-failsafe', 'turn failsafe mode off in the stored settings')
  .option(
    '--secure',
    'etcd with TLS and client-certificate authentication: a local CA and certificates under <state-dir>/tls/, one etcd user per process with the least rights it needs (remembered: later runs are secure without the flag)',
  );
addEtcdConnectionOptions(upCommand).action(
  async (
    opts: EtcdConnectionFlags & {
      secure?: boolean;
      cluster?: string;
      members?: number;
      stateDir?: string;
      port?: number;
      etcd?: string;
      etcdPort?: number;
      apiPort?: number;
      metricsPort?: number;
      synchronous?: SynchronousMode;
      synchronousCount?: number;
      synchronousStrict?: boolean;
      logLevel?: string;
      failsafe?: boolean;
    },
  ) => {
    const { level: logLevel } = resolveLogSettings({ logLevel: opts.logLevel }, process.env);
    const cluster = opts.cluster ?? (opts.stateDir === undefined ? defaultCluster : undefined);
    let stateDir: string;
    if (opts.stateDir !== undefined) stateDir = resolve(opts.stateDir);
    else {
      const chosen = defaultStateDir(cluster ?? defaultCluster, process.cwd(), postgresOsUser());
      stateDir = chosen.dir;
      if (chosen.fallback)
        process.stderr.write(`  (postgres's OS user cannot reach ${process.cwd()}: state goes to ${stateDir})\n`);
    }
    const log = createLogger('up', () => undefined);
    const abort = new AbortController();
    let running: Awaited<ReturnType<typeof startLocalCluster>> | null = null;
    const onSignal = (signal: NodeJS.Signals) => {
      process.stderr.write(`\n${signal}: stopping the cluster...\n`);
      abort.abort();
      void running?.stop();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const started = Date.now();
    running = await startLocalCluster({
      cluster,
      members: opts.members,
      stateDir,
      basePort: opts.port,
      etcd: opts.etcd,
      ...(opts.etcd === undefined ? {} : { etcdAuth: etcdConnectionFrom(opts.etcd, opts) }),
      ...(opts.secure ? { secure: true } : {}),
      etcdPort: opts.etcdPort,
      apiBasePort: (opts.apiPort ?? 8008) === 0 ? undefined : (opts.apiPort ?? 8008),
      metricsBasePort: upMetricsPort(opts.apiPort ?? 8008, opts.metricsPort),
      synchronous: {
        ...(opts.synchronous === undefined ? {} : { mode: opts.synchronous }),
        ...(opts.synchronousCount === undefined ? {} : { count: opts.synchronousCount }),
        ...(opts.synchronousStrict === undefined ? {} : { strict: opts.synchronousStrict }),
        ...(opts.failsafe === undefined ? {} : { failsafe: opts.failsafe }),
      },
      log,
      logLevel,
      signal: abort.signal,
      progress: (line) => process.stderr.write(`  ${line}\n`),
    });
    const c = running;
    // With TLS (--secure) the password is never printed: it is in a passfile.
    const secure = c.passfile !== null;
    // Every member, for clients that follow the primary themselves (libpq, pgjdbc).
    const urls = clusterUrls({
      user: 'postgres',
      password: secure ? null : c.superuserPassword,
      database: 'postgres',
      members: c.members,
      sslRootCert: c.caFile,
    });
    const primaryUrl = c.connectionString(c.primaryAtStart, !secure);
    const curlCa = c.caFile === null ? '' : `--cacert ${c.caFile} `;
    process.stdout.write(
      [
        '',
        `Cluster ${c.cluster} is up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${c.members.length} members, state in ${c.stateDir}`,
        '',
        `  primary:  ${primaryUrl}`,
        `  psql:     ${secure ? `PGPASSFILE=${c.passfile} ` : ''}psql '${primaryUrl}'`,
        secure
          ? `  password: in ${c.passfile} (mode 0600; libpq reads it through PGPASSFILE), never printed`
          : `  password: the superuser's is in the URLs above and in ${c.stateDir}/cluster.json (pgha up --secure prints none)`,
        `  read-write (follows the primary; psql, psycopg, pgx): ${urls.readWrite}`,
        `  read-only (a replica, else the primary):               ${urls.readOnly}`,
        `  JDBC:     ${urls.jdbcReadWrite}`,
        `  status:   pnpm pgha status --etcd ${c.etcdEndpoint}${etcdFlags(c, 'client')} --cluster ${c.cluster}${c.caFile === null ? '' : ` --ssl-ca ${c.caFile}`}`,
        `  settings: ${describeSynchronous(c.settings)}; version ${c.settings.version} (pnpm pgha config show --etcd ${c.etcdEndpoint}${etcdFlags(c, 'admin')} --cluster ${c.cluster})`,
        ...(c.tls === null
          ? []
          : [
              `  etcd TLS: CA ${c.tls.layout.ca.cert}; read-only client certificate ${c.tls.client(`${c.cluster}-client`).cert} and key ${c.tls.client(`${c.cluster}-client`).key}`,
              `            (a Pool: new Pool({ etcd: { endpoints: '${c.etcdEndpoint}', credentials: { rootCertificate, certChain, privateKey } } }) with those files read; admin: ${c.tls.client(`${c.cluster}-admin`).cert})`,
            ]),
        ...(c.members[0]?.api
          ? [
              `  health:   curl ${curlCa}${c.members[0].api}/primary   (each member: ${c.members.map((m) => m.api).join(', ')})`,
            ]
          : []),
        ...(c.controllerMetrics.length > 0
          ? [
              `  metrics:  curl ${c.members[0]?.api ? `${curlCa}${c.members[0].api}/metrics (each member's health API), ` : ''}${c.controllerMetrics.join(', ')} (controllers)`,
            ]
          : []),
        `  logs:     ${c.stateDir}/logs/`,
        '',
        'Press Ctrl-C to stop the cluster (its data stays for the next `pgha up`).',
        '',
      ].join('\n'),
    );
    await c.stopped;
    process.stderr.write('cluster stopped\n');
  },
);

const agentCommand = program
  .command('agent')
  .description(
    'run one member: its postgres, and its reports into etcd (passwords from PGHA_SUPERUSER_PASSWORD, PGHA_REPLICATION_PASSWORD, PGHA_APP_PASSWORD)',
  )
  .requiredOption('--name <member>', "this member's name, <cluster>-<ordinal>")
  .requiredOption('--member-dir <dir>', 'directory holding data/, pgpass and postgres.log')
  .addOption(new Option('--port <port>', 'postgres port').argParser(integer(1, 65535)).makeOptionMandatory())
  .option('--cluster <name>', 'cluster name', defaultCluster)
  .option('--etcd <urls>', 'etcd endpoints, comma-separated', defaultEtcd)
  .option('--key-root <prefix>', 'etcd key root', '/pgha/')
  .option('--host <address>', 'address others reach this postgres at', '127.0.0.1')
  .option('--listen <addresses>', 'postgres listen_addresses (default: --host, plus 127.0.0.1)')
  .option('--bootstrap', 'may run initdb when the cluster was never initialized', false)
  .option('--allow-cidr <cidr...>', 'networks besides loopback allowed in pg_hba.conf', [])
  .addOption(
    new Option(
      '--app-user <name>',
      'application role (LOGIN, password from PGHA_APP_PASSWORD) and database of that name, created by the primary when absent',
    ).env('PGHA_APP_USER'),
  )
  .addOption(
    new Option('--lease-ttl-millis <ms>', 'lease TTL')
      .argParser(integer(2000, 600_000))
      .default(defaultConfig.leaseTtlMillis),
  )
  .addOption(
    new Option('--keepalive-interval-millis <ms>', 'lease keepalive interval')
      .argParser(integer(100, 60_000))
      .default(defaultConfig.keepaliveIntervalMillis),
  )
  .addOption(
    new Option('--fencing-margin-millis <ms>', 'safety margin before the lease deadline')
      .argParser(integer(0, 60_000))
      .default(defaultConfig.fencingMarginMillis),
  )
  .addOption(
    new Option('--report-interval-millis <ms>', 'member record interval').argParser(integer(100, 60_000)).default(1000),
  )
  .addOption(
    new Option(
      '--health-timeout-millis <ms>',
      'the primary renews its lease only while its postgres answered a fresh connection as writable within this bound',
    )
      .argParser(integer(100, 600_000))
      .default(10_000),
  )
  .option('--shared-buffers <size>', 'postgres shared_buffers', '128MB')
  .addOption(
    new Option('--max-connections <n>', 'postgres max_connections').argParser(integer(10, 10_000)).default(100),
  )
  .addOption(
    new Option(
      '--postgres-parameter <name=value>',
      'extra postgresql.conf setting, repeatable; settings pgha writes (port, wal_level, ...) are refused',
    )
      .argParser((value: string, previous: Record<string, string>) => {
        try {
          return addPostgresParameter(value, previous);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message);
        }
      })
      .default({}, 'none'),
  )
  .option('--no-failover', 'never promote this member (tag)')
  .addOption(
    new Option(
      '--api-port <port>',
      'serve the health API (/primary, /replica, /readiness, /liveness, /health) on this port (default: none)',
    ).argParser(integer(0, 65535)),
  )
  .option('--api-listen <address>', 'address the health API binds (default: --host; 0.0.0.0 for every interface)')
  .option(
    '--api-secret-file <path>',
    "file holding the members' shared API secret (at least 16 characters; else PGHA_API_SECRET): authenticates failsafe mode's POST /failsafe; without one this member fences on an etcd outage and promises nothing",
  )
  .addOption(
    new Option(
      '--api-cert <file>',
      'HTTPS for the health API: its certificate (PEM, naming --host); the member record then says https://; with --api-key',
    ).env('PGHA_API_CERT'),
  )
  .addOption(new Option('--api-key <file>', "the health API certificate's private key (PEM)").env('PGHA_API_KEY'))
  .addOption(
    new Option(
      '--api-ca <file>',
      "CA (PEM) the other members' API certificates must chain to (failsafe requests verify them)",
    ).env('PGHA_API_CA'),
  )
  .addOption(
    new Option(
      '--ssl-cert <file>',
      'PostgreSQL TLS: the server certificate (PEM, naming --host); with --ssl-key and --ssl-ca: ssl=on, pg_hba.conf hostssl only, replication with sslmode=verify-full',
    ).env('PGHA_SSL_CERT'),
  )
  .addOption(
    new Option('--ssl-key <file>', "PostgreSQL TLS: the server certificate's private key (PEM)").env('PGHA_SSL_KEY'),
  )
  .addOption(
    new Option('--ssl-ca <file>', "PostgreSQL TLS: the CA (PEM) every member's certificate chains to").env(
      'PGHA_SSL_CA',
    ),
  )
  .addOption(
    new Option(
      '--liveness-timeout-millis <ms>',
      '/liveness fails when the control loop has not finished a pass (outside an action) for this long',
    )
      .argParser(integer(1000, 3_600_000))
      .default(15_000),
  )
  .addOption(
    new Option(
      '--member-slots-ttl-millis <ms>',
      "the primary drops an inactive replication slot (pgha_<member>) whose member has had no record in etcd for this long (Patroni's member_slots_ttl); a member the Kubernetes operator scaled away loses it at once",
    )
      .argParser(integer(1000, 365 * 24 * 3_600_000))
      .default(defaultMemberSlotsTtlMillis, '1800000 (30 min)'),
  )
  .option(
    '--process-metrics',
    "also export Node's process metrics (CPU, memory, event loop lag, GC; prefix pgha_agent_) on the health API's /metrics",
    false,
  )
  .addOption(logFormatOption())
  .addOption(logLevelOption());
addEtcdConnectionOptions(agentCommand).action(async (opts) => {
  assertNetworks(opts.allowCidr);
  const appRole = appRoleOption(opts.appUser);
  const log = commandLogger('agent', opts, { cluster: opts.cluster, member: opts.name });
  // A promise of the plumbing that fails with nobody waiting (a late etcd answer, a
  // closed stream) is logged, not a reason for the agent to die: its postgres would
  // die with it (pdeathsig) and the cluster would fail over for nothing.
  process.on('unhandledRejection', (error) => log.error(`unhandled: ${(error as Error)?.message ?? error}`));
  const agent = new Agent({
    cluster: opts.cluster,
    name: opts.name,
    memberDir: resolve(opts.memberDir),
    host: opts.host,
    // The agent itself connects over loopback, so listen there too.
    listenAddresses:
      opts.listen ?? (opts.host === '127.0.0.1' || opts.host === 'localhost' ? opts.host : `${opts.host},127.0.0.1`),
    port: opts.port,
    etcd: etcdConnectionFrom(opts.etcd, opts),
    keyRoot: opts.keyRoot,
    mayBootstrap: opts.bootstrap,
    superuserPassword: required('PGHA_SUPERUSER_PASSWORD'),
    replicationPassword: required('PGHA_REPLICATION_PASSWORD'),
    appRole,
    allowedNetworks: opts.allowCidr,
    lease: {
      ttlMillis: opts.leaseTtlMillis,
      keepaliveIntervalMillis: opts.keepaliveIntervalMillis,
      fencingMarginMillis: opts.fencingMarginMillis,
    },
    reportIntervalMillis: opts.reportIntervalMillis,
    healthTimeoutMillis: opts.healthTimeoutMillis,
    sharedBuffers: opts.sharedBuffers,
    maxConnections: opts.maxConnections,
    postgresParameters: opts.postgresParameter,
    tags: opts.failover === false ? { noFailover: true } : {},
    api: opts.apiPort === undefined ? null : { listen: opts.apiListen ?? opts.host, port: opts.apiPort },
    livenessTimeoutMillis: opts.livenessTimeoutMillis,
    processMetrics: opts.processMetrics,
    memberSlotsTtlMillis: opts.memberSlotsTtlMillis,
    apiSecret: readApiSecret(opts.apiSecretFile, env.PGHA_API_SECRET),
    apiTls: apiTlsFiles(opts),
    postgresTls: postgresTlsFiles(opts),
    cliPath: cliPath(),
    log,
  });
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    log.info(`${signal}: stopping`);
    if (stopping) return;
    stopping = true;
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await agent.start();
  } catch (error) {
    await agent.stop();
    throw error;
  }
  await new Promise(() => undefined); // run until a signal stops us
});

const statusCommand = program
  .command('status')
  .description("show the cluster: term, leader, each member's role, state and lag, and connection strings")
  .option('--etcd <urls>', 'etcd endpoints', defaultEtcd)
  .option('--cluster <name>', 'cluster name', defaultCluster)
  .option('--key-root <prefix>', 'etcd key root', '/pgha/')
  .option('--json', 'print one JSON object (with --watch: one per change, NDJSON)', false)
  .option('--watch', 'keep watching: redraw on every change (at least every second), with recent events; Ctrl-C exits')
  .option('--user <name>', 'the user in the printed connection strings', 'postgres')
  .option('--database <name>', 'the database in the printed connection strings', 'postgres')
  .addOption(
    new Option(
      '--ssl-ca <file>',
      "the members' CA (PEM) for clusters running PostgreSQL TLS: the printed connection strings then carry sslmode=verify-full&sslrootcert=<file>",
    ).env('PGHA_SSL_CA'),
  )
  .addOption(
    new Option('--lag-threshold-bytes <n>', '--watch: a replica lagging more than this is an event')
      .argParser(integer(0, Number.MAX_SAFE_INTEGER))
      .default(16 * 1024 * 1024, '16777216 (16 MiB)'),
  );
addEtcdConnectionOptions(statusCommand).action(
  async (
    opts: EtcdConnectionFlags & {
      etcd: string;
      cluster: string;
      keyRoot: string;
      json: boolean;
      watch?: boolean;
      user: string;
      database: string;
      sslCa?: string;
      lagThresholdBytes: number;
    },
  ) => {
    const keys = clusterKeys(opts.cluster, opts.keyRoot);
    const urlOptions = {
      user: opts.user,
      database: opts.database,
      sslRootCert: opts.sslCa === undefined ? null : resolve(opts.sslCa),
    };
    const connection = etcdConnectionFrom(opts.etcd, opts);
    if (opts.watch) {
      await watchStatus({
        etcd: opts.etcd,
        connection,
        cluster: opts.cluster,
        keys,
        json: opts.json,
        urlOptions,
        lagThresholdBytes: opts.lagThresholdBytes,
      });
      // Ctrl-C: a clean exit, whatever etcd's client still holds open.
      process.exit(0);
    }
    const etcd = createEtcdClient(connection, 3000);
    try {
      await assertEtcdReachable(etcd, opts.etcd);
      const status = await readClusterStatus(etcd, opts.cluster, keys, urlOptions).catch((error) => {
        throw castEtcdError(error, opts.etcd, 'reading the cluster');
      });
      process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
    } finally {
      etcd.close();
    }
  },
);

registerOperations(program, { etcd: defaultEtcd, cluster: defaultCluster, keyRoot: '/pgha/' }, integer);
registerConfig(program, { etcd: defaultEtcd, cluster: defaultCluster, keyRoot: '/pgha/' });
registerEtcdAuth(program, { etcd: defaultEtcd, cluster: defaultCluster, keyRoot: '/pgha/' });
registerOperator(program, integer);
registerKubeSim(program);
registerCheck(program, integer);
registerDemo(program, integer);

program
  .command('options', { hidden: true })
  .description(
    'internal: every visible command and its long options, as JSON (docs/reference.md is checked against it)',
  )
  .action(() => {
    const help = program.createHelp();
    const listing: Array<{ command: string; options: string[] }> = [];
    const walk = (command: Command, path: readonly string[]) => {
      for (const sub of help.visibleCommands(command)) {
        if (sub.name() === 'help') continue;
        const subPath = [...path, sub.name()];
        const nested = help.visibleCommands(sub).filter((c) => c.name() !== 'help');
        if (nested.length > 0) walk(sub, subPath);
        else
          listing.push({
            command: subPath.join(' '),
            options: help
              .visibleOptions(sub)
              .map((o) => o.long)
              .filter((l): l is string => l !== undefined && l !== '--help'),
          });
      }
    };
    walk(program, []);
    process.stdout.write(`${JSON.stringify(listing, null, 2)}\n`);
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof PghaError) {
    process.stderr.write(`pgha: ${error.message}\n`);
    process.exit(error.code === 'invalid-option' ? 2 : 1);
  }
  process.stderr.write(
    `pgha: unexpected failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
});
