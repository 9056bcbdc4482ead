import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decideReconcile,
  decideRoleLabels,
  type ObservedPod,
  type ReconcileAction,
  type ReconcileSnapshot,
} from './decide-reconcile.js';
import { desiredHashAnnotation, type KubeObject, roleLabel } from './desired-objects.js';
import type { PgHaClusterObject } from './pgha-cluster.js';

// biome-ignore lint/suspicious/noExplicitAny: generated objects are read by path in assertions
type Json = Record<string, any>;
const now = '2026-12-01T10:00:00Z';

const cluster = (spec: Record<string, unknown> = {}, extra: Partial<PgHaClusterObject> = {}): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name: 'demo', namespace: 'db', uid: 'uid-1', generation: 1 },
  spec: { instances: 3, etcd: { endpoints: ['http://etcd:2379'] }, ...spec },
  ...extra,
});

const pod = (ordinal: number, role?: 'primary' | 'replica', extra: Partial<ObservedPod> = {}): ObservedPod => ({
  name: `demo-${ordinal}`,
  labels: role ? { [roleLabel]: role } : {},
  ready: true,
  deleting: false,
  ...extra,
});

const snapshot = (overrides: Partial<ReconcileSnapshot> = {}): ReconcileSnapshot => ({
  cluster: cluster(),
  objects: [],
  credentialsSecretKeys: ['superuser-password', 'replication-password'],
  pods: [],
  leader: null,
  now,
  randomBytes: fakeRandom(),
  ...overrides,
});

/** A deterministic random source: 1, 2, 3, ... byte by byte. */
function fakeRandom() {
  let next = 0;
  return (size: number) => Uint8Array.from({ length: size }, () => ++next % 256);
}
const named = { credentialsSecret: 'demo-credentials' };

/** The objects as the API server would hold them after the creates of a first round. */
function created(s: ReconcileSnapshot): KubeObject[] {
  return decideReconcile(s)
    .filter((a): a is Extract<ReconcileAction, { type: 'create' }> => a.type === 'create')
    .map((a) => ({ ...a.object, metadata: { ...a.object.metadata, resourceVersion: '7' } }));
}

const kinds = (actions: ReconcileAction[]) =>
  actions.map((a) =>
    a.type === 'create' || a.type === 'update' ? `${a.type} ${a.object.kind}/${a.object.metadata.name}` : a.type,
  );
const statusOf = (actions: ReconcileAction[]) =>
  (actions.find((a) => a.type === 'update-status') as Extract<ReconcileAction, { type: 'update-status' }> | undefined)
    ?.status;
const stsOf = (actions: ReconcileAction[]) =>
  (
    actions.find((a) => (a.type === 'create' || a.type === 'update') && a.object.kind === 'StatefulSet') as
      | Extract<ReconcileAction, { type: 'create' }>
      | undefined
  )?.object as (KubeObject & { spec: Json }) | undefined;

