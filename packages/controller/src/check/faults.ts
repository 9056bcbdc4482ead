/**
 * `pgha check`'s fault injectors, one per kind. Each one hits a real process (kill -9,
 * SIGSTOP/SIGCONT), writes a real request (switchover), or cuts a real network link,
 * and returns once the fault's active part is over (a frozen process resumed, a lost
 * host or etcd member started again); the runner then waits for the cluster to be
 * healthy. Every process frozen is recorded in `frozen` so that an interrupted run
 * resumes it.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { type ClusterKeys, LeaderRecord, recordVersion, SwitchoverRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { commandLine, living, postgresProcesses, postmasterPid, processState, watchdogOf } from '../adapters/proc.js';
import type { LocalEtcdCluster } from '../runtime/local/etcd-cluster.js';
import type { LocalCluster, LocalMember } from '../runtime/local/local-cluster.js';
import type { NetnsNetwork } from '../runtime/local/netns.js';
import type { FaultKind, Random } from './settings.js';

/** What an injector may touch. */
export interface FaultContext {
  readonly cluster: LocalCluster;
  readonly etcd: Etcd3;
  readonly keys: ClusterKeys;
  readonly random: Random;
  /** The lease TTL the agents run with: freezes and outages last longer than it. */
  readonly leaseTtlMillis: number;
  /** The multi-member etcd pgha check started, or null (one member, or an external etcd). */
  readonly etcdCluster: LocalEtcdCluster | null;
  /** The members' network namespaces, or null when they run in this one. */
  readonly network: NetnsNetwork | null;
  /** PIDs frozen by SIGSTOP and not yet resumed. */
  readonly frozen: Set<number>;
  readonly note: (line: string) => void;
}

/** What a fault hits. */
export interface FaultTarget {
  /** A member name, or an etcd member's name. */
  readonly name: string;
  readonly role: 'primary' | 'replica' | 'etcd';
}

/** One kind of fault. */
export interface FaultInjector {
  readonly kind: FaultKind;
  /** Why this kind cannot run with this setup, or null when it can. */
  unavailable(ctx: Pick<FaultContext, 'etcdCluster' | 'network'>): string | null;
  /** Which targets it may hit, given the current primary (etcd-member-loss picks its own). */
  readonly hitsMembers: boolean;
  /** Injects the fault; resolves with a one-line description once its active part is over. */
  inject(ctx: FaultContext, target: FaultTarget): Promise<string>;
}

function member(ctx: FaultContext, name: string): LocalMember {
  const m = ctx.cluster.members.find((x) => x.name === name);
  if (m === undefined) throw new Error(`no member ${name}`);
  return m;
}

function kill(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

function freeze(ctx: FaultContext, pids: readonly number[]): void {
  for (const pid of pids) ctx.frozen.add(pid);
  kill(pids, 'SIGSTOP');
}

function thaw(ctx: FaultContext, pids: readonly number[]): void {
  kill(pids, 'SIGCONT');
  for (const pid of pids) ctx.frozen.delete(pid);
}

/** The agent's PID; the agent may be between restarts, so wait for it (bounded). */
async function agentPid(m: LocalMember): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const pid = m.agentPid();
    if (pid !== undefined && living([pid]).length === 1) return pid;
    await delay(100);
  }
  throw new Error(`the agent of ${m.name} is not running`);
}

/** The agent's node process: through `ip netns exec` the PID is the same (exec), but check. */
function describe(pid: number | undefined): string {
  return pid === undefined ? '-' : `${pid}${/watchdog/.test(commandLine(pid)) ? ' (watchdog)' : ''}`;
}

const freezeMillis = (ctx: FaultContext) => ctx.leaseTtlMillis + 2000;

/**
 * Host loss: kill -9 of the agent, its watchdog and every postgres process, and the
 * member stays down (the supervisor does not restart it) for lease TTL + 3 s, so the
 * cluster fails over without it, as after a machine's power loss; then it boots again.
 */
