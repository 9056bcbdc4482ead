import { readFileSync } from 'node:fs';
import { PghaError } from '@pgha/core';
import { type Command, Option } from 'commander';
import type { EtcdConnection, EtcdCredentials } from '../adapters/etcd.js';

/** The etcd connection flags every etcd-talking command takes (see {@link addEtcdConnectionOptions}). */
export interface EtcdConnectionFlags {
  readonly etcdCa?: string;
  readonly etcdCert?: string;
  readonly etcdKey?: string;
  readonly etcdUser?: string;
  readonly etcdPasswordFile?: string;
}

/**
 * Adds etcd's TLS and authentication options to `command`: `--etcd-ca`, `--etcd-cert`,
 * `--etcd-key`, `--etcd-user`, `--etcd-password-file` (each also from its `PGHA_ETCD_*`
 * variable). The password itself comes only from PGHA_ETCD_PASSWORD or the file: a
 * flag's value would be visible to every user of the host in `ps`.
 */
export function addEtcdConnectionOptions<C extends Command>(command: C): C {
  command
    .addOption(
      new Option(
        '--etcd-ca <file>',
        "PEM file of the CA that signed etcd's server certificate (https:// endpoints)",
      ).env('PGHA_ETCD_CA'),
    )
    .addOption(
      new Option(
        '--etcd-cert <file>',
        "PEM client certificate for etcd; with etcd's --client-cert-auth its CN is the etcd user",
      ).env('PGHA_ETCD_CERT'),
    )
    .addOption(new Option('--etcd-key <file>', 'PEM private key of --etcd-cert').env('PGHA_ETCD_KEY'))
    .addOption(
      new Option(
        '--etcd-user <name>',
        'etcd user for password authentication (password from PGHA_ETCD_PASSWORD or --etcd-password-file)',
      ).env('PGHA_ETCD_USER'),
    )
    .addOption(
      new Option('--etcd-password-file <file>', "file holding --etcd-user's password (else PGHA_ETCD_PASSWORD)").env(
        'PGHA_ETCD_PASSWORD_FILE',
      ),
    );
  return command;
}

/**
 * The {@link EtcdConnection} of `endpoints` and the parsed flags (PGHA_ETCD_PASSWORD
 * from `env`). TLS files are read later, when the client is created.
 *
 * @throws PghaError `invalid-option` for a password without a user, a user without a
 *   password, or an unreadable or empty password file.
 */
export function etcdConnectionFrom(
  endpoints: string | readonly string[],
  flags: EtcdConnectionFlags,
  env: NodeJS.ProcessEnv = process.env,
): EtcdConnection {
  let password: string | undefined;
  if (flags.etcdPasswordFile !== undefined) {
    try {
      password = readFileSync(flags.etcdPasswordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (cause) {
      throw new PghaError(
        'invalid-option',
        `cannot read the etcd password file ${flags.etcdPasswordFile} (${(cause as NodeJS.ErrnoException).code ?? cause}): pass a file readable by this user with --etcd-password-file`,
        { cause },
      );
    }
    if (password === '')
      throw new PghaError(
        'invalid-option',
        `the etcd password file ${flags.etcdPasswordFile} is empty: write the password of --etcd-user into it`,
      );
  } else if (env.PGHA_ETCD_PASSWORD !== undefined && env.PGHA_ETCD_PASSWORD !== '') {
    password = env.PGHA_ETCD_PASSWORD;
  }
  const user = flags.etcdUser === '' ? undefined : flags.etcdUser;
  if (password !== undefined && user === undefined)
    throw new PghaError(
      'invalid-option',
      'an etcd password was given (PGHA_ETCD_PASSWORD or --etcd-password-file) without a user: pass --etcd-user (PGHA_ETCD_USER)',
    );
  if (user !== undefined && password === undefined)
    throw new PghaError(
      'invalid-option',
      `--etcd-user ${user} needs a password: set PGHA_ETCD_PASSWORD or pass --etcd-password-file (a client certificate needs no user: its CN is the user)`,
    );
  const tls = {
    ...(flags.etcdCa === undefined || flags.etcdCa === '' ? {} : { caFile: flags.etcdCa }),
    ...(flags.etcdCert === undefined || flags.etcdCert === '' ? {} : { certFile: flags.etcdCert }),
    ...(flags.etcdKey === undefined || flags.etcdKey === '' ? {} : { keyFile: flags.etcdKey }),
  };
  return {
    endpoints,
    ...(user === undefined ? {} : { username: user, password }),
    ...(Object.keys(tls).length === 0 ? {} : { tls }),
  };
}

/**
 * The TLS files and user of the parsed flags without endpoints: one identity for
 * several etcds (`pgha operator`, whose clusters each name their own endpoints).
 */
export function etcdCredentialsFrom(flags: EtcdConnectionFlags, env: NodeJS.ProcessEnv = process.env): EtcdCredentials {
  const { endpoints: _endpoints, ...credentials } = etcdConnectionFrom([], flags, env);
  return credentials;
}

/**
 * The environment handing `connection` to a child pgha process (an agent or controller
 * `pgha up` starts): PGHA_ETCD_* variables, never a password on a command line. Every
 * variable is present, undefined when unused, so that spreading it over
 * `process.env` drops whatever the parent's environment said (Node skips undefined).
 */
export function etcdConnectionEnv(connection: EtcdConnection): Record<string, string | undefined> {
  return {
    PGHA_ETCD_CA: connection.tls?.caFile,
    PGHA_ETCD_CERT: connection.tls?.certFile,
    PGHA_ETCD_KEY: connection.tls?.keyFile,
    PGHA_ETCD_USER: connection.username,
    PGHA_ETCD_PASSWORD: connection.password,
    PGHA_ETCD_PASSWORD_FILE: undefined,
  };
}