describe('decideReconcile', () => {
  it('creates the ServiceAccount, the three Services, the PDB and the StatefulSet of a new cluster', () => {
    const actions = decideReconcile(snapshot());
    expect(kinds(actions)).toEqual([
      'create ServiceAccount/demo',
      'create Service/demo',
      'create Service/demo-rw',
      'create Service/demo-ro',
      'create PodDisruptionBudget/demo',
      'create StatefulSet/demo',
      'update-status',
    ]);
    expect(statusOf(actions)).toMatchObject({
      phase: 'Creating',
      ready: '0/3',
      selector: 'pgha.dev/cluster=demo',
      observedGeneration: 1,
    });
  });

  it('builds a StatefulSet that runs the agent per pod, named after the pod, with a PVC and Secret credentials', () => {
    const sts = stsOf(decideReconcile(snapshot()))!;
    expect(sts.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: 'PgHaCluster', uid: 'uid-1', controller: true }),
    ]);
    expect(sts.spec).toMatchObject({
      replicas: 3,
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'OnDelete' },
      serviceName: 'demo',
    });
    const podSpec = sts.spec.template.spec;
    expect(podSpec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(20);
    expect(
      podSpec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey,
    ).toBe('kubernetes.io/hostname');
    const [container] = podSpec.containers;
    expect(container.command.at(-2)).toContain('exec pgha agent "$@"');
    expect(container.args).toContain('--name=$(POD_NAME)');
    expect(container.args).toContain('--etcd=http://etcd:2379');
    expect(container.env).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
    expect(container.env).toContainEqual({
      name: 'PGHA_SUPERUSER_PASSWORD',
      valueFrom: { secretKeyRef: { name: 'demo-credentials', key: 'superuser-password' } },
    });
    expect(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('10Gi');
    expect(sts.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
  });

  it("probes the agent's health API: liveness on the loop's heartbeat, readiness on the member's role", () => {
    const [container] = stsOf(decideReconcile(snapshot()))!.spec.template.spec.containers;
    expect(container.args).toEqual(expect.arrayContaining(['--api-port=8008', '--api-listen=0.0.0.0']));
    expect(container.ports).toContainEqual({ name: 'api', containerPort: 8008 });
    expect(container.livenessProbe.httpGet).toEqual({ path: '/liveness', port: 'api' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readiness', port: 'api' });
    expect(container.startupProbe.httpGet).toEqual({ path: '/liveness', port: 'api' });
    // Liveness must outlast a slow loop pass (etcd and postgres calls of several seconds).
    expect(container.livenessProbe.periodSeconds * container.livenessProbe.failureThreshold).toBeGreaterThanOrEqual(30);
  });

  it('does nothing to objects that match, and reports a healthy cluster once', () => {
    const objects = created(snapshot());
    const pods = [pod(0, 'primary'), pod(1, 'replica'), pod(2, 'replica')];
    const leader = { member: 'demo-0', term: 4 };
    const first = decideReconcile(snapshot({ objects, pods, leader }));
    expect(kinds(first)).toEqual(['update-status', 'event']);
    expect(first.at(-1)).toMatchObject({
      eventType: 'Normal',
      reason: 'PrimaryElected',
      message: 'demo-0 is the primary (term 4)',
    });
    const status = statusOf(first)!;
    expect(status).toMatchObject({ phase: 'Healthy', primary: 'demo-0', term: 4, ready: '3/3', readyInstances: 3 });
    // the status written is observed: the next round has nothing to do
    expect(decideReconcile(snapshot({ objects, pods, leader, cluster: cluster({}, { status }) }))).toEqual([]);
  });

  it('tells where the primary moved in one event per new term', () => {
    const objects = created(snapshot());
    const pods = [pod(0, 'replica'), pod(1, 'primary'), pod(2, 'replica')];
    const status = { phase: 'Healthy', primary: 'demo-0', term: 4 } as const;
    const moved = decideReconcile(
      snapshot({ objects, pods, leader: { member: 'demo-1', term: 5 }, cluster: cluster({}, { status }) }),
    );
    expect(moved.filter((a) => a.type === 'event')).toEqual([
      expect.objectContaining({
        reason: 'PrimaryChanged',
        message: 'the primary moved from demo-0 to demo-1 (term 5)',
      }),
    ]);
    const same = decideReconcile(
      snapshot({ objects, pods, leader: { member: 'demo-0', term: 4 }, cluster: cluster({}, { status }) }),
    );
    expect(same.filter((a) => a.type === 'event' && a.reason.startsWith('Primary'))).toEqual([]);
    // etcd unreadable: the leader is unknown, not changed
    const unknown = decideReconcile(
      snapshot({ objects, pods, leader: null, leaderReadError: 'down', cluster: cluster({}, { status }) }),
    );
    expect(unknown.filter((a) => a.type === 'event' && a.reason.startsWith('Primary'))).toEqual([]);
    // between two leaders: the loss, once (the status then has no primary)
    const lost = decideReconcile(snapshot({ objects, pods, leader: null, cluster: cluster({}, { status }) }));
    expect(lost.filter((a) => a.type === 'event')).toEqual([
      expect.objectContaining({ eventType: 'Warning', reason: 'PrimaryLost' }),
    ]);
    const lostStatus = lost.find((a) => a.type === 'update-status');
    expect(lostStatus && 'status' in lostStatus ? lostStatus.status.primary : 'none').toBeUndefined();
  });

  it('updates a changed spec in place with the observed resourceVersion, keeping the Service clusterIP', () => {
    const objects = created(snapshot()).map((o) =>
      o.kind === 'Service' ? { ...o, spec: { ...(o.spec as object), clusterIP: '10.96.0.9' } } : o,
    );
    const changed = cluster(
      { image: 'ghcr.io/pgha/member:17.1' },
      { metadata: { ...cluster().metadata, generation: 2 } },
    );
    const actions = decideReconcile(snapshot({ cluster: changed, objects }));
    expect(kinds(actions).filter((k) => k.startsWith('update '))).toEqual(['update StatefulSet/demo']);
    const sts = stsOf(actions)!;
    expect(sts.metadata.resourceVersion).toBe('7');
    expect(sts.spec.template.spec.containers[0].image).toBe('ghcr.io/pgha/member:17.1');
    // a drifted Service (hash differs) is restored, its clusterIP kept
    const drifted = objects.map((o) =>
      o.metadata.name === 'demo-rw'
        ? { ...o, metadata: { ...o.metadata, annotations: { [desiredHashAnnotation]: 'x' } } }
        : o,
    );
    const svc = decideReconcile(snapshot({ objects: drifted })).find((a) => a.type === 'update') as Extract<
      ReconcileAction,
      { type: 'update' }
    >;
    expect(svc.object.metadata.name).toBe('demo-rw');
    expect((svc.object.spec as { clusterIP: string }).clusterIP).toBe('10.96.0.9');
  });

  it('reports a storage change as a condition instead of an update the API server would reject', () => {
    const objects = created(snapshot());
    const actions = decideReconcile(snapshot({ cluster: cluster({ storage: { size: '20Gi' } }), objects }));
    const sts = stsOf(actions)!;
    expect(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe('10Gi');
    expect(statusOf(actions)!.conditions).toContainEqual(
      expect.objectContaining({ type: 'SpecApplied', status: 'False', reason: 'ImmutableFieldChanged' }),
    );
    // once the mutable rest is applied, later rounds neither update again nor drop the condition
    const applied = objects.map((o) => (o.kind === 'StatefulSet' ? sts : o));
    const again = decideReconcile(snapshot({ cluster: cluster({ storage: { size: '20Gi' } }), objects: applied }));
    expect(kinds(again).filter((k) => k.startsWith('update '))).toEqual([]);
    expect(statusOf(again)!.conditions).toContainEqual(
      expect.objectContaining({ type: 'SpecApplied', status: 'False' }),
    );
  });

  describe('bad input: a condition, an event, no change to any object', () => {
    const onlyStatus = (s: ReconcileSnapshot, reason: string, phase: string) => {
      const actions = decideReconcile(s);
      expect(kinds(actions)).toEqual(['update-status', 'event']);
      expect(statusOf(actions)).toMatchObject({ phase });
      expect(statusOf(actions)!.conditions).toContainEqual(expect.objectContaining({ status: 'False', reason }));
      expect(actions.at(-1)).toMatchObject({ type: 'event', eventType: 'Warning', reason });
      return actions;
    };
    const objects = () => created(snapshot());

    it('negative instances', () => {
      const a = onlyStatus(
        snapshot({ cluster: cluster({ instances: -1 }), objects: objects() }),
        'InvalidSpec',
        'Failed',
      );
      expect(JSON.stringify(a)).toContain('spec.instances must be a whole number from 1 to 9, not -1');
    });
    it('an unknown PostgreSQL version', () => {
      const a = onlyStatus(snapshot({ cluster: cluster({ postgresVersion: 12 }) }), 'InvalidSpec', 'Failed');
      expect(JSON.stringify(a)).toContain('spec.postgresVersion 12 is not supported');
    });
    it('an unknown API version', () => {
      onlyStatus(
        snapshot({ cluster: { ...cluster(), apiVersion: 'pgha.dev/v2' }, objects: objects() }),
        'InvalidSpec',
        'Failed',
      );
    });
    it('garbage where the spec should be', () => {
      onlyStatus(
        snapshot({ cluster: cluster({ etcd: 'nope', storage: { size: 'big' }, terminationGracePeriodSeconds: 5 }) }),
        'InvalidSpec',
        'Failed',
      );
    });
    it('a missing credentials Secret', () => {
      const a = onlyStatus(
        snapshot({ cluster: cluster(named), credentialsSecretKeys: null, objects: objects() }),
        'SecretMissing',
        'Pending',
      );
      expect(JSON.stringify(a)).toContain('Secret demo-credentials (named in spec.credentialsSecret) does not exist');
    });
    it('a Secret without the replication password', () => {
      onlyStatus(snapshot({ credentialsSecretKeys: ['superuser-password'] }), 'SecretKeysMissing', 'Pending');
    });
    it('a Secret of the default name without a password (an existing Secret is never completed)', () => {
      onlyStatus(snapshot({ credentialsSecretKeys: ['replication-password'] }), 'SecretKeysMissing', 'Pending');
    });
    it('repeats neither the event nor the status once reported', () => {
      const s = snapshot({ cluster: cluster(named), credentialsSecretKeys: null });
      const status = statusOf(decideReconcile(s))!;
      expect(decideReconcile({ ...s, cluster: cluster(named, { status }) })).toEqual([]);
    });
    it('still moves the role labels after a failover (old primary first), and reports the new primary', () => {
      const pods = [pod(0, 'primary'), pod(1, 'replica'), pod(2, 'replica')];
      for (const bad of [
        { cluster: cluster({ postgresVersion: 18 }) },
        { cluster: cluster({ instances: -1 }) },
        { cluster: cluster(named), credentialsSecretKeys: null },
      ]) {
        const s = snapshot({ ...bad, objects: objects(), pods, leader: { member: 'demo-1', term: 2 } });
        const first = decideReconcile(s);
        expect(kinds(first).filter((k) => k.startsWith('create') || k.startsWith('update '))).toEqual([]);
        expect(first.filter((a) => a.type === 'label-pod')).toEqual([
          { type: 'label-pod', pod: 'demo-0', role: 'replica' },
        ]);
        expect(statusOf(first)).toMatchObject({ primary: 'demo-1', term: 2 });
        const moved = [pod(0, 'replica'), pod(1, 'replica'), pod(2, 'replica')];
        expect(decideReconcile({ ...s, pods: moved }).filter((a) => a.type === 'label-pod')).toEqual([
          { type: 'label-pod', pod: 'demo-1', role: 'primary' },
        ]);
      }
    });
    it('keeps the role labels when the leader record cannot be read either', () => {
      const pods = [pod(0, 'primary'), pod(1, 'replica')];
      const actions = decideReconcile(
        snapshot({ cluster: cluster({ postgresVersion: 18 }), pods, leaderReadError: 'etcd down' }),
      );
      expect(kinds(actions)).toEqual(['update-status', 'event']);
    });
  });

  it('leaves a cluster being deleted to the garbage collector', () => {
    expect(
      decideReconcile(
        snapshot({ cluster: cluster({}, { metadata: { ...cluster().metadata, deletionTimestamp: now } }) }),
      ),
    ).toEqual([]);
  });

  describe('scaling down never removes the primary', () => {
    const at5 = () => created(snapshot({ cluster: cluster({ instances: 5 }) }));
    const pods5 = [pod(0, 'replica'), pod(1, 'replica'), pod(2, 'replica'), pod(3, 'replica'), pod(4, 'primary')];

    it('keeps the primary ordinal + 1 replicas and requests a switchover to a member that stays', () => {
      const actions = decideReconcile(
        snapshot({
          cluster: cluster({ instances: 3 }),
          objects: at5(),
          pods: pods5,
          leader: { member: 'demo-4', term: 2 },
        }),
      );
      expect(stsOf(actions)).toBeUndefined(); // the StatefulSet keeps its 5 replicas
      expect(actions).toContainEqual({
        type: 'request-switchover',
        from: 'demo-4',
        candidates: ['demo-0', 'demo-1', 'demo-2'],
        reason: 'scale down to 3 instances',
      });
    });
    it('scales to the primary ordinal + 1 when that is below the current size', () => {
      const pods = pods5.map((p) =>
        p.name === 'demo-3' ? pod(3, 'primary') : p.name === 'demo-4' ? pod(4, 'replica') : p,
      );
      const actions = decideReconcile(
        snapshot({ cluster: cluster({ instances: 1 }), objects: at5(), pods, leader: { member: 'demo-3', term: 2 } }),
      );
      expect(stsOf(actions)!.spec.replicas).toBe(4);
    });
    it('scales down once the primary is below the new size', () => {
      const pods = pods5.map((p) =>
        p.name === 'demo-0' ? pod(0, 'primary') : p.name === 'demo-4' ? pod(4, 'replica') : p,
      );
      const actions = decideReconcile(
        snapshot({ cluster: cluster({ instances: 3 }), objects: at5(), pods, leader: { member: 'demo-0', term: 3 } }),
      );
      expect(stsOf(actions)!.spec.replicas).toBe(3);
      expect(kinds(actions)).not.toContain('request-switchover');
    });
    it('does not scale down while no primary is known', () => {
      const actions = decideReconcile(
        snapshot({ cluster: cluster({ instances: 3 }), objects: at5(), pods: pods5, leader: null }),
      );
      expect(stsOf(actions)).toBeUndefined(); // the StatefulSet keeps its 5 replicas
      expect(statusOf(actions)!.conditions).toContainEqual(
        expect.objectContaining({ type: 'ScaledDown', reason: 'WaitingForPrimary' }),
      );
    });
    it('scales up at once', () => {
      const actions = decideReconcile(
        snapshot({
          cluster: cluster({ instances: 7 }),
          objects: at5(),
          pods: pods5,
          leader: { member: 'demo-4', term: 2 },
        }),
      );
      expect(stsOf(actions)!.spec.replicas).toBe(7);
    });
  });

  it('never deletes anything but a pod, and no pod while no StatefulSet revision is published', () => {
    const objects = created(snapshot());
    for (const s of [
      snapshot({
        objects,
        cluster: cluster({ instances: 1 }),
        leader: { member: 'demo-0', term: 1 },
        pods: [pod(0), pod(1), pod(2)],
      }),
      snapshot({ objects, credentialsSecretKeys: null }),
      snapshot({ objects, cluster: cluster(named), credentialsSecretKeys: null }),
      snapshot({ objects, cluster: cluster({ instances: 0 }) }),
    ])
      for (const a of decideReconcile(s))
        expect([
          'create',
          'create-secret',
          'update',
          'label-pod',
          'request-switchover',
          'update-status',
          'event',
        ]).toContain(a.type);
  });
});

describe('decideReconcile: removal marks of members scaled away (removed/<name>)', () => {
  const at5 = () => created(snapshot({ cluster: cluster({ instances: 5 }) }));
  const at3 = () => created(snapshot({ cluster: cluster({ instances: 3 }) }));
  const pods5 = [pod(0, 'primary'), pod(1, 'replica'), pod(2, 'replica'), pod(3, 'replica'), pod(4, 'replica')];
  const marks = (actions: ReconcileAction[]) =>
    actions.flatMap((a) =>
      a.type === 'mark-removed' ? [`mark ${a.member}`] : a.type === 'unmark-removed' ? [`unmark ${a.member}`] : [],
    );
  const order = (actions: ReconcileAction[]) =>
    kinds(actions).filter((k) => k === 'mark-removed' || k === 'unmark-removed' || k.endsWith('StatefulSet/demo'));

  it('marks the members a scale-down removes, before the StatefulSet shrinks', () => {
    const actions = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 3 }),
        objects: at5(),
        pods: pods5,
        leader: { member: 'demo-0', term: 2 },
        removedMembers: [],
      }),
    );
    expect(marks(actions)).toEqual(['mark demo-3', 'mark demo-4']);
    expect(order(actions)).toEqual(['mark-removed', 'mark-removed', 'update StatefulSet/demo']);
    expect(actions).toContainEqual({
      type: 'mark-removed',
      member: 'demo-3',
      reason: 'scaled down from 5 to 3 instances',
    });
  });

  it('marks nothing twice, nor a member the StatefulSet keeps (the primary above the new size)', () => {
    const marked = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 3 }),
        objects: at5(),
        pods: pods5,
        leader: { member: 'demo-0', term: 2 },
        removedMembers: ['demo-3', 'demo-4'],
      }),
    );
    expect(marks(marked)).toEqual([]);
    const primaryHigh = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 3 }),
        objects: at5(),
        pods: pods5,
        leader: { member: 'demo-4', term: 2 },
        removedMembers: [],
      }),
    );
    expect(marks(primaryHigh)).toEqual([]); // the StatefulSet keeps 5 while it switches over
    const primary3 = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 1 }),
        objects: at5(),
        pods: pods5,
        leader: { member: 'demo-3', term: 2 },
        removedMembers: [],
      }),
    );
    expect(marks(primary3)).toEqual(['mark demo-4']); // 5 → 4, demo-3 leads
  });

  it('takes the marks off members wanted again before the StatefulSet grows', () => {
    const actions = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 5 }),
        objects: at3(),
        pods: pods5.slice(0, 3),
        leader: { member: 'demo-0', term: 2 },
        removedMembers: ['demo-4', 'demo-3', 'demo-7'],
      }),
    );
    expect(marks(actions)).toEqual(['unmark demo-3', 'unmark demo-4']); // demo-7 stays removed
    expect(order(actions)).toEqual(['unmark-removed', 'unmark-removed', 'update StatefulSet/demo']);
    // A mark below the current size (a scale-down undone before it was applied) goes too.
    const undone = decideReconcile(
      snapshot({
        objects: at3(),
        pods: pods5.slice(0, 3),
        leader: { member: 'demo-0', term: 2 },
        removedMembers: ['demo-2'],
      }),
    );
    expect(marks(undone)).toEqual(['unmark demo-2']);
  });

  it('neither reads nor writes marks while etcd is unreadable or the operator keeps none', () => {
    const base = {
      cluster: cluster({ instances: 3 }),
      objects: at5(),
      pods: pods5,
      leader: { member: 'demo-0', term: 2 },
    };
    expect(marks(decideReconcile(snapshot({ ...base, removedMembers: null })))).toEqual([]);
    expect(marks(decideReconcile(snapshot(base)))).toEqual([]);
    expect(
      marks(
        decideReconcile(snapshot({ ...base, leader: null, leaderReadError: 'etcd unreachable', removedMembers: [] })),
      ),
    ).toEqual([]);
  });

  it('never marks a member below the size it gives the StatefulSet', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 9 }),
        fc.option(fc.integer({ min: 0, max: 8 })),
        (from, to, leaderOrdinal) => {
          const objects = created(snapshot({ cluster: cluster({ instances: from }) }));
          const actions = decideReconcile(
            snapshot({
              cluster: cluster({ instances: to }),
              objects,
              pods: Array.from({ length: from }, (_, i) => pod(i)),
              leader: leaderOrdinal === null ? null : { member: `demo-${leaderOrdinal}`, term: 2 },
              removedMembers: [],
            }),
          );
          const size = stsOf(actions)?.spec.replicas ?? from;
          for (const a of actions)
            if (a.type === 'mark-removed') {
              expect(Number(a.member.slice(5))).toBeGreaterThanOrEqual(size);
              expect(a.member).not.toBe(leaderOrdinal === null ? undefined : `demo-${leaderOrdinal}`);
            }
        },
      ),
    );
  });
});

