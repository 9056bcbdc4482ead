/**
 * Two operator replicas (`ElectedOperator`, in process) against one test API
 * server and one Lease: exactly one reconciles; a stopped leader hands over at
 * once (it releases the Lease); a leader whose renewals fail stops reconciling
 * within its renew deadline, before the standby may take the Lease, and the
 * standby then reconciles. Each leadership's failover controllers (fakes here:
 * they only log their start and stop) run only while it leads: a leader whose
 * renewals fail stops them before the standby starts its own.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  ClusterControllers,
  type FailoverControllerHandle,
} from '../../packages/controller/src/runtime/kubernetes/cluster-controllers.js';
import { ElectedOperator } from '../../packages/controller/src/runtime/kubernetes/elected-operator.js';
import { kubernetesLeaseApi, type LeaseApi } from '../../packages/controller/src/runtime/kubernetes/lease-elector.js';
import { Operator } from '../../packages/controller/src/runtime/kubernetes/operator.js';
import { KubeApiServer } from './api-server.js';
import { deniedRequests, deployedRbac, operatorServiceAccount } from './rbac.js';
import { apiCaller, pollUntil } from './test-client.js';

const repo = resolve(import.meta.dirname, '../..');
// Short timings for the test; their ratios are those of the defaults' safety argument.
const leaseDurationSeconds = 3;
const renewDeadlineMillis = 2000;
const retryPeriodMillis = 200;

let api: KubeApiServer;
let dir: string;
let kubeConfig: string;
const logs: string[] = [];
let replicas: ElectedOperator[] = [];

const call = apiCaller(() => api.url);

const until = <T>(what: string, read: () => Promise<T> | T, ok: (v: T) => boolean, millis = 10_000): Promise<T> =>
  pollUntil(what, read, ok, { millis, intervalMillis: 25, context: () => logs.slice(-30).join('\n') });

const lease = () => call('GET', '/apis/coordination.k8s.io/v1/namespaces/pgha-system/leases/pgha-operator');
const statefulSet = (ns: string) => call('GET', `/apis/apps/v1/namespaces/${ns}/statefulsets/demo`);

/** The Lease requests of one replica, which a test can make fail (as if its API server connection broke). */
function breakableLeaseApi(): LeaseApi & { broken: boolean; hung: boolean } {
  const real = kubernetesLeaseApi(kubeConfig);
  const gate = <T>(request: () => Promise<T>): Promise<T> =>
    wrapped.hung
      ? new Promise<T>(() => undefined) // no answer, ever (a black-holed connection)
      : wrapped.broken
        ? Promise.reject(new Error('connection refused (test)'))
        : request();
  const wrapped = {
    broken: false,
    hung: false,
    read: (...a: Parameters<LeaseApi['read']>) => gate(() => real.read(...a)),
    create: (...a: Parameters<LeaseApi['create']>) => gate(() => real.create(...a)),
    replace: (...a: Parameters<LeaseApi['replace']>) => gate(() => real.replace(...a)),
  };
  return wrapped;
}

/** A failover controller that only logs `<identity> controller started|stopped <key>`. */
function fakeController(identity: string, key: string): FailoverControllerHandle {
  return {
    isActive: true,
    problem: null,
    start: async () => {
      logs.push(`${identity} controller started ${key}`);
    },
    stop: async () => {
      logs.push(`${identity} controller stopped ${key}`);
    },
  };
}

