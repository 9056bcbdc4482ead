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
import { defaultControllerPolicy } from '../decide/controller.js';
import { commandLogger, type LogFlags, logFormatOption, logLevelOption } from './log-options.js';

/** Flags every etcd-talking command shares. */
export interface ClusterFlags {
  readonly etcd: string;
  readonly cluster: string;
  readonly keyRoot: string;
}

/** Runs `body` with an etcd client that answered, translating etcd's failures; closes it after. */
export async function withEtcd<T>(flags: ClusterFlags, body: (etcd: Etcd3) => Promise<T>): Promise<T> {
  const etcd = createEtcdClient({ endpoints: flags.etcd }, 3000);
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
    const text = await etcd.get(keys.switchover).string();
    if (text !== null) {
      const pending = SwitchoverRecord.decode(text);
      if (pending.rejected) {
        await etcd.delete().key(keys.switchover);
        throw new PghaError('conflict', `the controller rejected the request: ${pending.rejected}`);
      }
    }
    const leader = await readLeader(etcd, keys.leader);
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
    command
      .option('--etcd <urls>', 'etcd endpoints', defaults.etcd)
      .option('--cluster <name>', 'cluster name', defaults.cluster)
      .option('--key-root <prefix>', 'etcd key root', defaults.keyRoot);

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
      .description('list past promotions: term, old and new primary, reason, timings, possible loss'),
  )
    .option('--json', 'print a JSON array', false)
    .action(async (opts: ClusterFlags & { json: boolean }) => {
      await withEtcd(opts, async (etcd) => {
        const keys = clusterKeys(opts.cluster, opts.keyRoot);
        const values = await etcd.getAll().prefix(keys.historyPrefix).sort('Key', 'Ascend').strings();
        const records = Object.values(values).map((v) => HistoryRecord.decode(v));
        records.sort((a, b) => a.term - b.term);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
          return;
        }
        if (records.length === 0) {
          process.stdout.write('no promotions recorded yet\n');
          return;
        }
        const rows = records.map((h) => {
          const decided =
            h.detectedAt && h.decidedAt
              ? `${((Date.parse(h.decidedAt) - Date.parse(h.detectedAt)) / 1000).toFixed(2)}s`
              : '-';
          return [
            String(h.term),
            String(h.timeline),
            h.oldPrimary ?? '-',
            h.newPrimary,
            h.reason,
            h.promotedAt,
            decided,
            h.lostBytes == null ? '-' : `${h.lostBytes} B`,
          ];
        });
        const header = ['TERM', 'TL', 'OLD', 'NEW', 'REASON', 'PROMOTED AT', 'DECIDED IN', 'POSSIBLY LOST'];
        const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        for (const r of [header, ...rows])
          process.stdout.write(
            `${r
              .map((c, i) => c.padEnd(widths[i]!))
              .join('  ')
              .trimEnd()}\n`,
          );
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
        } & LogFlags,
      ) => {
        const log = commandLogger('controller', opts, { cluster: opts.cluster });
        const controller = new Controller({
          cluster: opts.cluster,
          etcd: { endpoints: opts.etcd },
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
        const onSignal = (signal: NodeJS.Signals) => {
          log.info(`${signal}: stopping`);
          void controller.stop().then(() => process.exit(0));
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
