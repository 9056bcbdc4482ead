// The application role (`--app-user`, password from PGHA_APP_PASSWORD): its name
// check and the SQL that creates it and its database. Pure: the statements are built
// with the quoting functions of the connection that runs them.
import { PghaError } from '@pgha/core';
import { replicationUser, superUser } from './postgres-config.js';
import { passwordForSql } from './scram-verifier.js';

/** The application role: a LOGIN role owning a database of the same name. */
export interface AppRole {
  readonly name: string;
  readonly password: string;
}

/** The quoting functions of a pg connection (`pg.Client#escapeIdentifier`, `#escapeLiteral`). */
export interface Quoting {
  escapeIdentifier(value: string): string;
  escapeLiteral(value: string): string;
}

/**
 * Checks an application role name: lower-case letters, digits and underscores, a
 * letter or underscore first, at most 63 bytes (postgres' NAMEDATALEN - 1), not a
 * role pgha owns (`postgres`, `replicator`) nor a reserved `pg_` name. The name is
 * still quoted wherever it is used; the check keeps it from being silently
 * truncated or case-folded into a different role than the one users log in as.
 *
 * @throws PghaError `invalid-option` saying which rule the name breaks.
 */
export function assertAppUserName(name: string): void {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
    throw new PghaError(
      'invalid-option',
      `application user ${JSON.stringify(name)} is not a plain role name: use 1 to 63 lower-case letters, digits or underscores, not starting with a digit (--app-user, PGHA_APP_USER)`,
    );
  }
  if (name === superUser || name === replicationUser || name.startsWith('pg_')) {
    throw new PghaError(
      'invalid-option',
      `application user ${JSON.stringify(name)} is reserved (pgha's own roles ${superUser} and ${replicationUser}, and pg_ names): choose another --app-user`,
    );
  }
}

/**
 * `CREATE ROLE` for the application role: LOGIN with its password as a SCRAM verifier
 * computed here ({@link passwordForSql}), so the statement (which postgres logs when
 * it fails) does not hold the password.
 */
export function createAppRoleSql(role: AppRole, q: Quoting): string {
  return `CREATE ROLE ${q.escapeIdentifier(role.name)} WITH LOGIN PASSWORD ${q.escapeLiteral(passwordForSql(role.password))}`;
}

/** `CREATE DATABASE` of the application role's name, owned by it. */
export function createAppDatabaseSql(role: AppRole, q: Quoting): string {
  const name = q.escapeIdentifier(role.name);
  return `CREATE DATABASE ${name} OWNER ${name}`;
}

/** Whether the role exists (parameter $1: the name). */
export const appRoleExistsSql = 'SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1';
/** Whether the database exists (parameter $1: the name). */
export const appDatabaseExistsSql = 'SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1';
