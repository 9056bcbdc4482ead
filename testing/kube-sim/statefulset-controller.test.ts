/**
 * The StatefulSet controller's decision, pure: literal snapshots built with small
 * override factories, the actions compared by kind and name.
 */
import { describe, expect, it } from 'vitest';
import type { PersistentVolumeClaim, Pod } from './objects.js';
import {
  type ControllerRevision,
  decideStatefulSet,
  type StatefulSet,
  type StatefulSetAction,
  type StatefulSetSnapshot,
} from './statefulset-controller.js';

const uid = 'sts-uid';
const ns = 'default';

function statefulSet(spec: Partial<StatefulSet['spec']> = {}, status?: StatefulSet['status']): StatefulSet {
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'db', namespace: ns, uid, generation: 1 },
    spec: {
      replicas: 3,
      serviceName: 'db',
      selector: { matchLabels: { app: 'db' } },
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'OnDelete' },
      template: { metadata: { labels: { app: 'db' } }, spec: { containers: [{ name: 'pg', image: 'v1' }] } },
      volumeClaimTemplates: [{ metadata: { name: 'data' }, spec: { accessModes: ['ReadWriteOnce'] } }],
      ...spec,
    },
    ...(status ? { status } : {}),
  };
}

/** The revision the first decision over `set` creates (name and data as the controller writes them). */
function revisionOf(set: StatefulSet, revision = 1): ControllerRevision {
  const created = decideStatefulSet(snapshot(set)).find((a) => a.type === 'create-revision');
  if (created?.type !== 'create-revision') throw new Error('no revision created');
  return {
    ...created.revision,
    metadata: { ...created.revision.metadata, uid: `rev-${revision}`, ownerReferences: [ownerRef()] },
    revision,
  };
}

const ownerRef = () => ({ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db', uid, controller: true });

function pod(
  ordinal: number,
  revision: string,
  options: { ready?: boolean; phase?: string; deleting?: boolean; readySince?: string } = {},
): Pod {
  const ready = options.ready ?? true;
  return {
    metadata: {
      name: `db-${ordinal}`,
      namespace: ns,
      uid: `pod-${ordinal}`,
      labels: { app: 'db', 'controller-revision-hash': revision },
      ownerReferences: [ownerRef()],
      ...(options.deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}),
    },
    spec: { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `data-db-${ordinal}` } }] },
    status: {
      phase: options.phase ?? (ready ? 'Running' : 'Pending'),
      conditions: [
        {
          type: 'Ready',
          status: ready ? 'True' : 'False',
          ...(options.readySince ? { lastTransitionTime: options.readySince } : {}),
        },
      ],
    },
  };
}

function claim(ordinal: number, overrides: Partial<PersistentVolumeClaim['metadata']> = {}): PersistentVolumeClaim {
  return {
    metadata: { name: `data-db-${ordinal}`, namespace: ns, uid: `pvc-${ordinal}`, ...overrides },
    spec: {},
    status: { phase: 'Bound' },
  };
}

function snapshot(set: StatefulSet, parts: Partial<StatefulSetSnapshot> = {}): StatefulSetSnapshot {
  return {
    statefulSet: set,
    pods: [],
    claims: [],
    revisions: [],
    nowMillis: Date.parse('2026-01-01T00:10:00Z'),
    ...parts,
  };
}

/** Actions as short strings: "create-pod db-0", "delete-pod db-4 (scale down)", "update-pvc-owner data-db-4 → Pod/db-4". */
function summary(actions: StatefulSetAction[]): string[] {
  return actions.flatMap((a) => {
    switch (a.type) {
      case 'create-pod':
        return [`create-pod ${a.pod.metadata.name}`];
      case 'delete-pod':
        return [`delete-pod ${a.name} (${a.reason})`];
      case 'create-pvc':
        return [`create-pvc ${a.claim.metadata.name}`];
      case 'update-pvc-owner':
        return [
          `update-pvc-owner ${a.claim.metadata.name} → ${a.ownerReferences.map((r) => `${r.kind}/${r.name}`).join(',') || 'none'}`,
        ];
      case 'create-revision':
      case 'update-revision':
      case 'delete-revision':
        return [a.type];
      case 'update-status':
        return []; // asserted separately
      default:
        return [`unexpected ${JSON.stringify(a)}`];
    }
  });
}

