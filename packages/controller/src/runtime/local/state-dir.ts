import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { PghaError } from '@pgha/core';
import { z } from 'zod';
import type { OsUser } from '../../adapters/os-user.js';

/**
 * A local cluster's state directory:
 *
 *     <state>/cluster.json     which cluster this is, its ports and secrets (mode 0600)
 *     <state>/etcd/            the data of the etcd pgha started (when it did)
 *     <state>/logs/            etcd.log and one <member>.log per agent
 *     <state>/tls/             with --secure: the CA and every certificate (certificates.ts)
 *     <state>/<member>/        data/ (PGDATA), pgpass, postgres.log
 */
const stateSchema = z.object({
  v: z.literal(1),
  cluster: z.string(),
  members: z.number().int().min(1),
  basePort: z.number().int().min(1).max(65535),
  etcdPort: z.number().int().min(1).max(65534).nullable(),
  superuserPassword: z.string().min(16),
  replicationPassword: z.string().min(16),
  createdAt: z.string(),
  /**
   * `pgha up --secure`: etcd with TLS and client-certificate authentication, the
   * certificates under tls/ (remembered: later runs are secure without the flag).
   */
  secure: z.boolean().optional(),
});

/** What cluster.json holds. */
export type LocalClusterState = z.infer<typeof stateSchema>;

/** The file that says which cluster a state directory belongs to. */
export const stateFileName = 'cluster.json';

/** A random password of URL-safe characters (usable unquoted in a connection URL). */
export function randomPassword(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * Reads the state of `dir`, or null when the directory is new (absent or empty).
 *
 * @throws PghaError `conflict` when the directory holds something else, or another cluster.
 */
export function readState(dir: string, cluster: string | undefined): LocalClusterState | null {
  const file = join(dir, stateFileName);
  if (!existsSync(file)) {
    // A new state directory may already hold an empty `etcd`: a mount point of (or a
    // link to) a disk of etcd's own, as docs/failure-modes.md advises.
    const entries = existsSync(dir)
      ? readdirSync(dir).filter((name) => !(name === 'etcd' && isEmptyDir(join(dir, name))))
      : [];
    if (entries.length > 0) {
      throw new PghaError(
        'conflict',
        `state directory ${dir} is not empty and has no ${stateFileName}: it is not a pgha state directory; choose another --state-dir`,
      );
    }
    return null;
  }
  let state: LocalClusterState;
  try {
    state = stateSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
  } catch (cause) {
    throw new PghaError(
      'conflict',
      `${file} is unreadable or corrupt; fix or remove it (the data of the cluster is beside it)`,
      { cause },
    );
  }
  if (cluster !== undefined && state.cluster !== cluster) {
    throw new PghaError(
      'conflict',
      `state directory ${dir} belongs to cluster "${state.cluster}", not "${cluster}": pass --cluster ${state.cluster} or choose another --state-dir`,
    );
  }
  return state;
}

/** Writes cluster.json (mode 0600: it holds passwords). */
export function writeState(dir: string, state: LocalClusterState): void {
  // 0711: postgres (another OS user when pgha is root) must traverse into its member
  // directory, but need not list this one; secrets sit in 0600 files.
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  chmodSync(dir, 0o711);
  writeFileSync(join(dir, stateFileName), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

/**
 * Checks that `user` can reach `dir`: every existing ancestor must be searchable by
 * it. PostgreSQL runs as that user and cannot open a data directory below, say,
 * root's 0700 home.
 *
 * @throws PghaError `invalid-option` naming the blocking directory.
 */
export function assertReachableBy(dir: string, user: OsUser | null): void {
  if (user === null) return;
  // The directory itself is made (or re-moded) 0711 by writeState; its ancestors we do not touch.
  let current = dirname(resolve(dir));
  const ancestors: string[] = [];
  while (true) {
    if (existsSync(current)) ancestors.push(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const path of ancestors) {
    const st = statSync(path);
    const searchable =
      (st.mode & 0o001) !== 0 ||
      (st.uid === user.uid && (st.mode & 0o100) !== 0) ||
      (st.gid === user.gid && (st.mode & 0o010) !== 0);
    if (!searchable) {
      throw new PghaError(
        'invalid-option',
        `postgres runs as the OS user "${user.name}", which cannot enter ${path} (mode ${(st.mode & 0o777).toString(8)}): choose a --state-dir it can reach, such as /var/lib/pgha/<cluster>, or chmod o+x ${path}`,
      );
    }
  }
}

/**
 * The state directory `pgha up` uses when none is given: `.pgha/<cluster>` below the
 * working directory, unless postgres's OS user cannot reach it (a checkout in root's
 * 0700 home), then `/var/lib/pgha/<cluster>`.
 */
export function defaultStateDir(cluster: string, cwd: string, user: OsUser | null): { dir: string; fallback: boolean } {
  const local = resolve(cwd, '.pgha', cluster);
  try {
    assertReachableBy(local, user);
    return { dir: local, fallback: false };
  } catch {
    return { dir: join('/var/lib/pgha', cluster), fallback: true };
  }
}

/** Whether `path` is (or links to) a directory with nothing in it. */
function isEmptyDir(path: string): boolean {
  try {
    return statSync(path).isDirectory() && readdirSync(path).length === 0;
  } catch {
    return false;
  }
}
