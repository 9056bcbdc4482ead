// One trial: a healthy cluster, the writer running, one fault, then the three
// measurements. Every wait is bounded; a trial that times out is reported as failed.
import { bounded, now, sleep, waitFor } from './processes.js';
import { queryOnce, streamingReplicas, synchronousStandbys } from './sql.js';
import type { Fault, Mode, Target, TargetMember } from './target.js';
import { type Ack, Writer, writesTable } from './writer.js';

/** What one trial measured. Seconds unless named otherwise. */
export interface TrialResult {
  readonly system: string;
  readonly profile: string;
  /** The replication mode the cluster ran in (absent in results saved before modes existed: `async`). */
  readonly mode?: Mode;
  readonly fault: Fault;
  readonly trial: number;
  /**
   * Standbys confirming the primary's commits (pg_stat_replication `sync`/`quorum`)
   * just before the fault; a `sync` trial with none fails, since it would not test
   * synchronous replication. Absent in older results.
   */
  readonly syncStandbys?: number | null;
  readonly oldPrimary: string;
  readonly newPrimary: string | null;
  /** From the fault to the first acknowledged write on the new primary (or on the restarted old one). */
  readonly toWrite: number | null;
  /** The longest gap between two consecutive acknowledged writes from just before the fault on. */
  readonly pause: number | null;
  /** Acknowledged writes absent from the primary once the cluster has settled. */
  readonly lost: number | null;
  /** Writes the old primary acknowledged after the new primary had acknowledged one (two writable primaries). */
  readonly lateOldAcks: number | null;
  /**
   * Until the old primary streams from the new one: for host loss from the new
   * primary's first write, when the host comes back (earlier would let a restarted
   * daemon reclaim a lease it still holds, which is a crash, not a host loss); from
   * the fault otherwise. Null when the old primary stayed primary (in-place restart).
   */
  readonly rejoin: number | null;
  readonly acked: number;
  readonly error?: string;
}

/** Bounds of each phase, in milliseconds. Generous: Patroni's defaults need ~30 s for a failover. */
export interface TrialLimits {
  readonly healthyMillis: number;
  readonly firstWriteMillis: number;
  readonly rejoinMillis: number;
}

export const defaultLimits: TrialLimits = { healthyMillis: 180_000, firstWriteMillis: 120_000, rejoinMillis: 180_000 };

/** Writes acknowledged before the fault, so the writer is known to be steady on the primary. */
const warmupAcks = 100;
/** How long the writer keeps going after the old primary is back, so late acks by it would show. */
const tailMillis = 1000;

const seconds = (ms: number) => ms / 1000;

