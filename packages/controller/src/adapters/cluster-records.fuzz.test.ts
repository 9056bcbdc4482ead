/**
 * Garbage in etcd against the controller's and `pgha status`'s readers: one read of a
 * cluster's prefix holding valid, malformed and hostile values under every key goes
 * through readClusterRecords, the controller's decision and its log facts, and the
 * status and its table. Nothing throws; every skipped record is named in `problems`;
 * a member record counts only under its own key; the table prints no control
 * characters from a record.
 *
 * Fixed seed and bounded runs; `PGHA_FUZZ_RUNS=<n>` / `PGHA_FUZZ_SEED=<n>` run longer or
 * another seed (docs/testing.md).
 */
import { clusterKeys, maxRecordBytes } from '@pgha/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lastPrimaryRecord, leader, member, target } from '../decide/__fixtures__/records.js';
import { type ControllerSnapshot, decideController, defaultControllerPolicy } from '../decide/controller.js';
import { controllerDecisionFacts } from '../decide/decision-facts.js';
import { clusterStatusOf, formatStatus, printable } from '../status/cluster-status.js';
import { type EtcdEntry, readClusterRecords } from './cluster-records.js';

const fuzz = {
  seed: Number(process.env.PGHA_FUZZ_SEED ?? 15),
  numRuns: Number(process.env.PGHA_FUZZ_RUNS ?? 100),
};

const keys = clusterKeys('demo');
const names = ['demo-0', 'demo-1', 'demo-2'] as const;

/** A value that is nothing like a record. */
const garbage = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 100 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'),
  fc.constantFrom('', '{', '{"v":2}', '{"v":1}', `{"v":1,"pad":"${'x'.repeat(maxRecordBytes)}"}`, '['.repeat(5000)),
);

/** A record, valid or with one field replaced by something hostile. */
function recordish(valid: Record<string, unknown>): fc.Arbitrary<string> {
  const fields = Object.keys(valid);
  return fc.oneof(
    fc.constant(JSON.stringify(valid)),
    fc
      .record({
        field: fc.constantFrom(...fields),
        value: fc.oneof(
          fc.jsonValue({ maxDepth: 2 }),
          fc.constantFrom(-1, 1e300, 0.5, '', 'x'.repeat(2000), '\u001b[2J\nFAKE: demo-9 primary', null, {}),
        ),
      })
      .map(({ field, value }) => JSON.stringify({ ...valid, [field]: value })),
  );
}

const problemText = fc.constantFrom(
  null,
  'disk full',
  '\u001b[31mred\u001b[0m\nCluster demo  term 99  leader evil',
  '\u202eevil',
);

/** One etcd entry of the cluster: a key of any kind, a value of any quality. */
const entry: fc.Arbitrary<EtcdEntry> = fc
  .tuple(
    fc.oneof(
      fc.constantFrom(...names).chain((name) =>
        fc.tuple(
          fc.constant(keys.member(name)),
          fc.oneof(
            fc
              .record({
                name: fc.constantFrom(...names),
                problem: problemText,
                host: fc.constantFrom('10.0.0.1', 'h\u001bx'),
              })
              .chain((m) => recordish(member(m as never) as never)),
            garbage,
          ),
        ),
      ),
      fc.tuple(fc.constant(keys.leader), fc.oneof(recordish(leader() as never), garbage)),
      fc.tuple(fc.constant(keys.target), fc.oneof(recordish(target() as never), garbage)),
      fc.tuple(fc.constant(keys.lastPrimary), fc.oneof(recordish(lastPrimaryRecord() as never), garbage)),
      fc.tuple(
        fc.constantFrom(
          keys.term,
          keys.config,
          keys.sync,
          keys.switchover,
          keys.controller,
          keys.failsafe,
          keys.initialize,
        ),
        garbage,
      ),
      fc.tuple(
        fc.constant(keys.term),
        fc.nat().map((term) => JSON.stringify({ v: 1, term })),
      ),
      fc.tuple(
        fc.integer({ min: 1, max: 20 }).map((t) => keys.history(t)),
        garbage,
      ),
      fc.tuple(
        fc.string({ maxLength: 40 }).map((rest) => `${keys.prefix}${rest}`),
        garbage,
      ),
    ),
    fc.nat({ max: 1000 }),
  )
  .map(([[key, value], revision]) => ({ key, value, modRevision: String(revision) }));

// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const hasControl = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e]/;

describe('the controller and status readers under garbage in etcd', () => {
  it('never throw, skip and name every bad record, and count a member record only under its own key', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 12 }), fc.nat({ max: 3 }), (entries, lastHistoryTerm) => {
        // etcd returns one value per key: the last write wins.
        const unique = [...new Map(entries.map((e) => [e.key, e])).values()];
        const read = readClusterRecords(keys, unique);
        const memberNames = read.members.map((m) => m.name);
        expect(new Set(memberNames).size).toBe(memberNames.length);
        for (const name of memberNames) expect(unique.some((e) => e.key === keys.member(name))).toBe(true);
        for (const problem of read.problems) {
          expect(unique.some((e) => e.key === problem.key)).toBe(true);
          expect(problem.message.startsWith(`${problem.key}: `)).toBe(true);
        }
        const snapshot: ControllerSnapshot = {
          now: Date.parse('2024-05-01T12:00:10.000Z'),
          term: read.term,
          leader: read.leader,
          target: read.target,
          targetSeenAt: null,
          members: read.members,
          leaderLostAt: read.leader === null ? Date.parse('2024-05-01T12:00:00.000Z') : null,
          lastPrimary: null,
          lastPrimaryRecords: read.lastPrimary === null ? [] : [read.lastPrimary],
          lastAsReplica: [],
          switchover: read.switchover,
          lastHistoryTerm: Math.max(lastHistoryTerm, read.newestHistoryTerm),
          lastHistory: read.newestHistory,
          sync: read.sync,
          policy: { ...defaultControllerPolicy, maximumLagOnFailoverBytes: 16 * 1024 * 1024 },
        };
        const decision = decideController(snapshot);
        expect(JSON.stringify(controllerDecisionFacts(snapshot, decision))).toBeTypeOf('string');
        const status = clusterStatusOf('demo', read);
        expect(status.problems).toEqual(read.problems.map((p) => p.message));
        const table = formatStatus(status);
        expect(table).not.toMatch(hasControl);
      }),
      fuzz,
    );
  });

  it('skips a member record under another member key and says whose it is', () => {
    const read = readClusterRecords(keys, [
      { key: keys.member('demo-1'), value: JSON.stringify(member({ name: 'demo-2' })), modRevision: '7' },
      { key: keys.member('demo-2'), value: JSON.stringify(member({ name: 'demo-2', port: 5434 })), modRevision: '8' },
    ]);
    expect(read.members.map((m) => [m.name, m.port])).toEqual([['demo-2', 5434]]);
    expect(read.problems).toEqual([
      {
        key: keys.member('demo-1'),
        modRevision: '7',
        message: `${keys.member('demo-1')}: member record names member "demo-2", not the key's "demo-1"; skipped it`,
      },
    ]);
  });

  it('reports a malformed leader record instead of the leader, and the status shows the problem', () => {
    const read = readClusterRecords(keys, [
      { key: keys.leader, value: '{"v":1,"term":"3"}', modRevision: '9' },
      { key: keys.member('demo-0'), value: JSON.stringify(member({ name: 'demo-0' })), modRevision: '3' },
    ]);
    expect(read.leader).toBeNull();
    expect(read.leaderMod).toBe('0');
    const text = formatStatus(clusterStatusOf('demo', read));
    expect(text).toMatch(/leader none/);
    expect(text).toMatch(/! \/pgha\/demo\/leader: leader record: malformed record: term .*; skipped it/);
  });

  it('prints control characters from records as escapes, so a record cannot forge status lines', () => {
    const read = readClusterRecords(keys, [
      {
        key: keys.member('demo-0'),
        value: JSON.stringify(member({ name: 'demo-0', healthy: false, problem: '\u001b[2J\nCluster demo  term 99' })),
        modRevision: '3',
      },
    ]);
    const text = formatStatus(clusterStatusOf('demo', read));
    expect(text).toContain('\\u001b[2J\\u000aCluster demo  term 99');
    expect(text.split('\n').filter((line) => line.startsWith('Cluster demo'))).toHaveLength(1);
    expect(printable('plain text, é, 日本')).toBe('plain text, é, 日本');
  });
});
