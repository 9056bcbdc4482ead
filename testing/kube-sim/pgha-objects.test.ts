/**
 * What pgha itself hands the simulated cluster runs under its controllers: the
 * StatefulSet the operator generates for the example PgHaCluster (Parallel,
 * OnDelete, a `data` claim template, the retention policy) and the operator's own
 * Deployment from deploy/operator.yaml. The API server is real; a stub kubelet
 * marks pods Running and Ready.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { desiredStatefulSet } from '../../packages/controller/src/runtime/kubernetes/desired-objects.js';
import {
  type PgHaClusterObject,
  parsePgHaCluster,
} from '../../packages/controller/src/runtime/kubernetes/pgha-cluster.js';
import { KubeApiServer } from '../kube-api/api-server.js';
import { apiCaller, pollUntil } from '../kube-api/test-client.js';
import { DeploymentController } from './deployment-controller.js';
import type { PersistentVolumeClaim, Pod } from './objects.js';
import { StatefulSetController } from './statefulset-controller.js';
import { startStubKubelet } from './stub-kubelet.js';
import { VolumeController } from './volume-controller.js';

const repo = resolve(import.meta.dirname, '../..');

describe('pgha objects under the simulated controllers', () => {
  let api: KubeApiServer;
  let stateDir: string;
  let stops: (() => Promise<void>)[] = [];
  const logs: string[] = [];
  const log = (line: string) => logs.push(line);
  const call = apiCaller(() => api.url);
  const until = <T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean) =>
    pollUntil(what, read, ok, { millis: 10_000, context: () => logs.slice(-30).join('\n') });

  beforeAll(async () => {
    api = await KubeApiServer.start();
    stateDir = await mkdtemp(join(tmpdir(), 'pgha-objects-'));
    const sts = StatefulSetController.start({ apiUrl: api.url, log });
    const deployments = DeploymentController.start({ apiUrl: api.url, log });
    const volumes = VolumeController.start({ apiUrl: api.url, stateDir, log });
    stops = [
      () => sts.stop(),
      () => deployments.stop(),
      () => volumes.stop(),
      startStubKubelet({ apiUrl: api.url, stateDir, log }),
    ];
  });
  afterAll(async () => {
    await Promise.all(stops.map((stop) => stop()));
    await api?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it("runs the operator's StatefulSet for the example cluster: member pods on their claims", async () => {
    const example = parseYaml(await readFile(join(repo, 'deploy/examples/pghacluster.yaml'), 'utf8'));
    const cluster: PgHaClusterObject = { ...example, metadata: { name: 'demo', namespace: 'default', uid: 'u' } };
    const parsed = parsePgHaCluster(cluster);
    if (!parsed.ok) throw new Error(parsed.problems.join('; '));
    // Without its PgHaCluster owner (not created here) the garbage collector would take it at once.
    const desired = desiredStatefulSet(cluster, parsed.spec, 3);
    const { ownerReferences: _, ...metadata } = desired.metadata;
    const set = { ...desired, metadata };
    expect((await call('POST', '/apis/apps/v1/namespaces/default/statefulsets', set)).status).toBe(201);

    await until(
      '3 ready members',
      async () => (await call('GET', '/apis/apps/v1/namespaces/default/statefulsets/demo')).body.status ?? {},
      (s) => s.readyReplicas === 3 && s.currentRevision === s.updateRevision,
    );
    const pods = (await call('GET', '/api/v1/namespaces/default/pods?labelSelector=pgha.dev%2Fcluster%3Ddemo')).body
      .items as Pod[];
    expect(pods.map((p) => p.metadata.name)).toEqual(['demo-0', 'demo-1', 'demo-2']);
    for (const p of pods) {
      expect(p.spec).toMatchObject({ hostname: p.metadata.name, subdomain: 'demo', serviceAccountName: 'demo' });
      expect(p.spec?.volumes).toEqual([
        { name: 'run', emptyDir: {} },
        { name: 'tmp', emptyDir: {} },
        { name: 'data', persistentVolumeClaim: { claimName: `data-${p.metadata.name}` } },
      ]);
    }
    const claims = (await call('GET', '/api/v1/namespaces/default/persistentvolumeclaims')).body
      .items as PersistentVolumeClaim[];
    expect(claims.map((c) => c.metadata.name)).toEqual(['data-demo-0', 'data-demo-1', 'data-demo-2']);
    for (const c of claims) {
      expect(c.metadata.labels?.['pgha.dev/cluster']).toBe('demo');
      expect(c.metadata.ownerReferences).toBeUndefined(); // the example retains its claims
      expect(c.spec).toMatchObject({ accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } } });
      expect(c.status?.phase).toBe('Bound');
    }
  });

  it("runs the operator's Deployment from deploy/operator.yaml: two available replicas", async () => {
    const manifest = parseYaml(await readFile(join(repo, 'deploy/operator.yaml'), 'utf8'));
    expect((await call('POST', '/apis/apps/v1/namespaces/default/deployments', manifest)).status).toBe(201);
    const status = await until(
      'two available operator pods',
      async () => (await call('GET', '/apis/apps/v1/namespaces/default/deployments/pgha-operator')).body.status ?? {},
      (s) => s.availableReplicas === 2,
    );
    expect(status.conditions).toContainEqual(expect.objectContaining({ type: 'Available', status: 'True' }));
    const pods = (
      await call('GET', '/api/v1/namespaces/default/pods?labelSelector=app.kubernetes.io%2Fname%3Dpgha-operator')
    ).body.items as Pod[];
    expect(pods).toHaveLength(2);
    for (const p of pods) expect(p.metadata.name).toMatch(/^pgha-operator-[a-z0-9]+-[a-z0-9]{5}$/);
  });
});
