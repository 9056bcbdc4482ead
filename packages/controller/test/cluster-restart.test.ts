// Whole-cluster restarts as a user does them: `pgha up` in the foreground, stopped
// with Ctrl-C (SIGINT) and started again on the same state, five times, while a
// writer on every member inserts into whichever member accepts writes. Every
// acknowledged row must survive, and every restart must come back healthy (one
// writable primary, both replicas streaming), with history naming the old primary.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, expect, test } from 'vitest';
import { alive, findFreePortRange, postmasterPid, StopWaiting, waitFor } from '../../../testing/cluster.js';
import { logDigest } from '../../../testing/log-digest.js';
import { makeTestStateDir, removeTestStateDir } from '../../../testing/state-dir.js';
import { type Ack, createAckTable, missingAcks, startWriter, type Writer } from '../../../testing/writer.js';
import { cliPath } from '../src/runtime/local/local-cluster.js';

const run = promisify(execFile);
const stateDir = makeTestStateDir('pgha-restart-');
const cluster = 'restart';
const members = ['restart-0', 'restart-1', 'restart-2'];
let up: ChildProcess | null = null;
const writers: Writer[] = [];

// A failure says what the members decided (the logs go with the state directory).
afterEach((context) => {
  if (context.task.result?.state === 'fail')
    console.log(`the cluster's notable log lines:\n${logDigest(join(stateDir, 'logs'))}`);
});

afterAll(async () => {
  for (const w of writers) await w.stop().catch(() => undefined);
  if (up?.pid !== undefined && up.exitCode === null) {
    up.kill('SIGINT');
    await waitFor('pgha up to exit', () => up!.exitCode !== null, 60_000).catch(() => up!.kill('SIGKILL'));
  }
  removeTestStateDir(stateDir);
});

/** Runs `pgha up` on `stateDir`; resolves with the printed primary URL once it is up. */
async function startUp(base: number, etcdPort: number): Promise<string> {
  const child = spawn(
    process.execPath,
    [
      cliPath(),
      'up',
      '--cluster',
      cluster,
      '--state-dir',
      stateDir,
      '--port',
      String(base),
      '--etcd-port',
      String(etcdPort),
      '--api-port',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  up = child;
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return waitFor(
    'the cluster to be up',
    () => {
      if (child.exitCode !== null) throw new StopWaiting(`pgha up exited ${child.exitCode}: ${stderr.slice(-3000)}`);
      return /primary:\s+(postgresql:\/\/\S+)/.exec(stdout)?.[1];
    },
    120_000,
    200,
  );
}

async function interruptUp(): Promise<void> {
  const child = up!;
  child.kill('SIGINT');
  await waitFor('pgha up to exit', () => child.exitCode !== null, 60_000);
  expect(child.exitCode).toBe(0);
}

interface Status {
  term: number;
  leader: { member: string; writable: boolean } | null;
  members: Array<{ name: string; role: string; state: string; streaming: boolean }>;
}

async function status(etcd: string): Promise<Status> {
  const { stdout } = await run(process.execPath, [cliPath(), 'status', '--etcd', etcd, '--cluster', cluster, '--json']);
  return JSON.parse(stdout);
}

function agentLogs(): string {
  return members
    .map(
      (m) =>
        `--- ${m}\n${readFileSync(join(stateDir, 'logs', `${m}.log`), 'utf8')
          .split('\n')
          .filter((l) => /"level":"(info|warn|error)"/.test(l))
          .slice(-25)
          .join('\n')}`,
    )
    .join('\n');
}

test('five whole-cluster restarts under writes on every member lose no acknowledged write and each comes back healthy', async () => {
  const base = await findFreePortRange(5);
  const etcdPort = base + 3;
  const etcd = `http://127.0.0.1:${etcdPort}`;
  const first = await startUp(base, etcdPort);
  await createAckTable(first);
  const url = (i: number) => first.replace(/@127\.0\.0\.1:\d+\//, `@127.0.0.1:${base + i}/`);
  // One writer pinned to each member: it writes whenever that member accepts writes,
  // including a primary whose replicas already stopped (the case that lost rows).
  members.forEach((name, i) => {
    writers.push(
      startWriter({
        members: members.map((n, j) => ({ name: n, connectionString: url(j) })),
        follow: { pinned: name },
        intervalMillis: 5,
        firstId: 1 + i * 10_000_000,
      }),
    );
  });
  const restarts = 5;
  const leaders: string[] = [];
  for (let round = 0; round <= restarts; round++) {
    if (round > 0) await startUp(base, etcdPort);
    const healthy = await waitFor(
      `restart ${round}: one writable primary and two streaming replicas`,
      async () => {
        const s = await status(etcd);
        const ok =
          s.leader?.writable === true &&
          s.members.length === 3 &&
          s.members.every((m) => m.state === 'running' && (m.role === 'primary' || m.streaming));
        return ok ? s : undefined;
      },
      60_000,
      1000, // each poll runs the CLI (a node process): CPU the files beside this one need
    ).catch((error) => {
      throw new Error(`${(error as Error).message}\n${agentLogs()}`);
    });
    leaders.push(healthy.leader!.member);
    // Writes land on the new primary before the next stop.
    const before = writers.reduce((n, w) => n + w.acks.length, 0);
    await waitFor(
      'writes acknowledged after the restart',
      () => writers.reduce((n, w) => n + w.acks.length, 0) > before + 100,
      30_000,
      50,
    );
    if (round < restarts) await interruptUp();
  }
  for (const w of writers) await w.stop();
  const acks: Ack[] = writers.flatMap((w) => w.acks);
  const primaryUrl = url(members.indexOf(leaders.at(-1)!));
  const missing = await missingAcks(primaryUrl, acks);
  console.log(
    `${restarts} restarts, leaders ${leaders.join(' -> ')}: ${acks.length} writes acknowledged, ${missing.length} missing`,
  );
  expect(acks.length).toBeGreaterThan(restarts * 100);
  expect(missing).toEqual([]);

  // Every promotion is accounted for: after the first, history names the old primary.
  const { stdout } = await run(process.execPath, [
    cliPath(),
    'history',
    '--etcd',
    etcd,
    '--cluster',
    cluster,
    '--json',
  ]);
  const history = JSON.parse(stdout) as Array<{ term: number; oldPrimary: string | null; reason: string }>;
  expect(history.length).toBeGreaterThanOrEqual(restarts + 1);
  for (const h of history.filter((x) => x.term > 1)) expect(h.oldPrimary, `history of term ${h.term}`).not.toBeNull();

  const pids = [up!.pid, ...members.map((m) => postmasterPid(join(stateDir, m)))];
  await interruptUp();
  expect(alive(pids)).toEqual([]);
}, 600_000);
