import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import { createEtcdClient } from '../../adapters/etcd.js';
import { exited } from '../../adapters/processes.js';
import { type EtcdServer, startEtcdServer } from './etcd-server.js';

/** One member of a {@link LocalEtcdCluster}. */
export interface LocalEtcdMember {
  readonly name: string;
  readonly endpoint: string;
  /** Its PID, undefined while it is down. */
  pid(): number | undefined;
}

/** What one member says about the raft group (null: it did not answer). */
export interface EtcdMemberStatus {
  readonly id: string;
  readonly leader: string;
  readonly version: string;
}

/** Several local etcd members forming one cluster (tests, `pgha check`). */
export interface LocalEtcdCluster {
  /** Comma-separated client URLs of every member. */
  readonly endpoints: string;
  readonly members: readonly LocalEtcdMember[];
  /** Each member's status, in member order. */
  statuses(): Promise<Array<EtcdMemberStatus | null>>;
  /** Index of the raft leader as the members report it, or -1. */
  leaderIndex(): Promise<number>;
  /** SIGKILLs member `index` (kill -9); it stays down until {@link restart}. */
  kill(index: number): void;
  /** Starts member `index` again on its data directory and waits until it answers. */
  restart(index: number): Promise<void>;
  /** Stops every member (SIGTERM, then SIGKILL). Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startLocalEtcdCluster}. */
export interface LocalEtcdClusterOptions {
  readonly dir: string;
  readonly size: number;
  /** Client port of member k is basePort + 2k, its peer port the next. */
  readonly basePort: number;
  readonly namePrefix?: string;
  /**
   * Raft timing. With pgha's 2 s lease an etcd election must fit in the fencing budget:
   * docs/architecture.md measured 50/300 ms as fitting, 100/1000 ms as not.
   */
  readonly heartbeatIntervalMillis?: number;
  readonly electionTimeoutMillis?: number;
  readonly host?: string;
}

/**
 * Starts `size` etcd members on loopback as one cluster (all at once: none answers
 * before a quorum runs). Every process dies with ours (pdeathsig).
 */
export async function startLocalEtcdCluster(options: LocalEtcdClusterOptions): Promise<LocalEtcdCluster> {
  const host = options.host ?? '127.0.0.1';
  const prefix = options.namePrefix ?? 'etcd';
  const names = Array.from({ length: options.size }, (_, k) => `${prefix}-${k}`);
  const ports = names.map((_, k) => ({ client: options.basePort + 2 * k, peer: options.basePort + 2 * k + 1 }));
  const initialCluster = names.map((n, k) => `${n}=http://${host}:${ports[k]!.peer}`).join(',');
  const servers: Array<EtcdServer | undefined> = [];
  const start = async (k: number) => {
    servers[k] = await startEtcdServer({
      dataDir: join(options.dir, names[k]!),
      clientPort: ports[k]!.client,
      peerPort: ports[k]!.peer,
      host,
      name: names[k],
      initialCluster,
      heartbeatIntervalMillis: options.heartbeatIntervalMillis ?? 50,
      electionTimeoutMillis: options.electionTimeoutMillis ?? 300,
      logFile: join(options.dir, `${names[k]}.log`),
      detached: true,
    });
  };
  const stop = async () => {
    await Promise.all(servers.map((s) => s?.stop().catch(() => undefined)));
  };
  try {
    await Promise.all(names.map((_, k) => start(k)));
  } catch (error) {
    await stop();
    throw error;
  }
  const members: LocalEtcdMember[] = names.map((name, k) => ({
    name,
    endpoint: `http://${host}:${ports[k]!.client}`,
    pid: () => {
      const s = servers[k];
      return s !== undefined && s.child.exitCode === null && s.child.signalCode === null ? s.pid : undefined;
    },
  }));
  const statuses = () =>
    Promise.all(
      members.map(async (m) => {
        const probe = createEtcdClient({ endpoints: m.endpoint }, 500);
        try {
          const s = await probe.maintenance.status();
          return { id: s.header.member_id, leader: s.leader, version: s.version };
        } catch {
          return null;
        } finally {
          probe.close();
        }
      }),
    );
  return {
    endpoints: members.map((m) => m.endpoint).join(','),
    members,
    statuses,
    async leaderIndex() {
      const all = await statuses();
      return all.findIndex((s) => s !== null && s.id === s.leader);
    },
    kill(index: number) {
      const pid = members[index]?.pid();
      if (pid === undefined) throw new PghaError('invalid-option', `etcd member ${index} is not running`);
      process.kill(pid, 'SIGKILL');
    },
    async restart(index: number) {
      const old = servers[index];
      if (old !== undefined) {
        // A member just killed: its exit is reported a moment later.
        await Promise.race([exited(old.child), new Promise((r) => setTimeout(r, 5000))]);
        if (old.child.exitCode === null && old.child.signalCode === null) return; // still running
      }
      await start(index);
    },
    stop,
  };
}