function replica(identity: string, namespace: string, leaseApi: LeaseApi = breakableLeaseApi()): ElectedOperator {
  const log = {
    info: (m: string) => logs.push(`${identity} ${m}`),
    warn: (m: string) => logs.push(`${identity} WARN ${m}`),
  };
  const r = new ElectedOperator({
    api: leaseApi,
    leaseNamespace: 'pgha-system',
    leaseName: 'pgha-operator',
    identity,
    leaseDurationSeconds,
    renewDeadlineMillis,
    retryPeriodMillis,
    log,
    createOperator: (mayWrite) =>
      new Operator({
        kubeConfig,
        namespace,
        mayWrite,
        readLeader: async () => null,
        requestSwitchover: async () => undefined,
        log,
        resyncIntervalMillis: 150,
        retryDelayMillis: 20,
        failoverControllers: (onChange) =>
          new ClusterControllers({
            onChange,
            // not the operator's log: writesOf() counts its lines
            log: {
              info: (m) => logs.push(`${identity} controllers: ${m}`),
              warn: (m) => logs.push(`${identity} controllers WARN ${m}`),
            },
            create: (key) => fakeController(identity, key),
          }),
      }),
  });
  replicas.push(r);
  return r;
}

/** Lines of one replica's operator that wrote something. */
const writesOf = (identity: string, ns: string) =>
  logs.filter((l) => l.startsWith(`${identity} ${ns}/demo: `) && !l.includes('WARN'));

async function cluster(ns: string): Promise<void> {
  await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  await call('POST', `/api/v1/namespaces/${ns}/secrets`, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'demo-credentials' },
    data: { 'superuser-password': 'YQ==', 'replication-password': 'Yg==' },
  });
  await call('POST', `/apis/pgha.dev/v1alpha1/namespaces/${ns}/pghaclusters`, {
    apiVersion: 'pgha.dev/v1alpha1',
    kind: 'PgHaCluster',
    metadata: { name: 'demo' },
    spec: { etcd: { endpoints: ['http://etcd:2379'] } },
  });
}

const scale = (ns: string, instances: number) =>
  call(
    'PATCH',
    `/apis/pgha.dev/v1alpha1/namespaces/${ns}/pghaclusters/demo`,
    { spec: { instances } },
    'application/merge-patch+json',
  );

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgha-operator-election-'));
  api = await KubeApiServer.start();
  kubeConfig = api.writeKubeconfig(dir);
  await call(
    'POST',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
    parse(readFileSync(join(repo, 'deploy/crd.yaml'), 'utf8')),
  );
  await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'pgha-system' } });
});

afterEach(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
  replicas = [];
  // the next test starts from no Lease at all
  await call('DELETE', '/apis/coordination.k8s.io/v1/namespaces/pgha-system/leases/pgha-operator');
});

