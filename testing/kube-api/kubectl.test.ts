/**
 * The test API server driven by the real kubectl (/usr/bin/kubectl, 1.32): what
 * kubectl sends is what an operator's manifests and a human will send.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from './api-server.js';

const repo = resolve(import.meta.dirname, '../..');
let api: KubeApiServer;
let dir: string;
let kubeconfig: string;

function run(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = execFile(
      'kubectl',
      ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args],
      { timeout: 20_000 },
      (error, stdout, stderr) => done({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

async function kubectl(...args: string[]): Promise<string> {
  const r = await run(args);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

async function apply(yaml: string): Promise<string> {
  const r = await run(['apply', '-f', '-'], yaml);
  if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`);
  return r.stdout;
}

const json = async (...args: string[]) => JSON.parse(await kubectl(...args, '-o', 'json'));

const cluster = (extra = '') => `
apiVersion: pgha.dev/v1alpha1
kind: PgHaCluster
metadata:
  name: demo
spec:
  etcd:
    endpoints: [http://etcd:2379]
${extra}`;

const statefulSet = (image: string) => `
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  labels: {app: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: main
          image: ${image}
          env: [{name: A, value: "1"}]
        - name: sidecar
          image: busybox
`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-kube-api-'));
  api = await KubeApiServer.start({ bookmarkIntervalMillis: 200 });
  kubeconfig = api.writeKubeconfig(dir);
});

afterAll(async () => {
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the test API server under kubectl', () => {
  it('registers the PgHaCluster CRD from deploy/crd.yaml and serves the resource with its defaults', async () => {
    expect(await kubectl('apply', '-f', join(repo, 'deploy/crd.yaml'))).toContain(
      'customresourcedefinition.apiextensions.k8s.io/pghaclusters.pgha.dev created',
    );
    const crd = await json('get', 'crd', 'pghaclusters.pgha.dev');
    expect(crd.status.conditions.find((c: { type: string }) => c.type === 'Established').status).toBe('True');
    expect(await apply(cluster())).toContain('pghacluster.pgha.dev/demo created');
    const demo = await json('get', 'pgha', 'demo');
    expect(demo.spec).toMatchObject({ instances: 3, postgresVersion: 17, storage: { size: '10Gi' } });
    expect(demo.metadata.generation).toBe(1);
    expect(demo.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']).toContain('etcd:2379');
  });

  it('rejects invalid and unknown fields with 422/400 Status bodies, leaving the object unchanged', async () => {
    const bad = await run(['apply', '-f', '-'], cluster('  instances: 0'));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('spec.instances: Invalid value: 0');
    const unknown = await run(['apply', '-f', '-'], cluster('  colour: blue'));
    expect(unknown.stderr).toContain('unknown field "spec.colour"');
    expect((await json('get', 'pgha', 'demo')).spec.instances).toBe(3);
    const missing = await run(['get', 'pgha', 'nope']);
    expect(missing.stderr).toContain('pghaclusters.pgha.dev "nope" not found');
    expect(api.requests.some((r) => r.status === 422)).toBe(true);
  });

  it('bumps generation on spec changes only: apply, label, status and scale', async () => {
    await apply(cluster('  instances: 5'));
    expect((await json('get', 'pgha', 'demo')).metadata.generation).toBe(2);
    await kubectl('label', 'pgha', 'demo', 'tier=db');
    await kubectl(
      'patch',
      'pgha',
      'demo',
      '--subresource=status',
      '--type=merge',
      '-p',
      '{"status":{"phase":"Healthy","primary":"demo-0","term":3,"ready":"3/3","instances":5,"selector":"app=demo"}}',
    );
    let demo = await json('get', 'pgha', 'demo');
    expect(demo.metadata.generation).toBe(2);
    expect(demo.metadata.labels).toEqual({ tier: 'db' });
    expect(demo.status.primary).toBe('demo-0');
    // the printer columns of the CRD, computed by the server as a Table
    const table = await kubectl('get', 'pgha', '-l', 'tier=db');
    expect(table).toMatch(/NAME\s+PHASE\s+PRIMARY\s+TERM\s+READY\s+AGE/);
    expect(table).toMatch(/demo\s+Healthy\s+demo-0\s+3\s+3\/3/);
    expect(await kubectl('get', 'pgha', '-l', 'tier!=db')).toBe('');
    // status written through the main resource is ignored (status subresource)
    await kubectl('patch', 'pgha', 'demo', '--type=merge', '-p', '{"status":{"primary":"demo-9"}}');
    expect((await json('get', 'pgha', 'demo')).status.primary).toBe('demo-0');
    await kubectl('scale', 'pgha', 'demo', '--replicas=4');
    demo = await json('get', 'pgha', 'demo');
    expect([demo.spec.instances, demo.metadata.generation]).toEqual([4, 3]);
    await kubectl(
      'patch',
      'pgha',
      'demo',
      '--type=json',
      '-p',
      '[{"op":"replace","path":"/spec/instances","value":3}]',
    );
    expect((await json('get', 'pgha', 'demo')).spec.instances).toBe(3);
  });

  it('merges strategic patches of built-in kinds by key and forbids immutable StatefulSet fields', async () => {
    await apply(statefulSet('nginx:1'));
    await apply(statefulSet('nginx:2'));
    let sts = await json('get', 'sts', 'web');
    expect(
      api.requests.some(
        (r) => r.method === 'PATCH' && r.contentType?.startsWith('application/strategic-merge-patch+json'),
      ),
    ).toBe(true);
    expect(
      sts.spec.template.spec.containers.map((c: { name: string; image: string }) => `${c.name}=${c.image}`),
    ).toEqual(['main=nginx:2', 'sidecar=busybox']);
    expect(sts.metadata.generation).toBe(2);
    await kubectl(
      'patch',
      'sts',
      'web',
      '-p',
      '{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:2"}]}}}}',
    );
    sts = await json('get', 'sts', 'web');
    expect(sts.spec.template.spec.containers.map((c: { image: string }) => c.image)).toEqual(['nginx:2', 'busybox:2']);
    const immutable = await run(['patch', 'sts', 'web', '--type=merge', '-p', '{"spec":{"serviceName":"other"}}']);
    expect(immutable.stderr).toContain('Forbidden: updates to statefulset spec');
    await kubectl('scale', 'sts', 'web', '--replicas=3');
    expect((await json('get', 'sts', 'web')).spec.replicas).toBe(3);
  });

  it('deletes dependents with their owner, waits for finalizers, and filters by field selector', async () => {
    const owner = await json('get', 'pgha', 'demo');
    const ref = `ownerReferences: [{apiVersion: pgha.dev/v1alpha1, kind: PgHaCluster, name: demo, uid: ${owner.metadata.uid}, controller: true}]`;
    await apply(`
apiVersion: v1
kind: Service
metadata: {name: demo-rw, ${ref}}
spec: {selector: {role: primary}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held, finalizers: [pgha.dev/test], ${ref}}
data: {a: b}
`);
    expect((await json('get', 'services', '--field-selector', 'metadata.name=demo-rw')).items).toHaveLength(1);
    expect(await kubectl('delete', 'pgha', 'demo')).toContain('pghacluster.pgha.dev "demo" deleted');
    expect((await run(['get', 'service', 'demo-rw'])).stderr).toContain('not found');
    // the ConfigMap with a finalizer is only marked; removing the finalizer removes it
    const held = await json('get', 'configmap', 'held');
    expect(held.metadata.deletionTimestamp).toBeDefined();
    await kubectl('patch', 'configmap', 'held', '--type=merge', '-p', '{"metadata":{"finalizers":null}}');
    expect((await run(['get', 'configmap', 'held'])).stderr).toContain('not found');
  });

  it('streams changes to kubectl get --watch and ends at the request timeout', async () => {
    await apply(cluster());
    const watching = run(['get', 'pgha', '--watch', '--output-watch-events', '--request-timeout=4s']);
    // label only once kubectl's watch is open (bounded wait, not a guess)
    const deadline = Date.now() + 4000;
    while (!api.requests.some((r) => r.path.endsWith('/pghaclusters') && r.query.includes('watch=true'))) {
      if (Date.now() > deadline) throw new Error('kubectl never opened its watch');
      await new Promise((r) => setTimeout(r, 50));
    }
    await kubectl('label', 'pgha', 'demo', 'seen=yes');
    const r = await watching;
    expect(r.stdout).toMatch(/EVENT\s+NAME\s+PHASE/);
    expect(r.stdout).toMatch(/ADDED\s+demo/);
    expect(r.stdout).toMatch(/MODIFIED\s+demo/);
  });

  it('removes a CRD with its custom resources', async () => {
    await kubectl('delete', '-f', join(repo, 'deploy/crd.yaml'));
    expect((await run(['get', 'pgha'])).stderr).toMatch(
      /doesn't have a resource type "pgha"|could not find the requested resource/,
    );
  });
});
