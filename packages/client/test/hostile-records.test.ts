// Hostile leader and member records against the client's real watcher over a real
// etcd (one etcd for the file, records written with puts): a property test with few
// runs (the pure one with many runs is src/record-acceptance.fuzz.test.ts), and the
// allowedHosts option through Pool and ReplicaPool.
//
// Fixed seed and bounded runs; PGHA_FUZZ_RUNS=<n> / PGHA_FUZZ_SEED=<n> run longer or
// another seed (docs/testing.md).
import { isDeepStrictEqual } from 'node:util';
import { clusterKeys, isPghaError, maxRecordBytes } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { isHostAllowed, parseHostAllowlist } from '../src/host-allowlist.js';
import { type ClusterWatcher, NoPrimaryError, Pool, ReplicaPool, watchCluster } from '../src/index.js';
import { leaderRecord, memberRecord } from './support/records.js';
import { until } from './support/wait.js';

const fuzz = {
  seed: Number(process.env.PGHA_FUZZ_SEED ?? 15),
  numRuns: Number(process.env.PGHA_FUZZ_RUNS ?? 30),
};

const allowedHosts = ['10.0.0.0/24', 'db-1.internal'];
const allowlist = parseHostAllowlist(allowedHosts);
const members = ['demo-0', 'demo-1', 'demo-2'] as const;
const allowedHost = fc.oneof(
  fc.integer({ min: 1, max: 254 }).map((n) => `10.0.0.${n}`),
  fc.constant('db-1.internal'),
);
const outsideHost = fc.constantFrom('evil.example', '10.0.1.5', '127.0.0.1', 'db-2.internal', '::1');

/** Garbage for any key: bytes, JSON of the wrong shape, oversized text. */
const garbage = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
  fc.constantFrom('', '{', 'null', `{"v":1,"pad":"${'x'.repeat(maxRecordBytes)}"}`, '{"v":2}'),
);

/** One write: a good leader (next term), a hostile leader value, or a good or hostile member record. */
type Write =
  | { readonly to: 'leader'; readonly good: true; readonly member: string; readonly host: string }
  | {
      readonly to: 'leader';
      readonly good: false;
      /** What the value is, for a counterexample (its function prints as source). */
      readonly label: string;
      readonly value: (term: number) => string | Buffer;
    }
  | { readonly to: 'member'; readonly name: string; readonly good: boolean; readonly value: string | Buffer };

const leaderText = (term: unknown, host: unknown, member = 'demo-0') =>
  JSON.stringify({ ...leaderRecord({ member }), term, host });
const memberText = (name: string, fields: Record<string, unknown>) =>
  JSON.stringify({ ...memberRecord({ name }), ...fields });

const write: fc.Arbitrary<Write> = fc.oneof(
  fc
    .record({ member: fc.constantFrom(...members), host: allowedHost })
    .map((w) => ({ to: 'leader' as const, good: true as const, ...w })),
  garbage.map((g) => ({
    to: 'leader' as const,
    good: false as const,
    label: `garbage ${String(g).slice(0, 40)}`,
    value: () => g,
  })),
  outsideHost.map((host) => ({
    to: 'leader' as const,
    good: false as const,
    label: `host ${host}, a newer term`,
    value: (t: number) => leaderText(t + 5, host),
  })),
  allowedHost.map((host) => ({
    to: 'leader' as const,
    good: false as const,
    label: `host ${host}, an older term`,
    value: (t: number) => leaderText(Math.max(0, t - 1), host),
  })),
  fc.constantFrom<unknown>(1e300, -3, 2.5, 'x', Number.MAX_SAFE_INTEGER + 2).map((term) => ({
    to: 'leader' as const,
    good: false as const,
    label: `term ${String(term)}`,
    value: () => leaderText(term, '10.0.0.7'),
  })),
  fc
    .record({ name: fc.constantFrom(...members), host: allowedHost, lag: fc.nat({ max: 10_000 }) })
    .map(({ name, host, lag }) => ({
      to: 'member' as const,
      name,
      good: true,
      value: memberText(name, { host, lagBytes: lag }),
    })),
  fc.record({ name: fc.constantFrom(...members), host: outsideHost }).map(({ name, host }) => ({
    to: 'member' as const,
    name,
    good: false,
    value: memberText(name, { host }),
  })),
  fc.record({ name: fc.constantFrom(...members), other: fc.constantFrom(...members) }).map(({ name, other }) => ({
    to: 'member' as const,
    name,
    good: name === other,
    value: memberText(other, { host: '10.0.0.3' }),
  })),
  fc.record({ name: fc.constantFrom(...members), value: garbage }).map(({ name, value }) => ({
    to: 'member' as const,
    name,
    good: false,
    value,
  })),
);

