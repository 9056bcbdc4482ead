import { PghaError } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import {
  addPostgresParameter,
  assertNetworks,
  conninfo,
  renderHbaConfig,
  renderServerConfig,
  replicationUser,
  reservedPostgresParameters,
  type ServerSettings,
  syncfsAvailable,
  type UpstreamSettings,
} from './postgres-config.js';

// Literal fixtures built with small override factories.
function upstream(overrides: Partial<UpstreamSettings> = {}): UpstreamSettings {
  return {
    host: '127.0.0.1',
    port: 5432,
    passfile: '/var/lib/pgha/demo/demo-1/pgpass',
    member: 'demo-1',
    ...overrides,
  };
}

function settings(overrides: Partial<ServerSettings> = {}): ServerSettings {
  return {
    member: 'demo-0',
    listenAddresses: '127.0.0.1',
    port: 5432,
    sharedBuffers: '128MB',
    maxConnections: 100,
    upstream: null,
    ...overrides,
  };
}

/** The settings of a rendered pgha.conf, by name, with values as written (comments skipped). */
function settingLines(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-z_.]+) = (.*)$/.exec(line);
    if (match === null) throw new Error(`not a setting line: ${JSON.stringify(line)}`);
    out.set(match[1]!, match[2]!);
  }
  return out;
}

/** Reads a postgresql.conf value back as PostgreSQL's configuration lexer does. */
function gucValue(raw: string): string {
  if (!raw.startsWith("'")) return raw;
  let out = '';
  let i = 1;
  for (;;) {
    const c = raw[i];
    if (c === undefined) throw new Error(`unterminated string: ${raw}`);
    if (c === "'" && raw[i + 1] === "'") {
      out += "'";
      i += 2;
    } else if (c === "'") {
      if (i !== raw.length - 1) throw new Error(`text after the closing quote: ${raw}`);
      return out;
    } else if (c === '\\') {
      const e = raw[i + 1];
      out += e === 'n' ? '\n' : e === 'r' ? '\r' : e === 't' ? '\t' : e === 'b' ? '\b' : e === 'f' ? '\f' : (e ?? '');
      i += 2;
    } else {
      out += c;
      i += 1;
    }
  }
}

/** Reads a libpq keyword/value connection string back as libpq does. */
function conninfoValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    while (text[i] === ' ') i++;
    const eq = text.indexOf('=', i);
    const key = text.slice(i, eq);
    i = eq + 1;
    if (text[i] !== "'") throw new Error(`unquoted value for ${key}`);
    i++;
    let value = '';
    while (text[i] !== "'") {
      if (text[i] === undefined) throw new Error(`unterminated value for ${key}`);
      if (text[i] === '\\') i++;
      value += text[i];
      i++;
    }
    i++;
    out[key] = value;
  }
  return out;
}

describe('renderServerConfig for a primary', () => {
  const conf = settingLines(renderServerConfig(settings()));

  it('listens on the given addresses and port only over TCP', () => {
    expect(conf.get('listen_addresses')).toBe("'127.0.0.1'");
    expect(conf.get('port')).toBe('5432');
    expect(conf.get('unix_socket_directories')).toBe("''");
  });

  it('names the cluster after the member and applies its resources', () => {
    expect(conf.get('cluster_name')).toBe("'demo-0'");
    expect(conf.get('shared_buffers')).toBe("'128MB'");
    expect(conf.get('max_connections')).toBe('100');
  });

  it('stores passwords as SCRAM and keeps what replication and pg_rewind need', () => {
    expect(conf.get('password_encryption')).toBe("'scram-sha-256'");
    expect(conf.get('wal_level')).toBe('replica');
    expect(conf.get('wal_log_hints')).toBe('on');
    expect(conf.get('hot_standby')).toBe('on');
    expect(conf.get('max_slot_wal_keep_size')).toBe("'1GB'");
  });

  it('writes a standby floor in place of the configured values, one line per name', () => {
    const text = renderServerConfig(
      settings({
        maxConnections: 50,
        extraParameters: { max_locks_per_transaction: '64', work_mem: '4MB' },
        floor: { max_connections: 200, max_wal_senders: 20, max_locks_per_transaction: 128, max_worker_processes: 16 },
      }),
    );
    const floored = settingLines(text);
    expect(floored.get('max_connections')).toBe('200');
    expect(floored.get('max_wal_senders')).toBe('20');
    expect(floored.get('max_locks_per_transaction')).toBe("'128'");
    expect(floored.get('max_worker_processes')).toBe("'16'");
    expect(floored.get('work_mem')).toBe("'4MB'");
    expect(floored.has('max_prepared_transactions')).toBe(false);
    expect(text.match(/^max_locks_per_transaction = /gm)).toHaveLength(1);
  });

  it('writes max_wal_senders = 10 without a floor', () => {
    expect(conf.get('max_wal_senders')).toBe('10');
  });

  it('has no standby settings', () => {
    expect(conf.has('primary_conninfo')).toBe(false);
    expect(conf.has('primary_slot_name')).toBe(false);
    expect(conf.has('recovery_target_timeline')).toBe(false);
  });

  it('starts with a comment naming the member', () => {
    expect(renderServerConfig(settings()).split('\n')[0]).toBe('# Written by pgha for demo-0; edits are overwritten.');
  });
});