const hostLoss: FaultInjector = {
  kind: 'host-loss',
  hitsMembers: true,
  unavailable: () => null,
  async inject(ctx, target) {
    const m = member(ctx, target.name);
    const agent = await agentPid(m);
    const watchdog = watchdogOf(agent);
    const pm = postmasterPid(m.memberDir);
    const postgres = pm === null ? [] : postgresProcesses(pm);
    ctx.cluster.hold(m.name);
    kill([agent, ...(watchdog === undefined ? [] : [watchdog]), ...postgres], 'SIGKILL');
    const down = ctx.leaseTtlMillis + 3000;
    await delay(down);
    ctx.cluster.startMember(m.name);
    return `killed agent ${agent}, watchdog ${describe(watchdog)}, ${postgres.length} postgres processes; down ${down / 1000} s`;
  },
};

/** Agent kill: kill -9 of the agent alone (its postgres dies with it by pdeathsig); the supervisor restarts it. */
const agentKill: FaultInjector = {
  kind: 'agent-kill',
  hitsMembers: true,
  unavailable: () => null,
  async inject(ctx, target) {
    const agent = await agentPid(member(ctx, target.name));
    kill([agent], 'SIGKILL');
    return `killed agent ${agent}`;
  },
};

/** Agent freeze: SIGSTOP of the agent alone for longer than the lease TTL, then SIGCONT. */
const agentFreeze: FaultInjector = {
  kind: 'agent-freeze',
  hitsMembers: true,
  unavailable: () => null,
  async inject(ctx, target) {
    const agent = await agentPid(member(ctx, target.name));
    const millis = freezeMillis(ctx);
    freeze(ctx, [agent]);
    await delay(millis);
    thaw(ctx, [agent]);
    return `froze agent ${agent} for ${millis / 1000} s`;
  },
};

/**
 * Host freeze: SIGSTOP of the agent, its watchdog and every postgres process (a VM
 * paused), for longer than the lease TTL; then SIGCONT, the agent and watchdog first
 * (a resumed kernel runs them in no particular order; fault test c2 covers postgres
 * first).
 */
const hostFreeze: FaultInjector = {
  kind: 'host-freeze',
  hitsMembers: true,
  unavailable: () => null,
  async inject(ctx, target) {
    const m = member(ctx, target.name);
    const agent = await agentPid(m);
    const watchdog = watchdogOf(agent);
    const pm = postmasterPid(m.memberDir);
    const postgres = pm === null ? [] : postgresProcesses(pm);
    const all = [agent, ...(watchdog === undefined ? [] : [watchdog]), ...postgres];
    const millis = freezeMillis(ctx) + 1000;
    freeze(ctx, all);
    await delay(millis);
    thaw(ctx, all);
    return `froze agent, watchdog and ${postgres.length} postgres processes for ${millis / 1000} s`;
  },
};

/** Postgres kill: kill -9 of the postmaster (its children exit on its death); the agent restarts it. */
const postgresKill: FaultInjector = {
  kind: 'postgres-kill',
  hitsMembers: true,
  unavailable: () => null,
  async inject(ctx, target) {
    const m = member(ctx, target.name);
    let pm: number | null = null;
    for (let i = 0; i < 100 && pm === null; i++) {
      pm = postmasterPid(m.memberDir);
      if (pm !== null && processState(pm) === '') pm = null;
      if (pm === null) await delay(100);
    }
    if (pm === null) throw new Error(`postgres of ${m.name} is not running`);
    kill([pm], 'SIGKILL');
    return `killed postmaster ${pm}`;
  },
};

/**
 * Switchover: the request `pgha switchover` writes. Hitting the primary asks for the
 * best replica; hitting a replica asks for that one.
 */
