import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The newest PostgreSQL server bin directory under /usr/lib/postgresql (Debian's
 * layout), or BENCH_PG_BIN when set. Discovered, so the bench follows the machine.
 */
export function postgresBinDir(): { dir: string; version: string } {
  const override = process.env.BENCH_PG_BIN;
  if (override) return { dir: override, version: 'BENCH_PG_BIN' };
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+(\.\d+)?$/.test(v) && existsSync(join(root, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (newest === undefined)
    throw new Error(`no PostgreSQL server under ${root}/<version>/bin; install one or set BENCH_PG_BIN`);
  return { dir: join(root, newest, 'bin'), version: newest };
}
