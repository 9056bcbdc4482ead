// Discovery against a real etcd: the test plays the primary's agent and writes the
// leader record itself.
import { clusterKeys, type LeaderRecord, PghaError } from '@pgha/core';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestEtcd, type TestEtcd, uniqueKeyRoot } from '../../../testing/etcd.js';
import { type ClusterWatcher, NoPrimaryError, watchCluster } from '../src/index.js';
import { leaderRecord, memberRecord } from './support/records.js';
import { startTcpProxy } from './support/tcp-proxy.js';
import { nextEvent, until } from './support/wait.js';

const record = (overrides: Partial<LeaderRecord> = {}): string => JSON.stringify(leaderRecord(overrides));

describe('watchCluster', () => {
  let etcd: TestEtcd;
  let admin: Etcd3;
  const watchers: ClusterWatcher[] = [];

  beforeAll(async () => {
    etcd = await startTestEtcd();
    admin = new Etcd3({ hosts: etcd.endpoint });
  });
  afterEach(async () => {
    await Promise.all(watchers.splice(0).map((w) => w.close()));
  });
  afterAll(async () => {
    admin?.close();
    await etcd?.stop();
  });

  function setup(options: { rereadIntervalMillis?: number; staleAfterMillis?: number; endpoint?: string } = {}) {
    const keyRoot = uniqueKeyRoot();
    const keys = clusterKeys('demo', keyRoot);
    const watcher = watchCluster({
      etcd: { endpoints: options.endpoint ?? etcd.endpoint, callTimeoutMillis: 500 },
      cluster: 'demo',
      keyRoot,
      rereadIntervalMillis: options.rereadIntervalMillis,
      staleAfterMillis: options.staleAfterMillis,
    });
    watchers.push(watcher);
    const errors: Error[] = [];
    watcher.on('discovery-error', (e) => errors.push(e.error));
    return { keys, watcher, errors };
  }

  it('reads the existing leader record and announces it as the initial primary', async () => {
    const keyRoot = uniqueKeyRoot();
    await admin.put(clusterKeys('demo', keyRoot).leader).value(record({ port: 6000 }));
    const watcher = watchCluster({ etcd: { endpoints: [etcd.endpoint] }, cluster: 'demo', keyRoot });
    watchers.push(watcher);
    const event = await nextEvent(watcher, 'primary-changed');
    expect(event).toMatchObject({
      previous: null,
      term: 1,
      reason: 'initial',
      current: { port: 6000, member: 'demo-0' },
    });
    expect(watcher.primary?.port).toBe(6000);
  });

  it('follows newer terms through the watch, treats a delete as no primary and waits for writable', async () => {
    const { keys, watcher } = setup();
    await watcher.ready;
    expect(watcher.primary).toBeNull();
    const first = nextEvent(watcher, 'primary-changed');
    await admin.put(keys.leader).value(record());
    await first;

    const gone = nextEvent(watcher, 'no-primary');
    await admin.delete().key(keys.leader);
    expect(await gone).toMatchObject({ term: 1, previous: { member: 'demo-0' } });
    expect(watcher.primary).toBeNull();

    await admin.put(keys.leader).value(record({ term: 2, member: 'demo-1', port: 6001, writable: false }));
    await until('the non-writable leader to be seen', () => watcher.leader?.term === 2);
    expect(watcher.primary).toBeNull();

    const changed = nextEvent(watcher, 'primary-changed');
    await admin.put(keys.leader).value(record({ term: 2, member: 'demo-1', port: 6001, timeline: 2 }));
    expect(await changed).toMatchObject({
      term: 2,
      current: { member: 'demo-1', port: 6001 },
      previous: { member: 'demo-0' },
    });
  });

  it("labels a change with the controller's reason from the target record of that term", async () => {
    const { keys, watcher } = setup();
    await admin.put(keys.leader).value(record({ term: 1 }));
    await until('term 1', () => watcher.primary?.term === 1);
    const target = (term: number, reason: string) =>
      JSON.stringify({ v: 1, term, member: 'demo-1', reason, from: 'demo-0', decidedAt: new Date().toISOString() });
    // The controller decides (target) before the agent installs the leader.
    const seenTarget = (term: number) => () =>
      (watcher as unknown as { target: { term: number } | null }).target?.term === term;
    await admin.put(keys.target).value(target(2, 'switchover'));
    await until('the target of term 2', seenTarget(2));
    const second = nextEvent(watcher, 'primary-changed');
    await admin.put(keys.leader).value(record({ term: 2, member: 'demo-1' }));
    expect(await second).toMatchObject({ term: 2, reason: 'switchover' });
    await admin.put(keys.target).value(target(3, 'failover'));
    await until('the target of term 3', seenTarget(3));
    const third = nextEvent(watcher, 'primary-changed');
    await admin.put(keys.leader).value(record({ term: 3, member: 'demo-2' }));
    expect(await third).toMatchObject({ term: 3, reason: 'failover' });
  });

  it('ignores an older term, reports it and keeps the newer primary', async () => {
    const { keys, watcher } = setup();
    await admin.put(keys.leader).value(record({ term: 5, member: 'demo-2' }));
    await until('term 5', () => watcher.primary?.term === 5);
    const error = nextEvent(watcher, 'discovery-error');
    await admin.put(keys.leader).value(record({ term: 4, member: 'demo-1' }));
    expect((await error).error.message).toMatch(/term 4 .* older than term 5/);
    expect(watcher.primary).toMatchObject({ term: 5, member: 'demo-2' });
  });

  it.each([
    ['garbage JSON', '{"v":1,"term":'],
    ['wrong types', JSON.stringify({ v: 1, term: '7', member: 42, host: [], port: 'x' })],
    ['an unknown record version', JSON.stringify({ v: 99, term: 9 })],
    ['a hostile host', record({ term: 9, host: 'evil host; rm -rf /' })],
    ['an oversized record', `{"v":1,"pad":"${'x'.repeat(70_000)}"}`],
    ['a JSON array', '[1,2,3]'],
  ])('reports a leader record with %s and keeps the last good primary', async (_, bad) => {
    const { keys, watcher } = setup();
    await admin.put(keys.leader).value(record({ term: 3 }));
    await until('term 3', () => watcher.primary?.term === 3);
    const error = nextEvent(watcher, 'discovery-error');
    await admin.put(keys.leader).value(bad);
    const reported = (await error).error;
    expect(reported).toBeInstanceOf(PghaError);
    expect((reported as PghaError).code).toBe('protocol');
    expect(watcher.primary).toMatchObject({ term: 3, member: 'demo-0' });
    // It keeps working after the bad record.
    await admin.put(keys.leader).value(record({ term: 4, member: 'demo-1' }));
    await until('term 4', () => watcher.primary?.term === 4);
  });

  it('misses nothing written right after it starts (no gap between read and watch)', async () => {
    const { keys, watcher } = setup();
    const writes = (async () => {
      for (let term = 1; term <= 20; term++) await admin.put(keys.leader).value(record({ term, port: 7000 + term }));
    })();
    await writes;
    await until('the last term', () => watcher.primary?.term === 20, 5000);
    expect(watcher.primary?.port).toBe(7020);
  });

  it('re-reads periodically, so a change is seen even without the watch', async () => {
    const { keys, watcher } = setup({ rereadIntervalMillis: 200, staleAfterMillis: 5000 });
    await watcher.ready;
    // Cut the watch off by cancelling it behind the watcher's back.
    await (watcher as unknown as { watcher: { cancel(): Promise<void> } }).watcher.cancel();
    await admin.put(keys.leader).value(record({ term: 2, port: 6500 }));
    await until('the re-read to find term 2', () => watcher.primary?.term === 2, 3000);
  });

  it('re-creates a watch that missed a change the re-read found, and then follows changes through it again', async () => {
    const { keys, watcher } = setup({ rereadIntervalMillis: 1000, staleAfterMillis: 5000 });
    await watcher.ready;
    const internals = watcher as unknown as { watcher: { cancel(): Promise<void> } | null; watchRevision: number };
    const dead = internals.watcher!;
    await dead.cancel();
    await admin.put(keys.leader).value(record({ term: 2, port: 6500 }));
    await until('the re-read to find term 2', () => watcher.primary?.term === 2, 3000);
    await until('a new watch', () => internals.watcher !== null && internals.watcher !== dead, 3000);
    const put = await admin.put(keys.leader).value(record({ term: 3, port: 6501 }));
    const revision = Number(put.header.revision);
    await until('the new watch to deliver term 3', () => internals.watchRevision >= revision, 3000);
    expect(watcher.primary?.term).toBe(3);
  });

  it('re-creates a members watch that missed a change the re-read found', async () => {
    const { keys, watcher } = setup({ rereadIntervalMillis: 1000, staleAfterMillis: 5000 });
    await watcher.followMembers();
    const member = (name: string, port: number) => JSON.stringify(memberRecord({ name, port }));
    const internals = watcher as unknown as {
      membersWatcher: { cancel(): Promise<void> } | null;
      membersWatchRevision: number;
    };
    // The watch is created after the first read, without holding re-reads up.
    const dead = await until('the members watch', () => internals.membersWatcher ?? undefined);
    await dead.cancel();
    await admin.put(keys.member('demo-1')).value(member('demo-1', 6001));
    await until('the re-read to find demo-1', () => watcher.members.get('demo-1')?.port === 6001, 3000);
    await until('a new members watch', () => internals.membersWatcher !== null && internals.membersWatcher !== dead);
    const put = await admin.put(keys.member('demo-2')).value(member('demo-2', 6002));
    await until('the new watch to deliver demo-2', () => internals.membersWatchRevision >= Number(put.header.revision));
    expect(watcher.members.get('demo-2')?.port).toBe(6002);
  });

  it('does not crash on an unreachable etcd: reports errors, goes stale and fails waits with a typed error', async () => {
    const proxy = await startTcpProxy(1);
    await proxy.close(); // a port where nothing listens
    const { watcher, errors } = setup({
      endpoint: `http://127.0.0.1:${proxy.port}`,
      rereadIntervalMillis: 200,
      staleAfterMillis: 600,
    });
    const stale = await nextEvent(watcher, 'discovery-stale', () => true, 5000);
    expect(stale.sinceMillis).toBeGreaterThan(600);
    expect(errors.length).toBeGreaterThan(0);
    expect((errors[0] as PghaError).code).toBe('etcd-unavailable');
    const failure = await watcher.waitForPrimary(100).catch((e) => e);
    expect(failure).toBeInstanceOf(NoPrimaryError);
    expect(failure.message).toMatch(/etcd is not answering/);
    expect(failure.retryable).toBe(true);
  });

  it('goes stale when etcd stops answering, keeps the last primary, and is restored when it answers', async () => {
    const proxy = await startTcpProxy(Number(new URL(etcd.endpoint).port));
    try {
      const { keys, watcher } = setup({
        endpoint: `http://127.0.0.1:${proxy.port}`,
        rereadIntervalMillis: 200,
        staleAfterMillis: 800,
      });
      await admin.put(keys.leader).value(record({ term: 2 }));
      await until('term 2', () => watcher.primary?.term === 2);
      proxy.blackhole();
      await nextEvent(watcher, 'discovery-stale', () => true, 5000);
      expect(watcher.primary?.term).toBe(2);
      expect(watcher.staleSinceMillis).not.toBeNull();
      proxy.cutAll();
      proxy.restore();
      await nextEvent(watcher, 'discovery-restored', () => true, 10_000);
      expect(watcher.staleSinceMillis).toBeNull();
      await admin.put(keys.leader).value(record({ term: 3 }));
      await until('term 3 after restore', () => watcher.primary?.term === 3, 5000);
    } finally {
      await proxy.close();
    }
  });

  it('rejects bad options with clear errors', () => {
    const bad = [
      {},
      { etcd: { endpoints: [] }, cluster: 'demo' },
      { etcd: { endpoints: 'ftp://x' }, cluster: 'demo' },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'Not A Name' },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', keyRoot: 'nope' },
      { etcd: { endpoints: 'http://127.0.0.1:2379' }, cluster: 'demo', staleAfterMillis: -1 },
      {
        etcd: { endpoints: 'http://127.0.0.1:2379' },
        cluster: 'demo',
        rereadIntervalMillis: 9000,
        staleAfterMillis: 1000,
      },
      { etcd: { endpoints: 'http://127.0.0.1:2379', username: 'u' }, cluster: 'demo' },
    ];
    for (const options of bad) {
      let thrown: unknown;
      try {
        watchCluster(options as never);
      } catch (e) {
        thrown = e;
      }
      expect(thrown, JSON.stringify(options)).toBeInstanceOf(PghaError);
      expect((thrown as PghaError).code).toBe('invalid-option');
    }
  });
});
