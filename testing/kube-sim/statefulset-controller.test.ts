/**
 * The StatefulSet controller: its decision, pure (literal snapshots built with small
 * override factories, the actions compared by kind and name), then the shell with
 * the volume controller against the real test API server and a stub kubelet.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from '../kube-api/api-server.js';
import { apiCaller, pollUntil } from '../kube-api/test-client.js';
import type { PersistentVolumeClaim, Pod } from './objects.js';
import {
  type ControllerRevision,
  decideStatefulSet,
  type StatefulSet,
  type StatefulSetAction,
  StatefulSetController,
  type StatefulSetSnapshot,
} from './statefulset-controller.js';
import { startStubKubelet } from './stub-kubelet.js';
import { VolumeController } from './volume-controller.js';
import { volumeDir } from './volumes.js';

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
    const five = (_set: StatefulSet, rev: ControllerRevision) => ({
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

  it('counts a hash collision in status.collisionCount and then names the revision with the count', () => {
    const set = statefulSet();
    const wanted = revisionOf(set);
    const squatter: ControllerRevision = {
      ...wanted,
      data: { spec: { template: { metadata: { labels: { x: 'y' } } } } },
    };
    const actions = decideStatefulSet(snapshot(set, { revisions: [squatter] }));
    expect(actions).toEqual([{ type: 'update-status', status: { collisionCount: 1 } }]);
    const counted = statefulSet(set.spec, { collisionCount: 1 });
    const create = decideStatefulSet(snapshot(counted, { revisions: [squatter] })).find(
      (a) => a.type === 'create-revision',
    );
    expect(create?.type === 'create-revision' && create.revision.metadata.name).not.toBe(wanted.metadata.name);
    expect(create?.type === 'create-revision' && create.revision.revision).toBe(2);
  });

  it('deletes the oldest revisions beyond revisionHistoryLimit that no pod uses', () => {
    const set = statefulSet({ replicas: 1, revisionHistoryLimit: 1 });
    const rev = revisionOf(set, 4);
    const old = (n: number): ControllerRevision => ({
      ...rev,
      metadata: { ...rev.metadata, name: `db-old${n}` },
      revision: n,
      data: { spec: { template: { metadata: { labels: { n: String(n) } } } } },
    });
    const pods = [pod(0, 'db-old1')]; // still runs revision 1
    const actions = decideStatefulSet(
      snapshot(set, { revisions: [old(1), old(2), old(3), rev], pods, claims: [claim(0)] }),
    );
    expect(actions.filter((a) => a.type === 'delete-revision')).toEqual([{ type: 'delete-revision', name: 'db-old2' }]);
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

// ---- the shell, against the real test API server -------------------------------------------

describe('StatefulSetController against the test API server', () => {
  let api: KubeApiServer;
  let stateDir: string;
  let stopKubelet: () => Promise<void>;
  let sts: StatefulSetController;
  let volumes: VolumeController;
  const held = new Set<string>();
  const unready = new Set<string>();
  const logs: string[] = [];
  const log = (line: string) => logs.push(line);
  const call = apiCaller(() => api.url);
  const apps = '/apis/apps/v1/namespaces/default/statefulsets';
  const core = '/api/v1/namespaces/default';
  const context = () => logs.slice(-30).join('\n');
  const until = <T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean) =>
    pollUntil(what, read, ok, { millis: 10_000, context });

  beforeAll(async () => {
    api = await KubeApiServer.start();
    stateDir = await mkdtemp(join(tmpdir(), 'pgha-sts-'));
    stopKubelet = startStubKubelet({
      apiUrl: api.url,
      stateDir,
      held,
      log,
      unready: (p) => unready.has(p.metadata.name),
    });
    sts = StatefulSetController.start({ apiUrl: api.url, log });
    volumes = VolumeController.start({ apiUrl: api.url, stateDir, log });
  });
  afterAll(async () => {
    await Promise.all([sts?.stop(), volumes?.stop(), stopKubelet?.()]);
    await api?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  const manifest = (
    name: string,
    retention?: { whenDeleted: string; whenScaled: string },
    overrides: Record<string, unknown> = {},
  ) => ({
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name },
    spec: {
      replicas: 3,
      serviceName: name,
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'OnDelete' },
      ...(retention ? { persistentVolumeClaimRetentionPolicy: retention } : {}),
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'main', image: 'v1' }] } },
      volumeClaimTemplates: [
        {
          metadata: { name: 'data' },
          spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
        },
      ],
      ...overrides,
    },
  });
  const podsOf = async (name: string) =>
    (await call('GET', `${core}/pods?labelSelector=app%3D${name}`)).body.items as Pod[];
  const claimsOf = async (name: string) =>
    ((await call('GET', `${core}/persistentvolumeclaims`)).body.items as PersistentVolumeClaim[]).filter((c) =>
      c.metadata.name.startsWith(`data-${name}-`),
    );
  const names = (objects: { metadata: { name: string } }[]) => objects.map((o) => o.metadata.name).sort();
  const statusOfSet = async (name: string) => (await call('GET', `${apps}/${name}`)).body.status ?? {};
  /** Resolves once the controller finished `n` more passes (each pass starts by listing StatefulSets). */
  const passes = async (n: number) => {
    const count = () =>
      api.requests.filter((r) => r.method === 'GET' && r.path === '/apis/apps/v1/statefulsets').length;
    const target = count() + n + 1; // +1: the pass in flight may have listed before the change being tested
    await until(
      `${n} controller passes`,
      async () => count(),
      (c) => c >= target,
    );
  };
  const scale = (name: string, replicas: number) =>
    call('PATCH', `${apps}/${name}/scale`, { spec: { replicas } }, 'application/merge-patch+json');
  const running = (pods: Pod[], count: number) =>
    pods.length === count && pods.every((p) => p.status?.phase === 'Running' && !p.metadata.deletionTimestamp);

  async function createAndWait(name: string, retention?: { whenDeleted: string; whenScaled: string }) {
    expect((await call('POST', apps, manifest(name, retention))).status).toBe(201);
    await until(
      `3 ready pods of ${name}`,
      () => statusOfSet(name),
      (s) => s.readyReplicas === 3,
    );
    return podsOf(name);
  }

  it('creates ordinal pods with bound claims and re-creates a deleted pod, once gone, on the same claim', async () => {
    const pods = await createAndWait('web');
    expect(names(pods)).toEqual(['web-0', 'web-1', 'web-2']);
    for (const p of pods) {
      expect(p.spec?.hostname).toBe(p.metadata.name);
      expect(p.spec?.subdomain).toBe('web');
      expect(p.spec?.volumes).toEqual([
        { name: 'data', persistentVolumeClaim: { claimName: `data-${p.metadata.name}` } },
      ]);
    }
    const claims = await until(
      '3 bound claims',
      () => claimsOf('web'),
      (cs) => cs.filter((c) => c.status?.phase === 'Bound').length === 3,
    );
    expect(names(claims)).toEqual(['data-web-0', 'data-web-1', 'data-web-2']);
    expect(claims.every((c) => c.metadata.ownerReferences === undefined)).toBe(true); // Retain
    await writeFile(join(volumeDir(stateDir, 'default', 'data-web-1'), 'PG_VERSION'), '17');

    const old = pods.find((p) => p.metadata.name === 'web-1')!;
    held.add('web-1');
    expect((await call('DELETE', `${core}/pods/web-1`)).status).toBe(200);
    await passes(3);
    const during = (await podsOf('web')).find((p) => p.metadata.name === 'web-1');
    expect(during?.metadata.uid).toBe(old.metadata.uid); // still the old one, going
    expect(during?.metadata.deletionTimestamp).toBeDefined();
    held.delete('web-1');
    const back = await until(
      'a new web-1 running',
      () => podsOf('web'),
      (ps) => running(ps, 3) && ps.some((p) => p.metadata.name === 'web-1' && p.metadata.uid !== old.metadata.uid),
    );
    const web1 = back.find((p) => p.metadata.name === 'web-1')!;
    expect(web1.spec?.volumes?.[0]?.persistentVolumeClaim?.claimName).toBe('data-web-1');
    const claimAfter = (await claimsOf('web')).find((c) => c.metadata.name === 'data-web-1');
    expect(claimAfter?.metadata.uid).toBe(claims.find((c) => c.metadata.name === 'data-web-1')?.metadata.uid);
    expect(await readFile(join(volumeDir(stateDir, 'default', 'data-web-1'), 'PG_VERSION'), 'utf8')).toBe('17');
  });

  for (const [policy, kept] of [
    ['Retain', true],
    ['Delete', false],
  ] as const) {
    it(`scales 3→5→3: pods 3 and 4 go, their claims ${kept ? 'stay' : 'go with their directories'} under whenScaled ${policy}`, async () => {
      const name = `scale-${policy.toLowerCase()}`;
      await createAndWait(name, { whenDeleted: 'Retain', whenScaled: policy });
      expect((await scale(name, 5)).status).toBe(200);
      await until(
        '5 running pods',
        () => podsOf(name),
        (ps) => running(ps, 5),
      );
      await until(
        '5 bound claims',
        () => claimsOf(name),
        (cs) => cs.filter((c) => c.status?.phase === 'Bound').length === 5,
      );
      for (const i of [3, 4]) await writeFile(join(volumeDir(stateDir, 'default', `data-${name}-${i}`), 'x'), 'x');
      expect((await scale(name, 3)).status).toBe(200);
      const pods = await until(
        '3 pods left',
        () => podsOf(name),
        (ps) => ps.length === 3,
      );
      expect(names(pods)).toEqual([`${name}-0`, `${name}-1`, `${name}-2`]);
      const expected = kept ? [0, 1, 2, 3, 4] : [0, 1, 2];
      const claims = await until(
        `claims ${expected}`,
        () => claimsOf(name),
        (cs) => cs.length === expected.length,
      );
      expect(names(claims)).toEqual(expected.map((i) => `data-${name}-${i}`));
      if (!kept)
        await until(
          'the condemned claims\u2019 directories removed',
          async () => [3, 4].map((i) => existsSync(volumeDir(stateDir, 'default', `data-${name}-${i}`))),
          (exists) => exists.every((e) => !e),
        );
      else {
        await passes(3);
        expect(existsSync(join(volumeDir(stateDir, 'default', `data-${name}-4`), 'x'))).toBe(true);
      }
      await until(
        'status replicas 3',
        () => statusOfSet(name),
        (s) => s.replicas === 3 && s.readyReplicas === 3,
      );
    });
  }

  it('OnDelete: a template change deletes no pod; deleted pods return on the new revision; currentRevision follows', async () => {
    const pods = await createAndWait('ondelete');
    const before = await statusOfSet('ondelete');
    expect(before.currentRevision).toBe(before.updateRevision);
    const set = (await call('GET', `${apps}/ondelete`)).body;
    set.spec.template.spec.containers[0].image = 'v2';
    expect((await call('PUT', `${apps}/ondelete`, set)).status).toBe(200);
    const changed = await until(
      'a new updateRevision',
      () => statusOfSet('ondelete'),
      (s) => s.updateRevision !== before.updateRevision,
    );
    expect(changed.currentRevision).toBe(before.currentRevision);
    await passes(3);
    expect((await podsOf('ondelete')).map((p) => p.metadata.uid).sort()).toEqual(
      pods.map((p) => p.metadata.uid).sort(),
    );
    expect(
      (await call('GET', '/apis/apps/v1/namespaces/default/controllerrevisions')).body.items
        .filter((r: ControllerRevision) => r.metadata.name.startsWith('ondelete-'))
        .map((r: ControllerRevision) => r.revision)
        .sort(),
    ).toEqual([1, 2]);

    for (const victim of ['ondelete-0', 'ondelete-1', 'ondelete-2']) {
      const status = await statusOfSet('ondelete');
      expect(status.currentRevision).toBe(before.currentRevision); // not every pod runs the new one yet
      expect((await call('DELETE', `${core}/pods/${victim}`)).status).toBe(200);
      const back = await until(
        `${victim} back on the new revision`,
        () => podsOf('ondelete'),
        (ps) =>
          running(ps, 3) &&
          ps.find((p) => p.metadata.name === victim)?.metadata.labels?.['controller-revision-hash'] ===
            changed.updateRevision,
      );
      expect(back.find((p) => p.metadata.name === victim)?.spec?.containers).toEqual([{ name: 'main', image: 'v2' }]);
    }
    const done = await until(
      'currentRevision moved',
      () => statusOfSet('ondelete'),
      (s) => s.currentRevision === changed.updateRevision,
    );
    expect(done).toMatchObject({ currentReplicas: 3, updatedReplicas: 3, readyReplicas: 3, replicas: 3 });
  });

  for (const [policy, kept] of [
    ['Retain', true],
    ['Delete', false],
  ] as const) {
    it(`deleting the StatefulSet takes its pods; whenDeleted ${policy} ${kept ? 'keeps the claims' : 'takes the claims and their directories'}`, async () => {
      const name = `gone-${policy.toLowerCase()}`;
      await createAndWait(name, { whenDeleted: policy, whenScaled: 'Retain' });
      await until(
        '3 bound claims',
        () => claimsOf(name),
        (cs) => cs.filter((c) => c.status?.phase === 'Bound').length === 3,
      );
      await until(
        '3 volume directories',
        async () => [0, 1, 2].map((i) => existsSync(volumeDir(stateDir, 'default', `data-${name}-${i}`))),
        (e) => e.every(Boolean),
      );
      expect((await call('DELETE', `${apps}/${name}`)).status).toBe(200);
      await until(
        'no pods',
        () => podsOf(name),
        (ps) => ps.length === 0,
      );
      if (kept) {
        await passes(3);
        expect(names(await claimsOf(name))).toEqual([0, 1, 2].map((i) => `data-${name}-${i}`));
        expect([0, 1, 2].every((i) => existsSync(volumeDir(stateDir, 'default', `data-${name}-${i}`)))).toBe(true);
      } else {
        await until(
          'no claims',
          () => claimsOf(name),
          (cs) => cs.length === 0,
        );
        await until(
          'no volume directories',
          async () => [0, 1, 2].map((i) => existsSync(volumeDir(stateDir, 'default', `data-${name}-${i}`))),
          (e) => e.every((x) => !x),
        );
      }
      const revisions = (await call('GET', '/apis/apps/v1/namespaces/default/controllerrevisions')).body
        .items as ControllerRevision[];
      expect(revisions.filter((r) => r.metadata.name.startsWith(`${name}-`))).toEqual([]);
    });
  }
  it('OrderedReady with RollingUpdate: creates in order, each after the previous is Ready; rolls from the highest ordinal, one at a time', async () => {
    const name = 'ordered';
    unready.add(`${name}-0`);
    const spec = { podManagementPolicy: 'OrderedReady', updateStrategy: { type: 'RollingUpdate' } };
    expect((await call('POST', apps, manifest(name, undefined, spec))).status).toBe(201);
    await until(
      `${name}-0 running`,
      () => podsOf(name),
      (ps) => ps.some((p) => p.status?.phase === 'Running'),
    );
    await passes(3);
    expect(names(await podsOf(name))).toEqual([`${name}-0`]); // not Ready: nothing after it
    unready.delete(`${name}-0`);
    const before = await until(
      '3 ready',
      () => statusOfSet(name),
      (s) => s.readyReplicas === 3,
    );
    const steps = () =>
      logs
        .filter((l) => l.startsWith(`statefulset default/${name}: `) && / pod /.test(l))
        .map((l) => l.replace(/^.*: (create|delete) pod (\S+).*$/, '$1 $2'));
    expect(steps()).toEqual([`create ${name}-0`, `create ${name}-1`, `create ${name}-2`]);

    const set = (await call('GET', `${apps}/${name}`)).body;
    set.spec.template.spec.containers[0].image = 'v2';
    expect((await call('PUT', `${apps}/${name}`, set)).status).toBe(200);
    const after = await until(
      'the rolling update complete',
      () => statusOfSet(name),
      (s) =>
        s.updateRevision !== before.updateRevision && s.currentRevision === s.updateRevision && s.readyReplicas === 3,
    );
    expect(after).toMatchObject({ replicas: 3, updatedReplicas: 3, currentReplicas: 3 });
    expect(steps().slice(3)).toEqual([2, 1, 0].flatMap((i) => [`delete ${name}-${i}`, `create ${name}-${i}`]));
    const pods = await podsOf(name);
    expect(pods.map((p) => p.metadata.labels?.['controller-revision-hash'])).toEqual(
      [1, 2, 3].map(() => after.updateRevision),
    );
  });
});
