/**
 * `pgha check`'s shell: starts its own local cluster (etcd — three members when
 * etcd-member-loss is wanted — and the members, in network namespaces when
 * partition is wanted), runs the writers, injects seeded faults one at a time, waits
 * for the cluster to be healthy after each, and hands what it recorded to the pure
 * analysis. Everything it starts is stopped by PID on the way out (errors and
 * Ctrl-C included), frozen processes are resumed and cut links healed first.
 */

import type { ChildProcess } from 'node:child_process';
import {
  chmodSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ConfigRecord, clusterKeys, defaultConfig, HistoryRecord, LeaderRecord, PghaError } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import pg from 'pg';
import {
  assertEtcdReachable,
  castEtcdError,
  createEtcdClient,
  type EtcdConnection,
  etcdCredentials,
  poolEtcdOptions,
} from '../adapters/etcd.js';
import { postgresOsUser } from '../adapters/os-user.js';
import { findFreePortRange } from '../adapters/ports.js';
import { spawnOwned } from '../adapters/processes.js';
import { createLogger } from '../log.js';
import { type LocalEtcdCluster, startLocalEtcdCluster } from '../runtime/local/etcd-cluster.js';
import { cliPath, type LocalCluster, startLocalCluster } from '../runtime/local/local-cluster.js';
import {
  createNetnsNetwork,
  type NetnsNetwork,
  netnsUnavailableReason,
  testNetworkCidr,
} from '../runtime/local/netns.js';
import { assertReachableBy } from '../runtime/local/state-dir.js';
import {
  type Analysis,
  analyzeRun,
  type FaultEntry,
  type HistoryEntry,
  longestGap,
  type TermChange,
} from './analysis.js';
import { waitForHealthyCluster } from './cluster-health.js';
import { chooseTarget, type FaultContext, injectors } from './faults.js';
import { buildReport, type CheckReport, type FaultRun } from './report.js';
import { assertSettings, type CheckSettings, type FaultKind, faultSchedule, seededRandom } from './settings.js';
import { checkTable, createCheckTable, readCheckRows, startWorkload, type Workload } from './workload.js';

/** Options of {@link runCheck}: the settings and where things run. */
export interface CheckRunOptions extends CheckSettings {
  /**
   * Use this etcd instead of starting one: its endpoints, and the TLS files and
   * credentials every process of the check uses (its own client, the members, the
   * controller, the Pool writers).
   */
  readonly etcd?: EtcdConnection;
  /** Where data and logs go (default: a new temporary directory). */
  readonly stateDir?: string;
  readonly verbose: boolean;
  /** One line per step (fault lines, start-up). */
  readonly progress: (line: string) => void;
  /** Aborting stops the run where it is and cleans up. */
  readonly signal: AbortSignal;
  /** How long a fault may take to recover. Default 90 s. */
  readonly recoveryTimeoutMillis?: number;
}

/** A finished run: its report, and the cluster still running until `close()`. */
export interface CheckRun {
  readonly report: CheckReport;
  readonly analysis: Analysis;
  readonly cluster: LocalCluster;
  /** Stops everything that was started and removes a temporary state directory of a passed run. */
  close(): Promise<void>;
}

const now = () => performance.now();

