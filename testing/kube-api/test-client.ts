// What the tests against the test API server share: a JSON call, a bounded poll, and
// the objects a PgHaCluster needs before the operator can reconcile it.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';

/** A JSON call to the API server whose URL `baseUrl()` gives (read per call: servers start in beforeAll). */
export function apiCaller(baseUrl: () => string) {
  return async function call(method: string, path: string, body?: unknown, contentType = 'application/json') {
    const res = await fetch(`${baseUrl()}${path}`, {
      method,
      headers: { 'content-type': contentType },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    // biome-ignore lint/suspicious/noExplicitAny: JSON read by path in assertions
    return { status: res.status, body: (await res.json()) as any };
  };
}

/**
 * Reads until `ok` holds, or throws after `millis` naming what it waited for, the
 * last value read and `context()` (a process's output, recent logs).
 */
export async function pollUntil<T>(
  what: string,
  read: () => Promise<T> | T,
  ok: (v: T) => boolean,
  options: { millis: number; intervalMillis?: number; context?: () => string },
): Promise<T> {
  const deadline = Date.now() + options.millis;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) {
      const context = options.context?.() ?? '';
      throw new Error(
        `timed out waiting for ${what}: last saw ${JSON.stringify(v).slice(0, 400)}${context === '' ? '' : `\n${context}`}`,
      );
    }
    await new Promise((r) => setTimeout(r, options.intervalMillis ?? 50));
  }
}

/**
 * Installs the PgHaCluster CRD (deploy/crd.yaml), creates `namespace` and a
 * credentials Secret `<cluster>-credentials` with both passwords, as a user would
 * before creating the PgHaCluster `cluster` there.
 */
export async function prepareNamespace(
  call: ReturnType<typeof apiCaller>,
  namespace: string,
  cluster: string,
): Promise<void> {
  const repo = resolve(import.meta.dirname, '../..');
  await call(
    'POST',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
    parse(readFileSync(join(repo, 'deploy/crd.yaml'), 'utf8')),
  );
  await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
  await call('POST', `/api/v1/namespaces/${namespace}/secrets`, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: `${cluster}-credentials` },
    data: { 'superuser-password': 'YQ==', 'replication-password': 'Yg==' },
  });
}
