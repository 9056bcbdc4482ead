import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { assertAppUserName, createAppDatabaseSql, createAppRoleSql } from './app-role.js';

const quoting = { escapeIdentifier: pg.escapeIdentifier, escapeLiteral: pg.escapeLiteral };

describe('assertAppUserName', () => {
  it.each(['app', '_app', 'shop_2', 'a'.repeat(63)])('accepts the plain role name %s', (name) => {
    expect(() => assertAppUserName(name)).not.toThrow();
  });

  it.each([
    ['an empty name', ''],
    ['an upper-case name (postgres would fold it unquoted)', 'App'],
    ['a leading digit', '1app'],
    ['a quote', 'app"; DROP ROLE postgres; --'],
    ['a space', 'my app'],
    ['a hyphen', 'my-app'],
    ['more than 63 bytes (postgres would truncate it)', 'a'.repeat(64)],
  ])('refuses %s', (_, name) => {
    expect(() => assertAppUserName(name)).toThrow(/not a plain role name.*--app-user/);
  });

  it.each(['postgres', 'replicator', 'pg_monitor'])("refuses pgha's or postgres' reserved role %s", (name) => {
    expect(() => assertAppUserName(name)).toThrow(/reserved/);
  });

  it('throws the invalid-option protocol error', () => {
    expect(() => assertAppUserName('')).toThrow(expect.objectContaining({ code: 'invalid-option' }));
  });
});

describe('application role SQL', () => {
  it('creates a LOGIN role with a SCRAM verifier of its password, never the password itself', () => {
    const sql = createAppRoleSql({ name: 'app', password: "it's\\secret" }, quoting);
    expect(sql).toMatch(/^CREATE ROLE "app" WITH LOGIN PASSWORD 'SCRAM-SHA-256\$4096:[^']+'$/);
    expect(sql).not.toContain('secret');
  });

  it('quotes a password it cannot hash here (not printable ASCII) as a literal', () => {
    expect(createAppRoleSql({ name: 'app', password: "pä's" }, quoting)).toBe(
      `CREATE ROLE "app" WITH LOGIN PASSWORD 'pä''s'`,
    );
    expect(createAppRoleSql({ name: 'app', password: 'ä\\b' }, quoting)).toBe(
      `CREATE ROLE "app" WITH LOGIN PASSWORD  E'ä\\\\b'`,
    );
  });

  it('creates a database of the same name owned by the role, both quoted identifiers', () => {
    expect(createAppDatabaseSql({ name: 'shop', password: 'x' }, quoting)).toBe('CREATE DATABASE "shop" OWNER "shop"');
  });
});