describe('decideReconcile: rolling updates (OnDelete)', () => {
  const objectsAt = (updateRevision: string | undefined, observedGeneration = 2, replicas = 3): KubeObject[] =>
    created(snapshot({ cluster: cluster({ instances: replicas }) })).map((o) =>
      o.kind === 'StatefulSet'
        ? {
            ...o,
            metadata: { ...o.metadata, generation: 2 },
            status: { replicas, observedGeneration, ...(updateRevision ? { updateRevision } : {}) },
          }
        : o,
    );
  const rpod = (ordinal: number, revision: string | undefined, extra: Partial<ObservedPod> = {}): ObservedPod => ({
    name: `demo-${ordinal}`,
    uid: `uid-demo-${ordinal}-${revision}`,
    labels: revision ? { 'controller-revision-hash': revision } : {},
    ready: true,
    deleting: false,
    ...extra,
  });
  /** A round of a cluster whose previous round saw `term` (the status's term). */
  const round = (
    pods: ObservedPod[],
    leader: { member: string; term: number } | null = { member: 'demo-0', term: 2 },
    more: Partial<ReconcileSnapshot> = {},
    statusTerm = leader?.term,
  ) =>
    decideReconcile(
      snapshot({
        cluster: cluster(
          {},
          { status: { phase: 'Healthy', ...(statusTerm !== undefined ? { term: statusTerm } : {}) } },
        ),
        objects: objectsAt('new'),
        pods,
        leader,
        ...more,
      }),
    );
  const deletes = (actions: ReconcileAction[]) =>
    actions.filter((a): a is Extract<ReconcileAction, { type: 'delete-pod' }> => a.type === 'delete-pod');
  const updated = (actions: ReconcileAction[]) => statusOf(actions)?.conditions?.find((c) => c.type === 'Updated');
  const events = (actions: ReconcileAction[]) =>
    actions.flatMap((a) => (a.type === 'event' ? [`${a.eventType} ${a.reason}: ${a.message}`] : []));
  const old3 = () => [rpod(0, 'old'), rpod(1, 'old'), rpod(2, 'old')];

  it('deletes one outdated replica per round, the highest ordinal first, never the primary', () => {
    const actions = round(old3());
    expect(deletes(actions)).toEqual([
      { type: 'delete-pod', pod: 'demo-2', uid: 'uid-demo-2-old', reason: 'rolling update to revision new' },
    ]);
    expect(events(actions)).toContain('Normal RollingUpdate: deleting pod demo-2 (revision old → new)');
    expect(updated(actions)).toMatchObject({ status: 'False', reason: 'RollingUpdate' });
    expect(updated(actions)!.message).toContain('deleting pod demo-2 (revision old → new)');
    const next = round([rpod(0, 'old'), rpod(1, 'old'), rpod(2, 'new')]);
    expect(deletes(next).map((a) => a.pod)).toEqual(['demo-1']);
  });

  it('never deletes the primary while it leads: it requests a switchover to a ready, updated replica', () => {
    for (const primary of [0, 1, 2]) {
      const pods = [0, 1, 2].map((i) => rpod(i, i === primary ? 'old' : 'new'));
      const actions = round(pods, { member: `demo-${primary}`, term: 5 });
      expect(deletes(actions)).toEqual([]);
      const others = [0, 1, 2].filter((i) => i !== primary).map((i) => `demo-${i}`);
      expect(actions).toContainEqual({
        type: 'request-switchover',
        from: `demo-${primary}`,
        candidates: others,
        reason: 'rolling update of the primary to revision new',
      });
      expect(events(actions)).toContain(
        `Normal SwitchoverRequested: Switchover requested to ${others[0]} to update the primary`,
      );
      expect(updated(actions)).toMatchObject({ status: 'False', reason: 'SwitchoverRequested' });
    }
  });

  it('repeats the switchover request each round but its event only once', () => {
    const pods = [rpod(0, 'old'), rpod(1, 'new'), rpod(2, 'new')];
    const first = round(pods);
    const condition = updated(first)!;
    const again = decideReconcile(
      snapshot({
        cluster: cluster({}, { status: { phase: 'Healthy', term: 2, conditions: [condition] } }),
        objects: objectsAt('new'),
        pods,
        leader: { member: 'demo-0', term: 2 },
      }),
    );
    expect(kinds(again)).toContain('request-switchover');
    expect(events(again)).toEqual([]);
  });

  it('offers only updated replicas as switchover candidates, and waits when there is none', () => {
    // demo-2 runs a revision that is neither (an update superseded mid-way): it is
    // outdated, so it is deleted first; the primary is never the one deleted.
    const actions = round([rpod(0, 'old'), rpod(1, 'new'), rpod(2, 'older')]);
    expect(deletes(actions).map((a) => a.pod)).toEqual(['demo-2']);
    const single = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 1 }, { status: { term: 2 } }),
        objects: objectsAt('new', 2, 1),
        pods: [rpod(0, 'old')],
        leader: { member: 'demo-0', term: 2 },
      }),
    );
    expect(deletes(single)).toEqual([]);
    expect(kinds(single)).not.toContain('request-switchover');
    expect(updated(single)).toMatchObject({ status: 'False', reason: 'NoUpdatedReplica' });
    expect(updated(single)!.message).toContain('delete pod demo-0 by hand');
  });

  it("deletes the old primary's pod once the leader record names an updated member", () => {
    const actions = round([rpod(0, 'old'), rpod(1, 'new'), rpod(2, 'new')], { member: 'demo-1', term: 3 });
    expect(deletes(actions).map((a) => a.pod)).toEqual(['demo-0']);
    expect(kinds(actions)).not.toContain('request-switchover');
  });

  it('waits while any member pod is not ready, being deleted or missing (one pod down at a time)', () => {
    for (const pods of [
      [rpod(0, 'old'), rpod(1, 'old'), rpod(2, 'new', { ready: false })],
      [rpod(0, 'old'), rpod(1, 'old'), rpod(2, 'old', { deleting: true })],
      [rpod(0, 'old'), rpod(1, 'old')], // demo-2 deleted, not re-created yet
      [rpod(0, 'old', { ready: false }), rpod(1, 'old'), rpod(2, 'new')], // the primary itself
      // Only the primary is outdated, but an updated replica is not ready: no switchover
      // to the ready one either (the not-ready one counts as down).
      [rpod(0, 'old'), rpod(1, 'new', { ready: false }), rpod(2, 'new')],
    ]) {
      const actions = round(pods);
      expect(deletes(actions)).toEqual([]);
      expect(kinds(actions)).not.toContain('request-switchover');
      expect(updated(actions)).toMatchObject({ status: 'False', reason: 'WaitingForPods' });
    }
  });

  it('does nothing while the leader is unknown, etcd is unreadable or the leader just changed', () => {
    expect(updated(round(old3(), null))).toMatchObject({ reason: 'WaitingForPrimary' });
    expect(deletes(round(old3(), null))).toEqual([]);
    const unreadable = round(old3(), null, { leaderReadError: 'etcd unreachable' });
    expect(deletes(unreadable)).toEqual([]);
    expect(kinds(unreadable)).not.toContain('request-switchover');
    // The previous round saw term 2; a new term means a failover or switchover just
    // happened and the pods' readiness may predate it: look again first.
    const changed = round(old3(), { member: 'demo-1', term: 3 }, {}, 2);
    expect(deletes(changed)).toEqual([]);
    expect(updated(changed)).toMatchObject({ reason: 'WaitingForStableLeader' });
  });

  it('a failover during the update does not make it delete a second pod', () => {
    // demo-2 was deleted for the update; meanwhile the primary demo-0 failed and demo-1
    // was promoted. demo-0's pod may still look ready (probes lag), demo-2 is missing.
    const during = [rpod(0, 'old'), rpod(1, 'old')];
    for (const statusTerm of [2, 3])
      expect(deletes(round(during, { member: 'demo-1', term: 3 }, {}, statusTerm))).toEqual([]);
    // demo-2 is back with the new revision but not ready yet, demo-0's pod restarts.
    const back = [rpod(0, 'old', { ready: false }), rpod(1, 'old'), rpod(2, 'new', { ready: false })];
    expect(deletes(round(back, { member: 'demo-1', term: 3 }))).toEqual([]);
    // No leader while the election runs: nothing either.
    expect(deletes(round([rpod(0, 'old'), rpod(1, 'old'), rpod(2, 'new')], null))).toEqual([]);
  });

  it('waits for the StatefulSet controller to publish the revision of the current spec', () => {
    const stale = decideReconcile(
      snapshot({
        cluster: cluster({}, { status: { term: 2 } }),
        objects: objectsAt('new', 1),
        pods: old3(),
        leader: { member: 'demo-0', term: 2 },
      }),
    );
    expect(deletes(stale)).toEqual([]);
    expect(updated(stale)).toMatchObject({ reason: 'WaitingForStatefulSet' });
    // A spec change (a postgres parameter, the image) updates the template in this very
    // round: the observed revision describes the old template, so nothing is deleted.
    for (const spec of [
      { postgresParameters: { max_locks_per_transaction: '256' } },
      { image: 'example/member:17.2' },
    ]) {
      const changing = decideReconcile(
        snapshot({
          cluster: cluster(spec, { status: { term: 2 } }),
          objects: objectsAt('new'),
          pods: [rpod(0, 'new'), rpod(1, 'new'), rpod(2, 'new')],
          leader: { member: 'demo-0', term: 2 },
        }),
      );
      expect(kinds(changing)).toContain('update StatefulSet/demo');
      expect(deletes(changing)).toEqual([]);
      expect(updated(changing)).toMatchObject({ reason: 'WaitingForStatefulSet' });
    }
  });

  it('reports Updated True when every pod runs the update revision, and nothing without a revision', () => {
    const done = round([rpod(0, 'new'), rpod(1, 'new'), rpod(2, 'new')]);
    expect(updated(done)).toMatchObject({ status: 'True', reason: 'UpToDate', message: 'every pod runs revision new' });
    expect(deletes(done)).toEqual([]);
    const none = decideReconcile(
      snapshot({
        cluster: cluster({}, { status: { term: 2 } }),
        objects: objectsAt(undefined),
        pods: old3(),
        leader: { member: 'demo-0', term: 2 },
      }),
    );
    expect(updated(none)).toBeUndefined();
    expect(deletes(none)).toEqual([]);
  });

  it('waits while a scale-down switches over away from the primary', () => {
    const five = [0, 1, 2, 3, 4].map((i) => rpod(i, 'old'));
    const actions = decideReconcile(
      snapshot({
        cluster: cluster({ instances: 3 }, { status: { term: 2 } }),
        objects: objectsAt('new', 2, 5),
        pods: five,
        leader: { member: 'demo-4', term: 2 },
      }),
    );
    expect(deletes(actions)).toEqual([]);
    expect(actions.filter((a) => a.type === 'request-switchover')).toHaveLength(1);
  });

  it('a whole update, simulated round by round: one pod down at most, the leading primary never deleted', () => {
    // A small world: the StatefulSet re-creates a deleted pod (new revision, not ready),
    // which becomes ready a round later; a requested switchover moves the leader (term+1)
    // a round later; every round the status's term is what the decision last wrote.
    let pods: ObservedPod[] = old3();
    let leader = { member: 'demo-0', term: 2 };
    let statusTerm: number | undefined = 2;
    let conditions: readonly import('./pgha-cluster.js').Condition[] = [];
    let pendingSwitchover: string | null = null;
    const deleted: string[] = [];
    for (let i = 0; i < 40; i++) {
      const actions = decideReconcile(
        snapshot({
          cluster: cluster({}, { status: { phase: 'Healthy', term: statusTerm, conditions } }),
          objects: objectsAt('new'),
          pods,
          leader,
        }),
      );
      const status = statusOf(actions);
      if (status) {
        statusTerm = status.term;
        conditions = status.conditions ?? [];
      }
      // The world moves: pods come back ready, a switchover completes.
      pods = pods.map((p) => (p.ready ? p : { ...p, ready: true }));
      if (pendingSwitchover) {
        leader = { member: pendingSwitchover, term: leader.term + 1 };
        pendingSwitchover = null;
      }
      for (const a of actions) {
        if (a.type === 'delete-pod') {
          expect(a.pod).not.toBe(leader.member);
          deleted.push(a.pod);
          pods = pods.map((p) => (p.name === a.pod ? rpod(Number(a.pod.slice(5)), 'new', { ready: false }) : p));
        }
        if (a.type === 'request-switchover') pendingSwitchover = a.candidates[0]!;
      }
      expect(deletes(actions).length).toBeLessThanOrEqual(1);
      expect(pods.filter((p) => !p.ready).length).toBeLessThanOrEqual(1);
    }
    expect(deleted).toEqual(['demo-2', 'demo-1', 'demo-0']);
    expect(leader.member).toBe('demo-1');
    expect(pods.every((p) => p.labels['controller-revision-hash'] === 'new' && p.ready)).toBe(true);
    expect(conditions.find((c) => c.type === 'Updated')).toMatchObject({ status: 'True' });
  });
});

