/**
 * The Deployment controller: its decision, pure, then the shell against the real
 * test API server with a stub kubelet.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from '../kube-api/api-server.js';
import { apiCaller, pollUntil } from '../kube-api/test-client.js';
import {
  type Deployment,
  type DeploymentAction,
  DeploymentController,
  type DeploymentSnapshot,
  decideDeployment,
  podTemplateHash,
} from './deployment-controller.js';
import type { Pod } from './objects.js';
import { startStubKubelet } from './stub-kubelet.js';

const uid = 'deploy-uid';
const ns = 'default';

function deployment(spec: Partial<Deployment['spec']> = {}): Deployment {
  return {
    metadata: { name: 'op', namespace: ns, uid, generation: 1 },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: 'op' } },
      template: { metadata: { labels: { app: 'op' } }, spec: { containers: [{ name: 'op', image: 'v1' }] } },
      ...spec,
    },
  };
}

let podCount = 0;
function pod(
  hash: string,
  options: { ready?: boolean; phase?: string; deleting?: boolean; created?: string; name?: string } = {},
): Pod {
  const ready = options.ready ?? true;
  const name = options.name ?? `op-${hash}-p${podCount++}`;
  return {
    metadata: {
      name,
      namespace: ns,
      uid: `uid-${name}`,
      creationTimestamp: options.created ?? '2026-01-01T00:00:00Z',
      labels: { app: 'op', 'pod-template-hash': hash },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'op', uid, controller: true }],
      ...(options.deleting ? { deletionTimestamp: '2026-01-01T00:05:00Z' } : {}),
    },
    spec: {},
    status: {
      phase: options.phase ?? 'Running',
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
    },
  };
}

const snapshot = (d: Deployment, pods: Pod[]): DeploymentSnapshot => ({
  deployment: d,
  pods,
  nowMillis: Date.parse('2026-01-01T00:10:00Z'),
});

function summary(actions: DeploymentAction[]): string[] {
  return actions.flatMap((a) =>
    a.type === 'create-pod'
      ? [`create ${a.pod.metadata.generateName}`]
      : a.type === 'delete-pod'
        ? [`delete ${a.name} (${a.reason})`]
        : [],
  );
}
const statusOf = (actions: DeploymentAction[]) => {
  const a = actions.find((x) => x.type === 'update-status');
  return a?.type === 'update-status' ? a.status : undefined;
};

describe('decideDeployment', () => {
  const d = deployment();
  const h = podTemplateHash(d.spec.template);

  it('creates the missing pods from the template, labelled with its hash and owned by the Deployment', () => {
    const actions = decideDeployment(snapshot(d, []));
    expect(summary(actions)).toEqual([`create op-${h}-`, `create op-${h}-`]);
    const create = actions[0];
    expect(create?.type === 'create-pod' && create.pod).toMatchObject({
      metadata: {
        labels: { app: 'op', 'pod-template-hash': h },
        ownerReferences: [{ kind: 'Deployment', name: 'op', uid, controller: true, blockOwnerDeletion: true }],
      },
      spec: { containers: [{ name: 'op', image: 'v1' }] },
    });
    expect(h).toMatch(/^[bcdfghjklmnpqrstvwxz2456789]+$/);
  });

  it('replaces a going pod at once and deletes and replaces a Failed one', () => {
    const going = pod(h, { deleting: true, name: 'op-going' });
    const failed = pod(h, { phase: 'Failed', ready: false, name: 'op-failed' });
    expect(summary(decideDeployment(snapshot(d, [going, failed, pod(h)])))).toEqual([
      'delete op-failed (phase Failed)',
      `create op-${h}-`,
    ]);
  });

  it('scales down the not Ready first, then the newest', () => {
    const three = deployment({ replicas: 1 });
    const pods = [
      pod(h, { name: 'op-old', created: '2026-01-01T00:00:00Z' }),
      pod(h, { name: 'op-new', created: '2026-01-01T00:01:00Z' }),
      pod(h, { name: 'op-unready', ready: false, created: '2026-01-01T00:00:00Z' }),
    ];
    expect(summary(decideDeployment(snapshot(three, pods)))).toEqual([
      'delete op-unready (scale down)',
      'delete op-new (scale down)',
    ]);
  });

  it('rolls a template change: a new pod first, an old one deleted only once a new one is available', () => {
    const old = 'oldhash';
    expect(summary(decideDeployment(snapshot(d, [pod(old), pod(old)])))).toEqual([`create op-${h}-`]);
    const starting = [pod(old, { name: 'op-a' }), pod(old, { name: 'op-b' }), pod(h, { ready: false })];
    expect(summary(decideDeployment(snapshot(d, starting)))).toEqual([]);
    const up = [pod(old, { name: 'op-a' }), pod(old, { name: 'op-b' }), pod(h)];
    expect(summary(decideDeployment(snapshot(d, up)))).toHaveLength(1);
    expect(summary(decideDeployment(snapshot(d, up)))[0]).toMatch(/^delete op-[ab] \(rolling update\)$/);
    const half = [pod(old, { name: 'op-a' }), pod(old, { name: 'op-b', deleting: true }), pod(h)];
    expect(summary(decideDeployment(snapshot(d, half)))).toEqual([`create op-${h}-`]);
  });

  it('Recreate deletes every old pod and creates new ones only once the old are gone', () => {
    const r = deployment({ strategy: { type: 'Recreate' } });
    const old = 'oldhash';
    expect(
      summary(decideDeployment(snapshot(r, [pod(old, { name: 'op-a' }), pod(old, { name: 'op-b' })]))).sort(),
    ).toEqual(['delete op-a (recreate)', 'delete op-b (recreate)']);
    expect(summary(decideDeployment(snapshot(r, [pod(old, { name: 'op-a', deleting: true })])))).toEqual([]);
    expect(summary(decideDeployment(snapshot(r, [])))).toEqual([`create op-${h}-`, `create op-${h}-`]);
  });

  it('reports counts and the Available condition, and writes the status only when it changed', () => {
    const pods = [pod(h), pod(h, { ready: false })];
    const status = statusOf(decideDeployment(snapshot(d, pods)));
    expect(status).toMatchObject({
      observedGeneration: 1,
      replicas: 2,
      updatedReplicas: 2,
      readyReplicas: 1,
      availableReplicas: 1,
      unavailableReplicas: 1,
    });
    // 2 replicas: maxUnavailable 25 % rounds down to 0, so one unavailable pod is too many
    expect(status?.conditions?.find((c) => c.type === 'Available')).toMatchObject({
      status: 'False',
      reason: 'MinimumReplicasUnavailable',
    });
    const settled = { ...d, status };
    expect(decideDeployment(snapshot(settled, pods))).toEqual([]);
    const ready = statusOf(decideDeployment(snapshot(settled, [pod(h), pod(h)])));
    expect(ready?.conditions?.find((c) => c.type === 'Available')).toMatchObject({
      status: 'True',
      reason: 'MinimumReplicasAvailable',
    });
  });
});

describe('DeploymentController against the test API server', () => {
  let api: KubeApiServer;
  let stateDir: string;
  let stopKubelet: () => Promise<void>;
  let controller: DeploymentController;
  const held = new Set<string>();
  let unreadyHash = '';
  const logs: string[] = [];
  const log = (line: string) => logs.push(line);
  const call = apiCaller(() => api.url);
  const path = '/apis/apps/v1/namespaces/default/deployments';
  const core = '/api/v1/namespaces/default';
  const context = () => logs.slice(-30).join('\n');
  const until = <T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean) =>
    pollUntil(what, read, ok, { millis: 10_000, context });
  const podsOf = async () => (await call('GET', `${core}/pods?labelSelector=app%3Dop`)).body.items as Pod[];
  const live = (pods: Pod[]) => pods.filter((p) => !p.metadata.deletionTimestamp);
  const readyPods = (pods: Pod[]) =>
    live(pods).filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
  const statusNow = async () => (await call('GET', `${path}/op`)).body.status ?? {};
  const passes = async (n: number) => {
    const count = () => api.requests.filter((r) => r.method === 'GET' && r.path === '/apis/apps/v1/deployments').length;
    const target = count() + n + 1;
    await until(
      `${n} controller passes`,
      async () => count(),
      (c) => c >= target,
    );
  };

  beforeAll(async () => {
    api = await KubeApiServer.start();
    stateDir = await mkdtemp(join(tmpdir(), 'pgha-deploy-'));
    stopKubelet = startStubKubelet({
      apiUrl: api.url,
      stateDir,
      held,
      log,
      unready: (p) => p.metadata.labels?.['pod-template-hash'] === unreadyHash,
    });
    controller = DeploymentController.start({ apiUrl: api.url, log });
  });
  afterAll(async () => {
    await Promise.all([controller?.stop(), stopKubelet?.()]);
    await api?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it('runs, replaces, scales and rolls the pods of a Deployment', async () => {
    const manifest = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'op' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'op' } },
        template: { metadata: { labels: { app: 'op' } }, spec: { containers: [{ name: 'op', image: 'v1' }] } },
      },
    };
    expect((await call('POST', path, manifest)).status).toBe(201);
    const up = await until('2 available', statusNow, (s) => s.availableReplicas === 2);
    expect(up.conditions.find((c: { type: string }) => c.type === 'Available')).toMatchObject({ status: 'True' });
    expect(up.observedGeneration).toBe(1);
    const first = await podsOf();
    const h1 = podTemplateHash(manifest.spec.template);
    for (const p of first) expect(p.metadata.name).toMatch(new RegExp(`^op-${h1}-[bcdfghjklmnpqrstvwxz2456789]{5}$`));

    // a deleted pod is replaced while it is still going
    const victim = first[0]!.metadata.name;
    held.add(victim);
    expect((await call('DELETE', `${core}/pods/${victim}`)).status).toBe(200);
    const replaced = await until(
      'a replacement beside the going pod',
      podsOf,
      (ps) => readyPods(ps).length === 2 && ps.some((p) => p.metadata.name === victim),
    );
    expect(replaced).toHaveLength(3);
    held.delete(victim);
    await until('the going pod gone', podsOf, (ps) => ps.length === 2 && readyPods(ps).length === 2);

    // a Failed pod is deleted and replaced
    const failing = (await podsOf())[0]!;
    expect(
      (await call('PUT', `${core}/pods/${failing.metadata.name}/status`, { ...failing, status: { phase: 'Failed' } }))
        .status,
    ).toBe(200);
    await until(
      'the failed pod replaced',
      podsOf,
      (ps) => readyPods(ps).length === 2 && !ps.some((p) => p.metadata.name === failing.metadata.name),
    );

    // scale 2 → 3 → 1
    const scale = (replicas: number) =>
      call('PATCH', `${path}/op/scale`, { spec: { replicas } }, 'application/merge-patch+json');
    expect((await scale(3)).status).toBe(200);
    await until('3 ready', podsOf, (ps) => readyPods(ps).length === 3 && ps.length === 3);
    expect((await scale(1)).status).toBe(200);
    await until('1 pod', podsOf, (ps) => ps.length === 1);
    expect((await scale(2)).status).toBe(200);
    await until('2 available again', statusNow, (s) => s.availableReplicas === 2 && s.replicas === 2);

    // a template change: one new pod first, the old ones stay while it is not Ready
    const current = (await call('GET', `${path}/op`)).body;
    current.spec.template.spec.containers[0].image = 'v2';
    const h2 = podTemplateHash(current.spec.template);
    unreadyHash = h2;
    expect((await call('PUT', `${path}/op`, current)).status).toBe(200);
    await until('one new pod', podsOf, (ps) => ps.some((p) => p.metadata.labels?.['pod-template-hash'] === h2));
    await passes(3);
    const during = await podsOf();
    expect(during.filter((p) => p.metadata.labels?.['pod-template-hash'] === h2)).toHaveLength(1);
    expect(live(during).filter((p) => p.metadata.labels?.['pod-template-hash'] === h1)).toHaveLength(2);
    unreadyHash = '';
    const rolled = await until(
      'the rollout complete',
      podsOf,
      (ps) => ps.length === 2 && readyPods(ps).every((p) => p.metadata.labels?.['pod-template-hash'] === h2),
    );
    expect(readyPods(rolled)).toHaveLength(2);
    const done = await until(
      'the status of the rollout',
      statusNow,
      (s) => s.updatedReplicas === 2 && s.availableReplicas === 2,
    );
    const generation = (await call('GET', `${path}/op`)).body.metadata.generation;
    expect(generation).toBe(5); // created, scaled three times, the template changed
    expect(done).toMatchObject({ replicas: 2, readyReplicas: 2, observedGeneration: generation });
    expect(done.conditions.find((c: { type: string }) => c.type === 'Progressing')).toMatchObject({
      reason: 'NewReplicaSetAvailable',
    });

    // deleting the Deployment takes its pods (garbage collection)
    expect((await call('DELETE', `${path}/op`)).status).toBe(200);
    await until('no pods', podsOf, (ps) => ps.length === 0);
  });
});