const switchover: FaultInjector = {
  kind: 'switchover',
  hitsMembers: true,
  unavailable: () => null,
  async inject(ctx, target) {
    const readLeader = async () => {
      const text = await ctx.etcd.get(ctx.keys.leader).string();
      return text === null ? null : LeaderRecord.decode(text);
    };
    const before = await readLeader();
    const from = before?.member ?? null;
    const to = target.role === 'replica' ? target.name : null;
    const request: SwitchoverRecord = {
      v: recordVersion,
      from,
      to,
      at: null,
      requestedAt: new Date().toISOString(),
    };
    const created = await ctx.etcd
      .if(ctx.keys.switchover, 'Create', '==', 0)
      .then(ctx.etcd.put(ctx.keys.switchover).value(SwitchoverRecord.encode(request)))
      .commit();
    if (!created.succeeded) return 'another switchover request was pending; none written';
    // Like `pgha switchover`, wait until the controller has acted on it (consumed or
    // rejected, bounded): the old primary stays healthy until then, and a health wait
    // started earlier would end before the switchover began.
    const asked = `requested a switchover from ${from ?? '-'} to ${to ?? 'the best replica'}`;
    const deadline = performance.now() + 30_000;
    while (performance.now() < deadline) {
      const pending = await ctx.etcd
        .get(ctx.keys.switchover)
        .string()
        .catch(() => 'unknown');
      if (pending === null) {
        // Consumed: the target is written. Wait for its leader record (a newer term), so
        // that the old primary, still writable until it steps down, is not taken for
        // a recovered cluster.
        while (performance.now() < deadline) {
          const leader = await readLeader().catch(() => null);
          if (leader !== null && leader.term > (before?.term ?? 0)) return `${asked}; ${leader.member} took over`;
          await delay(50);
        }
        return `${asked}; consumed, but no new leader within 30 s`;
      }
      if (pending !== 'unknown') {
        const record = SwitchoverRecord.decode(pending);
        if (record.rejected) {
          await ctx.etcd
            .delete()
            .key(ctx.keys.switchover)
            .catch(() => undefined);
          return `${asked}; the controller rejected it: ${record.rejected}`;
        }
      }
      await delay(50);
    }
    await ctx.etcd
      .delete()
      .key(ctx.keys.switchover)
      .catch(() => undefined);
    return `${asked}; not carried out within 30 s (request withdrawn)`;
  },
};

/**
 * Partition: the member's network namespace is cut off from everything (its
 * root-side veth down) for lease TTL + 3 s, then reconnected.
 */
const partition: FaultInjector = {
  kind: 'partition',
  hitsMembers: true,
  unavailable: (ctx) =>
    ctx.network === null
      ? 'the members do not run in network namespaces (needs root, iproute2 and the embedded etcd)'
      : null,
  async inject(ctx, target) {
    const index = ctx.cluster.members.findIndex((m) => m.name === target.name);
    const network = ctx.network!;
    const millis = ctx.leaseTtlMillis + 3000;
    network.cut(index);
    try {
      await delay(millis);
    } finally {
      network.heal(index);
    }
    return `cut ${target.name} off the network for ${millis / 1000} s`;
  },
};

/**
 * etcd member loss: kill -9 of one member of the three-member etcd (the raft leader
 * or a follower, seeded), restarted on its data directory after 2 s.
 */
const etcdMemberLoss: FaultInjector = {
  kind: 'etcd-member-loss',
  hitsMembers: false,
  unavailable: (ctx) =>
    ctx.etcdCluster === null
      ? 'needs the three-member etcd pgha check starts itself (not available with --etcd)'
      : null,
  async inject(ctx, target) {
    const etcd = ctx.etcdCluster!;
    const index = etcd.members.findIndex((m) => m.name === target.name);
    const pid = etcd.members[index]!.pid();
    etcd.kill(index);
    await delay(2000);
    await etcd.restart(index);
    return `killed ${target.name} (pid ${pid ?? '-'}), restarted it after 2 s`;
  },
};

/** Every injector, by kind. */
export const injectors: Readonly<Record<FaultKind, FaultInjector>> = {
  'host-loss': hostLoss,
  'agent-kill': agentKill,
  'agent-freeze': agentFreeze,
  'host-freeze': hostFreeze,
  'postgres-kill': postgresKill,
  switchover,
  partition,
  'etcd-member-loss': etcdMemberLoss,
};

/**
 * The target of the next fault: mostly the primary (3 in 4), else a replica, seeded;
 * for etcd-member-loss the raft leader or a follower, even odds.
 */
export async function chooseTarget(ctx: FaultContext, kind: FaultKind, primary: string): Promise<FaultTarget> {
  if (kind === 'etcd-member-loss') {
    const etcd = ctx.etcdCluster!;
    const leader = await etcd.leaderIndex();
    const wantLeader = ctx.random.next() < 0.5;
    const candidates = etcd.members.map((_, k) => k).filter((k) => (wantLeader ? k === leader : k !== leader));
    const k = candidates.length === 0 ? 0 : ctx.random.pick(candidates);
    return { name: etcd.members[k]!.name, role: 'etcd' };
  }
  const replicas = ctx.cluster.members.map((m) => m.name).filter((n) => n !== primary);
  if (replicas.length === 0 || ctx.random.next() < 0.75) return { name: primary, role: 'primary' };
  return { name: ctx.random.pick(replicas), role: 'replica' };
}
