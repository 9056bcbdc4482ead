// `pgha demo` end to end: the real command (the built CLI) starts its own etcd and
// three-member cluster in a temporary directory, runs its app through the Pool, kills
// the primary's host, and must exit 0 with a summary saying nothing was lost and
// nothing went to a wrong node. Nothing it started may outlive it, and its temporary
// directory must be gone (TMPDIR points it into this test's own directory).
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { killEverythingUnder, outputUntilExit, processesUnder } from '../../../testing/spawned-command.js';
import { cliPath } from '../src/runtime/local/local-cluster.js';

const dir = mkdtempSync(join(tmpdir(), 'pgha-demo-test-'));
chmodSync(dir, 0o711); // postgres runs as its own OS user and must enter it
let childPid: number | undefined;

afterAll(() => {
  // The command stops what it started; should it hang or fail, its children die with
  // it (pdeathsig) once it is killed here.
  killEverythingUnder(dir, childPid);
  rmSync(dir, { recursive: true, force: true });
});

test('pgha demo fails the primary over under its app, reports lost 0 and wrong node 0, and leaves nothing behind', async () => {
  const started = Date.now();
  const child = spawn(process.execPath, [cliPath(), 'demo', '--warmup', '2000'], {
    env: { ...process.env, TMPDIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  childPid = child.pid;
  const { code, output } = await outputUntilExit(child);
  childPid = undefined;
  console.log(`pgha demo took ${((Date.now() - started) / 1000).toFixed(1)} s:\n${output}`);
  expect(code, output).toBe(0);
  // Every step of the timeline was seen, in the summary too.
  for (const step of ['fault', 'detection', 'election', 'promoting', 'writable', 'reroute', 'write', 'rejoin'])
    expect(output).toMatch(new RegExp(`\\+\\d+\\.\\d\\d s +${step} `));
  expect(output).toMatch(/lost acknowledged writes +lost 0 of [1-9]\d*/);
  expect(output).toMatch(/wrong-node writes +wrong node 0\n/);
  expect(output).toMatch(/writes on a wrong node: 0 /);
  expect(output).toContain('PASSED');
  // Nothing left: no process, no directory.
  expect(processesUnder(dir)).toEqual([]);
  expect(readdirSync(dir)).toEqual([]);
}, 240_000);
