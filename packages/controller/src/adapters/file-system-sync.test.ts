import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import { afterEach, describe, expect, it } from 'vitest';
import { syncFileSystem } from './file-system-sync.js';

const dirs: string[] = [];
const path = process.env.PATH;

afterEach(() => {
  process.env.PATH = path;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A directory whose only program is a `sync` that records its arguments and exits with `code(args)`. */
function fakeSync(exitFileSystem: number, exitAll: number): { bin: string; calls: () => string[] } {
  const bin = mkdtempSync(join(tmpdir(), 'pgha-sync-'));
  dirs.push(bin);
  const log = join(bin, 'calls');
  writeFileSync(log, '');
  writeFileSync(
    join(bin, 'sync'),
    `#!/bin/sh\necho "[$*]" >> '${log}'\nif [ "$1" = --file-system ]; then exit ${exitFileSystem}; fi\nexit ${exitAll}\n`,
  );
  chmodSync(join(bin, 'sync'), 0o755);
  return { bin, calls: () => readFileSync(log, 'utf8').split('\n').filter(Boolean) };
}

describe('syncFileSystem', () => {
  it("writes back the directory's file system with the real sync", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-data-'));
    dirs.push(dir);
    await expect(syncFileSystem(dir)).resolves.toBeUndefined();
  });

  it('asks for that file system only', async () => {
    const fake = fakeSync(0, 0);
    process.env.PATH = fake.bin;
    await syncFileSystem('/data/pg');
    expect(fake.calls()).toEqual(['[--file-system /data/pg]']);
  });

  it('falls back to syncing every file system where sync has no --file-system', async () => {
    const fake = fakeSync(1, 0);
    process.env.PATH = fake.bin;
    await syncFileSystem('/data/pg');
    expect(fake.calls()).toEqual(['[--file-system /data/pg]', '[]']);
  });

  it('fails, naming the directory and what to check, when neither form works', async () => {
    const fake = fakeSync(1, 1);
    process.env.PATH = fake.bin;
    const error = await syncFileSystem('/data/pg').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PghaError);
    expect((error as PghaError).code).toBe('postgres-failed');
    expect((error as Error).message).toMatch(
      /file system holding \/data\/pg .*check that coreutils' sync is on the PATH/,
    );
  });
});
