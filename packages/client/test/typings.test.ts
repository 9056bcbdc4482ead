// The published typings, as a CommonJS TypeScript user without esModuleInterop sees
// them: a tiny project compiled with tsc against the built package (run `pnpm build`
// first). `Pool` must keep pg.Pool's surface and be assignable to pg.Pool.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const clientDir = fileURLToPath(new URL('..', import.meta.url));
const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');

const source = `import pg = require('pg');
import { Pool, ReplicaPool } from '@pgha/client';

const pool: pg.Pool = new Pool({ etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', max: 5 });
const reads: pg.Pool = new ReplicaPool({ etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo' });
async function main(): Promise<number> {
  const result: pg.QueryResult<{ one: number }> = await pool.query<{ one: number }>('SELECT 1 AS one');
  const client: pg.PoolClient = await pool.connect();
  client.release();
  pool.removeListener('error', () => undefined);
  await reads.end();
  return result.rows[0]!.one + pool.totalCount + pool.idleCount + pool.waitingCount;
}
void main;
`;

function compile(dir: string, compilerOptions: Record<string, unknown>): Promise<string> {
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, skipLibCheck: true, types: [], ...compilerOptions },
      files: ['index.ts'],
    }),
  );
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', dir], (error, stdout, stderr) => resolve(error ? `${stdout}${stderr}` : ''));
  });
}

describe('CommonJS typings', () => {
  it.each([
    { module: 'commonjs' },
    { module: 'node16', moduleResolution: 'node16' },
    { module: 'nodenext', moduleResolution: 'nodenext' },
  ])('type-check pg.Pool usage without esModuleInterop (%o)', async (options) => {
    // Inside packages/client/node_modules, so pg and @types/pg resolve from there (and
    // linters and git leave it alone).
    const cache = join(clientDir, 'node_modules', '.cache');
    mkdirSync(cache, { recursive: true });
    const dir = mkdtempSync(join(cache, 'typings-'));
    try {
      mkdirSync(join(dir, 'node_modules', '@pgha'), { recursive: true });
      symlinkSync(clientDir, join(dir, 'node_modules', '@pgha', 'client'), 'dir');
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'cjs-user', private: true, type: 'commonjs' }));
      writeFileSync(join(dir, 'index.ts'), source);
      expect(await compile(dir, { ...options, esModuleInterop: false, allowSyntheticDefaultImports: false })).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
