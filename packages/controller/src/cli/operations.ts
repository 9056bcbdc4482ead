import { setTimeout as delay } from 'node:timers/promises';
import {
  clusterKeys,
  defaultConfig,
  HistoryRecord,
  LeaderRecord,
  PghaError,
  recordVersion,
  SwitchoverRecord,
} from '@pgha/core';
import { type Command, Option } from 'commander';
import type { Etcd3 } from 'etcd3';
import { assertEtcdReachable, castEtcdError, createEtcdClient } from '../adapters/etcd.js';
import { runWatchdog } from '../agent/watchdog.js';
import { Controller } from '../controller/controller.js';
import { startMetricsServer } from '../controller/metrics-server.js';
import { defaultControllerPolicy } from '../decide/controller.js';
import { formatHistory, withTimings } from '../status/history-timings.js';
import { addEtcdConnectionOptions, type EtcdConnectionFlags, etcdConnectionFrom } from './etcd-options.js';
import { commandLogger, type LogFlags, logFormatOption, logLevelOption } from './log-options.js';

/** Flags every etcd-talking command shares (the TLS and authentication ones: {@link addEtcdConnectionOptions}). */
export interface ClusterFlags extends EtcdConnectionFlags {
  readonly etcd: string;
  readonly cluster: string;
  readonly keyRoot: string;
}

/** Runs `body` with an etcd client that answered, translating etcd's failures; closes it after. */
export async function withEtcd<T>(flags: ClusterFlags, body: (etcd: Etcd3) => Promise<T>): Promise<T> {
  const etcd = createEtcdClient(etcdConnectionFrom(flags.etcd, flags), 3000);
  try {
    await assertEtcdReachable(etcd, flags.etcd);
    return await body(etcd).catch((error) => {
      throw castEtcdError(error, flags.etcd, 'talking to etcd');
    });
  } finally {
    etcd.close();
  }
}

async function readLeader(etcd: Etcd3, key: string): Promise<LeaderRecord | null> {
  const text = await etcd.get(key).string();
  return text === null ? null : LeaderRecord.decode(text);
}

/**
 * Writes a switchover (or manual failover) request and waits until a new leader of
 * a newer term is writable, or the controller rejects the request.
 */
async function requestAndWait(
  etcd: Etcd3,
  flags: ClusterFlags,
  request: SwitchoverRecord,
  before: LeaderRecord | null,
  timeoutMillis: number,
): Promise<void> {
  const keys = clusterKeys(flags.cluster, flags.keyRoot);
  const created = await etcd
    .if(keys.switchover, 'Create', '==', 0)
    .then(etcd.put(keys.switchover).value(SwitchoverRecord.encode(request)))
    .commit();
  if (!created.succeeded) {
    throw new PghaError(
      'conflict',
      `another switchover or failover request is pending (${keys.switchover}); wait for it or delete that key`,
    );
  }
  const started = Date.now();
  const fromTerm = before?.term ?? 0;
  process.stderr.write(`requested; waiting for the controller (up to ${timeoutMillis / 1000} s)...\n`);
  for (;;) {
    // The request is written: a slow etcd answer (a stalled disk) is waited out
    // until the timeout, not taken as the end.
    let text: string | null;
    let leader: LeaderRecord | null;
    try {
      text = await etcd.get(keys.switchover).string();
      leader = await readLeader(etcd, keys.leader);
    } catch (error) {
      if (Date.now() - started > timeoutMillis) throw error;
      await delay(200);
      continue;
    }
    if (text !== null) {
      const pending = SwitchoverRecord.decode(text);
      if (pending.rejected) {
        await etcd.delete().key(keys.switchover);
        throw new PghaError('conflict', `the controller rejected the request: ${pending.rejected}`);
      }
    }
    if (leader !== null && leader.term > fromTerm && leader.writable) {
      process.stdout.write(
        `${leader.member} is the primary (term ${leader.term}, timeline ${leader.timeline}), ${((Date.now() - started) / 1000).toFixed(2)} s after the request\n`,
      );
      return;
    }
    if (Date.now() - started > timeoutMillis) {
      if (text !== null)
        await etcd
          .delete()
          .key(keys.switchover)
          .catch(() => undefined);
      throw new PghaError(
        'timeout',
        `no new primary within ${timeoutMillis / 1000} s: is a controller running (\`pgha controller\`, started by \`pgha up\`)? see \`pgha status\``,
      );
    }
    await delay(50);
  }
}