describe('decideReconcile: the generated credentials Secret', () => {
  const secretOf = (actions: ReconcileAction[]) =>
    (actions.find((a) => a.type === 'create-secret') as Extract<ReconcileAction, { type: 'create-secret' }> | undefined)
      ?.object as (KubeObject & { data: Record<string, string> }) | undefined;
  const decoded = (secret: { data: Record<string, string> }) =>
    Object.fromEntries(Object.entries(secret.data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));

  it('generates <name>-credentials before the StatefulSet when the spec names no Secret and none exists', () => {
    const actions = decideReconcile(snapshot({ credentialsSecretKeys: null }));
    expect(kinds(actions)).toEqual([
      'create-secret',
      'create ServiceAccount/demo',
      'create Service/demo',
      'create Service/demo-rw',
      'create Service/demo-ro',
      'create PodDisruptionBudget/demo',
      'create StatefulSet/demo',
      'update-status',
      'event',
    ]);
    expect(statusOf(actions)!.conditions).toContainEqual(
      expect.objectContaining({ type: 'CredentialsReady', status: 'True', reason: 'SecretGenerated' }),
    );
    expect(actions.at(-1)).toMatchObject({ type: 'event', eventType: 'Normal', reason: 'SecretGenerated' });
    const secret = secretOf(actions)!;
    expect(secret.metadata).toMatchObject({ name: 'demo-credentials', namespace: 'db' });
    expect(secret.metadata.labels).toMatchObject({ 'pgha.dev/generated': 'credentials', 'pgha.dev/cluster': 'demo' });
    // Not owned: it must outlive the cluster as long as retained PVCs need its passwords.
    expect(secret.metadata.ownerReferences).toBeUndefined();
    // The StatefulSet reads what was generated.
    const env = stsOf(actions)!.spec.template.spec.containers[0].env;
    expect(env).toContainEqual({
      name: 'PGHA_REPLICATION_PASSWORD',
      valueFrom: { secretKeyRef: { name: 'demo-credentials', key: 'replication-password' } },
    });
    // The application role comes from the Secret when it has one (optional: a
    // user-supplied Secret may not), as the agent's --app-user default.
    expect(env).toContainEqual({
      name: 'PGHA_APP_USER',
      valueFrom: { secretKeyRef: { name: 'demo-credentials', key: 'app-username', optional: true } },
    });
    expect(env).toContainEqual({
      name: 'PGHA_APP_PASSWORD',
      valueFrom: { secretKeyRef: { name: 'demo-credentials', key: 'app-password', optional: true } },
    });
  });

  it('draws every password from the injected random source, 24 bytes each, base64url, all different', () => {
    const data = decoded(secretOf(decideReconcile(snapshot({ credentialsSecretKeys: null })))!);
    expect(Object.keys(data).sort()).toEqual([
      'app-password',
      'app-username',
      'replication-password',
      'superuser-password',
    ]);
    expect(data['app-username']).toBe('app');
    const expected = (from: number) =>
      Buffer.from(Uint8Array.from({ length: 24 }, (_, i) => from + i)).toString('base64url');
    expect(data['superuser-password']).toBe(expected(1));
    expect(data['replication-password']).toBe(expected(25));
    expect(data['app-password']).toBe(expected(49));
    for (const key of ['superuser-password', 'replication-password', 'app-password'])
      expect(data[key]).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });

  it('never invents a Secret the spec names, even when it is the default name', () => {
    const actions = decideReconcile(snapshot({ cluster: cluster(named), credentialsSecretKeys: null }));
    expect(secretOf(actions)).toBeUndefined();
    expect(kinds(actions)).toEqual(['update-status', 'event']);
  });

  it('never touches an existing Secret: one that has the passwords is used as it is', () => {
    const actions = decideReconcile(
      snapshot({ credentialsSecretKeys: ['superuser-password', 'replication-password'] }),
    );
    expect(secretOf(actions)).toBeUndefined();
    expect(statusOf(actions)!.conditions).toContainEqual(
      expect.objectContaining({ type: 'CredentialsReady', status: 'True', reason: 'SecretFound' }),
    );
  });

  it('does not generate while the spec is invalid', () => {
    const actions = decideReconcile(snapshot({ cluster: cluster({ instances: 0 }), credentialsSecretKeys: null }));
    expect(secretOf(actions)).toBeUndefined();
  });
});

