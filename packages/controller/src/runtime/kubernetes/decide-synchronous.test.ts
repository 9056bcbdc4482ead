import { type ConfigRecord, defaultConfig, recordVersion, type SyncRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { decideReconcile, type ReconcileAction, type ReconcileSnapshot } from './decide-reconcile.js';
import {
  defaultApplyGraceMillis as applyGraceMillis,
  type ConditionValue,
  decideSynchronousCondition,
  decideSynchronousConfig,
  type SynchronousConditionInput,
  type SynchronousObservation,
} from './decide-synchronous.js';
import { type Condition, type PgHaClusterObject, type PgHaClusterSpec, parsePgHaCluster } from './pgha-cluster.js';

const now = '2026-12-01T10:00:00Z';
const nowMillis = Date.parse(now);
const at = (offsetMillis: number) => new Date(nowMillis + offsetMillis).toISOString();

const specOf = (synchronous: Record<string, unknown>, extra: Record<string, unknown> = {}): PgHaClusterSpec => {
  const parsed = parsePgHaCluster({
    apiVersion: 'pgha.dev/v1alpha1',
    kind: 'PgHaCluster',
    metadata: { name: 'demo', namespace: 'db', uid: 'u' },
    spec: { etcd: { endpoints: ['http://etcd:2379'] }, synchronous, ...extra },
  });
  if (!parsed.ok) throw new Error(parsed.problems.join('; '));
  return parsed.spec;
};
const quorum = specOf({ mode: 'quorum' });

const stored = (changes: Partial<ConfigRecord> = {}) => ({
  state: 'stored' as const,
  record: {
    ...defaultConfig,
    // The spec's own (specOf) values of the fields it owns.
    leaseTtlMillis: specOf({}).leaseTtlMillis,
    maximumLagOnFailoverBytes: specOf({}).maximumLagOnFailoverBytes,
    postgresParameters: { ...specOf({}).postgresParameters },
    keepaliveIntervalMillis: 200,
    version: 3,
    updatedAt: at(-60_000),
    updatedBy: 'pgha config set',
    ...changes,
  },
  modRevision: '42',
});

const claim = (overrides: Partial<SyncRecord> = {}): SyncRecord => ({
  v: recordVersion,
  term: 4,
  member: 'demo-0',
  standbys: ['demo-1', 'demo-2'],
  quorum: 1,
  strict: false,
  at: at(-30_000),
  ...overrides,
});

const observed = (overrides: Partial<SynchronousObservation> = {}): SynchronousObservation => ({
  config: stored({ synchronousMode: 'quorum', updatedAt: at(-60_000) }),
  sync: claim(),
  streaming: ['demo-1', 'demo-2'],
  ...overrides,
});

const previousCondition = (value: ConditionValue): Condition => ({
  type: 'Synchronous',
  ...value,
  lastTransitionTime: at(-120_000),
});

const input = (overrides: Partial<SynchronousConditionInput> = {}): SynchronousConditionInput => ({
  spec: quorum.synchronous,
  leader: { member: 'demo-0', term: 4 },
  observed: observed(),
  writing: null,
  blocked: null,
  previous: undefined,
  nowMillis,
  graceMillis: applyGraceMillis,
  ...overrides,
});

const degraded = previousCondition({ status: 'False', reason: 'Degraded', message: 'was degraded' });
const healthy = previousCondition({ status: 'True', reason: 'Quorum', message: 'was fine' });

describe('decideSynchronousConfig', () => {
  it('writes nothing without a record while the spec says off (no record means off)', () => {
    expect(decideSynchronousConfig({ spec: specOf({}), config: { state: 'absent' }, now })).toEqual({
      type: 'in-sync',
    });
  });

  it('creates the record for quorum mode, its other fields from what the spec gives the agents as flags', () => {
    const spec = specOf(
      { mode: 'quorum', count: 2, strict: true },
      { leaseTtlMillis: 3000, maximumLagOnFailoverBytes: 4096, postgresParameters: { work_mem: '8MB' } },
    );
    expect(decideSynchronousConfig({ spec, config: { state: 'absent' }, now })).toEqual({
      type: 'write',
      write: {
        record: {
          ...defaultConfig,
          version: 1,
          leaseTtlMillis: 3000,
          maximumLagOnFailoverBytes: 4096,
          postgresParameters: { work_mem: '8MB' },
          synchronousMode: 'quorum',
          synchronousCount: 2,
          synchronousStrict: true,
          updatedAt: now,
          updatedBy: 'pgha operator',
        },
        expect: { create: true },
        change: 'created with synchronousMode quorum, count 2, strict true',
      },
    });
  });

  it('changes only the synchronous fields of a stored record, version + 1, guarded by its mod revision', () => {
    const have = stored();
    const decision = decideSynchronousConfig({ spec: specOf({ mode: 'quorum', count: 2 }), config: have, now });
    expect(decision).toEqual({
      type: 'write',
      write: {
        record: {
          ...have.record,
          version: 4,
          synchronousMode: 'quorum',
          synchronousCount: 2,
          updatedAt: now,
          updatedBy: 'pgha operator',
        },
        expect: { modRevision: '42' },
        change: 'version 3 → 4: synchronousMode off → quorum, synchronousCount 1 → 2',
      },
    });
  });

  it('leaves a record whose spec-owned fields equal the spec alone, whatever its other fields hold', () => {
    for (const spec of [specOf({}), specOf({ mode: 'off', count: 1, strict: false })])
      expect(decideSynchronousConfig({ spec, config: stored({ keepaliveIntervalMillis: 300 }), now })).toEqual({
        type: 'in-sync',
      });
    expect(
      decideSynchronousConfig({
        spec: specOf({ mode: 'quorum', count: 2, strict: true }),
        config: stored({ synchronousMode: 'quorum', synchronousCount: 2, synchronousStrict: true }),
        now,
      }),
    ).toEqual({ type: 'in-sync' });
  });

  it('writes the spec’s lease TTL, lag bound and postgres parameters too (a stored record wins over flags)', () => {
    const decision = decideSynchronousConfig({
      spec: specOf({}, { leaseTtlMillis: 4000, postgresParameters: { work_mem: '64MB' } }),
      config: stored(),
      now,
    });
    expect(decision).toMatchObject({
      type: 'write',
      write: {
        record: { leaseTtlMillis: 4000, postgresParameters: { work_mem: '64MB' }, keepaliveIntervalMillis: 200 },
        change: expect.stringMatching(/leaseTtlMillis .*→ 4000, postgresParameters \{\} → \{"work_mem":"64MB"\}/),
      },
    });
  });

  it('turns a stored quorum record off when the spec does (and keeps count and strict equal too)', () => {
    const decision = decideSynchronousConfig({
      spec: specOf({ mode: 'off' }),
      config: stored({ synchronousMode: 'quorum', synchronousStrict: true }),
      now,
    });
    expect(decision).toMatchObject({
      type: 'write',
      write: {
        record: { synchronousMode: 'off', synchronousCount: 1, synchronousStrict: false, version: 4 },
        change: 'version 3 → 4: synchronousMode quorum → off, synchronousStrict true → false',
      },
    });
  });

  it('never overwrites a record it cannot parse (its other settings would be lost), and says how to repair it', () => {
    const decision = decideSynchronousConfig({
      spec: quorum,
      config: { state: 'malformed', problem: 'config record: malformed record: leaseTtlMillis expected number' },
      now,
    });
    expect(decision.type).toBe('blocked');
    expect(decision.type === 'blocked' && decision.problem).toMatch(/cannot be read .*pgha config set.*delete the key/);
  });

  it('does not create a record the spec cannot fill (a parameter value too long for it), and says so', () => {
    const decision = decideSynchronousConfig({
      spec: specOf({ mode: 'quorum' }, { postgresParameters: { search_path: 'x'.repeat(2000) } }),
      config: { state: 'absent' },
      now,
    });
    expect(decision).toMatchObject({ type: 'blocked' });
    expect(decision.type === 'blocked' && decision.problem).toContain('postgresParameters');
  });
});

describe('decideSynchronousCondition', () => {
  it("is True when the current primary's claim of the current term reaches the count", () => {
    expect(decideSynchronousCondition(input())).toEqual({
      condition: {
        status: 'True',
        reason: 'Quorum',
        message:
          'the primary demo-0 (term 4) claims every commit is on 1 of demo-1, demo-2; spec.synchronous.count is 1',
      },
      event: null,
      recheckAfterMillis: null,
    });
  });

  it('is False/Degraded with a Warning event once when the claim falls short, and says what it means', () => {
    const first = decideSynchronousCondition(
      input({
        spec: specOf({ mode: 'quorum', count: 2 }).synchronous,
        observed: observed({
          config: stored({ synchronousMode: 'quorum', synchronousCount: 2 }),
          streaming: ['demo-1'],
        }),
        previous: healthy,
      }),
    );
    expect(first.condition).toMatchObject({ status: 'False', reason: 'Degraded' });
    const message = (first.condition as ConditionValue).message;
    expect(message).toContain('claims every commit is on 1 of demo-1, demo-2; spec.synchronous.count is 2');
    expect(message).toContain('commits are acknowledged after 1 confirmation until enough standbys stream');
    expect(message).toContain('1 streams now (demo-1)');
    expect(first.event).toEqual({ eventType: 'Warning', reason: 'SynchronousDegraded', message });
    // The next round, still degraded: no second event.
    const again = decideSynchronousCondition(
      input({
        spec: specOf({ mode: 'quorum', count: 2 }).synchronous,
        observed: observed({
          config: stored({ synchronousMode: 'quorum', synchronousCount: 2 }),
          streaming: ['demo-1'],
        }),
        previous: previousCondition(first.condition as ConditionValue),
      }),
    );
    expect(again.event).toBeNull();
  });

  it('is Degraded (asynchronous) when there is no claim of the current term, or one by a superseded primary', () => {
    for (const sync of [null, claim({ term: 3 }), claim({ quorum: 0, standbys: [] })]) {
      const d = decideSynchronousCondition(input({ observed: observed({ sync }) }));
      expect(d.condition).toMatchObject({ status: 'False', reason: 'Degraded' });
      expect((d.condition as ConditionValue).message).toContain(
        'claims no standby holds its commits; spec.synchronous.count is 1: commits are acknowledged without a standby (asynchronous)',
      );
      expect(d.event?.reason).toBe('SynchronousDegraded');
    }
  });

  it('in strict mode is Degraded when fewer than count standbys stream: the claim holds but commits wait', () => {
    const d = decideSynchronousCondition(
      input({
        spec: specOf({ mode: 'quorum', strict: true }).synchronous,
        observed: observed({ sync: claim({ strict: true }), streaming: [] }),
      }),
    );
    expect(d.condition).toEqual({
      status: 'False',
      reason: 'Degraded',
      message:
        "strict mode: 0 of the 1 standbys required stream, so commits on demo-0 (term 4) wait until 1 do — check the replicas' pods and pgha status",
    });
    expect(d.event?.reason).toBe('SynchronousDegraded');
  });

  it('emits SynchronousRestored once when it recovers from Degraded, nothing on a first True', () => {
    expect(decideSynchronousCondition(input({ previous: degraded })).event).toEqual({
      eventType: 'Normal',
      reason: 'SynchronousRestored',
      message: expect.stringContaining('claims every commit is on 1 of demo-1, demo-2'),
    });
    expect(decideSynchronousCondition(input({ previous: healthy })).event).toBeNull();
    expect(decideSynchronousCondition(input()).event).toBeNull();
  });

  it('is False/Off in mode off, without an event, also right after Degraded', () => {
    const d = decideSynchronousCondition(input({ spec: specOf({}).synchronous, previous: degraded }));
    expect(d).toEqual({
      condition: {
        status: 'False',
        reason: 'Off',
        message: 'spec.synchronous.mode is off: the primary acknowledges commits without waiting for a standby',
      },
      event: null,
      recheckAfterMillis: null,
    });
  });

  it('keeps its last value while no primary is writable or etcd cannot be read (a switchover is no event pair)', () => {
    for (const previous of [healthy, degraded]) {
      expect(decideSynchronousCondition(input({ leader: null, previous }))).toEqual({
        condition: 'keep',
        event: null,
        recheckAfterMillis: null,
      });
      expect(decideSynchronousCondition(input({ observed: null, previous })).condition).toBe('keep');
    }
    expect(decideSynchronousCondition(input({ leader: null })).condition).toMatchObject({
      status: 'Unknown',
      reason: 'NoPrimary',
    });
    expect(decideSynchronousCondition(input({ observed: null })).condition).toMatchObject({
      status: 'Unknown',
      reason: 'EtcdUnreadable',
    });
  });

  it('waits while the primary applies a change (a claim older than the settings), then reports', () => {
    const count2 = specOf({ mode: 'quorum', count: 2 }).synchronous;
    const changed = (updatedAgoMillis: number) =>
      observed({
        config: stored({ synchronousMode: 'quorum', synchronousCount: 2, updatedAt: at(-updatedAgoMillis) }),
      });
    // Just changed: Applying, look again when the grace ends; a True condition stays.
    expect(decideSynchronousCondition(input({ spec: count2, observed: changed(1000) }))).toEqual({
      condition: {
        status: 'Unknown',
        reason: 'Applying',
        message:
          'the primary demo-0 (term 4) is applying the synchronous settings (config version 3: synchronousMode quorum, count 2, strict false)',
      },
      event: null,
      recheckAfterMillis: applyGraceMillis - 1000,
    });
    expect(
      decideSynchronousCondition(input({ spec: count2, observed: changed(1000), previous: healthy })).condition,
    ).toBe('keep');
    // Past the grace: Degraded, with its event.
    const late = decideSynchronousCondition(
      input({ spec: count2, observed: changed(applyGraceMillis + 1), previous: healthy }),
    );
    expect(late.condition).toMatchObject({ reason: 'Degraded' });
    expect(late.event?.reason).toBe('SynchronousDegraded');
    // A claim written after the change is the primary's answer: no grace.
    const answered = observed({
      config: stored({ synchronousMode: 'quorum', synchronousCount: 2, updatedAt: at(-3000) }),
      sync: claim({ at: at(-1000) }),
    });
    expect(decideSynchronousCondition(input({ spec: count2, observed: answered })).condition).toMatchObject({
      reason: 'Degraded',
    });
  });

  it('waits in the round that writes the settings, and never delays a claim that already reaches the count', () => {
    const writing = decideSynchronousConfig({ spec: quorum, config: { state: 'absent' }, now });
    if (writing.type !== 'write') throw new Error('expected a write');
    expect(
      decideSynchronousCondition(
        input({
          observed: observed({ config: { state: 'absent' }, sync: claim({ quorum: 0, standbys: [] }) }),
          writing: writing.write,
        }),
      ),
    ).toMatchObject({ condition: { reason: 'Applying' }, recheckAfterMillis: applyGraceMillis });
    expect(decideSynchronousCondition(input({ writing: writing.write })).condition).toMatchObject({ status: 'True' });
  });

  it('reports a config record it cannot write as Unknown/ConfigNotWritable', () => {
    expect(decideSynchronousCondition(input({ blocked: 'the record is malformed' })).condition).toEqual({
      status: 'Unknown',
      reason: 'ConfigNotWritable',
      message: 'the record is malformed',
    });
  });
});

describe('decideReconcile with synchronous replication', () => {
  const cluster = (synchronous: Record<string, unknown>, status?: PgHaClusterObject['status']): PgHaClusterObject => ({
    apiVersion: 'pgha.dev/v1alpha1',
    kind: 'PgHaCluster',
    metadata: { name: 'demo', namespace: 'db', uid: 'uid-1', generation: 2 },
    spec: { instances: 3, etcd: { endpoints: ['http://etcd:2379'] }, synchronous },
    ...(status !== undefined ? { status } : {}),
  });
  const snapshot = (overrides: Partial<ReconcileSnapshot>): ReconcileSnapshot => ({
    cluster: cluster({ mode: 'quorum' }),
    objects: [],
    credentialsSecretKeys: ['superuser-password', 'replication-password'],
    pods: [],
    leader: { member: 'demo-0', term: 4 },
    now,
    randomBytes: (size) => new Uint8Array(size),
    ...overrides,
  });
  const synchronousCondition = (actions: ReconcileAction[]) =>
    (
      actions.find((a) => a.type === 'update-status') as Extract<ReconcileAction, { type: 'update-status' }> | undefined
    )?.status.conditions?.find((c) => c.type === 'Synchronous');
  const of = <T extends ReconcileAction['type']>(actions: ReconcileAction[], type: T) =>
    actions.filter((a): a is Extract<ReconcileAction, { type: T }> => a.type === type);

  it('writes the config record after the objects and before the status, reports Applying and looks again when the grace ends', () => {
    const actions = decideReconcile(
      snapshot({ synchronous: observed({ config: { state: 'absent' }, sync: null, streaming: [] }) }),
    );
    const types = actions.map((a) => a.type);
    expect(types.indexOf('write-config')).toBeGreaterThan(types.lastIndexOf('create'));
    expect(types.indexOf('write-config')).toBeLessThan(types.indexOf('update-status'));
    expect(actions.find((a) => a.type === 'write-config')).toMatchObject({
      type: 'write-config',
      write: { expect: { create: true }, record: { synchronousMode: 'quorum', updatedBy: 'pgha operator' } },
    });
    expect(of(actions, 'recheck')).toEqual([
      { type: 'recheck', afterMillis: applyGraceMillis, reason: 'the primary is applying new synchronous settings' },
    ]);
    expect(synchronousCondition(actions)).toMatchObject({
      status: 'Unknown',
      reason: 'Applying',
      observedGeneration: 2,
    });
  });

  it('puts the condition in the status and the event beside it', () => {
    const actions = decideReconcile(
      snapshot({
        cluster: cluster({ mode: 'quorum' }, { primary: 'demo-0', term: 4, conditions: [healthy] }),
        synchronous: observed({ sync: null, streaming: [] }),
      }),
    );
    expect(synchronousCondition(actions)).toMatchObject({
      status: 'False',
      reason: 'Degraded',
      lastTransitionTime: now,
    });
    expect(of(actions, 'event').map((e) => `${e.eventType} ${e.reason}`)).toEqual(['Warning SynchronousDegraded']);
    expect(of(actions, 'write-config')).toEqual([]);
  });

  it('neither writes nor changes the condition while etcd cannot be read', () => {
    const actions = decideReconcile(
      snapshot({
        cluster: cluster({ mode: 'quorum', count: 2 }, { primary: 'demo-0', term: 4, conditions: [degraded] }),
        leader: null,
        leaderReadError: 'etcd unreachable',
        synchronous: null,
      }),
    );
    expect(of(actions, 'write-config')).toEqual([]);
    expect(synchronousCondition(actions)).toEqual(degraded);
  });

  it('keeps the condition and writes nothing on an invalid spec (count above instances − 1)', () => {
    const actions = decideReconcile(
      snapshot({
        cluster: cluster({ mode: 'quorum', count: 3 }, { primary: 'demo-0', term: 4, conditions: [healthy] }),
        synchronous: observed(),
      }),
    );
    expect(of(actions, 'write-config')).toEqual([]);
    expect(synchronousCondition(actions)).toEqual(healthy);
    const status = of(actions, 'update-status')[0]!.status;
    expect(status.conditions?.find((c) => c.type === 'SpecValid')?.message).toContain(
      'spec.synchronous.count 3 is more than the 2 standbys of 3 instances',
    );
  });

  it('reports no Synchronous condition when the operator does not manage it', () => {
    expect(synchronousCondition(decideReconcile(snapshot({})))).toBeUndefined();
  });
});