describe('recovery_init_sync_method', () => {
  it('asks postgres to sync its data directory with syncfs where it can', () => {
    expect(settingLines(renderServerConfig(settings({ syncfs: true }))).get('recovery_init_sync_method')).toBe(
      'syncfs',
    );
  });

  it("leaves postgres's default where syncfs is not available", () => {
    expect(settingLines(renderServerConfig(settings({ syncfs: false }))).has('recovery_init_sync_method')).toBe(false);
    expect(settingLines(renderServerConfig(settings())).has('recovery_init_sync_method')).toBe(false);
  });

  it('lets --postgres-parameter choose fsync again (its line comes last)', () => {
    const conf = settingLines(
      renderServerConfig(settings({ syncfs: true, extraParameters: { recovery_init_sync_method: 'fsync' } })),
    );
    expect(conf.get('recovery_init_sync_method')).toBe("'fsync'");
  });

  it('is available on Linux from PostgreSQL 14 only', () => {
    expect(syncfsAvailable('linux', 15)).toBe(true);
    expect(syncfsAvailable('linux', 14)).toBe(true);
    expect(syncfsAvailable('linux', 13)).toBe(false);
    expect(syncfsAvailable('darwin', 16)).toBe(false);
    expect(syncfsAvailable('win32', 16)).toBe(false);
  });

  it("is not used when the operator's parameters choose fsync", () => {
    expect(syncfsAvailable('linux', 15, { recovery_init_sync_method: 'fsync' })).toBe(false);
    expect(syncfsAvailable('linux', 15, { recovery_init_sync_method: ' FSYNC ' })).toBe(false);
    expect(syncfsAvailable('linux', 15, { recovery_init_sync_method: 'syncfs', work_mem: '4MB' })).toBe(true);
  });
});

describe('renderServerConfig for a standby', () => {
  const conf = settingLines(renderServerConfig(settings({ member: 'demo-1', port: 5433, upstream: upstream() })));

  it('streams from the upstream as the replication role with its passfile, under its own name', () => {
    expect(conninfoValues(gucValue(conf.get('primary_conninfo')!))).toEqual({
      host: '127.0.0.1',
      port: '5432',
      user: replicationUser,
      passfile: '/var/lib/pgha/demo/demo-1/pgpass',
      application_name: 'demo-1',
      connect_timeout: '5',
    });
  });

  it('uses its own replication slot and follows the newest timeline', () => {
    expect(conf.get('primary_slot_name')).toBe("'pgha_demo_1'");
    expect(conf.get('recovery_target_timeline')).toBe("'latest'");
  });

  it('keeps its own port and cluster name', () => {
    expect(conf.get('port')).toBe('5433');
    expect(conf.get('cluster_name')).toBe("'demo-1'");
  });
});

describe('renderServerConfig quoting', () => {
  const hostile = [
    "/tmp/it's here/pgpass",
    '/tmp/back\\slash\\\\/pgpass',
    "/tmp/\\'mixed''\\/pgpass",
    "/tmp/x' port = 1 '/pgpass",
    '/tmp/line\nport = 1\n/pgpass',
    '/tmp/cr\r\nport = 1/pgpass',
  ];

  it.each(hostile)('reads a hostile passfile path back unchanged through postgres and libpq: %j', (passfile) => {
    const text = renderServerConfig(settings({ upstream: upstream({ passfile }) }));
    const conf = settingLines(text);
    expect(conninfoValues(gucValue(conf.get('primary_conninfo')!)).passfile).toBe(passfile);
  });

  it.each(hostile)('reads hostile listen addresses back unchanged and adds no setting: %j', (listenAddresses) => {
    const text = renderServerConfig(settings({ listenAddresses }));
    const conf = settingLines(text);
    expect(gucValue(conf.get('listen_addresses')!)).toBe(listenAddresses);
    expect(conf.get('port')).toBe('5432');
    expect([...conf.keys()]).toEqual([...settingLines(renderServerConfig(settings())).keys()]);
  });

  it('writes one line per setting whatever the values hold', () => {
    const plain = renderServerConfig(settings({ upstream: upstream() })).split('\n').length;
    const hostileText = renderServerConfig(
      settings({
        listenAddresses: 'a\nb',
        sharedBuffers: "1'\n2",
        upstream: upstream({ passfile: '/p\r\nq', host: 'h\nh' }),
      }),
    );
    expect(hostileText.split('\n')).toHaveLength(plain);
  });
});