describe('decideReconcile: storage retention and postgres parameters', () => {
  it('maps storage.pvcRetention to the StatefulSet, Retain by default', () => {
    const sts = stsOf(
      decideReconcile(snapshot({ cluster: cluster({ storage: { pvcRetention: { whenDeleted: 'Delete' } } }) })),
    )!;
    expect(sts.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Delete', whenScaled: 'Retain' });
  });

  it('updates the retention policy of a running StatefulSet in place (it is not an immutable field)', () => {
    const objects = created(snapshot());
    const actions = decideReconcile(
      snapshot({ objects, cluster: cluster({ storage: { pvcRetention: { whenScaled: 'Delete' } } }) }),
    );
    expect(kinds(actions)).toContain('update StatefulSet/demo');
    expect(stsOf(actions)!.spec.persistentVolumeClaimRetentionPolicy).toEqual({
      whenDeleted: 'Retain',
      whenScaled: 'Delete',
    });
    expect(JSON.stringify(statusOf(actions))).not.toContain('ImmutableFieldChanged');
  });

  it('passes postgresParameters to the agent as --postgres-parameter, $ escaped from the kubelet', () => {
    const [container] = stsOf(
      decideReconcile(
        snapshot({ cluster: cluster({ postgresParameters: { work_mem: '64MB', search_path: '"$user", public' } }) }),
      ),
    )!.spec.template.spec.containers;
    expect(container.args).toEqual(
      expect.arrayContaining([
        '--postgres-parameter=work_mem=64MB',
        '--postgres-parameter=search_path="$$user", public',
      ]),
    );
  });

  it('refuses a parameter pgha owns with SpecValid=False, changing nothing', () => {
    const objects = created(snapshot());
    for (const [name, value] of [
      ['port', '5433'],
      ['wal_level', 'logical'],
      ['synchronous_standby_names', '*'],
      ['bad name', '1'],
    ]) {
      const actions = decideReconcile(
        snapshot({ objects, cluster: cluster({ postgresParameters: { [name as string]: value } }) }),
      );
      expect(kinds(actions)).toEqual(['update-status', 'event']);
      expect(statusOf(actions)).toMatchObject({ phase: 'Failed' });
      expect(JSON.stringify(statusOf(actions))).toContain('spec.postgresParameters');
    }
  });
});

describe('decideRoleLabels', () => {
  it('labels the primary and the replicas of a fresh cluster', () => {
    expect(decideRoleLabels([pod(0), pod(1)], 'demo-0')).toEqual([
      { type: 'label-pod', pod: 'demo-0', role: 'primary' },
      { type: 'label-pod', pod: 'demo-1', role: 'replica' },
    ]);
  });

  it('moves the primary label old-primary-first: the new primary is labelled only after the old label is gone', () => {
    const first = decideRoleLabels([pod(0, 'primary'), pod(1, 'replica')], 'demo-1');
    expect(first).toEqual([{ type: 'label-pod', pod: 'demo-0', role: 'replica' }]);
    const second = decideRoleLabels([pod(0, 'replica'), pod(1, 'replica')], 'demo-1');
    expect(second).toEqual([{ type: 'label-pod', pod: 'demo-1', role: 'primary' }]);
  });

  it('takes the label off every pod when there is no primary', () => {
    expect(decideRoleLabels([pod(0, 'primary'), pod(1, 'replica')], null)).toEqual([
      { type: 'label-pod', pod: 'demo-0', role: 'replica' },
    ]);
  });

  it('never lets -rw select two pods over any sequence of leaders (applying each round)', () => {
    let pods = [pod(0), pod(1), pod(2)];
    const leaders = ['demo-0', 'demo-2', null, 'demo-1', 'demo-1', 'demo-0', 'demo-2', 'demo-2'];
    for (const leader of leaders) {
      for (const a of decideRoleLabels(pods, leader)) {
        if (a.type !== 'label-pod') continue;
        pods = pods.map((p) => (p.name === a.pod ? { ...p, labels: { ...p.labels, [roleLabel]: a.role } } : p));
        expect(pods.filter((p) => p.labels[roleLabel] === 'primary').length).toBeLessThanOrEqual(1);
      }
    }
    // after two quiet rounds with the same leader, it alone is labelled primary
    expect(pods.filter((p) => p.labels[roleLabel] === 'primary').map((p) => p.name)).toEqual(['demo-2']);
  });

  it('leaves pods being deleted alone', () => {
    expect(decideRoleLabels([pod(0, 'primary', { deleting: true }), pod(1)], 'demo-1')).toEqual([
      { type: 'label-pod', pod: 'demo-1', role: 'primary' },
    ]);
  });
});

describe('the failover controller condition', () => {
  const unreachable = {
    phase: 'unreachable',
    endpoints: ['http://etcd:2379'],
    error: 'cannot reach etcd at http://etcd:2379',
    retryInMillis: 1000,
  } as const;
  const conditionOf = (actions: ReconcileAction[]) =>
    statusOf(actions)?.conditions?.find((c) => c.type === 'FailoverControllerReady');

  it('reports an unreachable etcd as FailoverControllerReady False / EtcdUnreachable with a Warning event', () => {
    const actions = decideReconcile(snapshot({ failoverController: unreachable }));
    expect(conditionOf(actions)).toMatchObject({
      status: 'False',
      reason: 'EtcdUnreachable',
      message: expect.stringContaining('cannot reach etcd at http://etcd:2379'),
    });
    expect(actions).toContainEqual(
      expect.objectContaining({ type: 'event', eventType: 'Warning', reason: 'EtcdUnreachable' }),
    );
  });

  it('sends the event once, and reports the controller ready once it runs', () => {
    const first = decideReconcile(snapshot({ failoverController: unreachable }));
    const reported = cluster({}, { status: statusOf(first) });
    const again = decideReconcile(snapshot({ cluster: reported, failoverController: unreachable }));
    expect(again.filter((a) => a.type === 'event')).toEqual([]);
    const running = decideReconcile(
      snapshot({
        cluster: reported,
        failoverController: { phase: 'running', endpoints: ['http://etcd:2379'], active: true, problem: null },
      }),
    );
    expect(conditionOf(running)).toMatchObject({ status: 'True', reason: 'Active' });
    expect(running.filter((a) => a.type === 'event')).toEqual([]);
  });

  it('has no such condition when the operator runs no controllers', () => {
    expect(conditionOf(decideReconcile(snapshot()))).toBeUndefined();
  });
});

describe('an unreadable leader record (etcd unreachable)', () => {
  it('keeps the role labels and the last known primary, and reports Ready False / LeaderUnknown', () => {
    const first = snapshot();
    const objects = created(first);
    const reported = cluster({}, { status: { phase: 'Healthy', primary: 'demo-1', term: 4 } });
    const actions = decideReconcile(
      snapshot({
        cluster: reported,
        objects,
        pods: [pod(0, 'replica'), pod(1, 'primary'), pod(2)],
        leader: null,
        leaderReadError: 'cannot reach etcd',
      }),
    );
    expect(actions.filter((a) => a.type === 'label-pod')).toEqual([]); // -rw keeps its pod
    const status = statusOf(actions);
    expect(status).toMatchObject({ phase: 'Degraded', primary: 'demo-1', term: 4 });
    expect(status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'LeaderUnknown',
    });
  });
});