/** pgha's version, from the package of the running CLI. */
function pghaVersion(): string {
  try {
    return JSON.parse(readFileSync(join(dirname(cliPath()), '..', 'package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

function interrupted(signal: AbortSignal): void {
  if (signal.aborted) throw new PghaError('timeout', 'interrupted (Ctrl-C); stopped everything');
}

/** Runs a whole check; throws (after cleaning up) when the cluster cannot be started. */
export async function runCheck(options: CheckRunOptions): Promise<CheckRun> {
  assertSettings(options);
  // A missing or unreadable TLS file is refused before anything is created or started.
  if (options.etcd !== undefined) etcdCredentials(options.etcd);
  const progress = options.progress;
  const signal = options.signal;
  const recoveryTimeoutMillis = options.recoveryTimeoutMillis ?? 90_000;
  const random = seededRandom(options.seed);
  const keys = clusterKeys(options.cluster);
  const leaseTtlMillis = options.leaseTtlMillis;

  // The state directory: a fresh one, never a previous run's cluster.
  let stateDir: string;
  let temporary = false;
  if (options.stateDir === undefined) {
    stateDir = mkdtempSync(join(tmpdir(), `pgha-check-${options.cluster}-`));
    temporary = true;
  } else {
    stateDir = resolve(options.stateDir);
    if (existsSync(stateDir) && readdirSync(stateDir).length > 0)
      throw new PghaError(
        'invalid-option',
        `--state-dir ${stateDir} is not empty: pgha check starts a new cluster each run; give an empty or new directory (or none: a temporary one)`,
      );
    mkdirSync(stateDir, { recursive: true });
  }
  chmodSync(stateDir, 0o711); // postgres runs as its own OS user and must enter it
  // Before anything starts: postgres's OS user must reach the state directory.
  try {
    assertReachableBy(stateDir, postgresOsUser());
  } catch (error) {
    if (temporary) rmSync(stateDir, { recursive: true, force: true });
    throw error;
  }
  const logDir = join(stateDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const logStream = createWriteStream(join(logDir, 'check.log'), { flags: 'a' });
  logStream.on('error', () => undefined);
  const log = createLogger('check', (line) => logStream.write(line));
  // One format in the file: the checker's steps are JSON lines like its logger's.
  const note = (line: string) => {
    log.info(line);
    if (options.verbose) progress(`  ${line}`);
  };

  // Which kinds can run here, and so what must be started for them.
  const unavailable = new Map<FaultKind, string>();
  const wantsEtcdLoss = options.faults.includes('etcd-member-loss');
  const wantsPartition = options.faults.includes('partition');
  if (wantsEtcdLoss && options.etcd !== undefined)
    unavailable.set(
      'etcd-member-loss',
      'needs the three-member etcd pgha check starts itself (not available with --etcd)',
    );
  if (wantsPartition) {
    const reason =
      options.etcd !== undefined
        ? "needs the etcd pgha check starts itself, listening on the namespaces' bridge (not available with --etcd)"
        : netnsUnavailableReason();
    if (reason !== null) unavailable.set('partition', reason);
  }
  const kinds = options.faults.filter((k) => !unavailable.has(k));
  for (const [kind, reason] of unavailable) progress(`${kind}: unavailable here: ${reason}`);
  if (kinds.length === 0)
    throw new PghaError('invalid-option', 'none of the --faults kinds can run here (see the reasons above)');

  let network: NetnsNetwork | null = null;
  let etcdCluster: LocalEtcdCluster | null = null;
  let cluster: LocalCluster | null = null;
  let etcd: Etcd3 | null = null;
  let workload: Workload | null = null;
  let monitorStop = false;
  let monitor: Promise<void> = Promise.resolve();
  const hogs: ChildProcess[] = [];
  const frozen = new Set<number>();
  let closed = false;

  const close = async (removeState: boolean) => {
    if (closed) return;
    closed = true;
    // Resume and reconnect first, so that every agent can stop normally.
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    frozen.clear();
    for (const hog of hogs) hog.kill('SIGKILL');
    for (const host of network?.hosts ?? []) {
      try {
        network!.heal(host.index);
      } catch {
        /* gone */
      }
    }
    monitorStop = true;
    await workload?.stop().catch(() => undefined);
    await monitor.catch(() => undefined);
    etcd?.close();
    await cluster?.stop().catch(() => undefined);
    await etcdCluster?.stop().catch(() => undefined);
    const left = network?.destroy() ?? [];
    if (left.length > 0) progress(`could not remove network namespaces/links: ${left.join(', ')}`);
    await new Promise<void>((r) => logStream.end(() => r()));
    if (removeState && temporary) rmSync(stateDir, { recursive: true, force: true });
  };

  try {
    // etcd: the one given, or our own (three members for etcd-member-loss).
    let connection: EtcdConnection;
    const members = options.members;
    const base = await findFreePortRange(members + 6);
    if (kinds.includes('partition')) {
      network = createNetnsNetwork(members);
      note(`network namespaces: ${network.hosts.map((h) => `${h.netns} ${h.address}`).join(', ')}`);
    }
    if (options.etcd !== undefined) {
      connection = options.etcd;
    } else {
      const size = kinds.includes('etcd-member-loss') ? 3 : 1;
      progress(`starting etcd (${size} member${size > 1 ? 's' : ''})`);
      etcdCluster = await startLocalEtcdCluster({
        dir: join(stateDir, 'etcd'),
        size,
        basePort: base + members,
        host: network?.gateway ?? '127.0.0.1',
        namePrefix: `${options.cluster}-etcd`,
        // One member never holds an election; three must elect within the fencing budget.
        ...(size === 1 ? { heartbeatIntervalMillis: 100, electionTimeoutMillis: 1000 } : {}),
        ...(options.etcdHeartbeatMillis !== null ? { heartbeatIntervalMillis: options.etcdHeartbeatMillis } : {}),
        ...(options.etcdElectionTimeoutMillis !== null
          ? { electionTimeoutMillis: options.etcdElectionTimeoutMillis }
          : {}),
      });
      connection = { endpoints: etcdCluster.endpoints };
    }
    const { endpoints: given, ...etcdAuth } = connection;
    const endpoints = typeof given === 'string' ? given : given.join(',');
    etcd = createEtcdClient(connection, 3000);
    await assertEtcdReachable(etcd, endpoints);
    interrupted(signal);

    // The cluster must be new, and its config record is written before any member runs.
    const existing = await etcd
      .get(keys.initialize)
      .string()
      .catch((e) => {
        throw castEtcdError(e, endpoints, 'reading the cluster');
      });
    if (existing !== null)
      throw new PghaError(
        'invalid-option',
        `cluster ${options.cluster} already exists in etcd ${endpoints} (${keys.initialize}): pgha check starts a new cluster; choose another --cluster`,
      );
    const config: ConfigRecord = {
      ...defaultConfig,
      version: 1,
      synchronousMode: options.synchronousMode,
      synchronousCount: options.synchronousCount,
      synchronousStrict: options.synchronousStrict,
      leaseTtlMillis: options.leaseTtlMillis,
      keepaliveIntervalMillis: options.keepaliveIntervalMillis,
      fencingMarginMillis: options.fencingMarginMillis,
      updatedAt: new Date().toISOString(),
      updatedBy: 'pgha check',
    };
    const put = await etcd
      .if(keys.config, 'Create', '==', 0)
      .then(etcd.put(keys.config).value(ConfigRecord.encode(config)))
      .commit();
    if (!put.succeeded)
      throw new PghaError(
        'conflict',
        `a config record already exists for cluster ${options.cluster} (${keys.config}); choose another --cluster or delete that key`,
      );

    progress(`starting ${members} members (state in ${stateDir})`);
    const hostOf = (name: string) => network!.hosts[Number(name.slice(name.lastIndexOf('-') + 1))]!;
    cluster = await startLocalCluster({
      cluster: options.cluster,
      members,
      stateDir: join(stateDir, 'cluster'),
      basePort: base,
      etcd: endpoints,
      etcdAuth,
      log,
      progress: note,
      signal,
      readyTimeoutMillis: 180_000,
      ...(network === null
        ? {}
        : {
            placement: (name: string) => ({ netns: hostOf(name).netns, host: hostOf(name).address }),
            memberArgs: () => ['--allow-cidr', testNetworkCidr],
          }),
    });
    const c = cluster;
    interrupted(signal);

    const readLeader = async (): Promise<LeaderRecord | null> => {
      const text = await etcd!.get(keys.leader).string();
      return text === null ? null : LeaderRecord.decode(text);
    };
    const first = (await readLeader())!;
    await createCheckTable(c.connectionString(first.member));

    // The term monitor: every newer leader, when first seen.
    const termChanges: TermChange[] = [];
    let observedTerm = first.term;
    monitor = (async () => {
      while (!monitorStop) {
        try {
          const l = await readLeader();
          if (l !== null && l.term > observedTerm) {
            observedTerm = l.term;
            termChanges.push({ term: l.term, member: l.member, at: now() });
            note(`term ${l.term}: ${l.member}${l.writable ? '' : ' (being promoted)'}`);
          }
        } catch {
          /* etcd busy or down (etcd-member-loss): the next poll sees it */
        }
        await delay(100);
      }
    })();

    const healthy = (timeoutMillis: number, settleMillis = 0): Promise<LeaderRecord | null> =>
      waitForHealthyCluster({
        etcd: etcd!,
        keys,
        members: c.members.map((m) => m.name),
        timeoutMillis,
        settleMillis,
        interrupted: () => interrupted(signal),
      });

    workload = startWorkload({
      etcd: poolEtcdOptions(connection),
      cluster: options.cluster,
      members: c.members.map((m) => ({ name: m.name, connectionString: c.connectionString(m.name) })),
      user: 'postgres',
      password: c.superuserPassword,
      database: 'postgres',
      rate: options.rate,
      observedTerm: () => observedTerm,
      now,
    });
    const w = workload;
    const warmDeadline = now() + 30_000;
    while (!w.acks.some((a) => a.source === 'pool')) {
      interrupted(signal);
      if (now() > warmDeadline)
        throw new PghaError(
          'timeout',
          `no write through the Pool succeeded within 30 s of start (failures: ${[...new Set(w.failures.map((f) => f.type))].join(', ') || 'none'}); see ${logDir}`,
        );
      await delay(100);
    }
    progress(
      `cluster up: primary ${first.member} (term ${first.term}); writing ${options.rate}/s; seed ${options.seed}; faults: ${kinds.join(', ')}`,
    );

    // The CPU hog: busy loops beside the cluster for the whole run, at the same
    // priority, so that every deadline is kept on a saturated machine.
    for (let k = 0; k < options.cpuHog; k++)
      hogs.push(spawnOwned(process.execPath, ['-e', 'for (;;) {}'], { logFile: join(logDir, 'cpu-hog.log') }));
    if (options.cpuHog > 0) progress(`CPU hog: ${options.cpuHog} busy-looping processes started`);

    const ctx: FaultContext = {
      cluster: c,
      etcd,
      keys,
      random,
      leaseTtlMillis,
      etcdCluster: etcdCluster !== null && etcdCluster.members.length === 3 ? etcdCluster : null,
      network,
      frozen,
      note,
    };
    const schedule = faultSchedule(kinds, options.faultsPerKind ?? 1000, random);
    const faults: FaultEntry[] = [];
    const runs: FaultRun[] = [];
    const startedAt = now();
    const startedWall = new Date();
    let primary = first.member;
    for (const kind of schedule) {
      if (options.durationMillis !== null && now() - startedAt >= options.durationMillis) break;
      interrupted(signal);
      // The target's role as of now (the leader may have moved since the last wait).
      const current = await readLeader().catch(() => null);
      if (current !== null) primary = current.member;
      const target = await chooseTarget(ctx, kind, primary);
      const index = faults.length;
      const injectedAt = now();
      const termBefore = observedTerm;
      const primaryBefore = primary;
      let detail: string;
      let injectError: string | null = null;
      try {
        detail = await injectors[kind].inject(ctx, target);
      } catch (error) {
        injectError = (error as Error).message;
        detail = `could not inject: ${injectError}`;
      }
      note(`fault ${index + 1} ${kind} on ${target.name}: ${detail}`);
      // One agent report interval (1 s) and then some: only reports made after the
      // agents could see the fault count.
      const recovered = await healthy(Math.max(1000, recoveryTimeoutMillis - (now() - injectedAt)), 1500);
      const recoveredAt = recovered === null ? null : now();
      if (recovered !== null) primary = recovered.member;
      faults.push({ index, kind, target: target.name, role: target.role, injectedAt, recoveredAt });
      runs.push({ detail, injectError });
      // Let writes flow on the recovered cluster before the next fault (seeded pause):
      // a late acknowledgement of a superseded primary shows up here.
      if (recovered !== null) await delay(random.int(1000, 3000));
      const gap = longestGap(
        w.acks.filter((a) => a.source === 'pool').map((a) => a.ackAt),
        injectedAt,
        now(),
      );
      const line = `[${index + 1}${options.faultsPerKind !== null ? `/${schedule.length}` : ''} ${formatClock(now() - startedAt)}] ${kind} on ${target.name} (${target.role}): ${
        recoveredAt === null
          ? `NOT RECOVERED within ${recoveryTimeoutMillis / 1000} s`
          : `recovered in ${((recoveredAt - injectedAt) / 1000).toFixed(1)} s`
      }, unavailable ${(gap / 1000).toFixed(2)} s, term ${termBefore}${observedTerm === termBefore ? '' : `→${observedTerm}`}${primary === primaryBefore ? '' : `, primary ${primaryBefore}→${primary}`}${injectError === null ? '' : ` (${detail})`}`;
      progress(line);
      if (recoveredAt === null) {
        progress('the cluster did not recover: stopping the faults here');
        break;
      }
    }
    const endedAt = now();

    // Let the last writes land, stop the writers, and read what the final primary holds.
    await delay(1000);
    await w.stop();
    monitorStop = true;
    await monitor;
    const final = (await healthy(30_000)) ?? (await readLeader());
    if (final === null || !final.writable)
      throw new PghaError('timeout', `no writable primary at the end of the run to read the rows from; see ${logDir}`);
    const finalConn = c.connectionString(final.member);
    const present = await readCheckRows(finalConn);
    const historyValues = await etcd.getAll().prefix(keys.historyPrefix).strings();
    const history: HistoryEntry[] = Object.values(historyValues)
      .map((v) => HistoryRecord.decode(v))
      .map((h) => ({
        term: h.term,
        newPrimary: h.newPrimary,
        oldPrimary: h.oldPrimary,
        reason: h.reason,
        lostBytes: h.lostBytes ?? null,
      }))
      .sort((a, b) => a.term - b.term);
    const analysis = analyzeRun({
      mode: options.synchronousMode,
      acks: w.acks,
      faults,
      initial: { member: first.member, term: first.term },
      termChanges,
      history,
      present,
      falseFailoverGraceMillis: 5000,
      endedAt,
    });

    const versions = {
      pgha: pghaVersion(),
      node: process.version,
      postgres: await serverVersion(finalConn),
      etcd: (await etcd.maintenance.status().catch(() => null))?.version ?? 'unknown',
    };
    const report = buildReport({
      settings: options,
      // The endpoints only: the report is written to a file and printed.
      etcd: options.etcd === undefined ? null : endpoints,
      stateDir,
      startedAt: startedWall,
      durationMillis: endedAt - startedAt,
      unavailable,
      runs,
      faults,
      analysis,
      acks: w.acks,
      failures: w.failures,
      termChanges,
      history,
      timeBase: startedAt,
      finalPrimary: final.member,
      table: checkTable,
      versions,
    });
    return {
      report,
      analysis,
      cluster: c,
      close: () => close(analysis.passed),
    };
  } catch (error) {
    if (!signal.aborted) progress(`failed; logs kept in ${logDir}`);
    await close(false);
    throw error;
  }
}

async function serverVersion(connectionString: string): Promise<string> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    return String((await client.query('SHOW server_version')).rows[0].server_version);
  } catch {
    return 'unknown';
  } finally {
    await client.end().catch(() => undefined);
  }
}

function formatClock(millis: number): string {
  const s = Math.floor(millis / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}
