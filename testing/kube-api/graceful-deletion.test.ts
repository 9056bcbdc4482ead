/**
 * Graceful pod deletion in the test API server, as a real API server does it: a pod
 * bound to a node is only marked (its kubelet stops it, then deletes it with
 * gracePeriodSeconds=0); an unbound pod goes at once. No kubelet runs here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from './api-server.js';
import { apiCaller } from './test-client.js';

let api: KubeApiServer;
const call = apiCaller(() => api.url);
const pods = '/api/v1/namespaces/default/pods';

beforeAll(async () => {
  api = await KubeApiServer.start();
});
afterAll(async () => {
  await api.close();
});

const pod = (name: string, spec: Record<string, unknown> = {}, metadata: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, ...metadata },
  spec: { containers: [{ name: 'main', image: 'x' }], ...spec },
});

describe('graceful pod deletion', () => {
  it('removes an unscheduled pod at once', async () => {
    await call('POST', pods, pod('unbound'));
    expect((await call('DELETE', `${pods}/unbound`)).status).toBe(200);
    expect((await call('GET', `${pods}/unbound`)).status).toBe(404);
  });

  it('marks a scheduled pod with its terminationGracePeriodSeconds, keeps it through status writes, removes it on gracePeriodSeconds=0', async () => {
    await call('POST', pods, pod('bound', { nodeName: 'n1', terminationGracePeriodSeconds: 7 }));
    const before = Date.now();
    const deleted = await call('DELETE', `${pods}/bound`);
    expect(deleted.status).toBe(200);
    expect(deleted.body.metadata.deletionGracePeriodSeconds).toBe(7);
    // deletionTimestamp is when the grace period ends
    expect(Date.parse(deleted.body.metadata.deletionTimestamp)).toBeGreaterThanOrEqual(
      Math.floor(before / 1000) * 1000 + 6000,
    );
    const marked = await call('GET', `${pods}/bound`);
    expect(marked.status).toBe(200);
    expect(marked.body.metadata.deletionTimestamp).toBe(deleted.body.metadata.deletionTimestamp);
    // the kubelet's status writes do not remove it
    const written = await call('PUT', `${pods}/bound/status`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'bound', namespace: 'default' },
      status: { phase: 'Running' },
    });
    expect(written.status).toBe(200);
    expect(written.body.metadata.deletionGracePeriodSeconds).toBe(7);
    expect((await call('GET', `${pods}/bound`)).status).toBe(200);
    // a second delete cannot lengthen the grace period
    const again = await call('DELETE', `${pods}/bound`, { gracePeriodSeconds: 60 });
    expect(again.body.metadata.deletionGracePeriodSeconds).toBe(7);
    expect((await call('DELETE', `${pods}/bound?gracePeriodSeconds=0`)).status).toBe(200);
    expect((await call('GET', `${pods}/bound`)).status).toBe(404);
  });

  it('takes the grace period from the request (query or body), default 30', async () => {
    await call('POST', pods, pod('q', { nodeName: 'n1', terminationGracePeriodSeconds: 7 }));
    await call('POST', pods, pod('b', { nodeName: 'n1' }));
    await call('POST', pods, pod('d', { nodeName: 'n1' }));
    expect((await call('DELETE', `${pods}/q?gracePeriodSeconds=3`)).body.metadata.deletionGracePeriodSeconds).toBe(3);
    expect(
      (await call('DELETE', `${pods}/b`, { kind: 'DeleteOptions', gracePeriodSeconds: 2 })).body.metadata
        .deletionGracePeriodSeconds,
    ).toBe(2);
    expect((await call('DELETE', `${pods}/d`)).body.metadata.deletionGracePeriodSeconds).toBe(30);
    for (const name of ['q', 'b', 'd']) await call('DELETE', `${pods}/${name}?gracePeriodSeconds=0`);
    expect((await call('GET', pods)).body.items).toEqual([]);
  });

  it('marks a scheduled pod whose owner the garbage collector removes; removes an unscheduled one', async () => {
    const owner = await call('POST', '/api/v1/namespaces/default/configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'owner' },
    });
    const ref = [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.body.metadata.uid }];
    await call(
      'POST',
      pods,
      pod('owned-bound', { nodeName: 'n1', terminationGracePeriodSeconds: 5 }, { ownerReferences: ref }),
    );
    await call('POST', pods, pod('owned-unbound', {}, { ownerReferences: ref }));
    expect((await call('DELETE', '/api/v1/namespaces/default/configmaps/owner')).status).toBe(200);
    const bound = await call('GET', `${pods}/owned-bound`);
    expect(bound.status).toBe(200);
    expect(bound.body.metadata.deletionGracePeriodSeconds).toBe(5);
    expect((await call('GET', `${pods}/owned-unbound`)).status).toBe(404);
    expect((await call('DELETE', `${pods}/owned-bound?gracePeriodSeconds=0`)).status).toBe(200);
    expect((await call('GET', `${pods}/owned-bound`)).status).toBe(404);
  });

  it('keeps a marked pod with finalizers until they are removed, then removes it only with no grace left', async () => {
    await call('POST', pods, pod('fin', { nodeName: 'n1' }, { finalizers: ['example.com/hold'] }));
    const marked = await call('DELETE', `${pods}/fin`);
    expect(marked.body.metadata.deletionGracePeriodSeconds).toBe(30);
    // the finalizer goes, the grace period is still running: the pod stays
    await call('PATCH', `${pods}/fin`, { metadata: { finalizers: null } }, 'application/merge-patch+json');
    expect((await call('GET', `${pods}/fin`)).status).toBe(200);
    expect((await call('DELETE', `${pods}/fin?gracePeriodSeconds=0`)).status).toBe(200);
    expect((await call('GET', `${pods}/fin`)).status).toBe(404);
  });
});
