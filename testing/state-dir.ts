// Test support: the state directory of a test cluster, with etcd's data in memory.
//
// Every test cluster's etcd would otherwise share this machine's one disk with the
// postgres processes of the tests (three or more per cluster, two files at a time).
// etcd's own log showed its WAL fsync stalling 1.1-4.6 s behind their checkpoints,
// crash recoveries and base backups: past the 1.5 s fencing deadline of the default
// 2 s lease, so a primary fenced itself correctly, in a test that asserted no
// failover. etcd's operators' guide asks for a disk of etcd's own; in tests that disk
// is /dev/shm (tmpfs). Postgres stays on the disk. PGHA_TEST_ETCD_ON_DISK=1 puts etcd
// back beside it (to reproduce those stalls); docs/failure-modes.md, "etcd slow to
// answer", says what they do to a cluster.
import { existsSync, lstatSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** Where etcd data goes in tests: tmpfs when this machine has it, else null (the disk). */
export function etcdRamRoot(): string | null {
  if (process.env.PGHA_TEST_ETCD_ON_DISK) return null;
  try {
    return statSync('/dev/shm').isDirectory() ? '/dev/shm' : null;
  } catch {
    return null;
  }
}

/**
 * A new directory for a test's state, as `mkdtempSync(join(tmpdir(), prefix))`, in
 * which each of `etcdDirs` (etcd data directories, relative to it: `etcd` is the one
 * `pgha up` and startLocalCluster use) is a symbolic link to a new directory in memory.
 * Remove it with {@link removeTestStateDir}.
 */
export function makeTestStateDir(prefix: string, etcdDirs: readonly string[] = ['etcd']): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const root = etcdRamRoot();
  if (root !== null) {
    for (const name of etcdDirs) symlinkSync(mkdtempSync(join(root, `${prefix}${name}-`)), join(dir, name));
  }
  return dir;
}

/** A new directory for etcd's data alone (in memory when possible); remove it with rmSync. */
export function makeEtcdDataDir(prefix: string): string {
  return mkdtempSync(join(etcdRamRoot() ?? tmpdir(), prefix));
}

/**
 * Removes a directory made by {@link makeTestStateDir} and the in-memory directories
 * its links point to, or, with PGHA_KEEP_TEST_STATE set, keeps both and says where.
 */
export function removeTestStateDir(dir: string): void {
  if (process.env.PGHA_KEEP_TEST_STATE) {
    console.log(`state kept in ${dir}`);
    return;
  }
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (lstatSync(path).isSymbolicLink()) rmSync(resolve(dir, readlinkSync(path)), { recursive: true, force: true });
  }
  rmSync(dir, { recursive: true, force: true });
}
