// bench/sync-cost: what synchronous replication costs in write throughput and commit
// latency, on the same machine in the same run. See README.md.
//
//   npx tsx bench/sync-cost/run.ts [--target pgha,patroni] [--clients 1,8] [--duration 20]
//       [--rounds 4] [--warmup 5] [--json FILE] | --report FILE
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { onExit, runBenchmark } from '../failover/lib/processes.js';
import { queryOnce, synchronousStandbys } from '../failover/lib/sql.js';
import type { Mode, Target, TargetMember } from '../failover/lib/target.js';
import { createCostTable, pgbenchPath, runPgbench } from './lib/pgbench.js';
import { type CostRun, formatCostTable, formatRun, latencySummary, modeOrder, modeProblem } from './lib/stats.js';

const targetNames = ['pgha', 'patroni'] as const;
type TargetName = (typeof targetNames)[number];

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);

function positiveInts(value: string, flag: string): number[] {
  const xs = value.split(',').map((s) => Number(s.trim()));
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x < 1))
    throw new Error(`--${flag} must be positive whole numbers separated by commas, got "${value}"`);
  return xs;
}

async function loadTarget(name: TargetName): Promise<Target> {
  if (name === 'patroni') return (await import('../failover/targets/patroni.js')).patroniTarget();
  return (await import('../failover/targets/pgha.js')).pghaTarget();
}

/**
 * The settings profile each system runs with. Throughput does not depend on failover
 * timing; Patroni's `tightest` (loop_wait 1 s) only makes its mode switches quicker
 * than its defaults (loop_wait 10 s) would.
 */
const profileFor: Record<TargetName, string> = { pgha: 'defaults', patroni: 'tightest' };

async function measureTarget(
  name: TargetName,
  target: Target,
  plan: { clients: number[]; seconds: number; rounds: number; warmup: number },
  runs: CostRun[],
): Promise<void> {
  const settings = target.profiles.find((p) => p.name === profileFor[name]) ?? target.profiles[0]!;
  log(`${name}/${settings.name}: setting up (asynchronous)`);
  await target.setup(settings, 'async');
  let current: Mode = 'async';
  const primaryNow = () => target.waitHealthy(120_000);
  let primary: TargetMember = await primaryNow();
  await queryOnce(target.clientConfig(primary), createCostTable, [], 10_000);
  if (plan.warmup > 0) {
    log(`${name}: warm-up, ${plan.warmup} s with ${Math.max(...plan.clients)} clients (not counted)`);
    await runPgbench({
      config: target.clientConfig(primary),
      clients: Math.max(...plan.clients),
      seconds: plan.warmup,
    });
  }
  for (let round = 1; round <= plan.rounds; round++) {
    for (const clients of plan.clients) {
      for (const mode of modeOrder(round)) {
        if (mode !== current) {
          log(`${name}: switching to ${mode === 'sync' ? 'synchronous' : 'asynchronous'} replication`);
          await target.setMode(mode, 120_000);
          current = mode;
        }
        primary = await primaryNow();
        const config = target.clientConfig(primary);
        const before = await synchronousStandbys(config);
        log(`${name} ${mode} ${clients} clients round ${round}: ${plan.seconds} s on ${primary.name}`);
        let run: CostRun;
        try {
          const result = await runPgbench({ config, clients, seconds: plan.seconds });
          const after = await synchronousStandbys(config);
          const problem =
            modeProblem(mode, [before, after]) ??
            (result.failed > 0 || result.notCompleted > 0
              ? `${result.failed + result.notCompleted} transactions failed`
              : result.transactions === 0
                ? `no transaction completed in ${plan.seconds} s`
                : null);
          run = {
            system: name,
            mode,
            clients,
            round,
            seconds: plan.seconds,
            tps: result.tps,
            transactions: result.transactions,
            ...latencySummary(result.latenciesMillis),
            syncStandbys: [before, after],
            ...(problem === null ? {} : { error: problem }),
          };
        } catch (error) {
          run = {
            system: name,
            mode,
            clients,
            round,
            seconds: plan.seconds,
            tps: 0,
            transactions: 0,
            p50Millis: null,
            p99Millis: null,
            syncStandbys: [before, -1],
            error: (error as Error).message,
          };
        }
        runs.push(run);
        process.stdout.write(`${formatRun(run)}\n`);
      }
    }
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: targetNames.join(',') },
      clients: { type: 'string', default: '1,8' },
      duration: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '5' },
      json: { type: 'string' },
      report: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npx tsx bench/sync-cost/run.ts [--target pgha,patroni] [--clients 1,8] [--duration SECONDS] [--rounds N] [--warmup SECONDS] [--json FILE] | --report FILE\n',
    );
    return 0;
  }
  if (values.report !== undefined) {
    const saved = JSON.parse(readFileSync(values.report, 'utf8')) as { runs: CostRun[] };
    process.stdout.write(`${formatCostTable(saved.runs)}\n`);
    return 0;
  }
  const targets = values.target!.split(',').map((s) => s.trim()) as TargetName[];
  for (const t of targets)
    if (!targetNames.includes(t))
      throw new Error(`--target: unknown "${t}"; expected some of ${targetNames.join(', ')}`);
  const clients = positiveInts(values.clients!, 'clients');
  const [seconds] = positiveInts(values.duration!, 'duration');
  const [rounds] = positiveInts(values.rounds!, 'rounds');
  const warmup = Number(values.warmup);
  if (!Number.isInteger(warmup) || warmup < 0)
    throw new Error(`--warmup must be a whole number of seconds (0 for none), got ${values.warmup}`);
  const plan = { clients, seconds: seconds!, rounds: rounds!, warmup };

  const started = new Date();
  const pgbench = pgbenchPath();
  log(
    `bench/sync-cost: targets ${targets.join(', ')}; clients ${clients.join(', ')}; ${plan.seconds} s per run; ${plan.rounds} rounds; pgbench of PostgreSQL ${pgbench.version}; ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}`,
  );
  const runs: CostRun[] = [];
  const failures: string[] = [];
  for (const name of targets) {
    const target = await loadTarget(name);
    const unregister = onExit(() => target.teardown());
    try {
      await measureTarget(name, target, plan, runs);
    } catch (error) {
      const message = `${name}: ${(error as Error).message}`;
      log(message);
      failures.push(message);
    } finally {
      await target.teardown();
      unregister();
    }
  }
  const lines = [
    '',
    `bench/sync-cost, ${started.toISOString()}, ${cpus().length} cores, ${plan.seconds} s per run, ${plan.rounds} rounds, load at the end ${loadavg()[0]!.toFixed(1)}`,
    '',
    'medians over rounds; sync/async: TPS below 1 and latency above 1 are what synchronous replication costs',
    '',
    formatCostTable(runs),
    ...(failures.length > 0 ? ['', ...failures] : []),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (values.json !== undefined)
    writeFileSync(
      values.json,
      `${JSON.stringify({ started: started.toISOString(), plan, runs, failures }, null, 2)}\n`,
    );
  return failures.length > 0 || runs.some((r) => r.error !== undefined) ? 1 : 0;
}

runBenchmark(main, log);
