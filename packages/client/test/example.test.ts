// The runnable example (examples/follow-primary) against a real cluster: it must
// print the role changes and keep writing across a primary change.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPassword, testUser } from '../../../testing/postgres.js';
import { startEnv, type TestEnv } from './support/env.js';
import { until } from './support/wait.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

describe('examples/follow-primary', () => {
  let env: TestEnv;
  let app: ChildProcess | undefined;
  let output = '';

  beforeAll(async () => {
    // The example imports @pgha/client by name, i.e. its built dist.
    await promisify(execFile)('pnpm', ['--filter', '@pgha/client...', 'build'], { cwd: root, timeout: 90_000 });
    env = await startEnv({ standbys: 1 });
  });
  afterAll(async () => {
    if (app?.pid !== undefined && app.exitCode === null) process.kill(app.pid, 'SIGKILL');
    await env?.stop();
  });

  it('prints role changes and keeps writing through a failover', async () => {
    const standby = env.pg.standbys[0]!;
    app = spawn(process.execPath, ['examples/follow-primary/main.mjs'], {
      cwd: root,
      env: {
        ...process.env,
        PGHA_ETCD: env.etcd.endpoint,
        PGHA_CLUSTER: env.cluster,
        PGHA_KEY_ROOT: env.keyRoot,
        DATABASE_URL: `postgres://${testUser}:${testPassword}@127.0.0.1:1/postgres`,
      },
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
});
