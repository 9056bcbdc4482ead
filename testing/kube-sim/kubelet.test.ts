/**
 * The simulated kubelet against the test API server, for real: pods run as
 * processes in their own network namespaces (testing/kube-sim/test-pod.mjs as the
 * image), with resolved env, volumes, probes, restarts and graceful deletion. Needs
 * root (skipped otherwise). Every pod, process and namespace is removed in afterAll
 * (the last test checks that stop() alone does it).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApiServer } from '../kube-api/api-server.js';
import { apiCaller, pollUntil } from '../kube-api/test-client.js';
import { listNetns, netnsUnavailableReason } from '../netns.js';
import { Kubelet } from './kubelet.js';
import { createPodNetwork, type PodNetwork } from './pod-network.js';
import { expandVariables, restartBackoff } from './pod-spec.js';
import { volumeDir } from './volumes.js';

const unavailable = netnsUnavailableReason();
const image = 'pgha-test/test-pod:1';
const script = new URL('./test-pod.mjs', import.meta.url).pathname;
/** Where pods mount volumes; made on the host (empty there: the mounts are private to the pods). */
const mountRoot = `/mnt/pgha-kubelet-test-${process.pid}`;

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies read by path in assertions
type Body = any;

/** Whether the process exists and is not a zombie (orphans here may wait a while to be reaped). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

describe("the kubelet's pure parts", () => {
  it('expands $(VAR) as Kubernetes does: known names, $$ escapes, unknown and unclosed references kept', () => {
    const vars = new Map([
      ['A', 'x'],
      ['B', '$(A)'],
    ]);
    const expand = (s: string) => expandVariables(s, (n) => vars.get(n));
    expect(expand('$(A)-$(A)')).toBe('x-x');
    expect(expand('$$(A)')).toBe('$(A)');
    expect(expand('$$$(A)')).toBe('$x');
    expect(expand('$$$$')).toBe('$$');
    expect(expand('$(C) $A $')).toBe('$(C) $A $');
    expect(expand('$(A')).toBe('$(A');
    expect(expand('$(B)')).toBe('$(A)'); // values are not expanded again
    expect(expand('')).toBe('');
  });

  it('backs off restarts: at once, then 10 s doubling to 5 min, and from the start after 10 min of running', () => {
    const waits: number[] = [];
    let current = 0;
    for (let i = 0; i < 8; i++) {
      const { waitSeconds, nextSeconds } = restartBackoff(current, 1000);
      waits.push(waitSeconds);
      current = nextSeconds;
    }
    expect(waits).toEqual([0, 10, 20, 40, 80, 160, 300, 300]);
    expect(restartBackoff(300, 10 * 60_000)).toEqual({ waitSeconds: 0, nextSeconds: 10 });
    expect(restartBackoff(300, 10 * 60_000 - 1)).toEqual({ waitSeconds: 300, nextSeconds: 300 });
  });
});

describe.skipIf(unavailable !== null)('simulated kubelet', () => {
  let network: PodNetwork;
  let api: KubeApiServer;
  let kubelet: Kubelet;
  let stateDir: string;
  let kubeconfig: string;
  let extraHosts: string | string[] = '198.18.255.254 db-0.example\n';
  const lines: string[] = [];
  const call = apiCaller(() => api.url);
  const pods = '/api/v1/namespaces/default/pods';
  const context = () => `kubelet log:\n${lines.slice(-30).join('\n')}`;

  beforeAll(async () => {
    network = createPodNetwork();
    api = await KubeApiServer.start({ host: network.gateway, clusterIpOf: (n) => network.serviceAddress(n) });
    stateDir = mkdtempSync(join(tmpdir(), 'pgha-kubelet-'));
    kubeconfig = api.writeKubeconfig(stateDir);
    kubelet = await Kubelet.start({
      apiUrl: api.url,
      network,
      stateDir,
      images: (name) => {
        if (name !== image) throw new Error(`no image ${name}`);
        return { entrypoint: [process.execPath, script], cmd: ['from-image-cmd'], env: { IMAGE_ENV: 'from-image' } };
      },
      hosts: () => extraHosts,
      kubeconfigForPods: kubeconfig,
      log: (line) => lines.push(`${new Date().toISOString()} ${line}`),
    });
  });

  afterAll(async () => {
    await kubelet?.stop();
    await api?.close();
    const left = network?.destroy() ?? [];
    rmSync(mountRoot, { recursive: true, force: true });
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  const container = (overrides: Record<string, unknown> = {}) => ({
    name: 'main',
    image,
    ports: [{ name: 'http', containerPort: 8080 }],
    ...overrides,
  });

  async function createPod(name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}) {
    const res = await call('POST', pods, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, ...metadata },
      spec: { containers: [container()], ...spec },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  }

  const getPod = async (name: string) => (await call('GET', `${pods}/${name}`)).body as Body;

  const waitPod = (name: string, what: string, ok: (pod: Body) => boolean, millis = 15_000) =>
    pollUntil(`${name}: ${what}`, () => getPod(name), ok, { millis, context });

  const condition = (pod: Body, type: string) =>
    (pod.status?.conditions ?? []).find((c: Body) => c.type === type)?.status;

  const running = (pod: Body) =>
    pod.status?.phase === 'Running' && pod.status.containerStatuses?.every((c: Body) => c.state.running);

  /** GETs path from the pod's HTTP server (retrying while it starts). */
  async function fromPod(name: string, path: string, port = 8080): Promise<string> {
    const pod = await getPod(name);
    const res = await pollUntil(
      `${name} answering ${path}`,
      () =>
        fetch(`http://${pod.status.podIP}:${port}${path}`).catch((error: Error) => `${error.message} (${error.cause})`),
      (r) => typeof r !== 'string',
      { millis: 10_000, context },
    );
    return (res as Response).text();
  }

  it('binds a pod, runs it in its own namespace and resolves its env: values, $(VAR), a Secret, a ConfigMap, the downward API', async () => {
    await call('POST', '/api/v1/namespaces/default/secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'creds' },
      data: { password: Buffer.from('s3cret').toString('base64') },
    });
    await call('POST', '/api/v1/namespaces/default/configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'settings' },
      data: { mode: 'fast', level: '3' },
    });
    await createPod(
      'env-pod',
      {
        containers: [
          container({
            args: ['$(GREETING)-arg', '$$(GREETING)', '$(NOPE)'],
            env: [
              { name: 'GREETING', value: 'hello' },
              { name: 'COMBINED', value: '$(GREETING) from $(POD_NAME_LATER) $$(GREETING)' },
              { name: 'POD_NAME_LATER', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
              { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
              { name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
              { name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
              { name: 'NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
              { name: 'UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
              { name: 'APP', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
              { name: 'PASSWORD', valueFrom: { secretKeyRef: { name: 'creds', key: 'password' } } },
              { name: 'MODE', valueFrom: { configMapKeyRef: { name: 'settings', key: 'mode' } } },
              {
                name: 'MISSING',
                valueFrom: { secretKeyRef: { name: 'no-such-secret', key: 'x', optional: true } },
              },
              { name: 'IMAGE_ENV', value: 'overridden' },
            ],
            envFrom: [{ configMapRef: { name: 'settings' }, prefix: 'CM_' }],
          }),
        ],
      },
      { labels: { app: 'pgha' } },
    );
    const pod = await waitPod('env-pod', 'running', running);
    expect(pod.spec.nodeName).toBe('sim-node');
    expect(pod.status.hostIP).toBe(network.gateway);
    expect(pod.status.podIPs).toEqual([{ ip: pod.status.podIP }]);
    expect(Date.parse(pod.status.startTime)).toBeGreaterThan(0);
    expect(pod.status.podIP.split('.').slice(0, 3)).toEqual(network.gateway.split('.').slice(0, 3));
    const netns = kubelet.podNetns('default', 'env-pod')!;
    expect(listNetns()).toContain(netns);

    const env = JSON.parse(await fromPod('env-pod', '/env'));
    expect(env).toMatchObject({
      GREETING: 'hello',
      // only variables defined before are expanded; $$ escapes
      COMBINED: 'hello from $(POD_NAME_LATER) $(GREETING)',
      POD_NAME_LATER: 'env-pod',
      POD_IP: pod.status.podIP,
      HOST_IP: network.gateway,
      NODE: 'sim-node',
      NS: 'default',
      UID: pod.metadata.uid,
      APP: 'pgha',
      PASSWORD: 's3cret',
      MODE: 'fast',
      CM_mode: 'fast',
      CM_level: '3',
      IMAGE_ENV: 'overridden',
      KUBECONFIG: kubeconfig,
      HOSTNAME: 'env-pod',
    });
    expect(env.MISSING).toBeUndefined();
    // args replace the image's cmd; $(VAR) expands against the container's env
    expect(JSON.parse(await fromPod('env-pod', '/argv'))).toEqual(['hello-arg', '$(GREETING)', '$(NOPE)']);
    expect(await fromPod('env-pod', '/hostname')).toBe('env-pod');

    // /etc/hosts: the pod's own name, the simulator's lines, rewritten in place on refresh
    const hosts = await fromPod('env-pod', `/read?path=/etc/hosts`);
    expect(hosts).toContain('127.0.0.1\tlocalhost');
    expect(hosts).toContain(`${pod.status.podIP}\tenv-pod`);
    expect(hosts).toContain('198.18.255.254 db-0.example');
    extraHosts = ['198.18.255.253 db-1.example', '198.18.255.252 db-2.example']; // a list of lines works too
    kubelet.refreshHosts();
    const refreshed = await fromPod('env-pod', `/read?path=/etc/hosts`);
    expect(refreshed).toContain('198.18.255.253 db-1.example\n198.18.255.252 db-2.example\n');
    expect(refreshed).not.toContain('db-0.example');
  });

  it('uses the image cmd without args, and leaves KUBECONFIG out when the token is not mounted', async () => {
    await createPod('plain-pod', { automountServiceAccountToken: false });
    await waitPod('plain-pod', 'running', running);
    expect(JSON.parse(await fromPod('plain-pod', '/argv'))).toEqual(['from-image-cmd']);
    const env = JSON.parse(await fromPod('plain-pod', '/env'));
    expect(env.KUBECONFIG).toBeUndefined();
    expect(env.IMAGE_ENV).toBe('from-image');
  });

  it('keeps a container waiting while a Secret it needs is missing, and starts it once it exists', async () => {
    await createPod('needs-secret', {
      containers: [
        container({ env: [{ name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'late', key: 'token' } } }] }),
      ],
    });
    const waiting = await waitPod(
      'needs-secret',
      'CreateContainerConfigError',
      (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'CreateContainerConfigError',
    );
    expect(waiting.status.phase).toBe('Pending');
    expect(waiting.status.containerStatuses[0].state.waiting.message).toContain('"late" not found');
    await call('POST', '/api/v1/namespaces/default/secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'late' },
      data: { token: Buffer.from('t0k').toString('base64') },
    });
    await waitPod('needs-secret', 'running', running);
    expect(JSON.parse(await fromPod('needs-secret', '/env')).TOKEN).toBe('t0k');
  });

  it('reports an image it has no build for as ErrImagePull', async () => {
    await createPod('no-image', { containers: [container({ image: 'nowhere/nothing:1' })] });
    const pod = await waitPod(
      'no-image',
      'ErrImagePull',
      (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ErrImagePull',
    );
    expect(pod.status.phase).toBe('Pending');
    expect(pod.status.containerStatuses[0].state.waiting.message).toContain('no image nowhere/nothing:1');
  });

  it('sets Ready only once the httpGet readiness probe (named port) succeeds', async () => {
    await createPod('ready-pod', {
      containers: [container({ readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 } })],
    });
    await waitPod('ready-pod', 'running', running);
    // the probe has run and failed: the container is not ready
    await pollUntil(
      'a readiness probe call',
      () => fromPod('ready-pod', '/ready-hits'),
      (h) => Number(h) >= 2,
      {
        millis: 10_000,
        context,
      },
    );
    const notReady = await getPod('ready-pod');
    expect(condition(notReady, 'Ready')).toBe('False');
    expect(condition(notReady, 'ContainersReady')).toBe('False');
    expect(notReady.status.containerStatuses[0]).toMatchObject({ ready: false, started: true });
    await fromPod('ready-pod', '/make-ready');
    const ready = await waitPod('ready-pod', 'Ready', (p) => condition(p, 'Ready') === 'True');
    expect(ready.status.containerStatuses[0].ready).toBe(true);
    expect(condition(ready, 'PodScheduled')).toBe('True');
    expect(condition(ready, 'Initialized')).toBe('True');
    const readyCondition = ready.status.conditions.find((c: Body) => c.type === 'Ready');
    expect(Date.parse(readyCondition.lastTransitionTime)).toBeGreaterThanOrEqual(Date.parse(notReady.status.startTime));
    expect(lines.some((l) => l.includes('default/ready-pod: ready'))).toBe(true);
  });

  it('restarts a container whose process is killed with SIGKILL: restartCount 1, Running again', async () => {
    await createPod('crash-pod', {});
    const before = await waitPod('crash-pod', 'ready', (p) => condition(p, 'Ready') === 'True');
    expect(before.status.containerStatuses[0].restartCount).toBe(0);
    const pids = kubelet.podPids('default', 'crash-pod');
    expect(pids).toHaveLength(1); // setpriv, ip, unshare and sh exec'd: the container's main process is node
    process.kill(pids[0]!, 'SIGKILL');
    const after = await waitPod(
      'crash-pod',
      'restarted and ready',
      (p) => p.status.containerStatuses[0].restartCount === 1 && condition(p, 'Ready') === 'True',
    );
    expect(running(after)).toBe(true);
    expect(after.status.containerStatuses[0].lastState.terminated).toMatchObject({ exitCode: 137, reason: 'Error' });
    const newPids = kubelet.podPids('default', 'crash-pod');
    expect(newPids).toHaveLength(1);
    expect(newPids[0]).not.toBe(pids[0]);
    expect(await fromPod('crash-pod', '/healthz')).toBe('ok');
    expect(lines.some((l) => l.includes('default/crash-pod: container main exited with code 137'))).toBe(true);

    // a second crash right away waits out the back-off (10 s) in CrashLoopBackOff
    process.kill(newPids[0]!, 'SIGKILL');
    const backingOff = await waitPod(
      'crash-pod',
      'CrashLoopBackOff',
      (p) => p.status.containerStatuses[0].state.waiting?.reason === 'CrashLoopBackOff',
    );
    expect(backingOff.status.containerStatuses[0].restartCount).toBe(1);
    expect(condition(backingOff, 'Ready')).toBe('False');
    expect(lines.some((l) => l.includes('default/crash-pod: container main restarting in 10 s'))).toBe(true);
  });

  it('kills what a crashed container left behind (even in another session) before restarting it', async () => {
    await createPod('leaver', {
      containers: [container({ command: ['sh', '-c', `setsid sleep 600 & exec ${process.execPath} ${script}`] })],
    });
    await waitPod('leaver', 'ready', (p) => condition(p, 'Ready') === 'True');
    const comm = (pid: number) => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    const byName = () =>
      pollUntil(
        'node and sleep in the pod',
        () => kubelet.podPids('default', 'leaver').map((pid) => ({ pid, comm: comm(pid) })),
        (ps) => ps.length === 2 && ps.some((p) => p.comm === 'sleep'),
        { millis: 10_000, context },
      );
    const before = await byName();
    const main = before.find((p) => p.comm !== 'sleep')!.pid;
    const sleeper = before.find((p) => p.comm === 'sleep')!.pid;
    process.kill(main, 'SIGKILL');
    await waitPod('leaver', 'restarted', (p) => p.status.containerStatuses[0].restartCount === 1 && running(p));
    expect(alive(sleeper)).toBe(false);
    const after = await byName();
    expect(after.map((p) => p.pid)).not.toContain(sleeper);
  });

  it('runs every container of a pod in its namespace, sharing an emptyDir; mounts Secret and ConfigMap volumes read-only', async () => {
    const mounts = [{ name: 'scratch', mountPath: `${mountRoot}/multi/scratch` }];
    await createPod('multi', {
      containers: [
        container({
          volumeMounts: [
            ...mounts,
            { name: 'secret', mountPath: `${mountRoot}/multi/secret` },
            { name: 'config', mountPath: `${mountRoot}/multi/config` },
          ],
        }),
        container({ name: 'sidecar', env: [{ name: 'PORT', value: '8081' }], ports: [], volumeMounts: mounts }),
      ],
      volumes: [
        { name: 'scratch', emptyDir: {} },
        { name: 'secret', secret: { secretName: 'creds' } },
        { name: 'config', configMap: { name: 'settings', items: [{ key: 'mode', path: 'conf/mode.txt' }] } },
      ],
    });
    const pod = await waitPod('multi', 'both containers running', running);
    expect(pod.status.containerStatuses.map((c: Body) => c.name)).toEqual(['main', 'sidecar']);
    expect(await fromPod('multi', `/write?path=${mountRoot}/multi/scratch/x&data=shared`)).toBe('ok');
    expect(await fromPod('multi', `/read?path=${mountRoot}/multi/scratch/x`, 8081)).toBe('shared');
    expect(await fromPod('multi', `/read?path=${mountRoot}/multi/secret/password`)).toBe('s3cret');
    expect(await fromPod('multi', `/read?path=${mountRoot}/multi/config/conf/mode.txt`)).toBe('fast');
    expect(await fromPod('multi', `/read?path=${mountRoot}/multi/config/level`)).toContain('ENOENT'); // not in items
    expect(await fromPod('multi', `/write?path=${mountRoot}/multi/secret/password&data=x`)).toContain('EROFS');
  });

  it('restarts a container whose liveness probe fails', async () => {
    await createPod('live-pod', {
      containers: [
        container({
          livenessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1, failureThreshold: 2 },
        }),
      ],
    });
    await waitPod('live-pod', 'ready', (p) => condition(p, 'Ready') === 'True');
    const [pid] = kubelet.podPids('default', 'live-pod');
    await fromPod('live-pod', '/sick');
    const after = await waitPod(
      'live-pod',
      'restarted by the liveness probe',
      (p) => p.status.containerStatuses[0].restartCount === 1 && running(p),
    );
    expect(after.status.containerStatuses[0].lastState.terminated.exitCode).toBe(0); // it exits on SIGTERM
    expect(alive(pid!)).toBe(false);
    expect(await fromPod('live-pod', '/healthz')).toBe('ok');
    expect(lines.some((l) => l.includes('default/live-pod: container main failed its liveness probe 2 times'))).toBe(
      true,
    );
  });

  it('gates readiness and liveness on a startup probe (tcpSocket) and runs exec probes in the pod', async () => {
    await createPod('startup-pod', {
      containers: [
        container({
          env: [{ name: 'PROBED', value: 'yes' }],
          startupProbe: { tcpSocket: { port: 'http' }, periodSeconds: 1, failureThreshold: 30 },
          readinessProbe: {
            exec: { command: ['sh', '-c', 'test "$(hostname)" = startup-pod && test "$PROBED" = yes'] },
            periodSeconds: 1,
          },
        }),
      ],
    });
    const pod = await waitPod('startup-pod', 'Ready', (p) => condition(p, 'Ready') === 'True');
    expect(pod.status.containerStatuses[0]).toMatchObject({ started: true, ready: true });
    expect(lines.some((l) => l.includes('default/startup-pod: container main started (startup probe succeeded)'))).toBe(
      true,
    );
  });

  it('mounts a PersistentVolumeClaim: a file written survives deleting and re-creating the pod', async () => {
    const spec = {
      containers: [container({ volumeMounts: [{ name: 'data', mountPath: `${mountRoot}/data` }] })],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data-keeper-0' } }],
    };
    await createPod('keeper', spec);
    await waitPod('keeper', 'running', running);
    expect(await fromPod('keeper', `/write?path=${mountRoot}/data/file&data=kept`)).toBe('ok');
    const dir = volumeDir(stateDir, 'default', 'data-keeper-0');
    expect(readFileSync(join(dir, 'file'), 'utf8')).toBe('kept');
    expect(existsSync(`${mountRoot}/data/file`)).toBe(false); // the bind mount is the pod's alone
    // postgres (run by the agent as the OS user postgres) can reach the volume
    for (let d = dir; d !== stateDir; d = dirname(d)) expect(statSync(d).mode & 0o755).toBe(0o755);
    expect(statSync(stateDir).mode & 0o755).toBe(0o755);
    execFileSync('setpriv', [
      '--reuid',
      'postgres',
      '--regid',
      'postgres',
      '--clear-groups',
      'test',
      '-r',
      join(dir, 'file'),
    ]);
    expect((await call('DELETE', `${pods}/keeper`)).status).toBe(200);
    await pollUntil(
      'keeper deleted',
      () => call('GET', `${pods}/keeper`),
      (r) => r.status === 404,
      {
        millis: 15_000,
        context,
      },
    );
    await createPod('keeper', spec);
    await waitPod('keeper', 'running', running);
    expect(await fromPod('keeper', `/read?path=${mountRoot}/data/file`)).toBe('kept');
  });

  it('deletes gracefully: marks the pod, SIGTERMs the container, then removes the namespace and the object', async () => {
    const spec = (name: string, extra: Record<string, unknown>) => ({
      terminationGracePeriodSeconds: 20,
      containers: [
        container({
          env: [{ name: 'EVENTS_FILE', value: `${mountRoot}/${name}/events` }, ...((extra.env as []) ?? [])],
          volumeMounts: [{ name: 'data', mountPath: `${mountRoot}/${name}` }],
        }),
      ],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: `data-${name}` } }],
    });
    await createPod('term-pod', spec('term-pod', {}));
    await waitPod('term-pod', 'running', running);
    const netns = kubelet.podNetns('default', 'term-pod')!;
    const [pid] = kubelet.podPids('default', 'term-pod');
    const events = join(volumeDir(stateDir, 'default', 'data-term-pod'), 'events');
    await pollUntil(
      'the start event',
      () => (existsSync(events) ? readFileSync(events, 'utf8') : ''),
      (t) => t.includes(`start ${pid}`),
      { millis: 10_000, context },
    );

    const deleted = await call('DELETE', `${pods}/term-pod`);
    expect(deleted.status).toBe(200);
    // the API server only marks a scheduled pod; its kubelet deletes it once stopped
    expect(deleted.body.metadata.deletionTimestamp).toBeDefined();
    expect(deleted.body.metadata.deletionGracePeriodSeconds).toBe(20);
    await pollUntil(
      'term-pod gone',
      () => call('GET', `${pods}/term-pod`),
      (r) => r.status === 404,
      {
        millis: 15_000,
        context,
      },
    );
    expect(readFileSync(events, 'utf8')).toContain(`SIGTERM ${pid}`);
    expect(alive(pid!)).toBe(false);
    expect(listNetns()).not.toContain(netns);
    expect(lines.some((l) => l.includes('default/term-pod: killed after grace'))).toBe(false);

    // a container that ignores SIGTERM is killed when the grace period (here 1 s) ends
    await createPod('stubborn', {
      ...spec('stubborn', { env: [{ name: 'IGNORE_SIGTERM', value: '1' }] }),
      terminationGracePeriodSeconds: 1,
    });
    await waitPod('stubborn', 'running', running);
    const [stubbornPid] = kubelet.podPids('default', 'stubborn');
    const stubbornEvents = join(volumeDir(stateDir, 'default', 'data-stubborn'), 'events');
    await pollUntil(
      'the start event',
      () => (existsSync(stubbornEvents) ? readFileSync(stubbornEvents, 'utf8') : ''),
      (t) => t.includes(`start ${stubbornPid}`),
      { millis: 10_000, context },
    );
    expect((await call('DELETE', `${pods}/stubborn`)).status).toBe(200);
    await pollUntil(
      'stubborn gone',
      () => call('GET', `${pods}/stubborn`),
      (r) => r.status === 404,
      {
        millis: 15_000,
        context,
      },
    );
    expect(readFileSync(stubbornEvents, 'utf8')).toContain(`SIGTERM ${stubbornPid}`);
    expect(alive(stubbornPid!)).toBe(false);
    expect(lines.some((l) => l.includes('default/stubborn: killed after grace'))).toBe(true);
  });

  it('stops a pod gracefully when the garbage collector deletes it with its owner', async () => {
    const owner = await call('POST', '/api/v1/namespaces/default/configmaps', {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'owner' },
      data: {},
    });
    await createPod(
      'owned',
      { terminationGracePeriodSeconds: 15 },
      { ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.body.metadata.uid }] },
    );
    await waitPod('owned', 'running', running);
    const netns = kubelet.podNetns('default', 'owned')!;
    expect((await call('DELETE', '/api/v1/namespaces/default/configmaps/owner')).status).toBe(200);
    await pollUntil(
      'owned gone',
      () => call('GET', `${pods}/owned`),
      (r) => r.status === 404,
      {
        millis: 15_000,
        context,
      },
    );
    expect(listNetns()).not.toContain(netns);
    // stopped as a graceful deletion (with the pod's grace period), not killed as a vanished pod
    expect(lines.some((l) => l.includes('default/owned: deleting: SIGTERM to its containers, grace 15 s'))).toBe(true);
    expect(lines.some((l) => l.includes('default/owned: gone from the API'))).toBe(false);
  });

  it('kills a pod deleted with gracePeriodSeconds=0', async () => {
    await createPod('forced', {});
    await waitPod('forced', 'running', running);
    const netns = kubelet.podNetns('default', 'forced')!;
    const [pid] = kubelet.podPids('default', 'forced');
    expect((await call('DELETE', `${pods}/forced?gracePeriodSeconds=0`)).status).toBe(200);
    expect((await call('GET', `${pods}/forced`)).status).toBe(404);
    await pollUntil(
      'forced pod killed',
      () => listNetns().includes(netns) || alive(pid!),
      (v) => !v,
      {
        millis: 10_000,
        context,
      },
    );
  });

  it('writes container output to its log file, appending across restarts', async () => {
    await createPod('chatty', {
      containers: [container({ command: ['sh', '-c', 'echo "run $$$$"; exec sleep 600'] })],
    });
    await waitPod('chatty', 'running', running);
    await pollUntil(
      'the first line',
      () => kubelet.logOf('default', 'chatty', 'main'),
      (t) => /run \d+/.test(t),
      {
        millis: 10_000,
        context,
      },
    );
    for (const pid of kubelet.podPids('default', 'chatty')) process.kill(pid, 'SIGKILL');
    await waitPod('chatty', 'restarted', (p) => p.status.containerStatuses[0].restartCount === 1 && running(p));
    const log = await pollUntil(
      'two lines',
      () => kubelet.logOf('default', 'chatty'),
      (t) => t.split('\n').filter((l) => l.startsWith('run ')).length === 2,
      {
        millis: 10_000,
        context,
      },
    );
    expect(log).toMatch(/^run \d+\nrun \d+\n$/);
  });

  it('stop() kills every pod and removes every namespace, leaving the API objects', async () => {
    await createPod('last-a', {});
    await createPod('last-b', {});
    await waitPod('last-a', 'running', running);
    await waitPod('last-b', 'running', running);
    const names = (await call('GET', pods)).body.items.map((p: Body) => p.metadata.name) as string[];
    const netnses = names.map((n) => kubelet.podNetns('default', n)).filter((n) => n !== undefined);
    const pids = names.flatMap((n) => kubelet.podPids('default', n));
    expect(netnses.length).toBeGreaterThanOrEqual(2);
    expect(pids.length).toBeGreaterThanOrEqual(2);
    await kubelet.stop();
    expect(pids.filter(alive)).toEqual([]);
    const namespaces = listNetns();
    expect(netnses.filter((n) => namespaces.includes(n))).toEqual([]);
    expect(namespaces.filter((n) => n.startsWith(`pks-${process.pid}-`))).toEqual([]);
    expect((await call('GET', `${pods}/last-a`)).status).toBe(200);
  });
});

