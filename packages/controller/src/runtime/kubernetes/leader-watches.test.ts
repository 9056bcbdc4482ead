import { describe, expect, it, vi } from 'vitest';
import {
  decideLeaderWatch,
  desiredLeaderWatch,
  type LeaderWatchEvents,
  LeaderWatches,
  type LeaderWatchTarget,
} from './leader-watches.js';
import type { PgHaClusterObject } from './pgha-cluster.js';

const cluster = (name: string, spec: Record<string, unknown> = {}): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name, namespace: 'db', uid: `uid-${name}` },
  spec: { etcd: { endpoints: ['http://etcd:2379'] }, ...spec },
});
const target = (overrides: Partial<LeaderWatchTarget> = {}): LeaderWatchTarget => ({
  cluster: 'demo',
  endpoints: ['http://etcd:2379'],
  keyRoot: '/pgha/',
  ...overrides,
});

interface FakeWatch {
  readonly target: LeaderWatchTarget;
  readonly events: LeaderWatchEvents;
  closed: boolean;
}

function harness(options: { failOpens?: number } = {}) {
  let failOpens = options.failOpens ?? 0;
  const opened: FakeWatch[] = [];
  const changes: string[] = [];
  const warnings: string[] = [];
  const set = new LeaderWatches({
    open: (t, events) => {
      if (failOpens > 0) {
        failOpens--;
        throw new Error('cannot open');
      }
      const watch: FakeWatch = { target: t, events, closed: false };
      opened.push(watch);
      return {
        close: () => {
          watch.closed = true;
        },
      };
    },
    onChange: (key) => changes.push(key),
    log: { info: () => undefined, warn: (m) => warnings.push(m) },
    retryDelayMillis: 10,
    maxRetryDelayMillis: 40,
  });
  return { set, opened, changes, warnings };
}

describe('decideLeaderWatch', () => {
  it('opens a watch for a valid cluster, on the key root and endpoints of its spec (defaults applied)', () => {
    expect(desiredLeaderWatch(cluster('demo'))).toEqual({ type: 'valid', target: target() });
    expect(decideLeaderWatch(desiredLeaderWatch(cluster('demo')), null)).toEqual({ type: 'open', target: target() });
  });

  it('reopens on new endpoints or key root, keeps it on other spec changes', () => {
    const moved = desiredLeaderWatch(cluster('demo', { etcd: { endpoints: ['http://other:2379'], keyRoot: '/x/' } }));
    expect(decideLeaderWatch(moved, target()).type).toBe('reopen');
    expect(decideLeaderWatch(desiredLeaderWatch(cluster('demo', { instances: 5 })), target()).type).toBe('keep');
  });

  it('keeps a running watch while the spec is invalid, and opens none for it', () => {
    const invalid = desiredLeaderWatch(cluster('demo', { instances: -1 }));
    expect(invalid.type).toBe('invalid');
    expect(decideLeaderWatch(invalid, target()).type).toBe('keep');
    expect(decideLeaderWatch(invalid, null).type).toBe('keep');
  });

  it('closes the watch of a cluster that is gone or being deleted', () => {
    expect(decideLeaderWatch(desiredLeaderWatch(null), target()).type).toBe('close');
    const live = cluster('demo');
    const deleting = { ...live, metadata: { ...live.metadata, deletionTimestamp: '2026-12-01T00:00:00Z' } };
    expect(decideLeaderWatch(desiredLeaderWatch(deleting), target()).type).toBe('close');
    expect(decideLeaderWatch(desiredLeaderWatch(null), null).type).toBe('keep');
  });
});

describe('LeaderWatches', () => {
  it("enqueues the cluster's reconcile on every change of its record and on every (re)connection", () => {
    const { set, opened, changes } = harness();
    set.sync('db/demo', cluster('demo'));
    set.sync('db/demo', cluster('demo')); // unchanged: one watch
    expect(opened).toHaveLength(1);
    const w = opened[0]!;
    w.events.connected();
    w.events.changed();
    w.events.disconnected(new Error('stream ended'));
    w.events.connected();
    expect(changes).toEqual(['db/demo', 'db/demo', 'db/demo']);
  });

  it('reopens on new endpoints and closes once the cluster is gone; a closed watch enqueues nothing', () => {
    const { set, opened, changes } = harness();
    set.sync('db/demo', cluster('demo'));
    set.sync('db/demo', cluster('demo', { etcd: { endpoints: ['http://other:2379'] } }));
    expect(opened.map((w) => [w.target.endpoints[0], w.closed])).toEqual([
      ['http://etcd:2379', true],
      ['http://other:2379', false],
    ]);
    opened[0]!.events.changed(); // a late event of the old watch
    set.sync('db/demo', null);
    expect(opened[1]!.closed).toBe(true);
    opened[1]!.events.changed();
    expect(changes).toEqual([]);
    expect(set.keys).toEqual([]);
  });

  it('reopens a watch etcd cancelled, after a doubling delay, and catches up once connected', async () => {
    vi.useFakeTimers();
    try {
      const { set, opened, changes, warnings } = harness({ failOpens: 0 });
      set.sync('db/demo', cluster('demo'));
      opened[0]!.events.failed(new Error('mvcc: required revision has been compacted'));
      expect(opened[0]!.closed).toBe(true);
      expect(warnings).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(10);
      expect(opened).toHaveLength(2);
      opened[1]!.events.connected();
      expect(changes).toEqual(['db/demo']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('retries an open that throws, and never throws into the operator', async () => {
    vi.useFakeTimers();
    try {
      const { set, opened } = harness({ failOpens: 2 });
      expect(() => set.sync('db/demo', cluster('demo'))).not.toThrow();
      await vi.advanceTimersByTimeAsync(10); // second try fails too; the next waits 20 ms
      expect(opened).toHaveLength(0);
      await vi.advanceTimersByTimeAsync(20);
      expect(opened).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('closes every watch on stop and opens none afterwards, not even a pending retry', async () => {
    vi.useFakeTimers();
    try {
      const { set, opened } = harness({ failOpens: 1 });
      set.sync('db/a', cluster('a'));
      set.sync('db/b', cluster('b'));
      set.stop();
      expect(opened.every((w) => w.closed)).toBe(true);
      await vi.advanceTimersByTimeAsync(100);
      set.sync('db/c', cluster('c'));
      expect(opened).toHaveLength(1); // b's, closed; a's retry never ran
    } finally {
      vi.useRealTimers();
    }
  });
});
