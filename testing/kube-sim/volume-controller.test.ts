/**
 * The volume controller's decision, pure: binding, the pvc-protection finalizer
 * held while a pod uses the claim, and removal of a gone claim's directory. (The
 * shell is exercised with the StatefulSet controller's in
 * statefulset-controller.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import type { PersistentVolumeClaim, Pod } from './objects.js';
import { decideVolumes, type VolumeAction } from './volume-controller.js';

const protection = 'kubernetes.io/pvc-protection';

function claim(name: string, options: { deleting?: boolean; bound?: boolean; protected?: boolean } = {}) {
  return {
    metadata: {
      name,
      namespace: 'ns',
      uid: `uid-${name}`,
      ...(options.protected === false ? {} : { finalizers: [protection] }),
      ...(options.deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}),
    },
    spec: {},
    status: { phase: options.bound === false ? 'Pending' : 'Bound' },
  } satisfies PersistentVolumeClaim;
}

function pod(name: string, claimName: string, phase = 'Running', deleting = false): Pod {
  return {
    metadata: { name, namespace: 'ns', ...(deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
    spec: { volumes: [{ name: 'data', persistentVolumeClaim: { claimName } }] },
    status: { phase },
  };
}

const summary = (actions: VolumeAction[]) =>
  actions.map((a) => (a.type === 'remove-volume' ? `remove-volume ${a.claim}` : `${a.type} ${a.claim.metadata.name}`));

describe('decideVolumes', () => {
  it('protects a new claim, then binds it', () => {
    expect(
      summary(decideVolumes({ volumes: [], pods: [], claims: [claim('a', { protected: false, bound: false })] })),
    ).toEqual(['protect a']);
    expect(summary(decideVolumes({ volumes: [], pods: [], claims: [claim('a', { bound: false })] }))).toEqual([
      'bind a',
    ]);
    expect(summary(decideVolumes({ volumes: [], pods: [], claims: [claim('a')] }))).toEqual([]);
  });

  it('keeps a deleted claim while a pod that has not finished uses it, a going pod included', () => {
    const deleting = claim('a', { deleting: true });
    const volumes = [{ namespace: 'ns', claim: 'a' }];
    expect(decideVolumes({ volumes, claims: [deleting], pods: [pod('p', 'a')] })).toEqual([]);
    expect(decideVolumes({ volumes, claims: [deleting], pods: [pod('p', 'a', 'Running', true)] })).toEqual([]);
    expect(summary(decideVolumes({ volumes, claims: [deleting], pods: [pod('p', 'a', 'Failed')] }))).toEqual([
      'release a',
    ]);
    expect(summary(decideVolumes({ volumes, claims: [deleting], pods: [] }))).toEqual(['release a']);
  });

  it('removes the directory of a claim that is gone, and only that one', () => {
    const volumes = [
      { namespace: 'ns', claim: 'a' },
      { namespace: 'ns', claim: 'gone' },
      { namespace: 'other', claim: 'a' },
    ];
    expect(decideVolumes({ volumes, claims: [claim('a')], pods: [] })).toEqual([
      { type: 'remove-volume', namespace: 'ns', claim: 'gone' },
      { type: 'remove-volume', namespace: 'other', claim: 'a' },
    ]);
  });
});
