import { describe, expect, test } from 'vitest';
import { type AckEntry, analyzeRun, rowKey } from './analysis.js';
import { buildReport, formatSummary, type ReportInput } from './report.js';

const acks: AckEntry[] = [
  { writer: 'pool-0', seq: 1, source: 'pool', member: 'c-0', term: 1, timeline: 1, sentAt: 10_000, ackAt: 10_005 },
  { writer: 'pool-0', seq: 2, source: 'pool', member: 'c-0', term: 1, timeline: 1, sentAt: 10_900, ackAt: 10_950 },
  { writer: 'pool-0', seq: 3, source: 'pool', member: 'c-1', term: 2, timeline: 2, sentAt: 13_000, ackAt: 13_010 },
  {
    writer: 'direct-c-1',
    seq: 1,
    source: 'direct',
    member: 'c-1',
    term: 2,
    timeline: 2,
    sentAt: 14_000,
    ackAt: 14_010,
  },
];
const faults = [
  { index: 0, kind: 'host-loss', target: 'c-0', role: 'primary', injectedAt: 11_000, recoveredAt: 14_000 },
];

function input(present: readonly AckEntry[]): ReportInput {
  const termChanges = [{ term: 2, member: 'c-1', at: 12_500 }];
  const history = [{ term: 2, newPrimary: 'c-1', oldPrimary: 'c-0', reason: 'failover', lostBytes: 64 }];
  const analysis = analyzeRun({
    mode: 'off',
    acks,
    faults,
    initial: { member: 'c-0', term: 1 },
    termChanges,
    history,
    present: new Set(present.map((a) => rowKey(a.writer, a.seq))),
    falseFailoverGraceMillis: 5000,
    endedAt: 15_000,
  });
  return {
    settings: {
      cluster: 'c',
      members: 3,
      durationMillis: 60_000,
      faultsPerKind: null,
      faults: ['host-loss'],
      rate: 100,
      seed: 9,
      synchronousMode: 'off',
      synchronousCount: 1,
      synchronousStrict: false,
      leaseTtlMillis: 2000,
      keepaliveIntervalMillis: 250,
      fencingMarginMillis: 500,
      etcdHeartbeatMillis: null,
      etcdElectionTimeoutMillis: null,
      cpuHog: 0,
    },
    etcd: null,
    stateDir: '/tmp/x',
    startedAt: new Date('2026-12-01T00:00:00Z'),
    durationMillis: 4000,
    unavailable: new Map([['partition', 'not root']]),
    runs: [{ detail: 'killed agent 1', injectError: null }],
    faults,
    analysis,
    acks,
    failures: [{ writer: 'direct-c-0', source: 'direct', member: 'c-0', type: '25006 read-only', at: 12_000 }],
    termChanges,
    history,
    timeBase: 11_000,
    finalPrimary: 'c-1',
    table: 'pgha_check',
    versions: { pgha: '0.1.0' },
  };
}

describe('the check report', () => {
  test('counts per kind and in total, with times from the start of the faults', () => {
    const report = buildReport(input(acks.filter((a) => a.seq !== 2 || a.writer !== 'pool-0')));
    expect(report.passed).toBe(true); // a loss in asynchronous mode is reported, not a violation
    expect(report.totals).toMatchObject({ acked: 4, poolAcked: 3, directAcked: 1, lostAcked: 1, termChanges: 1 });
    expect(report.totals.failures).toEqual({ 'direct: 25006 read-only': 1 });
    expect(report.perKind['host-loss']).toMatchObject({
      faults: 1,
      recovered: 1,
      lostAcked: 1,
      lostBytes: 64,
      termChanges: 1,
    });
    expect(report.lostAcked).toEqual([{ writer: 'pool-0', seq: 2, member: 'c-0', ackAt: -50 }]);
    expect(report.termChanges).toEqual([{ term: 2, member: 'c-1', at: 1500 }]);
    expect(report.faults[0]).toMatchObject({ injectedAtMillis: 0, recoveryMillis: 3000, detail: 'killed agent 1' });
    expect(report.unavailableKinds).toEqual([{ kind: 'partition', reason: 'not root' }]);
    const summary = formatSummary(report);
    expect(summary).toMatch(/host-loss\s+1\s+1/);
    expect(summary).toMatch(/not run: partition \(not root\)/);
    expect(summary).toMatch(/PASSED: 1 faults.*1 acknowledged writes lost/);
  });

  test('names the etcd by its endpoints only, never with the credentials runCheck was given', () => {
    const base = input(acks);
    // runCheck hands its whole options over as the settings, the etcd connection included.
    const settings = {
      ...base.settings,
      etcd: { endpoints: 'https://e:2379', username: 'c-admin', password: 'etcd-password-0123' },
    };
    const report = buildReport({ ...base, settings, etcd: 'https://e:2379' });
    expect(report.settings.etcd).toBe('https://e:2379');
    expect(JSON.stringify(report)).not.toContain('etcd-password-0123');
  });
});