const statusOf = (actions: StatefulSetAction[]) => {
  const a = actions.find((x) => x.type === 'update-status');
  return a?.type === 'update-status' ? a.status : undefined;
};

describe('decideStatefulSet', () => {
  it('creates the first revision, then every claim before its pod, all at once under Parallel', () => {
    const set = statefulSet();
    expect(summary(decideStatefulSet(snapshot(set)))).toEqual([
      'create-revision',
      'create-pvc data-db-0',
      'create-pod db-0',
      'create-pvc data-db-1',
      'create-pod db-1',
      'create-pvc data-db-2',
      'create-pod db-2',
    ]);
  });

  it('builds the pod from the template: labels, owner, hostname, subdomain and the claim volume', () => {
    const set = statefulSet();
    const rev = revisionOf(set);
    const create = decideStatefulSet(snapshot(set, { revisions: [rev] })).find((a) => a.type === 'create-pod');
    if (create?.type !== 'create-pod') throw new Error('no pod created');
    expect(create.pod.metadata).toMatchObject({
      name: 'db-0',
      labels: {
        app: 'db',
        'statefulset.kubernetes.io/pod-name': 'db-0',
        'apps.kubernetes.io/pod-index': '0',
        'controller-revision-hash': rev.metadata.name,
      },
      ownerReferences: [{ kind: 'StatefulSet', name: 'db', uid, controller: true, blockOwnerDeletion: true }],
    });
    expect(create.pod.spec).toMatchObject({
      hostname: 'db-0',
      subdomain: 'db',
      containers: [{ name: 'pg', image: 'v1' }],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data-db-0' } }],
    });
    expect(rev.metadata.name).toMatch(/^db-[bcdfghjklmnpqrstvwxz2456789]+$/);
  });

  it('under OrderedReady creates one pod at a time, waiting for the previous one to be Running and Ready', () => {
    const set = statefulSet({ podManagementPolicy: 'OrderedReady' });
    const rev = revisionOf(set);
    const r = rev.metadata.name;
    const claims = [claim(0), claim(1)];
    expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev] })))).toEqual([
      'create-pvc data-db-0',
      'create-pod db-0',
    ]);
    const starting = snapshot(set, { revisions: [rev], pods: [pod(0, r, { ready: false })], claims });
    expect(summary(decideStatefulSet(starting))).toEqual([]);
    const ready = snapshot(set, { revisions: [rev], pods: [pod(0, r)], claims });
    expect(summary(decideStatefulSet(ready))).toEqual(['create-pod db-1']); // its claim exists: reused
  });

  it('under OrderedReady respects minReadySeconds before the next pod', () => {
    const set = statefulSet({ podManagementPolicy: 'OrderedReady', minReadySeconds: 30 });
    const rev = revisionOf(set);
    const r = rev.metadata.name;
    const justReady = pod(0, r, { readySince: '2026-01-01T00:09:50Z' }); // 10 s before now
    expect(
      summary(decideStatefulSet(snapshot(set, { revisions: [rev], pods: [justReady], claims: [claim(0)] }))),
    ).toEqual([]);
    const longReady = pod(0, r, { readySince: '2026-01-01T00:09:00Z' });
    expect(
      summary(decideStatefulSet(snapshot(set, { revisions: [rev], pods: [longReady], claims: [claim(0)] }))),
    ).toEqual(['create-pvc data-db-1', 'create-pod db-1']);
  });

  it('waits for a pod with a deletionTimestamp instead of re-creating it, and re-creates it once gone', () => {
    const set = statefulSet({ replicas: 2 });
    const rev = revisionOf(set);
    const r = rev.metadata.name;
    const claims = [claim(0), claim(1)];
    const going = snapshot(set, { revisions: [rev], pods: [pod(0, r, { deleting: true }), pod(1, r)], claims });
    expect(summary(decideStatefulSet(going))).toEqual([]);
    const gone = snapshot(set, { revisions: [rev], pods: [pod(1, r)], claims });
    expect(summary(decideStatefulSet(gone))).toEqual(['create-pod db-0']);
  });

  it('deletes a Failed or Succeeded pod (and re-creates it only once it is gone)', () => {
    const set = statefulSet({ replicas: 2 });
    const rev = revisionOf(set);
    const r = rev.metadata.name;
    const pods = [pod(0, r, { phase: 'Failed', ready: false }), pod(1, r, { phase: 'Succeeded', ready: false })];
    expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev], pods, claims: [claim(0), claim(1)] })))).toEqual(
      ['delete-pod db-0 (phase Failed)', 'delete-pod db-1 (phase Succeeded)'],
    );
  });

  it('does not create a pod whose claim is being deleted', () => {
    const set = statefulSet({ replicas: 1 });
    const rev = revisionOf(set);
    const deleting = claim(0, { deletionTimestamp: '2026-01-01T00:00:00Z' });
    expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev], claims: [deleting] })))).toEqual([]);
  });

  describe('scale down', () => {
    const five = (set: StatefulSet, rev: ControllerRevision) => ({
      revisions: [rev],
      pods: [0, 1, 2, 3, 4].map((i) => pod(i, rev.metadata.name)),
    });

    it('under Retain deletes the condemned pods and leaves their claims alone', () => {
      const set = statefulSet();
      const rev = revisionOf(set);
      const claims = [0, 1, 2, 3, 4].map((i) => claim(i));
      expect(summary(decideStatefulSet(snapshot(set, { ...five(set, rev), claims })))).toEqual([
        'delete-pod db-4 (scale down)',
        'delete-pod db-3 (scale down)',
      ]);
    });

    it('under whenScaled Delete hands each condemned claim to its pod before deleting the pod', () => {
      const set = statefulSet({
        persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Delete' },
      });
      const rev = revisionOf(set);
      const claims = [0, 1, 2, 3, 4].map((i) => claim(i));
      expect(summary(decideStatefulSet(snapshot(set, { ...five(set, rev), claims })))).toEqual([
        'update-pvc-owner data-db-4 → Pod/db-4',
        'delete-pod db-4 (scale down)',
        'update-pvc-owner data-db-3 → Pod/db-3',
        'delete-pod db-3 (scale down)',
      ]);
    });

    it('under both Delete replaces the set owner with the pod on condemned claims only', () => {
      const set = statefulSet({
        persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Delete', whenScaled: 'Delete' },
      });
      const rev = revisionOf(set);
      const bySet = [{ ...ownerRef(), controller: false, blockOwnerDeletion: true }];
      const claims = [0, 1, 2, 3, 4].map((i) => claim(i, { ownerReferences: bySet }));
      const actions = decideStatefulSet(snapshot(set, { ...five(set, rev), claims }));
      expect(summary(actions)).toEqual([
        'update-pvc-owner data-db-4 → Pod/db-4',
        'delete-pod db-4 (scale down)',
        'update-pvc-owner data-db-3 → Pod/db-3',
        'delete-pod db-3 (scale down)',
      ]);
      const update = actions[0];
      expect(update?.type === 'update-pvc-owner' && update.ownerReferences).toEqual([
        { apiVersion: 'v1', kind: 'Pod', name: 'db-4', uid: 'pod-4', controller: false, blockOwnerDeletion: true },
      ]);
    });

    it('under OrderedReady deletes from the highest ordinal, one at a time, waiting for it to go', () => {
      const set = statefulSet({ podManagementPolicy: 'OrderedReady' });
      const rev = revisionOf(set);
      const claims = [0, 1, 2, 3, 4].map((i) => claim(i));
      expect(summary(decideStatefulSet(snapshot(set, { ...five(set, rev), claims })))).toEqual([
        'delete-pod db-4 (scale down)',
      ]);
      const going = [0, 1, 2, 3]
        .map((i) => pod(i, rev.metadata.name))
        .concat(pod(4, rev.metadata.name, { deleting: true }));
      expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev], pods: going, claims })))).toEqual([]);
    });

    it('under OrderedReady does not scale down while a remaining pod is not Ready', () => {
      const set = statefulSet({ podManagementPolicy: 'OrderedReady' });
      const rev = revisionOf(set);
      const pods = [0, 1, 2, 3, 4].map((i) => pod(i, rev.metadata.name, { ready: i !== 1 }));
      const claims = [0, 1, 2, 3, 4].map((i) => claim(i));
      expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev], pods, claims })))).toEqual([]);
    });
  });

  describe('retention policy on existing claims', () => {
    it('whenDeleted Delete gives every claim the set as owner', () => {
      const set = statefulSet({
        replicas: 1,
        persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Delete', whenScaled: 'Retain' },
      });
      const rev = revisionOf(set);
      expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev] })))).toEqual([
        'create-pvc data-db-0',
        'create-pod db-0',
      ]);
      const create = decideStatefulSet(snapshot(set, { revisions: [rev] })).find((a) => a.type === 'create-pvc');
      expect(create?.type === 'create-pvc' && create.claim.metadata).toMatchObject({
        labels: { app: 'db' },
        ownerReferences: [{ kind: 'StatefulSet', uid, controller: false }],
      });
      const retained = snapshot(set, { revisions: [rev], pods: [pod(0, rev.metadata.name)], claims: [claim(0)] });
      expect(summary(decideStatefulSet(retained))).toEqual(['update-pvc-owner data-db-0 → StatefulSet/db']);
    });

    it('Retain leaves a claim without owners and removes a stale pod owner from a claim scaled back up', () => {
      const set = statefulSet({ replicas: 1 });
      const rev = revisionOf(set);
      const stale = claim(0, { ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: 'db-0', uid: 'old' }] });
      expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev], claims: [stale] })))).toEqual([
        'update-pvc-owner data-db-0 → none',
        'create-pod db-0',
      ]);
    });
  });

  describe('updates', () => {
    const v2 = (set: StatefulSet, extra: Partial<StatefulSet['spec']> = {}) =>
      statefulSet(
        {
          ...set.spec,
          template: { ...set.spec.template, spec: { containers: [{ name: 'pg', image: 'v2' }] } },
          ...extra,
        },
        set.status,
      );

    it('OnDelete: a template change makes a new update revision and deletes nothing; a missing pod gets the new one', () => {
      const v1set = statefulSet({}, { currentRevision: 'x', updateRevision: 'x' });
      const rev1 = revisionOf(v1set);
      const set = statefulSet(v2(v1set).spec, { ...v1set.status, currentRevision: rev1.metadata.name });
      const rev2 = revisionOf(set, 2);
      expect(rev2.metadata.name).not.toBe(rev1.metadata.name);
      const pods = [pod(0, rev1.metadata.name), pod(1, rev1.metadata.name), pod(2, rev1.metadata.name)];
      const claims = [claim(0), claim(1), claim(2)];
      const changed = decideStatefulSet(snapshot(set, { revisions: [rev1], pods, claims }));
      expect(summary(changed)).toEqual(['create-revision']);
      expect(statusOf(changed)).toMatchObject({
        currentRevision: rev1.metadata.name,
        updateRevision: rev2.metadata.name,
        currentReplicas: 3,
        updatedReplicas: 0,
      });
      const oneGone = decideStatefulSet(snapshot(set, { revisions: [rev1, rev2], pods: pods.slice(1), claims }));
      const create = oneGone.find((a) => a.type === 'create-pod');
      expect(create?.type === 'create-pod' && create.pod.metadata.labels?.['controller-revision-hash']).toBe(
        rev2.metadata.name,
      );
      expect(create?.type === 'create-pod' && create.pod.spec?.containers).toEqual([{ name: 'pg', image: 'v2' }]);
    });

    it('moves currentRevision once every pod runs the update revision and is Ready', () => {
      const set = statefulSet({}, { currentRevision: 'db-old', updateRevision: 'db-old' });
      const rev = revisionOf(set, 2);
      const r = rev.metadata.name;
      const claims = [claim(0), claim(1), claim(2)];
      const notReady = [pod(0, r), pod(1, r), pod(2, r, { ready: false })];
      const old: ControllerRevision = {
        ...rev,
        metadata: { ...rev.metadata, name: 'db-old' },
        revision: 1,
        data: { spec: { template: {} } },
      };
      expect(
        statusOf(decideStatefulSet(snapshot(set, { revisions: [old, rev], pods: notReady, claims }))),
      ).toMatchObject({
        currentRevision: 'db-old',
        updateRevision: r,
      });
      const ready = [pod(0, r), pod(1, r), pod(2, r)];
      expect(statusOf(decideStatefulSet(snapshot(set, { revisions: [old, rev], pods: ready, claims })))).toMatchObject({
        currentRevision: r,
        updateRevision: r,
        currentReplicas: 3,
        updatedReplicas: 3,
        readyReplicas: 3,
        replicas: 3,
        observedGeneration: 1,
      });
    });

    it('RollingUpdate deletes the highest-ordinal old pod, one at a time, only while every pod is Ready', () => {
      const v1set = statefulSet({ updateStrategy: { type: 'RollingUpdate' } });
      const rev1 = revisionOf(v1set);
      const set = statefulSet(v2(v1set).spec, { currentRevision: rev1.metadata.name });
      const rev2 = revisionOf(set, 2);
      const [o, n] = [rev1.metadata.name, rev2.metadata.name];
      const claims = [claim(0), claim(1), claim(2)];
      const revisions = [rev1, rev2];
      const run = (pods: Pod[]) => summary(decideStatefulSet(snapshot(set, { revisions, pods, claims })));
      expect(run([pod(0, o), pod(1, o), pod(2, o)])).toEqual(['delete-pod db-2 (update)']);
      expect(run([pod(0, o), pod(1, o), pod(2, o, { deleting: true })])).toEqual([]);
      expect(run([pod(0, o), pod(1, o), pod(2, n, { ready: false })])).toEqual([]);
      expect(run([pod(0, o), pod(1, o), pod(2, n)])).toEqual(['delete-pod db-1 (update)']);
      expect(run([pod(0, o, { ready: false }), pod(1, o), pod(2, n)])).toEqual([]);
    });

    it('RollingUpdate respects the partition: ordinals below it keep, and are re-created from, the current revision', () => {
      const v1set = statefulSet({ updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 2 } } });
      const rev1 = revisionOf(v1set);
      const set = statefulSet(v2(v1set).spec, { currentRevision: rev1.metadata.name });
      const rev2 = revisionOf(set, 2);
      const [o, n] = [rev1.metadata.name, rev2.metadata.name];
      const claims = [claim(0), claim(1), claim(2)];
      const revisions = [rev1, rev2];
      const run = (pods: Pod[]) => decideStatefulSet(snapshot(set, { revisions, pods, claims }));
      expect(summary(run([pod(0, o), pod(1, o), pod(2, n)]))).toEqual([]);
      const recreated = run([pod(1, o), pod(2, n)]).find((a) => a.type === 'create-pod');
      expect(recreated?.type === 'create-pod' && recreated.pod.metadata.labels?.['controller-revision-hash']).toBe(o);
      expect(recreated?.type === 'create-pod' && recreated.pod.spec?.containers).toEqual([{ name: 'pg', image: 'v1' }]);
    });

    it('a template changed back reuses its old revision, renumbered as the newest', () => {
      const set = statefulSet();
      const rev1 = revisionOf(set);
      const other: ControllerRevision = {
        ...rev1,
        metadata: { ...rev1.metadata, name: 'db-other' },
        revision: 2,
        data: { spec: { template: { metadata: { labels: { app: 'db' } } } } },
      };
      const actions = decideStatefulSet(snapshot(set, { revisions: [rev1, other] }));
      expect(actions[0]).toEqual({ type: 'update-revision', name: rev1.metadata.name, revision: 3 });
      expect(statusOf(actions)?.updateRevision).toBe(rev1.metadata.name);
    });
  });

  it('ignores pods it does not control and does nothing for a set being deleted', () => {
    const set = statefulSet({ replicas: 1 });
    const rev = revisionOf(set);
    const foreign = {
      ...pod(7, rev.metadata.name),
      metadata: { ...pod(7, rev.metadata.name).metadata, ownerReferences: [] },
    };
    const pods = [pod(0, rev.metadata.name), foreign];
    expect(summary(decideStatefulSet(snapshot(set, { revisions: [rev], pods, claims: [claim(0)] })))).toEqual([]);
    const deleting = { ...set, metadata: { ...set.metadata, deletionTimestamp: '2026-01-01T00:00:00Z' } };
    expect(decideStatefulSet(snapshot(deleting))).toEqual([]);
  });

  it('writes the status only when it changed', () => {
    const set = statefulSet({ replicas: 1 });
    const rev = revisionOf(set);
    const pods = [pod(0, rev.metadata.name)];
    const first = statusOf(decideStatefulSet(snapshot(set, { revisions: [rev], pods, claims: [claim(0)] })));
    expect(first).toEqual({
      observedGeneration: 1,
      replicas: 1,
      readyReplicas: 1,
      availableReplicas: 1,
      currentReplicas: 1,
      updatedReplicas: 1,
      currentRevision: rev.metadata.name,
      updateRevision: rev.metadata.name,
      collisionCount: 0,
    });
    const settled = { ...set, status: first };
    expect(decideStatefulSet(snapshot(settled, { revisions: [rev], pods, claims: [claim(0)] }))).toEqual([]);
  });
});
