// Bad input to the built `pgha` CLI, run as a real child process: every case must
// exit non-zero within a deadline, say on stderr what happened and what to do, and
// do no damage (nothing started, nothing left running, existing files unchanged).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { createEtcdClient } from '../src/adapters/etcd.js';
import { findFreePort, isPortFree } from '../src/adapters/ports.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

/** What a finished CLI run left. */
interface CliRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly millis: number;
  readonly pid: number;
}

/** The environment without any PGHA_* setting of the machine, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PGHA_')) env[key] = value;
  return { ...env, ...extra };
}

/**
 * Runs the CLI in its own process group and waits for it to exit, at most
 * `deadlineMillis`; past that it kills the whole group and fails.
 */
function runCli(
  args: string[],
  options: { cwd: string; env?: Record<string, string>; deadlineMillis?: number },
): Promise<CliRun> {
  const deadlineMillis = options.deadlineMillis ?? 30_000;
  const started = Date.now();
  const child = spawn(process.execPath, [cli, ...args], {
    cwd: options.cwd,
    env: cleanEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      reject(new Error(`pgha ${args.join(' ')} did not exit within ${deadlineMillis} ms; stderr so far:\n${stderr}`));
    }, deadlineMillis);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, millis: Date.now() - started, pid: child.pid! });
    });
  });
}

/** Processes (other than this one) whose command line mentions `text`. */
function processesMentioning(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let command: string;
    try {
      command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue; // exited meanwhile
    }
    if (command.includes(text)) found.push(`${entry}: ${command}`);
  }
  return found;
}

/** Whether any process is left in the group the CLI led. */
function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every path under `root` with its type, mode and content hash: equal snapshots mean nothing changed. */
function snapshotTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string, rel: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const key = rel === '' ? name : `${rel}/${name}`;
      const st = lstatSync(path);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out[key] = `dir ${mode}`;
        walk(path, key);
      } else {
        out[key] = `file ${mode} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
      }
    }
  };
  walk(root, '');
  return out;
}

/** A free port whose successor is free too (etcd's client and peer ports). */
async function findFreePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await findFreePort();
    if (port < 65535 && (await isPortFree(port + 1))) return port;
  }
  throw new Error('no two consecutive free ports');
}

/** A port nothing listens on (connections are refused). */
const refusingPort = findFreePort;

/** Asserts the CLI failed as it should: non-zero exit, not killed, a `pgha:` line on stderr, nothing on stdout. */
function expectFailure(run: CliRun): void {
  expect(run.signal, run.stderr).toBeNull();
  expect(run.code, run.stderr).not.toBe(0);
  expect(run.code, run.stderr).not.toBeNull();
  expect(run.stderr).toMatch(/^pgha: /m);
  expect(run.stderr).not.toContain('unexpected failure');
  expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
  expect(run.stdout).toBe('');
}

/** Asserts nothing of the run remains: its group is gone and no process mentions `marker`. */
function expectNothingRunning(run: CliRun, marker: string): void {
  expect(groupAlive(run.pid)).toBe(false);
  expect(processesMentioning(marker)).toEqual([]);
}

const temps: string[] = [];
/** A fresh directory postgres' OS user may traverse (root runs postgres as another user). */
function tempDir(prefix = 'pgha-cli-errors-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o711);
  temps.push(dir);
  return dir;
}

const listeners: Server[] = [];
const sockets: Socket[] = [];
/** Listens on a free loopback port until the test ends; returns the port. */
async function holdPort(): Promise<number> {
  const server = createServer((socket) => {
    sockets.push(socket); // accept and never answer
  });
  listeners.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1' }, resolve);
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return address.port;
}

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(listeners.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true });
});

beforeAll(() => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`pnpm build\` first`);
});

