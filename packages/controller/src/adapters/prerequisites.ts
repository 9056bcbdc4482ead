import { execFile } from 'node:child_process';
import { accessSync, constants, readdirSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { PghaError } from '@pgha/core';

const run = promisify(execFile);

/** The PostgreSQL server programs pgha drives, from one installation. */
export interface PostgresBinaries {
  readonly binDir: string;
  /** Major version, e.g. 15. */
  readonly major: number;
  /** Full version text as `postgres --version` prints it, e.g. "15.18". */
  readonly version: string;
  path(program: PostgresProgram): string;
}

/** The server programs pgha runs. */
export type PostgresProgram = 'postgres' | 'initdb' | 'pg_basebackup' | 'pg_rewind' | 'pg_controldata' | 'pg_ctl';

const required: readonly PostgresProgram[] = ['postgres', 'initdb', 'pg_basebackup', 'pg_controldata'];

const installHint =
  'install the PostgreSQL server (Debian: apt-get install postgresql) or set PGHA_PG_BIN to the directory holding postgres and initdb';

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function pgConfigBinDir(): Promise<string | null> {
  try {
    const { stdout } = await run('pg_config', ['--bindir'], { timeout: 5000 });
    const dir = stdout.trim();
    return dir.length > 0 && isExecutable(join(dir, 'postgres')) ? dir : null;
  } catch {
    return null;
  }
}

function newestDebianBinDir(): string | null {
  let versions: string[];
  try {
    versions = readdirSync('/usr/lib/postgresql');
  } catch {
    return null;
  }
  const usable = versions
    .filter((v) => /^\d+(\.\d+)?$/.test(v) && isExecutable(join('/usr/lib/postgresql', v, 'bin', 'postgres')))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  return usable.length > 0 ? join('/usr/lib/postgresql', usable[0]!, 'bin') : null;
}

/**
 * Finds the PostgreSQL server binaries: `PGHA_PG_BIN` when set (and then only
 * there), else the directory `pg_config --bindir` names when it holds `postgres`,
 * else the newest `/usr/lib/postgresql/<version>/bin`.
 *
 * @throws PghaError `missing-prerequisite` saying what to install.
 */
export async function findPostgresBinaries(env: NodeJS.ProcessEnv = process.env): Promise<PostgresBinaries> {
  const override = env.PGHA_PG_BIN;
  const binDir =
    override !== undefined && override !== '' ? override : ((await pgConfigBinDir()) ?? newestDebianBinDir());
  if (binDir === null) {
    throw new PghaError('missing-prerequisite', `PostgreSQL server binaries not found: ${installHint}`);
  }
  const missing = required.filter((p) => !isExecutable(join(binDir, p)));
  if (missing.length > 0) {
    throw new PghaError(
      'missing-prerequisite',
      `${missing.join(', ')} not found in ${binDir}${override ? ' (from PGHA_PG_BIN)' : ''}: ${installHint}`,
    );
  }
  let version: string;
  try {
    const { stdout } = await run(join(binDir, 'postgres'), ['--version'], { timeout: 10_000 });
    const match = /(\d+)(?:\.(\d+))?/.exec(stdout);
    if (match === null) throw new Error(`unexpected output: ${stdout}`);
    version = match[2] === undefined ? match[1]! : `${match[1]}.${match[2]}`;
  } catch (cause) {
    throw new PghaError('missing-prerequisite', `${join(binDir, 'postgres')} --version failed: ${installHint}`, {
      cause,
    });
  }
  const major = Number.parseInt(version, 10);
  if (major < 13) {
    throw new PghaError(
      'missing-prerequisite',
      `PostgreSQL ${version} in ${binDir} is too old: pgha needs 13 or newer`,
    );
  }
  return { binDir, major, version, path: (program) => join(binDir, program) };
}

/** Looks `program` up on PATH. */
export function whichSync(program: string, env: NodeJS.ProcessEnv = process.env): string | null {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, program);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

/**
 * Finds the etcd server binary: `PGHA_ETCD_BIN` when set, else `etcd` on PATH.
 *
 * @throws PghaError `missing-prerequisite` saying what to install.
 */
export function findEtcdBinary(env: NodeJS.ProcessEnv = process.env): string {
  const override = env.PGHA_ETCD_BIN;
  if (override !== undefined && override !== '') {
    if (!isExecutable(override)) {
      throw new PghaError(
        'missing-prerequisite',
        `PGHA_ETCD_BIN=${override} is not an executable file: point it at the etcd server binary`,
      );
    }
    return override;
  }
  const found = whichSync('etcd', env);
  if (found === null) {
    throw new PghaError(
      'missing-prerequisite',
      "etcd not found on PATH: run `pnpm run setup` (installs Debian's etcd-server when root), install etcd 3.4+ yourself, set PGHA_ETCD_BIN, or pass --etcd URL to use a running etcd",
    );
  }
  return found;
}
