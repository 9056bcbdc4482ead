/**
 * `pgha demo`'s shell: starts a throw-away local cluster (its own etcd, free ports,
 * a temporary state directory, synchronous quorum replication), runs the example app
 * (demo-app.ts) against it, kills the primary's host with `pgha check`'s host-loss
 * injector, narrates each step of the failover as etcd and the app's Pool see it,
 * then hands what it recorded to the pure summary (demo-report.ts). Everything it
 * starts is stopped by PID on the way out (errors and Ctrl-C included).
 */
import { chmodSync, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { clusterKeys, LeaderRecord, MemberRecord, PghaError, TargetRecord } from '@pgha/core';
import type { Etcd3, Watcher } from 'etcd3';
import { createEtcdClient } from '../adapters/etcd.js';
import { postgresOsUser } from '../adapters/os-user.js';
import { findFreePortRange } from '../adapters/ports.js';
import { processState } from '../adapters/proc.js';
import { waitForHealthyCluster } from '../check/cluster-health.js';
import { type FaultContext, injectors } from '../check/faults.js';
import { seededRandom } from '../check/settings.js';
import { createLogger } from '../log.js';
import { type LocalCluster, startLocalCluster } from '../runtime/local/local-cluster.js';
import { assertReachableBy } from '../runtime/local/state-dir.js';
import { createDemoTable, type DemoApp, demoTable, readDemoRows, startDemoApp } from './demo-app.js';
import {
  type DemoObservations,
  type DemoSummary,
  formatDemoSummary,
  type Milestone,
  sinceFault,
  summarizeDemo,
} from './demo-report.js';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  readonly members: number;
  /** How long the app writes before the fault. */
  readonly warmupMillis: number;
  /** How long a new primary may take to become writable. */
  readonly failoverTimeoutMillis: number;
  /** Everything the demo prints. */
  readonly out: (text: string) => void;
  /** Aborting stops the run where it is and cleans up. */
  readonly signal: AbortSignal;
}

/** A finished run, its cluster still running until `close()`. */
export interface DemoRun {
  readonly observations: DemoObservations;
  readonly summary: DemoSummary;
  readonly cluster: LocalCluster;
  readonly stateDir: string;
  /** The primary at the end, where the rows were read. */
  readonly finalPrimary: string;
  /** Stops everything; removes the state directory when `removeState`. */
  close(removeState: boolean): Promise<void>;
}

const now = () => performance.now();
const callers = 4;

function interrupted(signal: AbortSignal): void {
  if (signal.aborted) throw new PghaError('timeout', 'interrupted (Ctrl-C); stopped everything');
}

