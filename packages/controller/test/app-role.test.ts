// The application role (--app-user, PGHA_APP_PASSWORD) on a real local cluster (real
// etcd, real postgres): the bootstrap creates it with a database of its name, it logs
// in with its password on the primary, and on a replica (read-only) once replicated.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { findFreePortRange, waitFor } from '../../../testing/cluster.js';
import { startTestEtcd, type TestEtcd } from '../../../testing/etcd.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { createLogger } from '../src/log.js';
import { cliPath, type LocalCluster, startLocalCluster } from '../src/runtime/local/local-cluster.js';

const appRole = { name: 'shop_app', password: "app pass with ' and \\ 0123456789" };
let stateDir: string;
let testEtcd: TestEtcd;
let c: LocalCluster;

beforeAll(async () => {
  stateDir = makeTestStateDir('pgha-app-role-');
  testEtcd = await startTestEtcd();
  c = await startLocalCluster({
    cluster: 'approle',
    stateDir,
    members: 2,
    basePort: await findFreePortRange(2),
    etcd: testEtcd.endpoint,
    appRole,
    log: createLogger('test', () => undefined),
    readyTimeoutMillis: 30_000,
  });
}, 40_000);

afterAll(async () => {
  await c?.stop();
  await testEtcd?.stop();
  removeTestStateDir(stateDir);
}, 30_000);

/** Runs `sql` as the application role on `member`, in its own database. */
async function asApp<T extends pg.QueryResultRow>(member: string, sql: string): Promise<T[]> {
  const m = c.members.find((x) => x.name === member)!;
  const client = new pg.Client({
    host: m.host,
    port: m.port,
    user: appRole.name,
    password: appRole.password,
    database: appRole.name,
    connectionTimeoutMillis: 3000,
  });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

test('the application role logs in to its own database on the primary, and read-only on a replica', async () => {
  const primary = c.primaryAtStart;
  const replica = c.members.find((m) => m.name !== primary)!.name;

  const [who] = await asApp<{ user: string; db: string; owner: string; recovery: boolean }>(
    primary,
    `SELECT current_user AS user, current_database() AS db, pg_is_in_recovery() AS recovery,
            (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()) AS owner`,
  );
  expect(who).toEqual({ user: appRole.name, db: appRole.name, owner: appRole.name, recovery: false });
  // It owns its database, so it may create in it (public schema of a database it owns).
  await asApp(primary, 'CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)');

  // The role and database are replicated: the replica lets it in, read-only.
  const rows = await waitFor(
    'the replica to serve the application role its table',
    async () => {
      try {
        return await asApp<{ id: number }>(replica, 'SELECT id FROM orders');
      } catch {
        return false;
      }
    },
    15_000,
  );
  expect(rows).toEqual([{ id: 1 }]);
  await expect(asApp(replica, 'INSERT INTO orders VALUES (2)')).rejects.toMatchObject({ code: '25006' });
}, 30_000);

test('the agent refuses --app-user without PGHA_APP_PASSWORD, naming the variable, before touching anything', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-app-role-cli-'));
  try {
    const run = promisify(execFile)(
      process.execPath,
      [cliPath(), 'agent', '--name', 'pgha-0', '--member-dir', join(dir, 'm'), '--port', '1', '--app-user', 'app'],
      {
        cwd: dir,
        timeout: 15_000,
        env: {
          PATH: process.env.PATH ?? '',
          PGHA_SUPERUSER_PASSWORD: 'superuser-password-0123',
          PGHA_REPLICATION_PASSWORD: 'replication-password-0123',
        },
      },
    );
    await expect(run).rejects.toMatchObject({ stderr: expect.stringContaining('PGHA_APP_PASSWORD, which is not set') });
    expect(readdirSync(dir)).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 20_000);
