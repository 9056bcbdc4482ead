// bench/failover: failover timing and data loss of pgha against Patroni on this
// machine, in one run. See README.md for the command and the measured numbers.
//
//   npx tsx bench/failover/run.ts [--target pgha,patroni] [--trials 5] [--modes async,sync | --synchronous]
//       [--faults host-loss,postgres-crash,switchover] [--profiles defaults,tightest] [--json FILE]
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { keepLogs, onExit, runBenchmark } from './lib/processes.js';
import { formatModeRatios, formatRatios, formatSummary, formatSyncLoss, formatTrial } from './lib/report.js';
import {
  faults as allFaults,
  modes as allModes,
  type Fault,
  type Mode,
  type Target,
  type TargetMember,
} from './lib/target.js';
import { defaultLimits, runTrial, type TrialResult } from './lib/trial.js';

const targetNames = ['pgha', 'patroni'] as const;
type TargetName = (typeof targetNames)[number];

function list<T extends string>(value: string, allowed: readonly T[], flag: string): T[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) {
    if (!allowed.includes(item as T))
      throw new Error(`--${flag}: unknown "${item}"; expected some of ${allowed.join(', ')}`);
  }
  return items as T[];
}

async function loadTarget(name: TargetName): Promise<Target> {
  // Imported on demand: `--target patroni` never loads pgha's code, which may be mid-change.
  if (name === 'patroni') return (await import('./targets/patroni.js')).patroniTarget();
  return (await import('./targets/pgha.js')).pghaTarget();
}

/** BENCH_KEEP_LOGS=1 keeps the logs of every trial, not only of failed ones. */
const keepAllLogs = process.env.BENCH_KEEP_LOGS === '1';