describe('conninfo', () => {
  it('quotes every value and escapes quotes and backslashes as libpq expects', () => {
    expect(conninfo({ host: 'db', port: 5432, passfile: "/a'b\\c" })).toBe(
      "host='db' port='5432' passfile='/a\\'b\\\\c'",
    );
  });
});

describe('renderHbaConfig', () => {
  const rules = (text: string) => text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));

  it('allows loopback only, with SCRAM, when no network is given', () => {
    expect(renderHbaConfig([])).toBe(
      [
        '# Written by pgha; edits are overwritten. Password (SCRAM) authentication only.',
        'host    all          all          127.0.0.1/32    scram-sha-256',
        'host    replication  replicator   127.0.0.1/32    scram-sha-256',
        'host    all          all          ::1/128    scram-sha-256',
        'host    replication  replicator   ::1/128    scram-sha-256',
        '',
      ].join('\n'),
    );
  });

  it('has no trust line and ends every rule with scram-sha-256', () => {
    const text = renderHbaConfig(['10.0.0.0/8', 'fd00::/8', '192.168.1.7/32']);
    expect(text).not.toMatch(/\btrust\b/);
    for (const rule of rules(text)) expect(rule).toMatch(/^host +\S+ +\S+ +\S+ +scram-sha-256$/);
  });

  it('allows each given network for all roles and for replication by the replication role only', () => {
    const text = renderHbaConfig(['10.0.0.0/8']);
    expect(rules(text)).toContain('host    all          all          10.0.0.0/8    scram-sha-256');
    expect(rules(text)).toContain('host    replication  replicator   10.0.0.0/8    scram-sha-256');
    for (const rule of rules(text).filter((r) => r.includes('replication'))) {
      expect(rule.split(/ +/)[2]).toBe(replicationUser);
    }
  });

  it('does not repeat loopback when it is given again', () => {
    expect(rules(renderHbaConfig(['127.0.0.1/32', '::1/128']))).toHaveLength(4);
  });

  it('has no local (Unix socket) rules', () => {
    expect(rules(renderHbaConfig(['10.0.0.0/8'])).every((r) => r.startsWith('host '))).toBe(true);
  });

  it.each([
    '0.0.0.0/0 trust',
    '10.0.0.0/8\nhost all all 0.0.0.0/0 trust',
    'all',
    'samenet',
    'example.com',
    '10.0.0.0',
    '10.0.0.0/33',
    '300.0.0.0/8',
    'fd00::/129',
    '',
  ])('refuses a network that is not an address/prefix: %j', (network) => {
    expect(() => renderHbaConfig([network])).toThrowError(PghaError);
    try {
      renderHbaConfig([network]);
    } catch (error) {
      expect((error as PghaError).code).toBe('invalid-option');
      expect((error as PghaError).message).toContain('--allow-cidr');
    }
  });
});

describe('assertNetworks', () => {
  it('accepts IPv4 and IPv6 networks with prefixes in range', () => {
    expect(() =>
      assertNetworks(['0.0.0.0/0', '10.1.2.3/32', '::/0', 'fd00::1/128', '::ffff:10.0.0.1/128']),
    ).not.toThrow();
  });
});

