import { describe, expect, it } from 'vitest';
import { clusterUrls } from './connection-urls.js';

const members = [
  { host: '127.0.0.1', port: 5432 },
  { host: '127.0.0.1', port: 5433 },
  { host: '127.0.0.1', port: 5434 },
];

describe('clusterUrls', () => {
  it('lists every member in order, read-write and prefer-standby, with a short connect timeout', () => {
    const urls = clusterUrls({ user: 'postgres', password: 'pw', database: 'postgres', members });
    expect(urls.readWrite).toBe(
      'postgresql://postgres:pw@127.0.0.1:5432,127.0.0.1:5433,127.0.0.1:5434/postgres?target_session_attrs=read-write&connect_timeout=2',
    );
    expect(urls.readOnly).toBe(
      'postgresql://postgres:pw@127.0.0.1:5432,127.0.0.1:5433,127.0.0.1:5434/postgres?target_session_attrs=prefer-standby&connect_timeout=2',
    );
  });

  it('spells the JDBC forms with targetServerType and the credentials as parameters', () => {
    const urls = clusterUrls({ user: 'app', password: 'pw', database: 'shop', members: members.slice(0, 2) });
    expect(urls.jdbcReadWrite).toBe(
      'jdbc:postgresql://127.0.0.1:5432,127.0.0.1:5433/shop?targetServerType=primary&connectTimeout=2&user=app&password=pw',
    );
    expect(urls.jdbcReadOnly).toContain('targetServerType=preferSecondary');
  });

  it('percent-encodes a user, password and database that hold URL delimiters', () => {
    const urls = clusterUrls({
      user: 'a@b',
      password: 'p@ss:w/rd?#%',
      database: 'my db',
      members: [{ host: 'db1', port: 5432 }],
    });
    expect(urls.readWrite).toBe(
      'postgresql://a%40b:p%40ss%3Aw%2Frd%3F%23%25@db1:5432/my%20db?target_session_attrs=read-write&connect_timeout=2',
    );
    // Node's URL parser reads it back as one user and one password.
    const parsed = new URL(urls.readWrite);
    expect(decodeURIComponent(parsed.username)).toBe('a@b');
    expect(decodeURIComponent(parsed.password)).toBe('p@ss:w/rd?#%');
    expect(urls.jdbcReadWrite).toContain('user=a%40b&password=p%40ss%3Aw%2Frd%3F%23%25');
  });

  it('leaves the password out when there is none (libpq reads PGPASSWORD or ~/.pgpass)', () => {
    const urls = clusterUrls({ user: 'postgres', password: null, database: 'postgres', members });
    expect(urls.readWrite.startsWith('postgresql://postgres@127.0.0.1:5432,')).toBe(true);
    expect(urls.jdbcReadWrite.endsWith('&user=postgres')).toBe(true);
  });

  it('brackets IPv6 addresses and takes another connect timeout', () => {
    const urls = clusterUrls({
      user: 'postgres',
      database: 'postgres',
      members: [
        { host: '::1', port: 5432 },
        { host: 'fd00::2', port: 5433 },
      ],
      connectTimeoutSeconds: 5,
    });
    expect(urls.readWrite).toBe(
      'postgresql://postgres@[::1]:5432,[fd00::2]:5433/postgres?target_session_attrs=read-write&connect_timeout=5',
    );
  });

  it('asks for verify-full TLS against the CA file when one is given, in every form', () => {
    const urls = clusterUrls({
      user: 'postgres',
      database: 'postgres',
      members: [{ host: '10.0.0.1', port: 5432 }],
      sslRootCert: '/srv/pgha/tls/ca.crt',
    });
    for (const url of Object.values(urls))
      expect(url).toContain('sslmode=verify-full&sslrootcert=%2Fsrv%2Fpgha%2Ftls%2Fca.crt');
    const parsed = new URL(urls.readWrite);
    expect(parsed.searchParams.get('sslrootcert')).toBe('/srv/pgha/tls/ca.crt');
    expect(parsed.searchParams.get('target_session_attrs')).toBe('read-write');
  });

  it('adds no TLS parameter without a CA file', () => {
    const urls = clusterUrls({ user: 'postgres', database: 'postgres', members: [{ host: 'db', port: 5432 }] });
    for (const url of Object.values(urls)) expect(url).not.toContain('ssl');
  });

  it('refuses an empty member list', () => {
    expect(() => clusterUrls({ user: 'postgres', database: 'postgres', members: [] })).toThrow(/at least one/);
  });
});
