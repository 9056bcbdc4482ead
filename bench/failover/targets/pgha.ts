// pgha itself: a three-member local cluster started by the local runtime
// (`startLocalCluster`, what `pgha up` runs), with its own etcd.
//
// Implemented against the runtime's API as it stands while failover is being
// built: members[i].agentPid(), memberDir/data/postmaster.pid, connectionString(),
// startMember(), hold() when the runtime has it, and the `pgha switchover` subcommand. Needs `pnpm build` first
// (the agents run packages/controller/dist/cli.js).
//
// Synchronous mode: the bench writes the cluster's `config` record itself
// (`synchronousMode: 'quorum'`, count 1, not strict) right after the cluster starts,
// as `pgha config set` will; the primary's agent applies it within a report interval
// or two and publishes its claim in the `sync` record, which the bench waits for.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigRecord, clusterKeys, defaultConfig, LeaderRecord, SyncRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import type pg from 'pg';
import { createEtcdClient } from '../../../packages/controller/src/adapters/etcd.js';
import type { LocalCluster, LocalMember } from '../../../packages/controller/src/runtime/local/local-cluster.js';
import { freePort, freePortRange } from '../lib/ports.js';
import { isAlive, killAndWait, pidsMentioning, postmasterPid, signalPid, waitFor } from '../lib/processes.js';
import { queryOnce, sqlHealth, synchronousStandbys } from '../lib/sql.js';
import type { MemberPids, Mode, Settings, Target, TargetMember } from '../lib/target.js';
import { createWritesTable } from '../lib/writer.js';

export const pghaProfiles: readonly Settings[] = [
  {
    name: 'defaults',
    description: 'agent defaults (lease TTL, keepalive interval, fencing margin as `pgha agent --help` shows)',
  },
];

/** PIDs of the runtime's controller processes, on runtimes that run them. */
function controllerPids(c: LocalCluster): number[] {
  const withControllers = c as LocalCluster & { controllerPids?: () => Array<number | undefined> };
  return (withControllers.controllerPids?.() ?? []).filter((p): p is number => typeof p === 'number');
}