/** Registers switchover, failover, history, controller and watchdog. */
export function registerOperations(
  program: Command,
  defaults: ClusterFlags,
  integer: (min: number, max: number) => (v: string) => number,
): void {
  const clusterOptions = (command: Command) =>
    addEtcdConnectionOptions(
      command
        .option('--etcd <urls>', 'etcd endpoints', defaults.etcd)
        .option('--cluster <name>', 'cluster name', defaults.cluster)
        .option('--key-root <prefix>', 'etcd key root', defaults.keyRoot),
    );

  clusterOptions(
    program
      .command('switchover')
      .description(
        'planned switchover: the primary shuts down cleanly and the chosen (or best) replica takes over with no data loss',
      )
      .option('--to <member>', 'the replica to promote (default: the most advanced)')
      .option('--from <member>', 'only if this member is the primary'),
  )
    .addOption(
      new Option('--timeout-millis <ms>', 'how long to wait').argParser(integer(1000, 600_000)).default(30_000),
    )
    .action(async (opts: ClusterFlags & { to?: string; from?: string; timeoutMillis: number }) => {
      await withEtcd(opts, async (etcd) => {
        const leader = await readLeader(etcd, clusterKeys(opts.cluster, opts.keyRoot).leader);
        if (leader === null || !leader.writable) {
          throw new PghaError(
            'no-primary',
            'there is no writable primary to switch over from: use `pgha failover --to MEMBER`',
          );
        }
        if (opts.to === leader.member) throw new PghaError('invalid-option', `${opts.to} is already the primary`);
        await requestAndWait(
          etcd,
          opts,
          {
            v: recordVersion,
            from: opts.from ?? leader.member,
            to: opts.to ?? null,
            at: null,
            requestedAt: new Date().toISOString(),
          },
          leader,
          opts.timeoutMillis,
        );
      });
    });

  clusterOptions(
    program
      .command('failover')
      .description('manual failover when there is no healthy primary: promote the named replica')
      .requiredOption('--to <member>', 'the replica to promote')
      .option(
        '--accept-data-loss',
        'promote it even when it may not hold every acknowledged write (behind the last primary, or beyond the lag bound)',
        false,
      ),
  )
    .addOption(
      new Option('--timeout-millis <ms>', 'how long to wait').argParser(integer(1000, 600_000)).default(30_000),
    )
    .action(async (opts: ClusterFlags & { to: string; acceptDataLoss: boolean; timeoutMillis: number }) => {
      await withEtcd(opts, async (etcd) => {
        const leader = await readLeader(etcd, clusterKeys(opts.cluster, opts.keyRoot).leader);
        if (leader !== null) {
          throw new PghaError(
            'conflict',
            `${leader.member} is the primary (term ${leader.term}): use \`pgha switchover --to ${opts.to}\` for a planned change`,
          );
        }
        await requestAndWait(
          etcd,
          opts,
          {
            v: recordVersion,
            from: null,
            to: opts.to,
            at: null,
            requestedAt: new Date().toISOString(),
            ...(opts.acceptDataLoss ? { acceptDataLoss: true } : {}),
          },
          null,
          opts.timeoutMillis,
        );
      });
    });

  clusterOptions(
    program
      .command('history')
      .description(
        'list past promotions: term, old and new primary, reason, detected→decided, decided→promoted and total times, possible loss',
      ),
  )
    .option('--json', 'print a JSON array: each record as stored, plus its computed timings', false)
    .action(async (opts: ClusterFlags & { json: boolean }) => {
      await withEtcd(opts, async (etcd) => {
        const keys = clusterKeys(opts.cluster, opts.keyRoot);
        const values = await etcd.getAll().prefix(keys.historyPrefix).sort('Key', 'Ascend').strings();
        const records = Object.values(values).map((v) => HistoryRecord.decode(v));
        // --json: the raw records, each with its computed timings (never negative).
        process.stdout.write(opts.json ? `${JSON.stringify(withTimings(records), null, 2)}\n` : formatHistory(records));
      });
    });

  clusterOptions(program.command('controller').description('run a controller (several may run; one is active)'))
    .addOption(
      new Option('--lease-ttl-millis <ms>', 'controller lease TTL')
        .argParser(integer(2000, 600_000))
        .default(defaultConfig.leaseTtlMillis),
    )
    .addOption(
      new Option(
        '--maximum-lag-on-failover-bytes <n>',
        "skip replicas further behind; the cluster settings' maximumLagOnFailoverBytes replaces it when stored (pgha config set)",
      )
        .argParser(integer(0, Number.MAX_SAFE_INTEGER))
        .default(defaultConfig.maximumLagOnFailoverBytes),
    )
    .addOption(
      new Option('--target-install-timeout-millis <ms>', 'replace a target that has not taken over by then')
        .argParser(integer(500, 600_000))
        .default(defaultControllerPolicy.targetInstallTimeoutMillis),
    )
    .addOption(
      new Option(
        '--last-primary-wait-millis <ms>',
        'with no leader, wait this long for a last primary that did not shut down cleanly and that this controller did not see lead',
      )
        .argParser(integer(0, 3_600_000))
        .default(defaultControllerPolicy.lastPrimaryWaitMillis),
    )
    .addOption(
      new Option(
        '--maximum-report-age-millis <ms>',
        "switchover: skip replicas whose report is older (keep it above 2x the agents' report interval)",
      )
        .argParser(integer(500, 600_000))
        .default(defaultControllerPolicy.maximumReportAgeMillis),
    )
    .addOption(
      new Option(
        '--metrics-port <port>',
        'serve Prometheus metrics (promotions, election durations, time without a primary) at http://<listen>:<port>/metrics (default: none)',
      ).argParser(integer(0, 65535)),
    )
    .option(
      '--metrics-listen <address>',
      'address the metrics endpoint binds (0.0.0.0 for every interface)',
      '127.0.0.1',
    )
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .action(
      async (
        opts: ClusterFlags & {
          leaseTtlMillis: number;
          maximumLagOnFailoverBytes: number;
          targetInstallTimeoutMillis: number;
          lastPrimaryWaitMillis: number;
          maximumReportAgeMillis: number;
          metricsPort?: number;
          metricsListen: string;
        } & LogFlags,
      ) => {
        const log = commandLogger('controller', opts, { cluster: opts.cluster });
        const controller = new Controller({
          cluster: opts.cluster,
          etcd: etcdConnectionFrom(opts.etcd, opts),
          keyRoot: opts.keyRoot,
          lease: {
            ttlMillis: opts.leaseTtlMillis,
            keepaliveIntervalMillis: defaultConfig.keepaliveIntervalMillis,
            fencingMarginMillis: defaultConfig.fencingMarginMillis,
          },
          policy: {
            maximumLagOnFailoverBytes: opts.maximumLagOnFailoverBytes,
            freshReportWaitMillis: defaultControllerPolicy.freshReportWaitMillis,
            targetInstallTimeoutMillis: opts.targetInstallTimeoutMillis,
            lastPrimaryWaitMillis: opts.lastPrimaryWaitMillis,
            maximumReportAgeMillis: opts.maximumReportAgeMillis,
          },
          log,
        });
        // First: a port in use is a configuration error, found before anything runs.
        const metrics =
          opts.metricsPort === undefined
            ? null
            : await startMetricsServer({
                host: opts.metricsListen,
                port: opts.metricsPort,
                scrape: () => controller.metrics.scrape(),
                log,
              });
        const onSignal = (signal: NodeJS.Signals) => {
          log.info(`${signal}: stopping`);
          void controller
            .stop()
            .then(() => metrics?.close())
            .then(() => process.exit(0));
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        await controller.start();
        await new Promise(() => undefined);
      },
    );

  program
    .command('watchdog', { hidden: true })
    .description('internal: the fencing watchdog an agent runs beside postgres')
    .action(() => {
      runWatchdog();
      return new Promise(() => undefined);
    });
}