afterAll(async () => {
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('operator leader election', () => {
  it('lets exactly one of two replicas reconcile: only the Lease holder creates the StatefulSet and writes status', async () => {
    await cluster('one');
    const a = replica('op-a', 'one');
    const b = replica('op-b', 'one');
    a.start();
    b.start();
    await until(
      'the StatefulSet',
      () => statefulSet('one'),
      (r) => r.status === 200,
    );
    const [leader, standby] = a.leading ? [a, b] : [b, a];
    expect((await lease()).body.spec).toMatchObject({
      holderIdentity: leader.identity,
      leaseDurationSeconds,
      leaseTransitions: 0,
    });
    // several renewals later (each a new renewTime), still one leader and one writer
    const renewTimes = new Set<string>();
    await until(
      'three renewals',
      async () => {
        renewTimes.add((await lease()).body.spec.renewTime);
        return renewTimes.size;
      },
      (n) => n >= 4,
    );
    await scale('one', 4);
    await until(
      '4 replicas',
      () => statefulSet('one'),
      (r) => r.body.spec.replicas === 4,
    );
    expect(leader.leading).toBe(true);
    expect(standby.leading).toBe(false);
    expect(standby.leaderships).toBe(0);
    expect(standby.operator).toBeUndefined();
    expect(writesOf(leader.identity, 'one').some((l) => l.includes('create StatefulSet/demo'))).toBe(true);
    expect(writesOf(leader.identity, 'one').some((l) => l.includes('status '))).toBe(true);
    expect(writesOf(standby.identity, 'one')).toEqual([]);
    expect(standby.health().readyz).toMatchObject({ ok: true });
    expect(standby.health().readyz.message).toContain(`standby (leader: ${leader.identity})`);
  });

  it('hands over at once when the leader stops (it releases the Lease), and the new leader reconciles', async () => {
    await cluster('two');
    const a = replica('op-a', 'two');
    a.start();
    await until(
      'the StatefulSet',
      () => statefulSet('two'),
      (r) => r.status === 200,
    );
    const b = replica('op-b', 'two');
    b.start();
    // b has read the Lease at least once (and found it held)
    await until(
      'b to see the leader',
      () => b.health().readyz.message,
      (m) => m.includes('leader: op-a'),
    );
    const stopped = Date.now();
    await a.stop();
    expect((await lease()).body.spec.holderIdentity).toBe('');
    await until(
      'b to lead',
      () => b.leading,
      (l) => l,
      leaseDurationSeconds * 1000,
    );
    const tookMillis = Date.now() - stopped;
    expect(tookMillis).toBeLessThan(leaseDurationSeconds * 1000);
    expect((await lease()).body.spec).toMatchObject({ holderIdentity: 'op-b', leaseTransitions: 1 });
    await scale('two', 5);
    await until(
      '5 replicas',
      () => statefulSet('two'),
      (r) => r.body.spec.replicas === 5,
    );
    expect(writesOf('op-b', 'two').some((l) => l.includes('update StatefulSet/demo'))).toBe(true);
    expect(a.operator).toBeUndefined();
  });

  it('stops reconciling when its renewals fail, before the standby may take the Lease; the standby then reconciles', async () => {
    await cluster('three');
    const aApi = breakableLeaseApi();
    const a = replica('op-a', 'three', aApi);
    a.start();
    await until(
      'the StatefulSet',
      () => statefulSet('three'),
      (r) => r.status === 200,
    );
    const b = replica('op-b', 'three');
    b.start();
    await until(
      'b to see the leader',
      () => b.health().readyz.message,
      (m) => m.includes('leader: op-a'),
    );
    const aOperator = a.operator!;
    await until(
      "a's failover controller",
      () => logs,
      (l) => l.includes('op-a controller started three/demo'),
    );
    expect(logs).not.toContain('op-b controller started three/demo'); // the standby runs none
    aApi.broken = true; // a can neither renew nor read; it still reaches the API server for everything else
    await until(
      'a to stop leading',
      () => a.leading || a.operator !== undefined,
      (l) => !l,
      renewDeadlineMillis + 2000,
    );
    // a's operator is stopped: a spec change is not reconciled by it
    const writesBefore = writesOf('op-a', 'three').length;
    await until(
      'b to lead',
      () => b.leading,
      (l) => l,
      leaseDurationSeconds * 1000 + 2000,
    );
    // the standby waited out the whole lease duration after the last renewal it saw: a had stopped first
    const stoppedAt = logs.findIndex((l) => l.startsWith('op-a WARN stopped leading'));
    const acquiredAt = logs.findIndex((l) =>
      l.startsWith('op-b acquired Lease pgha-system/pgha-operator (expired from op-a)'),
    );
    expect(stoppedAt).toBeGreaterThanOrEqual(0);
    expect(acquiredAt).toBeGreaterThan(stoppedAt);
    await scale('three', 4);
    await until(
      '4 replicas',
      () => statefulSet('three'),
      (r) => r.body.spec.replicas === 4,
    );
    expect(writesOf('op-a', 'three').length).toBe(writesBefore);
    expect(writesOf('op-b', 'three').some((l) => l.includes('update StatefulSet/demo'))).toBe(true);
    // a stopped its failover controller with its leadership, before b started its own
    const aControllerStopped = logs.indexOf('op-a controller stopped three/demo');
    expect(aControllerStopped).toBeGreaterThanOrEqual(0);
    expect(aControllerStopped).toBeLessThan(acquiredAt);
    expect(logs.indexOf('op-b controller started three/demo')).toBeGreaterThan(aControllerStopped);
    expect(aOperator.reconciles).toBeGreaterThan(0);
    expect(logs).toContainEqual(
      expect.stringMatching(/^op-a WARN stopped leading: no successful renewal within 2000 ms/),
    );
    expect(a.health().readyz.ok).toBe(false); // it cannot reach the API server (for the Lease)
    expect((await lease()).body.spec).toMatchObject({ holderIdentity: 'op-b', leaseTransitions: 1 });
  });

  it('stops at its renew deadline when its Lease requests hang (a timer ends it, not an answer)', async () => {
    await cluster('six');
    const aApi = breakableLeaseApi();
    const a = replica('op-a', 'six', aApi);
    a.start();
    await until(
      'the StatefulSet',
      () => statefulSet('six'),
      (r) => r.status === 200,
    );
    aApi.hung = true;
    const hung = Date.now();
    await until(
      'a to stop leading',
      () => a.leading || a.operator !== undefined,
      (l) => !l,
      renewDeadlineMillis + 2000,
    );
    // not at once: it led until the deadline of its last renewal, sent about a retry period before the hang
    expect(Date.now() - hung).toBeGreaterThanOrEqual(renewDeadlineMillis / 2);
    expect(logs).toContainEqual(
      expect.stringMatching(/^op-a WARN stopped leading: no successful renewal within 2000 ms/),
    );
  });

  it('refuses every write once mayWrite says the leadership is over, even before the operator is stopped', async () => {
    await cluster('five');
    const operator = new Operator({
      kubeConfig,
      namespace: 'five',
      mayWrite: () => false, // as after the renew deadline, with the timer that stops the operator not yet run
      readLeader: async () => null,
      requestSwitchover: async () => undefined,
      log: { info: (m) => logs.push(`late ${m}`), warn: (m) => logs.push(`late WARN ${m}`) },
      resyncIntervalMillis: 150,
      retryDelayMillis: 20,
    });
    await operator.start();
    try {
      await until(
        'three reconciles',
        () => operator.reconciles,
        (n) => n >= 3,
      );
    } finally {
      await operator.stop();
    }
    expect((await statefulSet('five')).status).toBe(404);
    expect(logs).toContainEqual(
      expect.stringMatching(
        /^late WARN five\/demo: reconcile failed: not writing [a-z-]+: this operator no longer leads/,
      ),
    );
    expect(logs.filter((l) => l.startsWith('late five/demo:'))).toEqual([]);
  });

  it('lets only one of two candidates take the same expired Lease', async () => {
    // A Lease left by a replica that is gone, never renewed again.
    await call('POST', '/apis/coordination.k8s.io/v1/namespaces/pgha-system/leases', {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: 'pgha-operator' },
      spec: {
        holderIdentity: 'op-gone',
        leaseDurationSeconds: 1,
        acquireTime: '2026-12-01T10:00:00.000000Z',
        renewTime: '2026-12-01T10:00:00.000000Z',
        leaseTransitions: 4,
      },
    });
    await call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'four' } });
    const a = replica('op-a', 'four');
    const b = replica('op-b', 'four');
    a.start();
    b.start();
    await until(
      'a leader',
      () => a.leading || b.leading,
      (l) => l,
      5000,
    );
    // both saw it expire at about the same time; several more rounds: still one
    const renewTimes = new Set<string>();
    await until(
      'three renewals',
      async () => {
        renewTimes.add((await lease()).body.spec.renewTime);
        expect(a.leading && b.leading).toBe(false);
        return renewTimes.size;
      },
      (n) => n >= 4,
    );
    expect(a.leaderships + b.leaderships).toBe(1);
    expect((await lease()).body.spec.leaseTransitions).toBe(5);
  });
});

describe("deploy/rbac.yaml covers the operator's requests", () => {
  it('grants every request the replicas sent in this file, the Lease ones included (their kubeconfig sends a token)', () => {
    const sent = api.requests.filter((r) => r.token !== undefined);
    expect(sent.some((r) => r.path.includes('/leases'))).toBe(true);
    expect(deniedRequests(deployedRbac(), operatorServiceAccount, sent)).toEqual([]);
  });
});
