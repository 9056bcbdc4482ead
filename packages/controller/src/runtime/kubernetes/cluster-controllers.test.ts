import { describe, expect, it, vi } from 'vitest';
import { ClusterControllers, type FailoverControllerHandle } from './cluster-controllers.js';
import type { FailoverControllerConfig } from './decide-failover-controller.js';
import type { PgHaClusterObject } from './pgha-cluster.js';

const cluster = (name: string, endpoints = ['http://etcd:2379']): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name, namespace: 'db', uid: `uid-${name}` },
  spec: { etcd: { endpoints } },
});

interface Fake extends FailoverControllerHandle {
  readonly key: string;
  readonly config: FailoverControllerConfig;
  started: boolean;
  stopped: boolean;
}

/** Fake controllers: start fails while `reachable` is false for the endpoint; `stopMillis` delays stop. */
function harness(options: { unreachable?: Set<string>; stopMillis?: number; hangingStarts?: number } = {}) {
  let hanging = options.hangingStarts ?? 0;
  const made: Fake[] = [];
  const changes: string[] = [];
  /** Every state a change reported, in order (a transient one is kept even when the next comes at once). */
  const states: Array<{ key: string; phase: string; error?: string | null }> = [];
  /** `started|stopped <key> <endpoints>`, in order. */
  const events: string[] = [];
  const set = new ClusterControllers({
    create: (key, config) => {
      const fake: Fake = {
        key,
        config,
        started: false,
        stopped: false,
        isActive: true,
        problem: null,
        start: async () => {
          if (hanging > 0) {
            hanging--;
            await new Promise(() => undefined); // never answers
          }
          if (config.endpoints.some((e) => options.unreachable?.has(e)))
            throw new Error(`cannot reach etcd at ${config.endpoints.join(',')}`);
          fake.started = true;
          events.push(`started ${key} ${config.endpoints}`);
        },
        stop: async () => {
          if (options.stopMillis) await new Promise((r) => setTimeout(r, options.stopMillis));
          fake.stopped = true;
          if (fake.started) events.push(`stopped ${key} ${config.endpoints}`);
        },
      };
      made.push(fake);
      return fake;
    },
    onChange: (key) => {
      changes.push(key);
      const state = set?.state(key);
      if (state) states.push({ key, ...(state as { phase: string; error?: string | null }) });
    },
    log: { info: () => undefined, warn: () => undefined },
    retryDelayMillis: 10,
    maxRetryDelayMillis: 40,
    stopTimeoutMillis: 200,
    startTimeoutMillis: 100,
  });
  const running = () => made.filter((f) => f.started && !f.stopped).map((f) => `${f.key} ${f.config.endpoints}`);
  return { set, made, changes, events, running, states };
}

describe('ClusterControllers', () => {
  it('starts one controller per cluster and reports it running', async () => {
    const h = harness();
    h.set.sync('db/a', cluster('a'));
    h.set.sync('db/b', cluster('b'));
    h.set.sync('db/a', cluster('a')); // a resync changes nothing
    await vi.waitFor(() => expect(h.running()).toEqual(['db/a http://etcd:2379', 'db/b http://etcd:2379']));
    expect(h.made).toHaveLength(2);
    await vi.waitFor(() => expect(h.set.state('db/a')).toMatchObject({ phase: 'running', active: true }));
    expect(h.changes).toEqual(expect.arrayContaining(['db/a', 'db/b']));
    await h.set.stop();
  });

  it('restarts a controller on new etcd endpoints, the old one stopped before the new one starts', async () => {
    const h = harness();
    h.set.sync('db/a', cluster('a'));
    await vi.waitFor(() => expect(h.running()).toHaveLength(1));
    h.set.sync('db/a', cluster('a', ['http://other:2379']));
    await vi.waitFor(() => expect(h.running()).toEqual(['db/a http://other:2379']));
    expect(h.events).toEqual([
      'started db/a http://etcd:2379',
      'stopped db/a http://etcd:2379',
      'started db/a http://other:2379',
    ]);
    await h.set.stop();
  });

  it('stops the controller of a deleted cluster', async () => {
    const h = harness();
    h.set.sync('db/a', cluster('a'));
    await vi.waitFor(() => expect(h.running()).toHaveLength(1));
    h.set.sync('db/a', null);
    await vi.waitFor(() => expect(h.running()).toEqual([]));
    expect(h.set.state('db/a')).toBeNull();
    await h.set.stop();
  });

  it('retries a start that fails (etcd unreachable) with backoff, reporting the error, until etcd answers', async () => {
    const unreachable = new Set(['http://etcd:2379']);
    const h = harness({ unreachable });
    h.set.sync('db/a', cluster('a'));
    await vi.waitFor(() => expect(h.made.length).toBeGreaterThanOrEqual(3));
    expect(h.set.state('db/a')).toMatchObject({
      phase: 'unreachable',
      error: 'cannot reach etcd at http://etcd:2379',
    });
    expect(h.made.every((f) => f.stopped)).toBe(true); // every failed start was cleaned up
    unreachable.clear();
    await vi.waitFor(() => expect(h.set.state('db/a')).toMatchObject({ phase: 'running' }));
    expect(h.running()).toEqual(['db/a http://etcd:2379']);
    await h.set.stop();
  });

  it('stops every controller on stop() and starts none afterwards, not even a pending retry', async () => {
    const unreachable = new Set(['http://down:2379']);
    const h = harness({ unreachable });
    h.set.sync('db/a', cluster('a'));
    h.set.sync('db/b', cluster('b', ['http://down:2379']));
    await vi.waitFor(() => expect(h.running()).toHaveLength(1));
    await h.set.stop();
    expect(h.running()).toEqual([]);
    const made = h.made.length;
    unreachable.clear();
    h.set.sync('db/c', cluster('c'));
    await new Promise((r) => setTimeout(r, 100)); // longer than any retry delay here
    expect(h.made.length).toBe(made);
  });

  it('bounds stop() by its timeout when a controller takes too long to stop', async () => {
    const h = harness({ stopMillis: 10_000 });
    h.set.sync('db/a', cluster('a'));
    await vi.waitFor(() => expect(h.running()).toHaveLength(1));
    const started = Date.now();
    await h.set.stop();
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('counts a start that hangs as failed after the start timeout, stops it and starts again', async () => {
    const h = harness({ hangingStarts: 1 });
    h.set.sync('db/a', cluster('a'));
    // Recorded at each change: the restart after the back-off may come before a poll.
    await vi.waitFor(() =>
      expect(h.states).toContainEqual(
        expect.objectContaining({ key: 'db/a', phase: 'unreachable', error: expect.stringContaining('within 100 ms') }),
      ),
    );
    expect(h.made[0]!.stopped).toBe(true);
    await vi.waitFor(() => expect(h.set.state('db/a')).toMatchObject({ phase: 'running' }));
    expect(h.made).toHaveLength(2);
    await h.set.stop();
  });
});