/** Builds the pgha target. */
export function pghaTarget(): Target {
  let stateDir: string | null = null;
  let cluster: LocalCluster | null = null;
  let cli: string | null = null;
  const everyPid = new Set<number>();
  /** The agent PID each member had when a host loss killed it. */
  const killedAgents = new Map<string, number>();
  /** A client of the cluster's etcd, for the config and sync records. */
  let etcd: Etcd3 | null = null;
  let configVersion = 0;

  const local = (m: TargetMember): LocalMember => {
    const found = cluster?.members.find((x) => x.name === m.name);
    if (found === undefined) throw new Error(`no member ${m.name} in the running pgha cluster`);
    return found;
  };

  const pids = (m: TargetMember): MemberPids => {
    const member = local(m);
    const daemon = member.agentPid() ?? null;
    const postmaster = postmasterPid(join(member.memberDir, 'data'));
    for (const p of [daemon, postmaster]) if (p !== null) everyPid.add(p);
    return {
      daemon: daemon !== null && isAlive(daemon) ? daemon : null,
      postmaster: postmaster !== null && isAlive(postmaster) ? postmaster : null,
    };
  };

  const clientConfig = (m: TargetMember): pg.ClientConfig => ({ connectionString: cluster!.connectionString(m.name) });

  const members = (): TargetMember[] =>
    (cluster?.members ?? []).map((m) => ({ name: m.name, host: m.host, port: m.port }));

  const waitHealthy = (timeoutMillis: number): Promise<TargetMember> =>
    waitFor(
      `the pgha cluster to be healthy (logs in ${stateDir}/logs)`,
      async () => {
        const all = members();
        for (const m of all) pids(m);
        const health = await sqlHealth(all, clientConfig);
        if ('problem' in health) throw new Error(health.problem);
        return health.primary;
      },
      timeoutMillis,
      100,
    );

  const keys = () => clusterKeys(cluster!.cluster, cluster!.keyRoot);

  /** The writable leader's record and the `sync` claim, as etcd holds them now. */
  const leaderAndClaim = async (): Promise<{ leader: LeaderRecord | null; claim: SyncRecord | null }> => {
    const k = keys();
    const [leaderText, syncText] = await Promise.all([etcd!.get(k.leader).string(), etcd!.get(k.sync).string()]);
    return {
      leader: leaderText === null ? null : LeaderRecord.decode(leaderText),
      claim: syncText === null ? null : SyncRecord.decode(syncText),
    };
  };

  /** The sync claim made by the current writable leader, in its term, or a sentence saying what is missing. */
  const currentClaim = async (): Promise<{ claim: SyncRecord | null; leader: LeaderRecord } | string> => {
    const { leader, claim } = await leaderAndClaim();
    if (leader === null || !leader.writable) return 'no writable leader';
    if (claim === null || claim.term !== leader.term || claim.member !== leader.member) return { claim: null, leader };
    return { claim, leader };
  };

  const waitSynchronous = async (timeoutMillis: number): Promise<void> => {
    let last = '';
    await waitFor(
      `the pgha primary's sync claim of its term to have quorum ≥ 1 (logs in ${stateDir}/logs)`,
      async () => {
        const now = await currentClaim();
        if (typeof now === 'string') last = now;
        else if (now.claim === null) last = `no claim of term ${now.leader.term} by ${now.leader.member} yet`;
        else if (now.claim.quorum < 1) last = `claim of term ${now.claim.term}: quorum 0 (asynchronous)`;
        else return true;
        throw new Error(last);
      },
      timeoutMillis,
      100,
    );
  };

  const setMode = async (mode: Mode, timeoutMillis: number): Promise<void> => {
    configVersion += 1;
    const record: ConfigRecord = {
      ...defaultConfig,
      synchronousMode: mode === 'sync' ? 'quorum' : 'off',
      synchronousCount: 1,
      synchronousStrict: false,
      version: configVersion,
      updatedAt: new Date().toISOString(),
      updatedBy: 'bench',
    };
    await etcd!.put(keys().config).value(ConfigRecord.encode(record));
    if (mode === 'sync') return waitSynchronous(timeoutMillis);
    // Asynchronous: the claim of the term says so and postgres no longer waits for a standby.
    await waitFor(
      `the pgha primary to stop waiting for standbys (logs in ${stateDir}/logs)`,
      async () => {
        const now = await currentClaim();
        if (typeof now === 'string') throw new Error(now);
        if (now.claim !== null && now.claim.quorum > 0)
          throw new Error(`claim of term ${now.claim.term}: quorum ${now.claim.quorum}`);
        const primary = members().find((m) => m.name === now.leader.member);
        if (primary === undefined) throw new Error(`leader ${now.leader.member} is not a member`);
        const n = await synchronousStandbys(clientConfig(primary));
        if (n > 0) throw new Error(`${primary.name} still has ${n} synchronous standbys`);
        return true;
      },
      timeoutMillis,
      100,
    );
  };

  const teardown = async () => {
    etcd?.close();
    etcd = null;
    const c = cluster;
    cluster = null;
    if (c !== null) {
      for (const m of c.members) {
        const agent = m.agentPid();
        if (agent !== undefined) everyPid.add(agent);
        const postmaster = postmasterPid(join(m.memberDir, 'data'));
        if (postmaster !== null) everyPid.add(postmaster);
      }
      if (c.etcdPid !== null) everyPid.add(c.etcdPid);
      for (const pid of controllerPids(c)) everyPid.add(pid);
      // The runtime's own stop first (agents stop postgres, then etcd), bounded;
      // then by PID whatever is left.
      await Promise.race([c.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 30_000))]);
    }
    const leftovers = stateDir === null ? [] : pidsMentioning(stateDir);
    await killAndWait([...new Set([...everyPid, ...leftovers])].filter(isAlive), 'SIGKILL', 1000);
    everyPid.clear();
    if (stateDir !== null) rmSync(stateDir, { recursive: true, force: true });
    stateDir = null;
  };

  return {
    system: 'pgha',
    profiles: pghaProfiles,
    get logDir() {
      return stateDir === null ? null : join(stateDir, 'logs');
    },
    async setup(_settings: Settings, mode: Mode) {
      if (cluster !== null || stateDir !== null) await teardown();
      const { startLocalCluster, cliPath } = await import(
        '../../../packages/controller/src/runtime/local/local-cluster.js'
      );
      const { createLogger } = await import('../../../packages/controller/src/log.js');
      cli = cliPath();
      stateDir = mkdtempSync('/tmp/bench-pgha-');
      // The postgres OS user must reach its member directories inside.
      chmodSync(stateDir, 0o711);
      const basePort = await freePortRange(3);
      let etcdPort = await freePortRange(2);
      while (etcdPort >= basePort - 1 && etcdPort <= basePort + 3) etcdPort = await freePort();
      cluster = await startLocalCluster({
        cluster: 'bench',
        stateDir,
        basePort,
        etcdPort,
        members: 3,
        log: createLogger('bench', () => undefined),
        readyTimeoutMillis: 180_000,
      });
      if (cluster.etcdPid !== null) everyPid.add(cluster.etcdPid);
      for (const pid of controllerPids(cluster)) everyPid.add(pid);
      etcd = createEtcdClient({ endpoints: cluster.etcdEndpoint });
      configVersion = 0;
      if (mode === 'sync') await setMode('sync', 60_000);
      const primary = await waitHealthy(120_000);
      await queryOnce(clientConfig(primary), createWritesTable, [], 10_000);
      await waitHealthy(60_000);
      return members();
    },
    setMode,
    waitSynchronous,
    pids,
    clientConfig,
    async hostLoss(m) {
      const { daemon, postmaster } = pids(m);
      if (daemon === null || postmaster === null)
        throw new Error(`${m.name} is not running (agent ${daemon}, postmaster ${postmaster})`);
      killedAgents.set(m.name, daemon);
      // A lost host stays down: keep the runtime's supervision (which restarts a
      // dead agent within ~0.5 s, as Kubernetes restarts a pod) from bringing it
      // back before restartHost(), or this would measure a crash-restart instead.
      const c = cluster as (LocalCluster & { hold?: (name: string) => void }) | null;
      c?.hold?.(m.name);
      signalPid(daemon, 'SIGKILL');
      signalPid(postmaster, 'SIGKILL');
    },
    async postgresCrash(m) {
      const { postmaster } = pids(m);
      if (postmaster === null) throw new Error(`${m.name} has no running postmaster`);
      signalPid(postmaster, 'SIGKILL');
    },
    switchover() {
      const c = cluster!;
      const args = [cli!, 'switchover', '--etcd', c.etcdEndpoint, '--cluster', c.cluster];
      if (c.keyRoot !== undefined) args.push('--key-root', c.keyRoot);
      return new Promise((resolve, reject) => {
        execFile(process.execPath, args, { timeout: 120_000, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
          if (error !== null) reject(new Error(`pgha switchover failed: ${error.message}\n${stdout}${stderr}`));
          else resolve();
        });
      });
    },
    async restartHost(m) {
      // startMember() also releases a held member. On a runtime without hold(), its
      // supervision may already have restarted the agent: then there is nothing to do.
      const member = local(m);
      const current = member.agentPid();
      if (current !== undefined && current !== killedAgents.get(m.name) && isAlive(current)) return;
      cluster!.startMember(m.name);
      const pid = member.agentPid();
      if (pid !== undefined) everyPid.add(pid);
    },
    waitHealthy,
    teardown,
  };
}
