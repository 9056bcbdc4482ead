import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertValidName, clusterKeys, PghaError } from '@pgha/core';
import type { Command } from 'commander';
import { applyEtcdAccess, explainAuthFailure } from '../adapters/etcd-auth.js';
import { decideEtcdAccess } from '../decide/etcd-permissions.js';
import { addEtcdConnectionOptions } from './etcd-options.js';
import { type ClusterFlags, withEtcd } from './operations.js';

/**
 * Reads `<dir>/<user>.password` for every user that has one (trailing newline
 * dropped). Users without a file get no password: they sign in by client certificate.
 */
export function readPasswords(dir: string | undefined, users: readonly string[]): Map<string, string> {
  const passwords = new Map<string, string>();
  if (dir === undefined) return passwords;
  if (!existsSync(dir))
    throw new PghaError(
      'invalid-option',
      `--password-dir ${dir} does not exist: create it with one <user>.password file per password user`,
    );
  for (const user of users) {
    const file = join(dir, `${user}.password`);
    if (!existsSync(file)) continue;
    const password = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    if (password === '')
      throw new PghaError('invalid-option', `${file} is empty: write the password of ${user} into it, or remove it`);
    passwords.set(user, password);
  }
  return passwords;
}

/** Registers `pgha etcd-auth`: the cluster's etcd users and roles, on an existing etcd. */
export function registerEtcdAuth(program: Command, defaults: ClusterFlags): void {
  addEtcdConnectionOptions(
    program
      .command('etcd-auth')
      .description(
        "create or update the cluster's etcd users and roles (root, <cluster>-admin, -controller, -member-<name>, -client), idempotently; run with etcd's root credentials once authentication is on",
      )
      .option('--etcd <urls>', 'etcd endpoints', defaults.etcd)
      .option('--cluster <name>', 'cluster name', defaults.cluster)
      .option('--key-root <prefix>', 'etcd key root', defaults.keyRoot)
      .requiredOption('--members <names>', 'the member names, comma-separated (one etcd user each)')
      .option(
        '--password-dir <dir>',
        'directory of <user>.password files: those users get that password (others none: they sign in only by a client certificate whose CN is their name)',
      )
      .option('--enable', "enable etcd's authentication afterwards (needs the root user, which this creates)", false),
  ).action(async (opts: ClusterFlags & { members: string; passwordDir?: string; enable: boolean }) => {
    const members = opts.members
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    if (members.length === 0) throw new PghaError('invalid-option', '--members needs at least one member name');
    for (const m of members) assertValidName('member', m);
    const plan = decideEtcdAccess(opts.cluster, clusterKeys(opts.cluster, opts.keyRoot), members);
    const passwords = readPasswords(
      opts.passwordDir,
      plan.users.map((u) => u.name),
    );
    const result = await withEtcd(opts, (etcd) =>
      applyEtcdAccess(etcd, plan, { passwords, enable: opts.enable }).catch((error) => {
        throw explainAuthFailure(error);
      }),
    );
    const lines = [
      result.created.length > 0 ? `created: ${result.created.join(', ')}` : 'created: nothing (all present)',
      result.changed.length > 0 ? `changed: ${result.changed.join(', ')}` : 'changed: nothing',
      ...plan.roles.map(
        (r) =>
          `  ${r.name}: ${r.permissions.map((p) => `${p.type} ${p.key}${p.rangeEnd === '' ? '' : '*'}`).join(', ')}`,
      ),
      `users with a password: ${passwords.size === 0 ? 'none (client certificates only)' : [...passwords.keys()].join(', ')}`,
      opts.enable ? 'authentication: on' : 'authentication: unchanged (pass --enable to turn it on)',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}
