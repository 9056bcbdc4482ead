// Writing back whole file systems (syncfs(2)) in place of a tool's own file-by-file
// fsync: what pg_basebackup and pg_rewind write with --no-sync is on disk before pgha
// marks the data directory usable.
import { execFile } from 'node:child_process';
import { PghaError } from '@pgha/core';

/**
 * Writes back the file system that holds `path` and waits until it is on disk: one
 * `syncfs()` (coreutils `sync --file-system`) instead of opening and fsyncing every
 * file, which costs a fraction of a second for an empty cluster on an idle disk and
 * seconds on a busy one. Where `sync --file-system` is missing (coreutils before
 * 8.24, a minimal image), it falls back to `sync` with no argument (every file
 * system: slower on a shared host, as safe).
 *
 * Linux only: elsewhere `sync` may return before the data is written.
 *
 * @throws PghaError `postgres-failed` when neither form succeeds (nothing can be
 *   assumed to be on disk: the caller must not mark the data usable).
 */
export async function syncFileSystem(path: string, timeoutMillis = 600_000): Promise<void> {
  try {
    await run(['--file-system', path], timeoutMillis);
  } catch (first) {
    try {
      await run([], timeoutMillis);
    } catch (second) {
      throw new PghaError(
        'postgres-failed',
        `could not write back the file system holding ${path} (sync --file-system: ${(first as Error).message}; sync: ${(second as Error).message}); check that coreutils' sync is on the PATH and the disk accepts writes`,
        { cause: second },
      );
    }
  }
}

function run(args: readonly string[], timeoutMillis: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sync', args, { timeout: timeoutMillis, killSignal: 'SIGKILL' }, (error, _stdout, stderr) => {
      if (error === null) resolve();
      else reject(new Error(stderr.trim() || error.message.split('\n')[0]));
    });
  });
}
