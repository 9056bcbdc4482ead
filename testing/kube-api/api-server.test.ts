/**
 * The test API server's semantics that an operator relies on and kubectl does not
 * exercise: watches from a resourceVersion, 410 after compaction, bookmarks,
 * optimistic concurrency, foreground and orphan deletion, Status bodies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from './api-server.js';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies read by path in assertions
type Body = Record<string, any>;

let api: KubeApiServer;
const ns = '/api/v1/namespaces/default';

async function call(method: string, path: string, body?: unknown, contentType = 'application/json') {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Body };
}

/** Reads a watch stream until `count` events arrived (or the stream ended). */
async function watchEvents(path: string, count: number): Promise<{ type: string; object: Body }[]> {
  const controller = new AbortController();
  const res = await fetch(`${api.url}${path}`, { signal: controller.signal });
  const events: { type: string; object: Body }[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      events.push(JSON.parse(buffer.slice(0, nl)));
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
    }
    if (events.length >= count) break;
  }
  controller.abort();
  return events;
}

const configMap = (name: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, labels: { app: 'a' }, ...extra },
  data: { k: 'v' },
});

beforeAll(async () => {
  api = await KubeApiServer.start({ bookmarkIntervalMillis: 50, historyLimit: 100 });
});
afterAll(() => api?.close());

describe('the test API server', () => {
  it('answers 409 on a stale resourceVersion and on a second create, with Status bodies', async () => {
    const created = await call('POST', `${ns}/configmaps`, configMap('one'));
    expect(created.status).toBe(201);
    const again = await call('POST', `${ns}/configmaps`, configMap('one'));
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ kind: 'Status', reason: 'AlreadyExists', code: 409 });
    const updated = await call('PUT', `${ns}/configmaps/one`, { ...created.body, data: { k: 'w' } });
    expect(updated.status).toBe(200);
    const stale = await call('PUT', `${ns}/configmaps/one`, { ...created.body, data: { k: 'x' } });
    expect(stale.status).toBe(409);
    expect(stale.body.reason).toBe('Conflict');
    expect((await call('GET', `${ns}/configmaps/one`)).body.data.k).toBe('w');
  });

  it('answers 404 for a missing object, namespace or resource type, and 422 for a bad name', async () => {
    expect((await call('GET', `${ns}/configmaps/nope`)).body).toMatchObject({ reason: 'NotFound', code: 404 });
    expect((await call('POST', '/api/v1/namespaces/absent/configmaps', configMap('x'))).status).toBe(404);
    expect((await call('GET', '/apis/example.com/v1/things')).status).toBe(404);
    const bad = await call('POST', `${ns}/configmaps`, configMap('Not_A_Name'));
    expect(bad.status).toBe(422);
    expect(bad.body.details.causes[0].field).toBe('metadata.name');
  });

  it('replays a watch from a resourceVersion, filtered by label selector, with bookmarks', async () => {
    const list = await call('GET', `${ns}/configmaps`);
    const from = list.body.metadata.resourceVersion as string;
    await call('POST', `${ns}/configmaps`, configMap('two'));
    await call('POST', `${ns}/configmaps`, configMap('other', { labels: { app: 'b' } }));
    await call('PATCH', `${ns}/configmaps/two`, { metadata: { labels: { app: 'b' } } }, 'application/merge-patch+json');
    const events = await watchEvents(
      `${ns}/configmaps?watch=true&resourceVersion=${from}&labelSelector=app%3Da&allowWatchBookmarks=true`,
      3,
    );
    // `two` was added, then left the selection: a DELETED for this watcher; `other` never matched
    expect(events.map((e) => `${e.type} ${e.object.metadata.name ?? ''}`)).toEqual([
      'ADDED two',
      'DELETED two',
      'BOOKMARK ',
    ]);
    expect(Number(events[2]!.object.metadata.resourceVersion)).toBeGreaterThan(Number(from));
  });

  it('answers a watch from a compacted resourceVersion with a 410 Expired event', async () => {
    const from = (await call('GET', `${ns}/configmaps`)).body.metadata.resourceVersion as string;
    await call('POST', `${ns}/configmaps`, configMap('three'));
    api.store.compact();
    const [event] = await watchEvents(`${ns}/configmaps?watch=true&resourceVersion=${from}`, 1);
    expect(event).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
    // a fresh list gives a version that can be watched again
    const rv = (await call('GET', `${ns}/configmaps`)).body.metadata.resourceVersion as string;
    await call('DELETE', `${ns}/configmaps/three`);
    const [deleted] = await watchEvents(`${ns}/configmaps?watch=true&resourceVersion=${rv}`, 1);
    expect(deleted).toMatchObject({ type: 'DELETED', object: { metadata: { name: 'three' } } });
  });

  it('deletes in the foreground (dependents first) and orphans on request', async () => {
    const owner = (await call('POST', `${ns}/configmaps`, configMap('owner'))).body;
    const ref = { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata.uid };
    await call('POST', `${ns}/secrets`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'dep', ownerReferences: [ref], finalizers: ['x/y'] },
    });
    const deleting = await call('DELETE', `${ns}/configmaps/owner`, { propagationPolicy: 'Foreground' });
    expect(deleting.body.metadata.finalizers).toContain('foregroundDeletion');
    expect((await call('GET', `${ns}/secrets/dep`)).body.metadata.deletionTimestamp).toBeDefined();
    expect((await call('GET', `${ns}/configmaps/owner`)).status).toBe(200); // waits for its dependent
    await call('PATCH', `${ns}/secrets/dep`, { metadata: { finalizers: null } }, 'application/merge-patch+json');
    expect((await call('GET', `${ns}/secrets/dep`)).status).toBe(404);
    expect((await call('GET', `${ns}/configmaps/owner`)).status).toBe(404);

    const keeper = (await call('POST', `${ns}/configmaps`, configMap('keeper'))).body;
    await call('POST', `${ns}/secrets`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'kept', ownerReferences: [{ ...ref, name: 'keeper', uid: keeper.metadata.uid }] },
    });
    await call('DELETE', `${ns}/configmaps/keeper`, { propagationPolicy: 'Orphan' });
    const kept = await call('GET', `${ns}/secrets/kept`);
    expect(kept.status).toBe(200);
    expect(kept.body.metadata.ownerReferences).toBeUndefined();
  });

  it('forbids new finalizers on an object being deleted and a no-op write keeps the resourceVersion', async () => {
    const cm = (await call('POST', `${ns}/configmaps`, configMap('fin', { finalizers: ['a/b'] }))).body;
    const same = await call('PUT', `${ns}/configmaps/fin`, cm);
    expect(same.body.metadata.resourceVersion).toBe(cm.metadata.resourceVersion);
    await call('DELETE', `${ns}/configmaps/fin`);
    const more = await call(
      'PATCH',
      `${ns}/configmaps/fin`,
      { metadata: { finalizers: ['a/b', 'c/d'] } },
      'application/merge-patch+json',
    );
    expect(more.status).toBe(422);
  });
});
