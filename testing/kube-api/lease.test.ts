/**
 * Leases on the test API server as leader election uses them: create-if-absent
 * (409 AlreadyExists), compare-and-swap updates (409 Conflict on a stale
 * resourceVersion), and the API server's checks on the spec.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from './api-server.js';

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies read by path in assertions
type Body = Record<string, any>;

let api: KubeApiServer;
const leases = '/apis/coordination.k8s.io/v1/namespaces/default/leases';

async function call(method: string, path: string, body?: unknown) {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Body };
}

const lease = (name: string, spec: Body) => ({
  apiVersion: 'coordination.k8s.io/v1',
  kind: 'Lease',
  metadata: { name },
  spec,
});
const spec = (holderIdentity: string, renewTime = '2026-12-01T10:00:00.000000Z') => ({
  holderIdentity,
  leaseDurationSeconds: 15,
  acquireTime: '2026-12-01T10:00:00.000000Z',
  renewTime,
  leaseTransitions: 0,
});

beforeAll(async () => {
  api = await KubeApiServer.start();
});

afterAll(async () => {
  await api?.close();
});

describe('Leases on the test API server', () => {
  it('creates a Lease once: a second create gets 409 AlreadyExists', async () => {
    expect((await call('POST', leases, lease('once', spec('a')))).status).toBe(201);
    const second = await call('POST', leases, lease('once', spec('b')));
    expect(second.status).toBe(409);
    expect(second.body.reason).toBe('AlreadyExists');
    expect((await call('GET', `${leases}/once`)).body.spec.holderIdentity).toBe('a');
  });

  it('of two updates carrying the same resourceVersion, applies the first and refuses the second with 409 Conflict', async () => {
    const created = await call('POST', leases, lease('cas', spec('a')));
    const rv = created.body.metadata.resourceVersion;
    const take = (holder: string) =>
      call('PUT', `${leases}/cas`, {
        ...lease('cas', spec(holder, '2026-12-01T10:00:20.000000Z')),
        metadata: { name: 'cas', resourceVersion: rv },
      });
    const first = await take('b');
    const second = await take('c');
    expect(first.status).toBe(200);
    expect(second.status).toBe(409);
    expect(second.body.reason).toBe('Conflict');
    const now = (await call('GET', `${leases}/cas`)).body;
    expect(now.spec.holderIdentity).toBe('b');
    expect(now.metadata.resourceVersion).not.toBe(rv);
  });

  it('refuses acquireTime and renewTime without exactly six fractional digits (400), as Go parses MicroTime', async () => {
    const threeDigits = await call('POST', leases, lease('millis', spec('a', '2026-12-01T10:00:00.123Z')));
    expect(threeDigits.status).toBe(400);
    expect(threeDigits.body.message).toContain('2006-01-02T15:04:05.000000Z07:00');
    expect((await call('POST', leases, lease('micros', spec('a', '2026-12-01T10:00:00.123000Z')))).status).toBe(201);
  });

  it('refuses a lease duration of zero and negative transitions (422)', async () => {
    const bad = await call(
      'POST',
      leases,
      lease('bad', { ...spec('a'), leaseDurationSeconds: 0, leaseTransitions: -1 }),
    );
    expect(bad.status).toBe(422);
    expect(bad.body.details.causes.map((c: Body) => c.field)).toEqual([
      'spec.leaseDurationSeconds',
      'spec.leaseTransitions',
    ]);
  });
});
