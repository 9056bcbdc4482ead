import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { defaultConfig, type SynchronousMode, synchronousModes } from '@pgha/core';
import { type Command, Option } from 'commander';
import { formatSummary } from '../check/report.js';
import { runCheck } from '../check/run-check.js';
import { faultKinds, parseDuration, parseFaults } from '../check/settings.js';
import { addEtcdConnectionOptions, type EtcdConnectionFlags, etcdConnectionFrom } from './etcd-options.js';

interface CheckFlags extends EtcdConnectionFlags {
  etcd?: string;
  cluster: string;
  members: number;
  duration?: string;
  faultsPerKind?: number;
  faults: string;
  rate: number;
  seed?: number;
  synchronous: SynchronousMode;
  synchronousCount: number;
  synchronousStrict: boolean;
  leaseTtl: number;
  keepalive: number;
  fencingMargin: number;
  etcdHeartbeat?: number;
  etcdElectionTimeout?: number;
  cpuHog: number;
  recoveryTimeout: number;
  stateDir?: string;
  json?: string | boolean;
  keep: boolean;
  verbose: boolean;
}

/** Registers `pgha check`: the consistency checker (docs/check.md). */
export function registerCheck(program: Command, integer: (min: number, max: number) => (v: string) => number): void {
  const command = program
    .command('check')
    .description(
      'consistency check: start a local cluster, write through the pgha Pool and directly to every member, inject seeded faults, and verify no acknowledged write was lost (quorum mode) or acknowledged by a superseded primary',
    )
    .option('--etcd <url>', 'use this etcd instead of starting one (etcd-member-loss and partition then cannot run)')
    .option('--cluster <name>', 'cluster name (must not exist yet in etcd)', 'check')
    .addOption(new Option('--members <n>', 'number of members').argParser(integer(1, 9)).default(3))
    .option(
      '--duration <time>',
      'stop injecting faults after this long: 90s, 30m, 1h (default 5m, or none with --faults-per-kind)',
    )
    .addOption(
      new Option('--faults-per-kind <n>', 'stop after this many faults of each kind').argParser(integer(1, 100_000)),
    )
    .option('--faults <list>', `comma-separated fault kinds, or all: ${faultKinds.join(', ')}`, 'all')
    .addOption(new Option('--rate <n>', 'writes per second in total').argParser(integer(1, 10_000)).default(100))
    .addOption(
      new Option('--seed <n>', 'seed of the fault order, targets and pauses (default: random, printed)').argParser(
        integer(0, 2 ** 31 - 1),
      ),
    )
    .addOption(
      new Option('--synchronous <mode>', 'replication mode written to the config record before the members start')
        .choices([...synchronousModes])
        .default('off'),
    )
    .addOption(
      new Option('--synchronous-count <n>', 'quorum: replicas that confirm each commit')
        .argParser(integer(1, 64))
        .default(1),
    )
    .option('--synchronous-strict', 'quorum: block commits rather than degrade when too few replicas confirm', false)
    .addOption(
      new Option('--lease-ttl <ms>', 'lease TTL of the members (written to the config record)')
        .argParser(integer(1000, 600_000))
        .default(defaultConfig.leaseTtlMillis),
    )
    .addOption(
      new Option('--keepalive <ms>', 'lease keepalive interval (at most half the TTL)')
        .argParser(integer(50, 60_000))
        .default(defaultConfig.keepaliveIntervalMillis),
    )
    .addOption(
      new Option('--fencing-margin <ms>', 'a primary fences this long before its lease could expire')
        .argParser(integer(0, 60_000))
        .default(defaultConfig.fencingMarginMillis),
    )
    .addOption(
      new Option(
        '--etcd-heartbeat <ms>',
        "heartbeat interval of the etcd pgha check starts (default: etcd's, 50 ms with 3 members)",
      ).argParser(integer(10, 10_000)),
    )
    .addOption(
      new Option(
        '--etcd-election-timeout <ms>',
        'election timeout of the etcd pgha check starts, at least 5 heartbeats (default 300 ms with 3 members); it must fit in the lease TTL minus the fencing margin',
      ).argParser(integer(50, 60_000)),
    )
    .addOption(
      new Option(
        '--cpu-hog [n]',
        'run n busy-looping processes beside the cluster for the whole run (without n: one per CPU) to check the deadlines on a saturated machine',
      )
        .argParser(integer(1, 256))
        .preset(availableParallelism())
        .default(0),
    )
    .addOption(
      new Option(
        '--recovery-timeout <s>',
        'seconds a fault may take to recover (cluster healthy again) before the run stops as not recovered; raise it on a loaded machine',
      )
        .argParser(integer(10, 3600))
        .default(90),
    )
    .option(
      '--state-dir <dir>',
      'where data and logs go (empty or new; default: a temporary directory, removed after a passed run)',
    )
    .option(
      '--json [file]',
      'write the report as JSON to FILE (or, without FILE, to stdout; the summary then goes to stderr)',
    )
    .option('--keep', 'leave the cluster running after the report, until Ctrl-C', false)
    .option('--verbose', 'print every step (fault details, term changes, member states)', false)
    .action(async (opts: CheckFlags) => {
      const faults = parseFaults(opts.faults);
      const etcd = opts.etcd === undefined ? undefined : etcdConnectionFrom(opts.etcd, opts);
      const durationMillis =
        opts.duration !== undefined ? parseDuration(opts.duration) : opts.faultsPerKind !== undefined ? null : 300_000;
      const seed = opts.seed ?? randomInt(0, 2 ** 31 - 1);
      const jsonToStdout = opts.json === true;
      const out = (text: string) => (jsonToStdout ? process.stderr : process.stdout).write(text);
      const progress = (line: string) => process.stderr.write(`${line}\n`);
      const abort = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        if (abort.signal.aborted) return;
        process.stderr.write(`\n${signal}: stopping the check and everything it started...\n`);
        abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      progress(`pgha check: seed ${seed} (repeat a run with --seed ${seed})`);
      let run: Awaited<ReturnType<typeof runCheck>>;
      try {
        run = await runCheck({
          cluster: opts.cluster,
          members: opts.members,
          durationMillis,
          faultsPerKind: opts.faultsPerKind ?? null,
          faults,
          rate: opts.rate,
          seed,
          synchronousMode: opts.synchronous,
          synchronousCount: opts.synchronousCount,
          synchronousStrict: opts.synchronousStrict,
          leaseTtlMillis: opts.leaseTtl,
          keepaliveIntervalMillis: opts.keepalive,
          fencingMarginMillis: opts.fencingMargin,
          etcdHeartbeatMillis: opts.etcdHeartbeat ?? null,
          etcdElectionTimeoutMillis: opts.etcdElectionTimeout ?? null,
          cpuHog: opts.cpuHog,
          recoveryTimeoutMillis: opts.recoveryTimeout * 1000,
          ...(etcd === undefined ? {} : { etcd }),
          stateDir: opts.stateDir,
          verbose: opts.verbose,
          progress,
          signal: abort.signal,
        });
      } catch (error) {
        if (abort.signal.aborted) process.exit(130);
        throw error;
      }
      const { report } = run;
      out(formatSummary(report));
      if (typeof opts.json === 'string') {
        writeFileSync(opts.json, `${JSON.stringify(report, null, 2)}\n`);
        out(`report written to ${opts.json}\n`);
      } else if (jsonToStdout) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      if (opts.keep && !abort.signal.aborted) {
        const c = run.cluster;
        progress(
          `cluster ${c.cluster} left running (rows in table ${report.table}): psql '${c.connectionString(report.finalPrimary)}'; etcd ${c.etcdEndpoint}; Ctrl-C stops it`,
        );
        await new Promise<void>((resolve) => abort.signal.addEventListener('abort', () => resolve(), { once: true }));
      }
      await run.close();
      if (!report.passed) progress(`state and logs kept in ${report.stateDir}`);
      if (abort.signal.aborted && !opts.keep) process.exit(130);
      process.exit(report.passed ? 0 : 1);
    });
  // TLS and credentials of the etcd given with --etcd (the etcd pgha check starts has neither).
  addEtcdConnectionOptions(command);
}
