import { describe, expect, it } from 'vitest';
import {
  decideFailoverController,
  desiredFailoverController,
  type FailoverControllerConfig,
  failoverControllerCondition,
  startRetryDelayMillis,
} from './decide-failover-controller.js';
import type { PgHaClusterObject } from './pgha-cluster.js';

const cluster = (spec: Record<string, unknown> = {}, extra: Partial<PgHaClusterObject['metadata']> = {}) =>
  ({
    apiVersion: 'pgha.dev/v1alpha1',
    kind: 'PgHaCluster',
    metadata: { name: 'demo', namespace: 'db', uid: 'uid-1', generation: 1, ...extra },
    spec: { etcd: { endpoints: ['http://etcd:2379'] }, ...spec },
  }) as PgHaClusterObject;

const config = (overrides: Partial<FailoverControllerConfig> = {}): FailoverControllerConfig => ({
  cluster: 'demo',
  endpoints: ['http://etcd:2379'],
  keyRoot: '/pgha/',
  leaseTtlMillis: 2000,
  maximumLagOnFailoverBytes: 16 * 1024 * 1024,
  ...overrides,
});

describe('desiredFailoverController', () => {
  it("takes the cluster's etcd, key root, lease TTL and maximum lag, with pgha controller's defaults", () => {
    expect(desiredFailoverController(cluster())).toEqual({ type: 'valid', config: config() });
    expect(
      desiredFailoverController(
        cluster({
          etcd: { endpoints: ['http://a:2379', 'http://b:2379'], keyRoot: '/x/' },
          leaseTtlMillis: 5000,
          maximumLagOnFailoverBytes: 0,
        }),
      ),
    ).toEqual({
      type: 'valid',
      config: config({
        endpoints: ['http://a:2379', 'http://b:2379'],
        keyRoot: '/x/',
        leaseTtlMillis: 5000,
        maximumLagOnFailoverBytes: 0,
      }),
    });
  });

  it('is absent for a deleted cluster and one being deleted, invalid for a bad spec', () => {
    expect(desiredFailoverController(null)).toEqual({ type: 'absent' });
    expect(desiredFailoverController(cluster({}, { deletionTimestamp: '2026-12-01T10:00:00Z' }))).toEqual({
      type: 'absent',
    });
    expect(desiredFailoverController(cluster({ etcd: { endpoints: [] } }))).toEqual({ type: 'invalid' });
  });
});

describe('decideFailoverController', () => {
  it('starts a controller for a cluster seen for the first time', () => {
    expect(decideFailoverController({ type: 'valid', config: config() }, null)).toEqual({
      type: 'start',
      config: config(),
    });
  });

  it('keeps a controller whose settings did not change', () => {
    expect(decideFailoverController({ type: 'valid', config: config() }, config())).toEqual({ type: 'keep' });
  });

  it('restarts it when the etcd endpoints, key root, cluster name or timing change, naming what changed', () => {
    const now = config({ endpoints: ['http://other:2379'], leaseTtlMillis: 3000 });
    expect(decideFailoverController({ type: 'valid', config: now }, config())).toEqual({
      type: 'restart',
      config: now,
      changed: ['leaseTtlMillis', 'endpoints'],
    });
    expect(decideFailoverController({ type: 'valid', config: config({ cluster: 'b' }) }, config())).toMatchObject({
      type: 'restart',
      changed: ['cluster'],
    });
  });

  it('stops it when the cluster is gone, and does nothing when none runs', () => {
    expect(decideFailoverController({ type: 'absent' }, config())).toEqual({ type: 'stop' });
    expect(decideFailoverController({ type: 'absent' }, null)).toEqual({ type: 'keep' });
  });

  it('keeps a running controller when the spec turns invalid, and starts none for an invalid spec', () => {
    expect(decideFailoverController({ type: 'invalid' }, config())).toEqual({ type: 'keep' });
    expect(decideFailoverController({ type: 'invalid' }, null)).toEqual({ type: 'keep' });
  });
});

describe('startRetryDelayMillis', () => {
  it('doubles from the first delay up to the maximum', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 100].map((n) => startRetryDelayMillis(n, 1000, 30_000))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000,
    ]);
  });
});

describe('failoverControllerCondition', () => {
  const endpoints = ['http://etcd:2379'];
  it('is ready when the controller runs, active or standing by behind another controller', () => {
    expect(failoverControllerCondition({ phase: 'running', endpoints, active: true, problem: null })).toMatchObject({
      ok: true,
      reason: 'Active',
      warn: false,
    });
    expect(failoverControllerCondition({ phase: 'running', endpoints, active: false, problem: null })).toMatchObject({
      ok: true,
      reason: 'Standby',
    });
  });

  it('warns with EtcdUnreachable and the error when the start failed, saying when it retries', () => {
    const c = failoverControllerCondition({
      phase: 'unreachable',
      endpoints,
      error: 'cannot reach etcd at http://etcd:2379 (connection refused)',
      retryInMillis: 4000,
    });
    expect(c).toMatchObject({ ok: false, reason: 'EtcdUnreachable', warn: true });
    expect(c.message).toContain('connection refused');
    expect(c.message).toContain('retrying in 4 s');
  });

  it("warns with EtcdUnreachable when a running controller's passes fail", () => {
    expect(
      failoverControllerCondition({ phase: 'running', endpoints, active: true, problem: 'deadline exceeded' }),
    ).toMatchObject({ ok: false, reason: 'EtcdUnreachable', warn: true });
  });

  it('is not ready, without a warning, while starting', () => {
    expect(failoverControllerCondition({ phase: 'starting', endpoints })).toMatchObject({
      ok: false,
      reason: 'Starting',
      warn: false,
    });
  });
});
