// `pgha check` end to end: the real command (the built CLI) starts its own etcd and
// three-member cluster in synchronous quorum mode, writes through the Pool and directly to every member, injects
// one switchover, one host loss and one postgres kill (seeded), and must report a
// passed run: every fault recovered, no acknowledged write lost, no superseded
// acknowledgement, terms advanced.
// Nothing it started may outlive it.
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { killEverythingUnder, outputUntilExit, processesUnder } from '../../../testing/spawned-command.js';
import type { CheckReport } from '../src/check/report.js';
import { cliPath } from '../src/runtime/local/local-cluster.js';

const dir = mkdtempSync(join(tmpdir(), 'pgha-check-test-'));
chmodSync(dir, 0o711); // postgres runs as its own OS user and must enter it
let childPid: number | undefined;

afterAll(() => {
  // The command stops what it started; should it hang or fail, its children die with
  // it (pdeathsig) once it is killed here.
  killEverythingUnder(dir, childPid);
  rmSync(dir, { recursive: true, force: true });
});

test('pgha check in quorum mode: a switchover, a host loss and a postgres kill, each recovered, nothing acknowledged lost or superseded, terms advanced', async () => {
  const stateDir = join(dir, 'state');
  const reportFile = join(dir, 'report.json');
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      cliPath(),
      'check',
      '--faults',
      'postgres-kill,switchover,host-loss',
      '--faults-per-kind',
      '1',
      '--rate',
      '50',
      // Seed 7: postgres kill of a replica, switchover from the primary, host loss of the primary.
      '--seed',
      '7',
      // Quorum mode: a lost acknowledged write is a violation (the failover of a
      // synchronous cluster must lose nothing), besides a superseded acknowledgement.
      '--synchronous',
      'quorum',
      '--cluster',
      'checktest',
      '--state-dir',
      stateDir,
      '--json',
      reportFile,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  childPid = child.pid;
  const { code, output } = await outputUntilExit(child);
  childPid = undefined;
  console.log(`pgha check took ${((Date.now() - started) / 1000).toFixed(1)} s:\n${output}`);
  expect(code, output).toBe(0);

  const report = JSON.parse(readFileSync(reportFile, 'utf8')) as CheckReport;
  expect(report.passed).toBe(true);
  expect(report.violations).toEqual([]);
  expect(report.unrecovered).toEqual([]);
  expect(report.seed).toBe(7);
  expect(report.settings.synchronousMode).toBe('quorum');
  expect(report.totals.lostAcked).toBe(0);
  expect(report.faults.map((f) => f.kind).sort()).toEqual(['host-loss', 'postgres-kill', 'switchover']);
  for (const f of report.faults) {
    expect(f.recovered).toBe(true);
    expect(f.injectError).toBeNull();
  }
  // The faults really happened: the switchover and the primary's host loss each began a new term.
  const switchover = report.faults.find((f) => f.kind === 'switchover')!;
  expect(switchover.termAfter).toBeGreaterThan(switchover.termBefore);
  const hostLoss = report.faults.find((f) => f.kind === 'host-loss')!;
  expect(hostLoss.role).toBe('primary');
  expect(hostLoss.termAfter).toBeGreaterThan(hostLoss.termBefore);
  expect(report.totals.termChanges).toBeGreaterThanOrEqual(2);
  expect(report.history.length).toBeGreaterThanOrEqual(2);
  // Both writer paths wrote, and the members that were not primary refused direct writes.
  expect(report.totals.poolAcked).toBeGreaterThan(100);
  expect(report.totals.directAcked).toBeGreaterThan(0);
  expect(report.totals.failures['direct: 25006 read-only']).toBeGreaterThan(0);
  expect(report.versions.postgres).toMatch(/^\d+/);
  // Nothing the check started is left running.
  expect(processesUnder(stateDir)).toEqual([]);
}, 300_000);
