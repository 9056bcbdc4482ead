/**
 * `pgha up`'s wait until a started cluster is up: one writable primary and every
 * other member a streaming replica. The decisions are pure ({@link describeStartUp},
 * {@link decideEtcdSilence}); {@link waitUntilUp} reads etcd and the agents' exits.
 */
import type { ChildProcess } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { type ClusterKeys, LeaderRecord, MemberRecord, PghaError } from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import { castEtcdError } from '../../adapters/etcd.js';
import { logTail } from '../../adapters/postgres-server.js';

/** What each member is doing, as `pgha up` prints it, and whether the cluster is up. */
export function describeStartUp(
  names: readonly string[],
  leader: LeaderRecord | null,
  records: ReadonlyMap<string, MemberRecord>,
): { lines: ReadonlyMap<string, string>; primary: string | null } {
  const lines = new Map<string, string>();
  for (const name of names) {
    const r = records.get(name);
    lines.set(
      name,
      r === undefined
        ? 'waiting for its agent'
        : `${r.state}${r.role === 'unknown' ? '' : ` as ${r.role}`}${r.role === 'replica' ? (r.streaming ? ', streaming' : ', not streaming yet') : ''}`,
    );
  }
  const up =
    leader !== null &&
    leader.writable &&
    names.every((name) => {
      const r = records.get(name);
      if (r === undefined || r.state !== 'running') return false;
      return name === leader.member ? r.role === 'primary' : r.role === 'replica' && r.streaming;
    });
  return { lines, primary: up ? leader.member : null };
}

/**
 * What to do when etcd did not answer: a refusal (TLS, permissions;
 * `invalid-option`) is final at once; a silence is waited out for `patienceMillis`
 * from when it began (`since`, null when etcd answered last time), and announced
 * once, as it begins.
 */
export function decideEtcdSilence(
  code: string,
  since: number | null,
  now: number,
  patienceMillis: number,
): 'give-up' | 'announce' | 'wait' {
  if (code === 'invalid-option') return 'give-up';
  if (since === null) return 'announce';
  return now - since > patienceMillis ? 'give-up' : 'wait';
}

/** How long etcd may stay silent before `pgha up` gives up: longer than an agent waits for etcd at start-up (StartUp's 20 s). */
export const etcdPatienceMillis = 30_000;

export interface StartUpWait {
  readonly etcd: Etcd3;
  readonly etcdEndpoint: string;
  readonly keys: ClusterKeys;
  readonly names: readonly string[];
  /** Each member's agent process and log file: an agent that exits ends the wait. */
  readonly agents: ReadonlyMap<string, ChildProcess>;
  readonly logFileOf: (name: string) => string;
  readonly timeoutMillis: number;
  readonly logDir: string;
  readonly signal?: AbortSignal;
  readonly progress: (line: string) => void;
}

/**
 * Waits until the cluster is up and returns its primary's name, printing each
 * member's state as it changes.
 *
 * @throws PghaError `timeout` (interrupted, or not up within the timeout),
 *   `postgres-failed` (an agent exited), or etcd's own error once it has been
 *   silent for {@link etcdPatienceMillis} or refused us.
 */
export async function waitUntilUp(w: StartUpWait): Promise<string> {
  const deadline = Date.now() + w.timeoutMillis;
  const seen = new Map<string, string>();
  let etcdSilentSince: number | null = null;
  for (;;) {
    if (w.signal?.aborted)
      throw new PghaError('timeout', 'interrupted while the cluster was starting; stopped everything');
    for (const [name, child] of w.agents) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new PghaError(
          'postgres-failed',
          `the agent of ${name} exited (${child.exitCode ?? child.signalCode}) while the cluster was starting; its log (${w.logFileOf(name)}) ends:\n${logTail(w.logFileOf(name), 6)}`,
        );
      }
    }
    let leader: LeaderRecord | null = null;
    const records = new Map<string, MemberRecord>();
    try {
      const text = await w.etcd.get(w.keys.leader).string();
      leader = text === null ? null : LeaderRecord.decode(text);
      const all = await w.etcd.getAll().prefix(w.keys.membersPrefix).strings();
      for (const value of Object.values(all)) {
        const record = MemberRecord.decode(value);
        records.set(record.name, record);
      }
      etcdSilentSince = null;
    } catch (error) {
      // One slow answer (a stalled disk under etcd's fsync) is not a failed start.
      const failure = castEtcdError(error, w.etcdEndpoint, 'waiting for the cluster to start');
      const now = Date.now();
      const decision = decideEtcdSilence(failure.code, etcdSilentSince, now, etcdPatienceMillis);
      if (decision === 'give-up') throw failure;
      if (decision === 'announce') {
        etcdSilentSince = now;
        w.progress(
          `etcd did not answer (${error instanceof Error ? error.message.split('\n')[0] : String(error)}); waiting up to ${etcdPatienceMillis / 1000} s for it`,
        );
      }
      await delay(500);
      continue;
    }
    const { lines, primary } = describeStartUp(w.names, leader, records);
    for (const [name, line] of lines) {
      if (seen.get(name) !== line) {
        seen.set(name, line);
        w.progress(`${name}: ${line}`);
      }
    }
    if (primary !== null) return primary;
    if (Date.now() > deadline) {
      throw new PghaError(
        'timeout',
        `the cluster did not come up within ${w.timeoutMillis / 1000} s; see the logs in ${w.logDir}`,
      );
    }
    await delay(200);
  }
}