describe('the watcher under hostile records in etcd', () => {
  let etcd: TestEtcd;
  let admin: Etcd3;

  beforeAll(async () => {
    etcd = await startTestEtcd();
    admin = new Etcd3({ hosts: etcd.endpoint });
  });
  afterAll(async () => {
    admin?.close();
    await etcd?.stop();
  });

  it('never crashes, never routes outside allowedHosts or back to an older term, and ends on the last good records', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 12 }), async (writes) => {
        const keyRoot = uniqueKeyRoot();
        const keys = clusterKeys('demo', keyRoot);
        const watcher = watchCluster({ etcd: { endpoints: etcd.endpoint }, cluster: 'demo', keyRoot, allowedHosts });
        const violations: string[] = [];
        let newestTerm = 0;
        watcher.on('primary-changed', (e) => {
          if (!isHostAllowed(allowlist, e.current.host)) violations.push(`routed to ${e.current.host}`);
          if (e.term < newestTerm) violations.push(`went back from term ${newestTerm} to ${e.term}`);
          newestTerm = Math.max(newestTerm, e.term);
        });
        watcher.on('members-changed', (map) => {
          for (const m of map.values())
            if (!isHostAllowed(allowlist, m.host)) violations.push(`member ${m.name} on ${m.host}`);
        });
        try {
          await watcher.followMembers();
          await watcher.ready;
          let term = 0;
          let lastGood: { member: string; host: string; term: number } | null = null;
          let leaderRevision = 0;
          const expectedMembers = new Map<string, string | null>();
          for (const w of writes) {
            if (w.to === 'leader') {
              let value: string | Buffer;
              if (w.good) {
                term += 1;
                lastGood = { member: w.member, host: w.host, term };
                value = leaderText(term, w.host, w.member);
              } else {
                value = w.value(term);
              }
              const put = await admin.put(keys.leader).value(value).exec();
              leaderRevision = Number(put.header.revision);
            } else {
              await admin.put(keys.member(w.name)).value(w.value).exec();
              expectedMembers.set(w.name, w.good ? w.value.toString() : null);
            }
          }
          if (leaderRevision > 0)
            await until('the watcher to apply the last leader write', () => watcher.revision >= leaderRevision, 15_000);
          await until(
            'the watcher to hold exactly the last good member records',
            () => {
              const seen = watcher.members;
              for (const [name, value] of expectedMembers) {
                const record = seen.get(name);
                if (value === null ? record !== undefined : !isDeepStrictEqual(record, JSON.parse(value))) return false;
              }
              return seen.size === [...expectedMembers.values()].filter((v) => v !== null).length;
            },
            15_000,
          );
          expect(violations).toEqual([]);
          if (lastGood === null) expect(watcher.leader).toBeNull();
          else expect(watcher.primary).toMatchObject(lastGood as { member: string; host: string; term: number });
        } finally {
          await watcher.close();
        }
      }),
      fuzz,
    );
  }, 300_000);

  it('keeps a pool on the last good primary when the leader record moves outside allowedHosts, and says how to allow it', async () => {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys('demo', keyRoot);
    await admin.put(keys.leader).value(leaderText(1, '10.0.0.1'));
    const pool = new Pool({
      etcd: { endpoints: etcd.endpoint },
      cluster: 'demo',
      keyRoot,
      allowedHosts,
      primaryWaitTimeoutMillis: 300,
    });
    pool.on('error', () => undefined);
    try {
      await until('the pool to see the allowed primary', () => pool.discovery.primary?.host === '10.0.0.1');
      const refused = new Promise<Error>((resolve) => pool.once('discovery-error', (e) => resolve(e.error)));
      await admin.put(keys.leader).value(leaderText(2, 'evil.example', 'demo-1'));
      const error = await refused;
      expect(isPghaError(error, 'protocol')).toBe(true);
      expect(error.message).toMatch(
        /leader record of term 2 \(member demo-1\) names host "evil.example", which is not in allowedHosts \(10\.0\.0\.0\/24, db-1\.internal\); ignored it.*add it/,
      );
      expect(pool.discovery.primary).toMatchObject({ host: '10.0.0.1', term: 1 });
      expect(pool.options.host).toBe('10.0.0.1');
      expect(pool.discovery.term).toBe(1);
      // With no allowed leader at all, checkouts fail as without a primary.
      await admin.put(keys.leader).value(leaderText(3, 'evil.example'));
      const other = new Pool({
        etcd: { endpoints: etcd.endpoint },
        cluster: 'demo',
        keyRoot,
        allowedHosts,
        primaryWaitTimeoutMillis: 300,
      });
      other.on('error', () => undefined);
      await expect(other.connect()).rejects.toBeInstanceOf(NoPrimaryError);
      await other.end();
    } finally {
      await pool.end();
    }
  });

  it('takes allowedHosts in ReplicaPool and watchCluster, and refuses it beside a shared watcher', async () => {
    const keyRoot = uniqueKeyRoot();
    const replicas = new ReplicaPool({ etcd: { endpoints: etcd.endpoint }, cluster: 'demo', keyRoot, allowedHosts });
    const shared: ClusterWatcher = watchCluster({
      etcd: { endpoints: etcd.endpoint },
      cluster: 'demo',
      keyRoot,
      allowedHosts,
    });
    try {
      expect(replicas.discovery.allowedHosts).toEqual(allowedHosts);
      expect(shared.allowedHosts).toEqual(allowedHosts);
      expect(() => new Pool({ discovery: shared, allowedHosts })).toThrow(/pass it to watchCluster/);
      expect(() => watchCluster({ etcd: { endpoints: 'http://root:s3cret@127.0.0.1:1' }, cluster: 'demo' })).toThrow(
        /etcd endpoint "http:\/\/\*\*\*@127\.0\.0\.1:1" carries credentials: pass them as etcd.username and etcd.password/,
      );
      expect(() =>
        watchCluster({ etcd: { endpoints: etcd.endpoint }, cluster: 'demo', allowedHosts: ['*.internal'] }),
      ).toThrow(/wildcards are not supported/);
    } finally {
      await replicas.end();
      await shared.close();
    }
  });
});