describe('pgha with bad flags', () => {
  it('refuses an unknown flag, names it and points at --help, and creates nothing', async () => {
    const cwd = tempDir();
    const run = await runCli(['up', '--bogus'], { cwd });
    expectFailure(run);
    expect(run.stderr).toContain("unknown option '--bogus'");
    expect(run.stderr).toContain('(add --help for usage)');
    expect(readdirSync(cwd)).toEqual([]);
    expectNothingRunning(run, cwd);
  });

  it('refuses --members 0 and says which values are allowed, and creates nothing', async () => {
    const cwd = tempDir();
    const run = await runCli(['up', '--members', '0'], { cwd });
    expectFailure(run);
    expect(run.stderr).toContain("option '--members <n>' argument '0' is invalid");
    expect(run.stderr).toContain('expected a whole number from 1 to 9');
    expect(readdirSync(cwd)).toEqual([]);
    expectNothingRunning(run, cwd);
  });

  it('refuses a value that is not a number for --port', async () => {
    const cwd = tempDir();
    const run = await runCli(['up', '--port', '54x'], { cwd });
    expectFailure(run);
    expect(run.stderr).toContain("option '--port <base>' argument '54x' is invalid");
    expect(run.stderr).toContain('expected a whole number from 1024 to 65535');
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('refuses an allowed network that is not CIDR before the agent starts anything', async () => {
    const dir = tempDir();
    const port = await findFreePort();
    const run = await runCli(
      [
        'agent',
        '--name',
        'pgha-0',
        '--member-dir',
        join(dir, 'm'),
        '--port',
        String(port),
        '--allow-cidr',
        '0.0.0.0/0 trust',
      ],
      {
        cwd: dir,
        env: {
          PGHA_SUPERUSER_PASSWORD: 'superuser-password-0123',
          PGHA_REPLICATION_PASSWORD: 'replication-password-0123',
        },
      },
    );
    expectFailure(run);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('allowed network "0.0.0.0/0 trust" is not an address/prefix');
    expect(run.stderr).toContain('fix --allow-cidr');
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('pgha up when a postgres port is already in use', () => {
  it('names the busy port and what it was for, starts nothing and writes nothing', async () => {
    const stateDir = tempDir();
    const busy = await holdPort();
    const etcdPort = await findFreePortPair();
    const run = await runCli(
      ['up', '--state-dir', stateDir, '--port', String(busy), '--etcd-port', String(etcdPort), '--api-port', '0'],
      {
        cwd: stateDir,
      },
    );
    expectFailure(run);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`already in use on 127.0.0.1: ${busy} (for postgres of pgha-0)`);
    // "them" when a file beside this one happened to take the next port too (seen in CI).
    expect(run.stderr).toMatch(
      /stop what uses (it|them) or choose others \(--port BASE, --etcd-port PORT, --api-port BASE\)/,
    );
    expect(readdirSync(stateDir)).toEqual([]);
    expect(listeners[0]!.listening).toBe(true);
    expect(await isPortFree(etcdPort)).toBe(true);
    expect(await isPortFree(etcdPort + 1)).toBe(true);
    expectNothingRunning(run, stateDir);
  });
});

describe('pgha up with missing binaries', () => {
  it('says which PostgreSQL programs are missing from PGHA_PG_BIN and how to install them', async () => {
    const stateDir = tempDir();
    const port = await findFreePort();
    const etcdPort = await findFreePortPair();
    const run = await runCli(
      ['up', '--state-dir', stateDir, '--port', String(port), '--etcd-port', String(etcdPort), '--api-port', '0'],
      {
        cwd: stateDir,
        env: { PGHA_PG_BIN: '/nonexistent' },
      },
    );
    expectFailure(run);
    expect(run.stderr).toContain(
      'postgres, initdb, pg_basebackup, pg_controldata not found in /nonexistent (from PGHA_PG_BIN)',
    );
    expect(run.stderr).toContain('apt-get install postgresql');
    expect(run.stderr).toContain('set PGHA_PG_BIN to the directory holding postgres and initdb');
    expect(readdirSync(stateDir)).toEqual([]);
    expect(await isPortFree(etcdPort)).toBe(true);
    expectNothingRunning(run, stateDir);
  });

  it('says that PGHA_ETCD_BIN is not an executable and where to point it', async () => {
    const stateDir = tempDir();
    const port = await findFreePort();
    const etcdPort = await findFreePortPair();
    const run = await runCli(
      ['up', '--state-dir', stateDir, '--port', String(port), '--etcd-port', String(etcdPort), '--api-port', '0'],
      {
        cwd: stateDir,
        env: { PGHA_ETCD_BIN: '/nonexistent' },
      },
    );
    expectFailure(run);
    expect(run.stderr).toContain(
      'PGHA_ETCD_BIN=/nonexistent is not an executable file: point it at the etcd server binary',
    );
    expect(readdirSync(stateDir)).toEqual([]);
    expect(await isPortFree(etcdPort)).toBe(true);
    expect(await isPortFree(port)).toBe(true);
    expectNothingRunning(run, stateDir);
  });
});

describe('pgha with hostile values', () => {
  it('refuses an etcd endpoint with a password in it, without repeating the password', async () => {
    const cwd = tempDir();
    const run = await runCli(['status', '--etcd', 'http://root:s3cret-pw@127.0.0.1:2379'], { cwd });
    expectFailure(run);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('etcd endpoint "http://***@127.0.0.1:2379" carries credentials');
    expect(run.stderr).toContain('PGHA_ETCD_PASSWORD');
    expect(run.stderr).not.toContain('s3cret-pw');
  });

  it('refuses a very long or non-ASCII cluster name with the rule, the name cut short', async () => {
    const cwd = tempDir();
    for (const name of ['c'.repeat(5000), 'd\u00ff\ufffdx']) {
      const run = await runCli(['status', '--cluster', name, '--etcd', 'http://127.0.0.1:2379'], { cwd });
      expectFailure(run);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('use 1-63 lower-case letters, digits and dashes');
      expect(run.stderr.length).toBeLessThan(400);
    }
  });
});

describe('pgha check with etcd TLS options', () => {
  it('refuses a missing client certificate with what to pass, before it creates or starts anything', async () => {
    const cwd = tempDir();
    const stateDir = join(cwd, 'state');
    const missing = join(cwd, 'missing.pem');
    const run = await runCli(
      [
        'check',
        '--etcd',
        `https://127.0.0.1:${await refusingPort()}`,
        '--etcd-cert',
        missing,
        '--etcd-key',
        missing,
        '--state-dir',
        stateDir,
        '--faults-per-kind',
        '1',
      ],
      { cwd },
    );
    expectFailure(run);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      `cannot read the etcd client certificate ${missing} (no such file): pass an existing PEM file readable by this user with --etcd-cert`,
    );
    expect(readdirSync(cwd)).toEqual([]);
    expectNothingRunning(run, cwd);
  });
});

describe('pgha when etcd is unreachable', () => {
  // The CLI's etcd calls time out after 3 s and the client retries 3 times.
  const bound = 20_000;

  it('status fails at once when nothing listens on the etcd port, saying where it looked', async () => {
    const cwd = tempDir();
    const endpoint = `http://127.0.0.1:${await refusingPort()}`;
    const run = await runCli(['status', '--etcd', endpoint], { cwd, deadlineMillis: bound });
    expectFailure(run);
    expect(run.stderr).toContain(`cannot reach etcd at ${endpoint} while checking that etcd answers`);
    expect(run.stderr).toContain('check that etcd runs there');
    expect(run.stderr).not.toContain('Resolution note');
  });

  it('status fails within its deadline when the etcd port accepts connections but never answers', async () => {
    const cwd = tempDir();
    const endpoint = `http://127.0.0.1:${await holdPort()}`;
    const run = await runCli(['status', '--etcd', endpoint, '--json'], { cwd, deadlineMillis: bound });
    expectFailure(run);
    expect(run.millis).toBeLessThan(bound);
    expect(run.stderr).toContain(`cannot reach etcd at ${endpoint}`);
    expect(run.stderr).toMatch(/DEADLINE_EXCEEDED|UNAVAILABLE/);
  });

  it('up fails before it writes or starts anything when nothing listens on the etcd port', async () => {
    const stateDir = tempDir();
    const port = await findFreePort();
    const endpoint = `http://127.0.0.1:${await refusingPort()}`;
    const run = await runCli(
      ['up', '--etcd', endpoint, '--state-dir', stateDir, '--port', String(port), '--api-port', '0'],
      {
        cwd: stateDir,
        deadlineMillis: bound,
      },
    );
    expectFailure(run);
    expect(run.stderr).toContain(`cannot reach etcd at ${endpoint} while checking that etcd answers`);
    expect(run.stderr).toContain('check that etcd runs there, or omit --etcd to let `pgha up` start its own');
    expect(readdirSync(stateDir)).toEqual([]);
    expect(await isPortFree(port)).toBe(true);
    expectNothingRunning(run, stateDir);
  });

  it('up fails within its deadline when the etcd port never answers, and starts nothing', async () => {
    const stateDir = tempDir();
    const port = await findFreePort();
    const endpoint = `http://127.0.0.1:${await holdPort()}`;
    const run = await runCli(
      ['up', '--etcd', endpoint, '--state-dir', stateDir, '--port', String(port), '--api-port', '0'],
      {
        cwd: stateDir,
        deadlineMillis: bound,
      },
    );
    expectFailure(run);
    expect(run.millis).toBeLessThan(bound);
    expect(run.stderr).toContain(`cannot reach etcd at ${endpoint}`);
    expect(readdirSync(stateDir)).toEqual([]);
    expectNothingRunning(run, stateDir);
  });
});

describe('pgha up with a state directory that is not its own', () => {
  it('refuses a state directory of another cluster, says how to use it, and leaves it unchanged', async () => {
    const stateDir = tempDir();
    const other = {
      v: 1,
      cluster: 'other',
      members: 3,
      basePort: await findFreePort(),
      etcdPort: await findFreePortPair(),
      superuserPassword: 'other-superuser-password-0123456789',
      replicationPassword: 'other-replication-password-0123456789',
      createdAt: '2024-05-01T12:00:00.000Z',
    };
    writeFileSync(join(stateDir, 'cluster.json'), `${JSON.stringify(other, null, 2)}\n`, { mode: 0o600 });
    mkdirSync(join(stateDir, 'other-0', 'data'), { recursive: true });
    writeFileSync(join(stateDir, 'other-0', 'data', 'PG_VERSION'), '15\n');
    const before = snapshotTree(stateDir);
    const port = await findFreePort();
    const etcdPort = await findFreePortPair();
    const run = await runCli(
      [
        'up',
        '--cluster',
        'mine',
        '--state-dir',
        stateDir,
        '--port',
        String(port),
        '--etcd-port',
        String(etcdPort),
        '--api-port',
        '0',
      ],
      { cwd: stateDir },
    );
    expectFailure(run);
    expect(run.stderr).toContain(
      `state directory ${stateDir} belongs to cluster "other", not "mine": pass --cluster other or choose another --state-dir`,
    );
    expect(snapshotTree(stateDir)).toEqual(before);
    expect(await isPortFree(etcdPort)).toBe(true);
    expectNothingRunning(run, stateDir);
  });

  it('refuses a non-empty directory without cluster.json as not a pgha state directory, and leaves it unchanged', async () => {
    const stateDir = tempDir();
    writeFileSync(join(stateDir, 'thesis.tex'), '\\documentclass{article}\n');
    mkdirSync(join(stateDir, 'figures'));
    writeFileSync(join(stateDir, 'figures', 'plot.csv'), 'x,y\n1,2\n');
    const before = snapshotTree(stateDir);
    const port = await findFreePort();
    const etcdPort = await findFreePortPair();
    const run = await runCli(
      ['up', '--state-dir', stateDir, '--port', String(port), '--etcd-port', String(etcdPort), '--api-port', '0'],
      {
        cwd: stateDir,
      },
    );
    expectFailure(run);
    expect(run.stderr).toContain(
      `state directory ${stateDir} is not empty and has no cluster.json: it is not a pgha state directory; choose another --state-dir`,
    );
    expect(snapshotTree(stateDir)).toEqual(before);
    expect(await isPortFree(etcdPort)).toBe(true);
    expectNothingRunning(run, stateDir);
  });

  it('refuses a corrupt cluster.json, says how to recover, and leaves it unchanged', async () => {
    const stateDir = tempDir();
    writeFileSync(join(stateDir, 'cluster.json'), '{"v":1,"cluster":"pgha",', { mode: 0o600 });
    const before = snapshotTree(stateDir);
    const run = await runCli(['up', '--state-dir', stateDir, '--port', String(await findFreePort())], {
      cwd: stateDir,
    });
    expectFailure(run);
    expect(run.stderr).toContain(`${join(stateDir, 'cluster.json')} is unreadable or corrupt; fix or remove it`);
    expect(snapshotTree(stateDir)).toEqual(before);
    expectNothingRunning(run, stateDir);
  });
});

describe('pgha agent with a foreign data directory', () => {
  let etcd: TestEtcd;
  beforeAll(async () => {
    etcd = await startTestEtcd();
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  const passwords = {
    PGHA_SUPERUSER_PASSWORD: 'superuser-password-0123',
    PGHA_REPLICATION_PASSWORD: 'replication-password-0123',
  };

  /** Runs `pgha agent` as pgha-0 on `memberDir` against the test etcd, below `keyRoot`. */
  async function runAgent(memberDir: string, keyRoot: string, port?: number, extra: string[] = []): Promise<CliRun> {
    const args = ['--name', 'pgha-0', '--member-dir', memberDir, '--port', String(port ?? (await findFreePort()))];
    args.push('--etcd', etcd.endpoint, '--key-root', keyRoot, ...extra);
    return runCli(['agent', ...args], { cwd: memberDir, env: passwords });
  }

  async function expectNothingInEtcd(keyRoot: string): Promise<void> {
    const client = createEtcdClient({ endpoints: etcd.endpoint });
    try {
      expect(await client.getAll().prefix(keyRoot).keys()).toEqual([]);
    } finally {
      client.close();
    }
  }

  it('refuses a non-empty directory that is not PostgreSQL data, leaving its files byte-identical', async () => {
    const memberDir = tempDir();
    const dataDir = join(memberDir, 'data');
    mkdirSync(dataDir);
    const junk = Buffer.from([0x00, 0xff, 0x0a, ...Buffer.from('precious notes\n')]);
    writeFileSync(join(dataDir, 'junk'), junk);
    const before = snapshotTree(memberDir);
    const port = await findFreePort();
    const keyRoot = uniqueKeyRoot();
    const run = await runAgent(memberDir, keyRoot, port);
    expectFailure(run);
    expect(run.stderr).toContain(
      `pgha: ${dataDir} is not empty and is not a PostgreSQL data directory; pgha will not touch it: move it away or choose another directory`,
    );
    expect(readFileSync(join(dataDir, 'junk')).equals(junk)).toBe(true);
    expect(snapshotTree(memberDir)).toEqual(before);
    expect(await isPortFree(port)).toBe(true);
    await expectNothingInEtcd(keyRoot);
    expectNothingRunning(run, memberDir);
  });

  it('refuses even when it may bootstrap', async () => {
    const memberDir = tempDir();
    const dataDir = join(memberDir, 'data');
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'junk'), 'junk\n');
    const before = snapshotTree(memberDir);
    const keyRoot = uniqueKeyRoot();
    const run = await runAgent(memberDir, keyRoot, undefined, ['--bootstrap']);
    expectFailure(run);
    expect(run.stderr).toContain(
      `${dataDir} is not empty and is not a PostgreSQL data directory; pgha will not touch it`,
    );
    expect(snapshotTree(memberDir)).toEqual(before);
    await expectNothingInEtcd(keyRoot);
    expectNothingRunning(run, memberDir);
  });

  it('refuses a PostgreSQL data directory that pgha did not create, leaving it unchanged', async () => {
    const memberDir = tempDir();
    const dataDir = join(memberDir, 'data');
    mkdirSync(join(dataDir, 'global'), { recursive: true });
    writeFileSync(join(dataDir, 'PG_VERSION'), '15\n');
    writeFileSync(join(dataDir, 'global', 'pg_control'), Buffer.alloc(8192, 7));
    const before = snapshotTree(memberDir);
    const keyRoot = uniqueKeyRoot();
    const run = await runAgent(memberDir, keyRoot);
    expectFailure(run);
    expect(run.stderr).toContain(
      `${dataDir} is a PostgreSQL data directory that pgha did not create (no pgha-member.json)`,
    );
    expect(run.stderr).toContain('move it away or choose another directory');
    expect(snapshotTree(memberDir)).toEqual(before);
    await expectNothingInEtcd(keyRoot);
    expectNothingRunning(run, memberDir);
  });

  it('refuses another member’s data directory, naming both members', async () => {
    const memberDir = tempDir();
    const dataDir = join(memberDir, 'data');
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, 'PG_VERSION'), '15\n');
    writeFileSync(join(dataDir, 'pgha-member.json'), '{"cluster":"pgha","member":"pgha-1"}\n');
    const before = snapshotTree(memberDir);
    const keyRoot = uniqueKeyRoot();
    const run = await runAgent(memberDir, keyRoot);
    expectFailure(run);
    expect(run.stderr).toContain(`${dataDir} belongs to member "pgha-1" of cluster "pgha", not "pgha-0" of "pgha"`);
    expect(snapshotTree(memberDir)).toEqual(before);
    await expectNothingInEtcd(keyRoot);
    expectNothingRunning(run, memberDir);
  });

  it('says which password variable is missing before touching anything', async () => {
    const memberDir = tempDir();
    const run = await runCli(
      [
        'agent',
        '--name',
        'pgha-0',
        '--member-dir',
        join(memberDir, 'm'),
        '--port',
        String(await findFreePort()),
        '--etcd',
        etcd.endpoint,
      ],
      { cwd: memberDir, env: { PGHA_SUPERUSER_PASSWORD: 'superuser-password-0123' } },
    );
    expectFailure(run);
    expect(run.stderr).toContain('PGHA_REPLICATION_PASSWORD is not set');
    expect(readdirSync(memberDir)).toEqual([]);
  });
});