/** Runs `fault` once against a healthy cluster of `members`. */
export async function runTrial(options: {
  target: Target;
  profile: string;
  mode: Mode;
  members: readonly TargetMember[];
  fault: Fault;
  trial: number;
  limits?: TrialLimits;
  log: (line: string) => void;
}): Promise<TrialResult> {
  const { target, members, fault, trial, mode, log } = options;
  const limits = options.limits ?? defaultLimits;
  const configOf = (m: TargetMember) => target.clientConfig(m);
  const primary = await target.waitHealthy(limits.healthyMillis);
  const key = `${target.system}/${options.profile}/${mode}/${fault}/${trial}/${Date.now()}`;
  const writer = new Writer(members, configOf, key, primary);
  const base = {
    system: target.system,
    profile: options.profile,
    mode,
    fault,
    trial,
    oldPrimary: primary.name,
  };
  let syncStandbys: number | null = null;
  let command: Promise<void> | null = null;
  let newPrimary: string | null = null;
  try {
    // In synchronous mode a trial starts only once the system says a standby confirms
    // commits (after a failover the new primary has to re-establish it).
    if (mode === 'sync') await target.waitSynchronous(limits.healthyMillis);
    writer.start();
    await writer.waitForAck(
      `${warmupAcks} writes on ${primary.name} before the fault`,
      () => writer.acks.length >= warmupAcks,
      30_000,
    );
    syncStandbys = await synchronousStandbys(configOf(primary));
    if (mode === 'sync' && syncStandbys === 0)
      throw new Error(
        `${primary.name} has no synchronous standby just before the fault (pg_stat_replication shows none with sync_state sync/quorum): this would not test synchronous replication`,
      );

    const t0 = now();
    switch (fault) {
      case 'host-loss':
        await target.hostLoss(primary);
        break;
      case 'postgres-crash':
        await target.postgresCrash(primary);
        break;
      case 'switchover':
        command = target.switchover(primary);
        command.catch(() => undefined);
        break;
      default: {
        const never: never = fault;
        throw new Error(`unknown fault ${never}`);
      }
    }
    log(`  ${fault} of ${primary.name}`);

    // The new primary's first write. After a postgres crash the old primary may
    // come back in place: then the first write must come over a connection made
    // after the crash, since every session of the crashed postmaster is gone.
    const first = await writer.waitForAck(
      'the first acknowledged write after the fault',
      (a) => a.at > t0 && (a.member !== primary.name || (fault === 'postgres-crash' && a.connectedAt > t0)),
      limits.firstWriteMillis,
    );
    newPrimary = first.member;
    const toWrite = seconds(first.at - t0);
    log(`  first write on ${newPrimary} after ${toWrite.toFixed(2)} s`);

    let rejoinFrom = t0;
    if (fault === 'host-loss') {
      rejoinFrom = now();
      await target.restartHost(primary);
    }
    let rejoin: number | null = null;
    if (newPrimary !== primary.name) {
      const newMember = members.find((m) => m.name === newPrimary)!;
      await waitFor(
        `${primary.name} to stream from ${newPrimary}`,
        async () => (await streamingReplicas(configOf(newMember))).has(primary.name),
        limits.rejoinMillis,
        50,
      );
      rejoin = seconds(now() - rejoinFrom);
      log(`  ${primary.name} streams from ${newPrimary} after ${rejoin.toFixed(2)} s`);
    }
    if (command !== null) await bounded('the switchover command to finish', command, 120_000);
    await sleep(tailMillis);
    await writer.stop();

    const finalPrimary = await target.waitHealthy(limits.healthyMillis);
    const rows = await queryOnce<{ id: number }>(
      configOf(finalPrimary),
      `SELECT id FROM ${writesTable} WHERE trial = $1`,
      [key],
      10_000,
    );
    const present = new Set(rows.map((r) => Number(r.id)));
    const lost = writer.acks.filter((a) => !present.has(a.id)).length;
    const lateOldAcks =
      newPrimary === primary.name ? 0 : writer.acks.filter((a) => a.member === primary.name && a.at > first.at).length;
    return {
      ...base,
      syncStandbys,
      newPrimary,
      toWrite,
      pause: longestPause(writer.acks, t0),
      lost,
      lateOldAcks,
      rejoin,
      acked: writer.acks.length,
    };
  } catch (error) {
    await writer.stop();
    if (command !== null) await bounded('the switchover command to finish', command, 120_000).catch(() => undefined);
    return {
      ...base,
      syncStandbys,
      newPrimary,
      toWrite: null,
      pause: null,
      lost: null,
      lateOldAcks: null,
      rejoin: null,
      acked: writer.acks.length,
      error: (error as Error).message,
    };
  }
}

/** The longest gap between consecutive acks, counting from the last ack before `t0`. */
export function longestPause(acks: readonly Ack[], t0: number): number | null {
  const times = acks.map((a) => a.at).sort((a, b) => a - b);
  let start = times.findIndex((t) => t > t0);
  if (start < 0) return null;
  if (start > 0) start -= 1;
  let longest = 0;
  for (let i = start + 1; i < times.length; i++) longest = Math.max(longest, times[i]! - times[i - 1]!);
  return seconds(longest);
}