/** Runs the demo; throws (after cleaning up) when the cluster cannot be started. */
export async function runDemo(options: DemoOptions): Promise<DemoRun> {
  const { out, signal } = options;
  const cluster = 'demo';
  const keys = clusterKeys(cluster);
  const started = now();
  const clock = () => `${((now() - started) / 1000).toFixed(1).padStart(5)} s`;
  const step = (line: string) => out(`[${clock()}] ${line}\n`);

  const stateDir = mkdtempSync(join(tmpdir(), 'pgha-demo-'));
  chmodSync(stateDir, 0o711); // postgres runs as its own OS user and must enter it
  const logStream = createWriteStream(join(stateDir, 'demo.log'), { flags: 'a' });
  logStream.on('error', () => undefined);
  const log = createLogger('demo', (line) => logStream.write(line));

  let c: LocalCluster | null = null;
  let etcd: Etcd3 | null = null;
  let watcher: Watcher | null = null;
  let app: DemoApp | null = null;
  let closed = false;
  const close = async (removeState: boolean) => {
    if (closed) return;
    closed = true;
    await app?.stop().catch(() => undefined);
    await watcher?.cancel().catch(() => undefined);
    etcd?.close();
    await c?.stop().catch(() => undefined);
    await new Promise<void>((r) => logStream.end(() => r()));
    if (removeState) rmSync(stateDir, { recursive: true, force: true });
  };

  try {
    assertReachableBy(stateDir, postgresOsUser());
    out(
      `pgha demo: a narrated failover on a throw-away ${options.members}-member cluster (state in ${stateDir}).\n` +
        'Starting etcd and the members: the first member runs initdb, the others copy it with a base backup (10-30 s).\n',
    );
    const base = await findFreePortRange(options.members + 2);
    c = await startLocalCluster({
      cluster,
      members: options.members,
      stateDir: join(stateDir, 'cluster'),
      basePort: base,
      etcdPort: base + options.members,
      // Quorum: every acknowledged commit is on a replica too, so losing the primary's
      // host loses no acknowledged write.
      synchronous: { mode: 'quorum', count: 1, strict: false },
      log,
      progress: step,
      signal,
      readyTimeoutMillis: 180_000,
    });
    const lc = c;
    interrupted(signal);
    const portOf = (member: string) => lc.members.find((m) => m.name === member)?.port ?? -1;
    etcd = createEtcdClient({ endpoints: lc.etcdEndpoint }, 3000);
    const e = etcd;
    const leaderText = await e.get(keys.leader).string();
    const first = LeaderRecord.decode(leaderText!);
    const replicas = lc.members.filter((m) => m.name !== first.member).map((m) => m.name);
    out(
      `\nCluster up in ${((now() - started) / 1000).toFixed(1)} s: ${first.member} is the primary (term ${first.term}, port ${first.port})` +
        `${replicas.length > 0 ? `; ${replicas.join(' and ')} stream from it, and each commit waits for one of them (synchronous quorum)` : ''}.\n`,
    );

    // What etcd shows, as it happens: every record the failover writes.
    const termPorts = new Map<number, number>([[first.term, first.port]]);
    let faultAt = Number.POSITIVE_INFINITY;
    let leaderGone: Milestone | null = null;
    let elected: Milestone | null = null;
    let promoting: Milestone | null = null;
    let writable: (Milestone & { timeline: number }) | null = null;
    let rerouted: Milestone | null = null;
    let firstWrite: Milestone | null = null;
    let rejoined: Milestone | null = null;
    const say = (at: number, what: string, text: string) =>
      out(`  ${sinceFault({ faultAt }, at).padStart(8)}  ${what.padEnd(10)} ${text}\n`);
    const old = first.member;
    watcher = await e.watch().prefix(keys.prefix).create();
    watcher.on('delete', (kv) => {
      const at = now();
      if (kv.key.toString() === keys.leader && at >= faultAt && leaderGone === null) {
        leaderGone = { at, member: old };
        say(
          at,
          'detection',
          `${old}'s lease expired: nobody renewed it, so etcd deleted its leader record. The cluster has no primary; the controller starts an election.`,
        );
      }
    });
    watcher.on('put', (kv) => {
      const at = now();
      const key = kv.key.toString();
      try {
        if (key === keys.leader) {
          const l = LeaderRecord.decode(kv.value.toString());
          termPorts.set(l.term, l.port);
          if (l.term <= first.term) return;
          if (!l.writable && promoting === null) {
            promoting = { at, member: l.member };
            say(
              at,
              'promoting',
              `${l.member}'s agent took the leader record for term ${l.term} (one transaction with the term) and is promoting its postgres; not writable yet.`,
            );
          }
          if (l.writable && writable === null) {
            writable = { at, member: l.member, timeline: l.timeline };
            say(
              at,
              'writable',
              `${l.member} left recovery on timeline ${l.timeline}: its leader record now says writable, which is what clients wait for.`,
            );
          }
        } else if (key === keys.target && elected === null) {
          const t = TargetRecord.decode(kv.value.toString());
          if (t.term <= first.term) return;
          elected = { at, member: t.member };
          say(
            at,
            'election',
            `The controller elected ${t.member} for term ${t.term}: the replica holding every acknowledged commit (it wrote the target record).`,
          );
        } else if (key.startsWith(keys.membersPrefix) && at >= faultAt && rejoined === null && writable !== null) {
          const r = MemberRecord.decode(kv.value.toString());
          if (
            r.name === old &&
            r.role === 'replica' &&
            r.state === 'running' &&
            r.streaming &&
            r.timeline === writable.timeline
          ) {
            rejoined = { at, member: old };
            say(
              at,
              'rejoin',
              `${old} is back as a replica on timeline ${writable.timeline} (pg_rewind where its WAL had diverged), streaming from ${writable.member}.`,
            );
          }
        }
      } catch {
        /* a record of another shape: not a milestone */
      }
    });

    // The app.
    await createDemoTable(lc.connectionString(first.member));
    app = startDemoApp({
      etcdEndpoints: [lc.etcdEndpoint],
      cluster,
      user: 'postgres',
      password: lc.superuserPassword,
      database: 'postgres',
      callers,
      pauseMillis: 50,
      now,
      onPrimaryChanged: (event, at) => {
        if (event.term <= first.term || rerouted !== null) return;
        rerouted = { at, member: event.current.member };
        say(
          at,
          'reroute',
          `The app's Pool saw the leader record of term ${event.term} and sends new connections to ${event.current.member} (port ${event.current.port}); old ones are drained.`,
        );
      },
      onNoPrimary: (term, at) => {
        if (at < faultAt) return;
        say(
          at,
          'app',
          `The app's Pool lost its primary (term ${term}): new writes wait for the next one instead of failing.`,
        );
      },
    });
    const a = app;
    out(
      `The app: ${callers} callers insert numbered rows into ${demoTable} through @pgha/client's Pool, each row recording the server's port and the term the Pool believed.\n`,
    );
    const warmDeadline = now() + 30_000;
    while (a.acks.length === 0) {
      interrupted(signal);
      if (now() > warmDeadline)
        throw new PghaError(
          'timeout',
          `the app could not write within 30 s (errors: ${JSON.stringify(a.errors)}); logs in ${stateDir}`,
        );
      await delay(50);
    }
    await delay(options.warmupMillis);
    interrupted(signal);
    out(
      `  ${a.acks.length} writes acknowledged in ${(options.warmupMillis / 1000).toFixed(0)} s, all by ${first.member} (port ${first.port}).\n`,
    );

    // The fault: pgha check's host loss. It returns once the host is back.
    out(
      `\nKilling ${first.member}'s host: kill -9 of its agent, its watchdog and its postgres, as if the machine lost power. Times are from this moment.\n`,
    );
    const ctx: FaultContext = {
      cluster: lc,
      etcd: e,
      keys,
      random: seededRandom(1),
      leaseTtlMillis: lc.settings.leaseTtlMillis,
      etcdCluster: null,
      network: null,
      frozen: new Set(),
      note: (line) => log.info(line),
    };
    // Times count from the moment the agent died, not from the start of the
    // injection: the injector first looks up the host's processes, which takes a
    // moment on a loaded machine, and the primary keeps acknowledging until then.
    const victim = lc.members.find((m) => m.name === first.member)!.agentPid();
    const injectedAt = now();
    let hostBack = false;
    const injection = injectors['host-loss'].inject(ctx, { name: first.member, role: 'primary' }).then((detail) => {
      hostBack = true;
      log.info(`host loss: ${detail}`);
      say(
        now(),
        'restart',
        `${first.member}'s host is back and its agent starts again: it finds a newer term in etcd, so it must not take writes and will follow the new primary.`,
      );
    });
    injection.catch(() => undefined);
    while (victim !== undefined && !['', 'Z'].includes(processState(victim)) && now() - injectedAt < 10_000)
      await delay(5);
    faultAt = now();
    say(
      faultAt,
      'fault',
      `${first.member} is gone. It cannot fence itself or hand over; its lease (TTL ${lc.settings.leaseTtlMillis / 1000} s) simply stops being renewed.`,
    );

    const until = async (cond: () => boolean, millis: number) => {
      const deadline = now() + millis;
      while (!cond() && now() < deadline) {
        interrupted(signal);
        await delay(50);
      }
      return cond();
    };
    const watchFirstWrite = () => {
      if (firstWrite !== null || writable === null) return firstWrite !== null;
      const port = portOf(writable.member);
      const ack = a.acks.find((x) => x.port === port && x.ackAt > faultAt);
      if (ack !== undefined) {
        firstWrite = { at: ack.ackAt, member: writable.member };
        say(
          ack.ackAt,
          'write',
          `The app's first write after the fault was acknowledged by ${writable.member}: writes flow again.`,
        );
      }
      return firstWrite !== null;
    };
    if (await until(() => writable !== null, options.failoverTimeoutMillis)) {
      await until(watchFirstWrite, 30_000);
      await injection.catch(() => undefined);
      await until(() => rejoined !== null, 90_000);
    } else {
      say(now(), 'timeout', `no new primary within ${options.failoverTimeoutMillis / 1000} s.`);
      await until(() => hostBack, 30_000);
    }
    // A little more writing on the whole cluster, then stop and count.
    await delay(1000);
    await a.stop();
    const endedAt = now();
    await watcher.cancel();
    watcher = null;

    const final =
      (await waitForHealthyCluster({
        etcd: e,
        keys,
        members: lc.members.map((m) => m.name),
        timeoutMillis: 30_000,
        interrupted: () => interrupted(signal),
      })) ??
      (await e
        .get(keys.leader)
        .string()
        .then((t) => (t === null ? null : LeaderRecord.decode(t))));
    if (final === null || !final.writable)
      throw new PghaError(
        'timeout',
        `no writable primary at the end of the demo to read the rows from; logs in ${stateDir}`,
      );
    const present = await readDemoRows(lc.connectionString(final.member));
    const observations: DemoObservations = {
      oldPrimary: { member: first.member, port: first.port, term: first.term },
      faultAt,
      leaderGone,
      elected,
      promoting,
      writable,
      rerouted,
      firstWrite,
      rejoined,
      acks: a.acks,
      errors: { ...a.errors },
      termPorts,
      present,
      endedAt,
    };
    const summary = summarizeDemo(observations);
    return {
      observations,
      summary,
      cluster: lc,
      stateDir,
      finalPrimary: final.member,
      close,
    };
  } catch (error) {
    if (!signal.aborted) out(`failed; logs kept in ${stateDir}\n`);
    await close(signal.aborted);
    throw error;
  }
}

/** The app's own view and the summary table, as printed after the run. */
export function formatDemoResult(run: Pick<DemoRun, 'observations' | 'summary' | 'finalPrimary'>): string {
  const { observations: o, summary: s } = run;
  const errors = Object.entries(s.errors).sort((x, y) => y[1] - x[1]);
  const lines = [
    '',
    "The app's view:",
    `  write pause: ${(s.writePauseMillis / 1000).toFixed(2)} s (the longest time without an acknowledged write)`,
    `  errors by type: ${errors.length === 0 ? 'none' : errors.map(([k, n]) => `${k} ${n}`).join(', ')}`,
    `  acknowledged writes: ${s.acked}; on ${run.finalPrimary}, the final primary: ${s.acked - s.lost.length} (lost ${s.lost.length})`,
    `  writes on a wrong node: ${s.wrongNode.length} (each row's server was the primary of the term the Pool believed)`,
    '',
    'Summary (times from the fault):',
    formatDemoSummary(o, s),
  ];
  return `${lines.join('\n')}`;
}
