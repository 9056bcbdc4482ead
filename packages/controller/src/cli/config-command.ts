/**
 * `pgha config show` and `pgha config set KEY=VALUE…`: the cluster's settings (the
 * `config` record). `set` checks every assignment before it writes anything and
 * writes in a transaction guarded by the record's mod revision.
 */
import { type ClusterKeys, type ConfigRecord, clusterKeys, defaultConfig } from '@pgha/core';
import type { Command } from 'commander';
import { readClusterConfig, updateClusterConfig } from '../adapters/cluster-config.js';
import {
  applyConfigAssignments,
  type ConfigChange,
  configSettingKeys,
  formatChange,
  postgresParameterPrefix,
  textOf,
  whenApplied,
} from '../decide/config-change.js';
import { addEtcdConnectionOptions } from './etcd-options.js';
import { type ClusterFlags, withEtcd } from './operations.js';

/** The settings of `record` as `KEY  VALUE  when it applies` lines. */
export function formatConfig(record: ConfigRecord): string[] {
  const keys = [
    ...configSettingKeys,
    ...Object.keys(record.postgresParameters)
      .sort()
      .map((n) => `${postgresParameterPrefix}${n}`),
  ];
  const width = Math.max(...keys.map((k) => k.length));
  const valueWidth = Math.max(...keys.map((k) => (textOf(record, k) ?? '').length));
  const lines = keys.map(
    (k) => `  ${k.padEnd(width)}  ${(textOf(record, k) ?? '').padEnd(valueWidth)}  (${whenApplied(k).split(';')[0]})`,
  );
  if (Object.keys(record.postgresParameters).length === 0)
    lines.push(`  ${`${postgresParameterPrefix}*`.padEnd(width)}  (none)`);
  return lines;
}

function describeWhere(flags: ClusterFlags, keys: ClusterKeys): string {
  return `cluster ${flags.cluster} (${keys.config})`;
}

/** Registers `pgha config show` and `pgha config set`. */
export function registerConfig(program: Command, defaults: ClusterFlags): void {
  const clusterOptions = (command: Command) =>
    addEtcdConnectionOptions(
      command
        .option('--etcd <urls>', 'etcd endpoints', defaults.etcd)
        .option('--cluster <name>', 'cluster name', defaults.cluster)
        .option('--key-root <prefix>', 'etcd key root', defaults.keyRoot),
    );

  const config = program
    .command('config')
    .description(
      "show or change the cluster's settings (synchronous mode, lag bound, lease timing, postgres parameters)",
    );

  clusterOptions(
    config
      .command('show')
      .description('print the stored settings (or the defaults, when none are stored yet)')
      .option('--json', 'print the record as JSON', false),
  ).action(async (opts: ClusterFlags & { json: boolean }) => {
    await withEtcd(opts, async (etcd) => {
      const keys = clusterKeys(opts.cluster, opts.keyRoot);
      const stored = await readClusterConfig(etcd, keys);
      const record = stored?.record ?? defaultConfig;
      if (stored === null)
        process.stderr.write(
          `no settings are stored yet for ${describeWhere(opts, keys)}: each process uses its own flags; these are the defaults (\`pgha config set KEY=VALUE\` stores them)\n`,
        );
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(record, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        [
          stored === null
            ? `Defaults (nothing stored for ${describeWhere(opts, keys)})`
            : `Settings of ${describeWhere(opts, keys)}: version ${record.version}, written ${record.updatedAt} by ${record.updatedBy}`,
          ...formatConfig(record),
          '',
        ].join('\n'),
      );
    });
  });

  clusterOptions(
    config
      .command('set')
      .description(
        `change settings, e.g. \`pgha config set synchronousMode=quorum postgresParameters.work_mem=64MB\` (keys: ${configSettingKeys.join(', ')}, ${postgresParameterPrefix}<name>; an empty value removes a parameter). Nothing is written when any assignment is invalid`,
      )
      .argument('<assignments...>', 'KEY=VALUE')
      .option('--json', 'print the changes and the new record as JSON', false)
      .option(
        '--replace-malformed',
        'when the stored record cannot be read, replace it (starting from the defaults) instead of refusing',
        false,
      ),
  ).action(async (assignments: string[], opts: ClusterFlags & { json: boolean; replaceMalformed: boolean }) => {
    // The assignments are checked against the record read (the timing rules depend on
    // its other values), inside the update: one that fails writes nothing.
    await withEtcd(opts, async (etcd) => {
      const keys = clusterKeys(opts.cluster, opts.keyRoot);
      let changes: readonly ConfigChange[] = [];
      const result = await updateClusterConfig(
        etcd,
        keys,
        (current) => {
          const applied = applyConfigAssignments(current, assignments);
          changes = applied.changes;
          return applied.next;
        },
        { base: defaultConfig, updatedBy: 'pgha config set', replaceMalformed: opts.replaceMalformed },
      );
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              written: result.written,
              previousVersion: result.previous?.version ?? null,
              changes: changes.map((c) => ({ ...c, applies: whenApplied(c.key) })),
              record: result.record,
              modRevision: result.modRevision,
            },
            null,
            2,
          )}\n`,
        );
        return;
      }
      const out: string[] = [];
      if (result.previous === null)
        out.push(
          `no settings were stored for ${describeWhere(opts, keys)}: created them from the defaults with these changes (processes started with other flags now use the stored settings)`,
        );
      for (const c of changes) out.push(`  ${formatChange(c)}   (${whenApplied(c.key)})`);
      out.push(
        result.written
          ? `written: version ${result.record.version}`
          : `nothing changed: the stored settings (version ${result.record.version}) already say so`,
      );
      process.stdout.write(`${out.join('\n')}\n`);
    });
  });
}