describe('extra postgres parameters (--postgres-parameter)', () => {
  it("writes them after pgha's own settings, values quoted", () => {
    const text = renderServerConfig(
      settings({ extraParameters: { work_mem: '64MB', 'auto_explain.log_min_duration': '250ms' } }),
    );
    const lines = settingLines(text);
    expect(lines.get('work_mem')).toBe("'64MB'");
    expect(lines.get('auto_explain.log_min_duration')).toBe("'250ms'");
    const names = text
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.split(' = ')[0]);
    expect(names.slice(-2)).toEqual(['work_mem', 'auto_explain.log_min_duration']);
  });

  it('keeps a value with quotes and line breaks on its own line', () => {
    const text = renderServerConfig(settings({ extraParameters: { application_name: "x'\nport = 1" } }));
    expect(settingLines(text).get('port')).toBe('5432');
    expect(settingLines(text).get('application_name')).toBe("'x''\\nport = 1'");
  });

  it('refuses every setting pgha writes, on a primary and on a replica', () => {
    for (const upstreamSettings of [null, upstream()]) {
      const names = [...settingLines(renderServerConfig(settings({ upstream: upstreamSettings }))).keys()];
      for (const name of names) {
        expect(reservedPostgresParameters.has(name)).toBe(true);
        expect(() => renderServerConfig(settings({ extraParameters: { [name]: 'x' } }))).toThrow(PghaError);
      }
    }
  });

  it('refuses the settings replication and addressing depend on, in any case', () => {
    for (const name of ['hba_file', 'synchronous_standby_names', 'Port', 'WAL_LEVEL', 'include_dir'])
      expect(() => addPostgresParameter(`${name}=x`)).toThrow(/set by pgha/);
  });

  it('parses name=value arguments, repeatable, the value keeping any further =', () => {
    const once = addPostgresParameter('work_mem=64MB');
    expect(addPostgresParameter('search_path=a=b', once)).toEqual({ work_mem: '64MB', search_path: 'a=b' });
    expect(addPostgresParameter('Work_Mem=1MB', once)).toEqual({ work_mem: '1MB' });
  });

  it('refuses an argument without a name or =, and names that are not identifiers', () => {
    for (const bad of ['work_mem', '=1', 'work mem=1', "x'y=1", 'a.b.c=1', '1abc=1', 'a\nb=1'])
      expect(() => addPostgresParameter(bad)).toThrow(PghaError);
  });
});

describe('TLS (--ssl-cert, --ssl-key, --ssl-ca)', () => {
  const tls = { certFile: '/m/server.crt', keyFile: '/m/server.key', caFile: '/m/root.crt' };

  it('turns ssl on with the given files and no other setting changes', () => {
    const plain = settingLines(renderServerConfig(settings()));
    const conf = settingLines(renderServerConfig(settings({ ssl: tls })));
    expect(conf.get('ssl')).toBe('on');
    expect(gucValue(conf.get('ssl_cert_file')!)).toBe(tls.certFile);
    expect(gucValue(conf.get('ssl_key_file')!)).toBe(tls.keyFile);
    expect(gucValue(conf.get('ssl_ca_file')!)).toBe(tls.caFile);
    for (const [name, value] of plain) expect(conf.get(name)).toBe(value);
    expect(plain.has('ssl')).toBe(false);
  });

  it('streams with sslmode=verify-full against the CA when the upstream has one', () => {
    const conf = settingLines(renderServerConfig(settings({ upstream: upstream({ sslRootCert: tls.caFile }) })));
    expect(conninfoValues(gucValue(conf.get('primary_conninfo')!))).toMatchObject({
      sslmode: 'verify-full',
      sslrootcert: tls.caFile,
      // Named beside the CA: never libpq's default under $HOME (a root agent's HOME).
      sslcert: '/m/client.crt',
      sslkey: '/m/client.key',
      passfile: '/var/lib/pgha/demo/demo-1/pgpass',
    });
  });

  it('never puts a password into primary_conninfo', () => {
    const conf = settingLines(renderServerConfig(settings({ upstream: upstream({ sslRootCert: tls.caFile }) })));
    expect(Object.keys(conninfoValues(gucValue(conf.get('primary_conninfo')!)))).not.toContain('password');
  });

  it('makes every pg_hba.conf rule hostssl with SCRAM, loopback included', () => {
    const hba = renderHbaConfig(['10.0.0.0/8'], true);
    const rows = hba.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    expect(rows).toHaveLength(6);
    for (const row of rows) expect(row).toMatch(/^hostssl +\S+ +\S+ +\S+ +scram-sha-256$/);
    expect(rows).toContain('hostssl replication  replicator   10.0.0.0/8    scram-sha-256');
  });

  it.each(['ssl', 'ssl_cert_file', 'ssl_key_file', 'ssl_ca_file'])('refuses --postgres-parameter %s', (name) => {
    expect(() => addPostgresParameter(`${name}=x`)).toThrowError(/set by pgha/);
  });
});
