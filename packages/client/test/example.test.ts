// The runnable examples against a real etcd and PostgreSQL, on one environment:
// examples/http-service must answer its routes and map "no primary" to 503 with
// Retry-After; examples/follow-primary must print the role changes and keep writing
// across a primary change. (The other examples are type-checked by `pnpm typecheck`.)
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPassword, testUser } from '../../../testing/postgres.js';
import { startEnv, type TestEnv } from './support/env.js';
import { until } from './support/wait.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** Whether packages/client's dist is missing or older than a source of client or core. */
function distIsStale(): boolean {
  const dist = join(root, 'packages/client/dist/index.js');
  if (!existsSync(dist)) return true;
  const built = statSync(dist).mtimeMs;
  const newer = (dir: string): boolean =>
    readdirSync(dir, { withFileTypes: true }).some((e) =>
      e.isDirectory() ? newer(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs > built,
    );
  return newer(join(root, 'packages/client/src')) || newer(join(root, 'packages/core/src'));
}

describe('examples/http-service and examples/follow-primary', () => {
  let env: TestEnv;
  let app: ChildProcess | undefined;
  let service: ChildProcess | undefined;
  let serviceOutput = '';
  let base = '';
  let output = '';

  beforeAll(async () => {
    // The examples import @pgha/client by name, i.e. its built dist: build it when a
    // source of it or of @pgha/core is newer (`pnpm test` has just built it; the
    // build takes over a minute on a loaded machine).
    if (distIsStale())
      await promisify(execFile)('pnpm', ['--filter', '@pgha/client...', 'build'], { cwd: root, timeout: 90_000 });
    env = await startEnv({ standbys: 1 });
  });
  /** What every example reads: etcd, cluster and credentials (host/port are ignored: the Pool routes). */
  const exampleEnv = () => ({
    ...process.env,
    PGHA_ETCD: env.etcd.endpoint,
    PGHA_CLUSTER: env.cluster,
    PGHA_KEY_ROOT: env.keyRoot,
    DATABASE_URL: `postgres://${testUser}:${testPassword}@127.0.0.1:1/postgres`,
  });

  afterAll(async () => {
    if (app?.pid !== undefined && app.exitCode === null) process.kill(app.pid, 'SIGKILL');
    if (service?.pid !== undefined && service.exitCode === null) process.kill(service.pid, 'SIGKILL');
    await env?.stop();
  });

  it('http-service: POST stores a note once per Idempotency-Key, GET reads it, /health names the primary', async () => {
    service = spawn(process.execPath, ['--import', 'tsx', 'examples/http-service/server.ts'], {
      cwd: root,
      env: { ...exampleEnv(), PORT: '0', PRIMARY_WAIT_MILLIS: '1000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    service.stdout!.on('data', (chunk) => {
      serviceOutput += chunk;
    });
    service.stderr!.on('data', (chunk) => {
      serviceOutput += chunk;
    });
    const port = await until(
      'the service listening',
      () => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(serviceOutput)?.[1],
      30_000,
    );
    base = `http://127.0.0.1:${port}`;
    const post = () =>
      fetch(`${base}/notes`, {
        method: 'POST',
        headers: { 'Idempotency-Key': 'note-1' },
        body: JSON.stringify({ text: 'hello' }),
      });
    const created = await post();
    expect(created.status, serviceOutput).toBe(201);
    expect(await created.json()).toMatchObject({ id: 'note-1', text: 'hello' });
    expect((await post()).status).toBe(200); // a repeat finds it: stored once
    const read = await fetch(`${base}/notes/note-1`);
    expect(read.status).toBe(200);
    expect((await fetch(`${base}/notes`)).status).toBe(200);
    expect(await (await fetch(`${base}/health`)).json()).toMatchObject({ port: env.pg.primary.port, term: 1 });
    expect((await fetch(`${base}/notes/absent`)).status).toBe(404);
  });

  it('prints role changes and keeps writing through a failover', async () => {
    const standby = env.pg.standbys[0]!;
    app = spawn(process.execPath, ['examples/follow-primary/main.mjs'], {
      cwd: root,
      env: exampleEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    app.stdout!.on('data', (chunk) => {
      output += chunk;
    });
    app.stderr!.on('data', (chunk) => {
      output += chunk;
    });
    await until('the first write', () => output.includes(`on port ${env.pg.primary.port}`), 20_000);
    expect(output).toMatch(/primary-changed: demo-primary at 127\.0\.0\.1:\d+ \(term 1, initial\)/);

    await env.pg.primary.stop();
    await env.deleteLeader();
    await env.publishLeader(standby, 2, { writable: false });
    await standby.promote();
    await env.publishLeader(standby, 2);
    await until('a write on the new primary', () => output.includes(`on port ${standby.port}`), 20_000);
    expect(output).toMatch(/no-primary \(term 1\)/);
    expect(output).toMatch(/primary-changed: demo-standby1 at 127\.0\.0\.1:\d+ \(term 2, unknown, was demo-primary\)/);

    const exited = new Promise((resolve) => app!.once('exit', resolve));
    app.kill('SIGINT');
    await exited;
    expect(output).toMatch(/stopped after \d+ writes/);
  });
  it('http-service: 503 with Retry-After while there is no primary, then serves the new one', async () => {
    await env.deleteLeader();
    const refused = await fetch(`${base}/notes`);
    expect(refused.status, serviceOutput).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(((await refused.json()) as { error: string }).error).toMatch(/failing over/);
    const standby = env.pg.standbys[0]!;
    await env.publishLeader(standby, 3);
    await until('a 200 from the new primary', async () => (await fetch(`${base}/notes/note-1`)).status === 200, 10_000);
  });
});
