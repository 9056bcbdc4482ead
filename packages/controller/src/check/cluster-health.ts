/**
 * Waiting for a local cluster to be whole again (`pgha check` after each fault,
 * `pgha demo` before and after its fault): a writable leader, and every member
 * running on the leader's timeline, the leader as primary and every other member a
 * streaming replica, on reports written after a given moment.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { type ClusterKeys, LeaderRecord, MemberRecord } from '@pgha/core';
import type { Etcd3 } from 'etcd3';

/** What {@link waitForHealthyCluster} reads and how long it waits. */
export interface HealthWait {
  readonly etcd: Etcd3;
  readonly keys: ClusterKeys;
  /** Every member's name. */
  readonly members: readonly string[];
  readonly timeoutMillis: number;
  /**
   * Only reports written at least this long from now count: a report sent just
   * before an agent noticed its fault (a postgres just killed) must not pass for
   * recovery. Default 0.
   */
  readonly settleMillis?: number;
  /** Checked between polls; `interrupted` throws to stop the wait (Ctrl-C). */
  readonly interrupted?: () => void;
}

/** The writable leader once the cluster is healthy, or null when it was not within the timeout. */
export async function waitForHealthyCluster(wait: HealthWait): Promise<LeaderRecord | null> {
  const { etcd, keys } = wait;
  const since = Date.now() + (wait.settleMillis ?? 0);
  const deadline = performance.now() + wait.timeoutMillis;
  while (performance.now() < deadline) {
    wait.interrupted?.();
    try {
      const text = await etcd.get(keys.leader).string();
      const l = text === null ? null : LeaderRecord.decode(text);
      if (l !== null && l.writable) {
        const all = await etcd.getAll().prefix(keys.membersPrefix).strings();
        const records = new Map(Object.values(all).map((v) => [MemberRecord.decode(v).name, MemberRecord.decode(v)]));
        const ok = wait.members.every((name) => {
          const r = records.get(name);
          if (r === undefined || r.state !== 'running' || r.timeline !== l.timeline) return false;
          if (Date.parse(r.updatedAt) < since) return false;
          return name === l.member ? r.role === 'primary' : r.role === 'replica' && r.streaming;
        });
        if (ok) return l;
      }
    } catch {
      /* etcd busy: poll again */
    }
    await delay(200);
  }
  return null;
}