describe.skipIf(unavailable !== null)('simulated kubelet in a process that dies', () => {
  it('takes its pods with it: the containers die (pdeathsig), the next network removes the namespaces', async () => {
    // A simulator in a child process: API server, network, kubelet and one pod; it
    // reports the pod's namespace and container PID, then is SIGKILLed.
    const dir = mkdtempSync(join(tmpdir(), 'pgha-kubelet-dies-'));
    const code = `
      import { KubeApiServer } from ${JSON.stringify(new URL('../kube-api/api-server.ts', import.meta.url).pathname)};
      import { Kubelet } from ${JSON.stringify(new URL('./kubelet.ts', import.meta.url).pathname)};
      import { createPodNetwork } from ${JSON.stringify(new URL('./pod-network.ts', import.meta.url).pathname)};
      const network = createPodNetwork();
      const api = await KubeApiServer.start({ host: network.gateway });
      const kubelet = await Kubelet.start({ apiUrl: api.url, network, stateDir: ${JSON.stringify(dir)},
        images: () => ({ entrypoint: [process.execPath, ${JSON.stringify(script)}], env: {} }) });
      await fetch(api.url + '/api/v1/namespaces/default/pods', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'i' }] } }) });
      for (;;) {
        const pod = await (await fetch(api.url + '/api/v1/namespaces/default/pods/p')).json();
        const pids = kubelet.podPids('default', 'p');
        if (pod.status?.containerStatuses?.[0]?.state?.running && pids.length === 1) {
          console.log(JSON.stringify({ netns: kubelet.podNetns('default', 'p'), pid: pids[0] }));
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      setInterval(() => {}, 1000);`;
    const root = new URL('../..', import.meta.url).pathname;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let report: { netns: string; pid: number } | undefined;
    let network: PodNetwork | undefined;
    try {
      report = await new Promise<{ netns: string; pid: number }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the simulator did not report a running pod in 25 s')), 25_000);
        child.stdout!.once('data', (d: Buffer) => {
          clearTimeout(timer);
          resolve(JSON.parse(d.toString()));
        });
      });
      expect(alive(report.pid)).toBe(true);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      const pid = report.pid;
      await pollUntil(
        'the container to die with its simulator',
        () => alive(pid),
        (a) => !a,
        { millis: 5000 },
      );
      expect(listNetns()).toContain(report.netns); // the dead run could not clean up...
      network = createPodNetwork(); // ...the next one does
      expect(listNetns()).not.toContain(report.netns);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await gone;
      }
      if (report !== undefined && alive(report.pid)) process.kill(report.pid, 'SIGKILL');
      // what the dead run left goes with the next network's stale cleanup
      (network ?? createPodNetwork()).destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 40_000);
});