const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: targetNames.join(',') },
      trials: { type: 'string', default: '5' },
      faults: { type: 'string', default: allFaults.join(',') },
      profiles: { type: 'string' },
      modes: { type: 'string' },
      synchronous: { type: 'boolean', default: false },
      json: { type: 'string' },
      report: { type: 'string' },
      'rejoin-timeout': { type: 'string', default: String(defaultLimits.rejoinMillis / 1000) },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npx tsx bench/failover/run.ts [--target pgha,patroni] [--trials N] [--faults host-loss,postgres-crash,switchover] [--modes async,sync | --synchronous] [--profiles NAME,...] [--rejoin-timeout SECONDS] [--json FILE] | --report FILE\n',
    );
    return 0;
  }
  if (values.report !== undefined) {
    // Re-print the tables of a run saved with --json, without running anything.
    const saved = JSON.parse(readFileSync(values.report, 'utf8')) as { results: TrialResult[] };
    const { lines, syncLoss } = closingTables(saved.results);
    process.stdout.write(`${lines.join('\n')}\n`);
    return syncLoss ? 1 : 0;
  }
  if (values.synchronous && values.modes !== undefined)
    throw new Error('--synchronous is short for --modes sync; give one of them, not both');
  const modes = values.synchronous ? (['sync'] as Mode[]) : list(values.modes ?? allModes.join(','), allModes, 'modes');
  const targets = list(values.target!, targetNames, 'target');
  const faults = list(values.faults!, allFaults, 'faults') as Fault[];
  const trials = Number(values.trials);
  if (!Number.isInteger(trials) || trials < 1)
    throw new Error(`--trials must be a positive whole number, got ${values.trials}`);
  const rejoinSeconds = Number(values['rejoin-timeout']);
  if (!(rejoinSeconds > 0))
    throw new Error(`--rejoin-timeout must be a positive number of seconds, got ${values['rejoin-timeout']}`);
  const limits = { ...defaultLimits, rejoinMillis: rejoinSeconds * 1000 };
  const profileFilter = values.profiles?.split(',').map((s) => s.trim());

  const started = new Date();
  const logsDir = join('/tmp', `bench-failover-logs-${started.toISOString().replace(/[:.]/g, '-')}`);
  log(
    `bench/failover: targets ${targets.join(', ')}; modes ${modes.join(', ')}; faults ${faults.join(', ')}; ${trials} trials each; ${cpus().length} cores`,
  );
  const results: TrialResult[] = [];
  const setupFailures: string[] = [];
  const profileLines: string[] = [];

  for (const name of targets) {
    const target = await loadTarget(name);
    const unregister = onExit(() => target.teardown());
    try {
      const profiles = target.profiles.filter((p) => profileFilter === undefined || profileFilter.includes(p.name));
      for (const settings of profiles) {
        profileLines.push(`- ${name}/${settings.name}: ${settings.description}`);
        for (const mode of modes) {
          const label = `${name}/${settings.name} ${mode}`;
          log(`${label} (${settings.description}): setting up`);
          let members: readonly TargetMember[];
          try {
            members = await target.setup(settings, mode);
          } catch (error) {
            const message = `${label}: setup failed: ${(error as Error).message}`;
            log(message);
            setupFailures.push(message);
            await target.teardown();
            continue;
          }
          for (const fault of faults) {
            for (let trial = 1; trial <= trials; trial++) {
              log(`${label} ${fault} #${trial}`);
              const result = await runTrial({
                target,
                profile: settings.name,
                mode,
                members,
                fault,
                trial,
                limits,
                log,
              });
              results.push(result);
              process.stdout.write(`${formatTrial(result)}\n`);
              // Logs are cumulative per cluster: a trial's copy holds everything up to it.
              const lossy = mode === 'sync' && result.lost !== null && result.lost > 0;
              if ((result.error !== undefined || lossy || keepAllLogs) && target.logDir !== null) {
                const to = join(logsDir, `${name}-${settings.name}-${mode}-${fault}-${trial}`);
                if (keepLogs(target.logDir, to) > 0) log(`  logs kept in ${to}`);
              }
              if (result.error !== undefined) {
                // Start the next trial from a known state: healthy again, else a fresh cluster.
                try {
                  await target.waitHealthy(60_000);
                } catch {
                  log(`${label}: not healthy after a failed trial; starting a fresh cluster`);
                  try {
                    members = await target.setup(settings, mode);
                  } catch (error) {
                    setupFailures.push(`${label}: setup failed: ${(error as Error).message}`);
                    break;
                  }
                }
              }
            }
          }
          await target.teardown();
        }
      }
    } finally {
      await target.teardown();
      unregister();
    }
  }

  const closing = closingTables(results);
  const summary = [
    `bench/failover, ${started.toISOString()}, ${cpus().length} cores, ${trials} trials per fault and mode`,
    '',
    ...profileLines,
    '',
    ...closing.lines,
  ];
  if (setupFailures.length > 0) summary.push('', ...setupFailures);
  process.stdout.write(`\n${summary.join('\n')}\n`);
  if (values.json !== undefined) {
    writeFileSync(
      values.json,
      `${JSON.stringify({ started: started.toISOString(), trials, faults, modes, results, setupFailures }, null, 2)}\n`,
    );
  }
  return results.some((r) => r.error !== undefined) || setupFailures.length > 0 || closing.syncLoss ? 1 : 0;
}

/** The tables after the trials: summary, pgha / Patroni per mode, sync / async, and the synchronous data-loss verdict. */
function closingTables(results: readonly TrialResult[]): { lines: string[]; syncLoss: boolean } {
  const lines = [formatSummary(results)];
  const ratios = formatRatios(results);
  if (ratios !== null) lines.push('', 'pgha / patroni, per mode (medians; below 1 is faster):', '', ratios);
  const modeRatios = formatModeRatios(results);
  if (modeRatios !== null)
    lines.push('', 'synchronous / asynchronous, per system (medians; above 1 is slower):', '', modeRatios);
  const verdict = formatSyncLoss(results);
  if (verdict !== null) lines.push('', verdict.text);
  return { lines, syncLoss: verdict?.lost ?? false };
}

runBenchmark(main, log);
