import { execFileSync } from 'node:child_process';
import { PghaError } from '@pgha/core';

/** The unprivileged OS account postgres runs as when pgha itself runs as root. */
export interface OsUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/**
 * The account postgres must run as: null when pgha is not root (postgres runs as
 * the current user), else `PGHA_OS_USER` or `postgres`. PostgreSQL refuses to run
 * as root, so this is not optional for root.
 *
 * @throws PghaError `missing-prerequisite` when running as root and the account does not exist.
 */
export function postgresOsUser(env: NodeJS.ProcessEnv = process.env): OsUser | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  const name = env.PGHA_OS_USER !== undefined && env.PGHA_OS_USER !== '' ? env.PGHA_OS_USER : 'postgres';
  try {
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0)
      throw new Error(`${name} resolves to uid ${uid}`);
    return { name, uid, gid };
  } catch (cause) {
    throw new PghaError(
      'missing-prerequisite',
      `pgha runs as root, so postgres must run as an unprivileged OS user, and "${name}" is not usable: create it (useradd --system --home-dir /var/lib/postgresql ${name}) or set PGHA_OS_USER to an existing unprivileged user`,
      { cause },
    );
  }
}
