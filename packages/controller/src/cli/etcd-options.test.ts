import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addEtcdConnectionOptions, etcdConnectionEnv, etcdConnectionFrom } from './etcd-options.js';

function parse(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (k.startsWith('PGHA_ETCD')) delete process.env[k];
  Object.assign(process.env, env);
  try {
    const command = addEtcdConnectionOptions(new Command('x').exitOverride());
    command.parse(argv, { from: 'user' });
    return command.opts();
  } finally {
    process.env = saved;
  }
}

describe('addEtcdConnectionOptions', () => {
  it('takes each option from its flag, else its PGHA_ETCD_* variable', () => {
    expect(parse(['--etcd-ca', 'ca.pem', '--etcd-cert', 'c.pem', '--etcd-key', 'k.pem'])).toEqual({
      etcdCa: 'ca.pem',
      etcdCert: 'c.pem',
      etcdKey: 'k.pem',
    });
    expect(parse([], { PGHA_ETCD_CA: 'a', PGHA_ETCD_USER: 'u', PGHA_ETCD_PASSWORD_FILE: 'f' })).toEqual({
      etcdCa: 'a',
      etcdUser: 'u',
      etcdPasswordFile: 'f',
    });
  });

  it('has no flag for the password itself', () => {
    expect(() => parse(['--etcd-password', 'secret'])).toThrow(/unknown option/);
  });
});

describe('etcdConnectionFrom', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-etcd-options-'));

  it('builds TLS files and a user whose password comes from the environment', () => {
    expect(
      etcdConnectionFrom(
        'https://e:2379',
        { etcdCa: 'ca', etcdCert: 'c', etcdKey: 'k', etcdUser: 'u' },
        {
          PGHA_ETCD_PASSWORD: 'pw',
        },
      ),
    ).toEqual({
      endpoints: 'https://e:2379',
      username: 'u',
      password: 'pw',
      tls: { caFile: 'ca', certFile: 'c', keyFile: 'k' },
    });
    expect(etcdConnectionFrom('http://e:2379', {}, {})).toEqual({ endpoints: 'http://e:2379' });
  });

  it('reads the password file (without its trailing newline) before the environment', () => {
    const file = join(dir, 'pw');
    writeFileSync(file, 'from-file\n');
    expect(
      etcdConnectionFrom('http://e', { etcdUser: 'u', etcdPasswordFile: file }, { PGHA_ETCD_PASSWORD: 'env' }).password,
    ).toBe('from-file');
  });

  it('refuses a user without a password, a password without a user, a missing or empty file', () => {
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    const cases: Array<[() => unknown, RegExp]> = [
      [() => etcdConnectionFrom('http://e', { etcdUser: 'u' }, {}), /needs a password: set PGHA_ETCD_PASSWORD/],
      [() => etcdConnectionFrom('http://e', {}, { PGHA_ETCD_PASSWORD: 'x' }), /without a user: pass --etcd-user/],
      [
        () => etcdConnectionFrom('http://e', { etcdUser: 'u', etcdPasswordFile: join(dir, 'nope') }, {}),
        /cannot read the etcd password file .*ENOENT/,
      ],
      [() => etcdConnectionFrom('http://e', { etcdUser: 'u', etcdPasswordFile: empty }, {}), /is empty/],
    ];
    for (const [fn, message] of cases) {
      expect(fn).toThrow(PghaError);
      expect(fn).toThrow(message);
    }
  });
});

describe('etcdConnectionEnv', () => {
  it('hands every setting over as a variable and clears the ones not used', () => {
    expect(etcdConnectionEnv({ endpoints: 'https://e', tls: { caFile: 'ca', certFile: 'c', keyFile: 'k' } })).toEqual({
      PGHA_ETCD_CA: 'ca',
      PGHA_ETCD_CERT: 'c',
      PGHA_ETCD_KEY: 'k',
      PGHA_ETCD_USER: undefined,
      PGHA_ETCD_PASSWORD: undefined,
      PGHA_ETCD_PASSWORD_FILE: undefined,
    });
  });
});
