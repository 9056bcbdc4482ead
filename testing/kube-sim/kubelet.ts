// Test support: the simulated cluster's kubelet. It runs every pod of the test API
// server (testing/kube-api) as local processes, one network namespace per pod on a
// {@link PodNetwork}, and reports back as a kubelet does: binding, pod IPs,
// container states, probes, conditions, restarts with back-off, graceful deletion.
//
// Deviations from a real kubelet, on purpose: no images (a callback maps an image
// name to a local command and environment), no container isolation beyond the
// network, mount and UTS namespaces (containers run as root in the host's file
// system, securityContext and resources are ignored), no init containers, no
// lifecycle hooks, no in-cluster TLS or token (KUBECONFIG points at a kubeconfig
// the caller supplies), no DNS (the hosts file the caller supplies instead).
//
// Each container's process is `setpriv --pdeathsig KILL -- ip netns exec <ns>
// unshare --uts -- sh -c '<hostname; bind mounts; cd>; exec "$@"' sh <argv>`:
// it dies with the simulator, gets a mount namespace of its own from `ip netns
// exec` (which also bind-mounts /etc/netns/<ns>/hosts over /etc/hosts), and its PID
// is the container's main process once the shell has exec'd. The processes of a
// container are the ones in the pod's network namespace sharing its mount
// namespace: that finds what the main process left (postgres in its own session).
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { netnsEtcDir, type PodNetwork } from './pod-network.js';
import {
  type Container,
  type ContainerState,
  expandVariables,
  type Pod,
  type Probe,
  podStatus,
  restartBackoff,
  signalNumbers,
  type Terminated,
} from './pod-spec.js';
import { volumeDir } from './volumes.js';

/** What an image would run: the local build standing in for it. */
export interface ImageConfig {
  /** The image's ENTRYPOINT (used when the container has no `command`). */
  readonly entrypoint: readonly string[];
  /** The image's CMD (used when the container has neither `command` nor `args`). */
  readonly cmd?: readonly string[];
  /** The image's ENV (the container's env overrides it). */
  readonly env: Readonly<Record<string, string>>;
  /** The image's WORKDIR (the container's workingDir overrides it). */
  readonly workingDir?: string;
}

export interface KubeletOptions {
  /** The test API server's URL (plain HTTP). */
  readonly apiUrl: string;
  readonly network: PodNetwork;
  /** Where volumes (see volumes.ts), per-pod files and logs live; made world-traversable. */
  readonly stateDir: string;
  /** Maps a container's image name to what runs; throw for an unknown image. */
  readonly images: (image: string) => ImageConfig;
  /**
   * Extra `/etc/hosts` lines (`ip name…`) for every pod, as one string or a list of
   * lines (the Service proxy's `hostsLines()`), read at pod start and by
   * {@link Kubelet.refreshHosts}.
   */
  readonly hosts?: () => string | readonly string[];
  /** KUBECONFIG given to pods (unless `automountServiceAccountToken: false`). */
  readonly kubeconfigForPods?: string;
  /** One line per pod lifecycle step. */
  readonly log?: (line: string) => void;
  /** The node's name, written to unscheduled pods' `spec.nodeName`. Default `sim-node`. */
  readonly nodeName?: string;
  /** How often the pod list is read. Default 100 ms. */
  readonly syncIntervalMillis?: number;
}

// ---- the parts of a Pod read here ---------------------------------------------------------

interface ContainerRun {
  spec: Container;
  state: ContainerState;
  lastState?: Terminated;
  restartCount: number;
  /** Whether it was ever started (the pod leaves Pending once all were). */
  everStarted: boolean;
  started: boolean;
  ready: boolean;
  /** Bumped per start: timers and handlers of an older run see a different value and stop. */
  generation: number;
  child?: ChildProcess;
  pid?: number;
  /** The main process's mount namespace (`mnt:[…]`): the container's processes share it. */
  mntNs?: string;
  startedMillis: number;
  /** The next restart's back-off in seconds (0: at once). */
  backoffSeconds: number;
  timers: Set<NodeJS.Timeout>;
  /** Resolves when the current run's main process has exited. */
  exited: Promise<void>;
  /** The shell lines bind-mounting its volumes, and its environment (exec probes run with both). */
  mountLines: string[];
  env: Record<string, string>;
}

interface PodRun {
  pod: Pod;
  readonly key: string; // namespace/name
  readonly netns: string;
  readonly ip: string;
  readonly startTime: string;
  readonly containers: ContainerRun[];
  readonly podDir: string;
  terminating: boolean;
  conditions: Map<string, { status: 'True' | 'False'; lastTransitionTime: string }>;
  lastWritten?: string;
  writing: boolean;
  writeAgain: boolean;
}

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const defaultPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Quotes for `sh`. */
const shq = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}

function mntNsOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

/** The file a container's stdout and stderr are appended to (across restarts). */
export function podLogPath(stateDir: string, namespace: string, pod: string, container: string): string {
  return join(stateDir, 'logs', `${namespace}_${pod}_${container}.log`);
}

/** Makes every directory from `from` down to `to` (inclusive) traversable by anyone (0755). */
function traversable(from: string, to: string): void {
  for (let dir = to; dir.startsWith(from); dir = dirname(dir)) {
    chmodSync(dir, 0o755);
    if (dir === from) break;
  }
}

/**
 * Runs the test API server's pods as local processes. Start with {@link Kubelet.start};
 * {@link Kubelet.stop} kills every pod (leaving the API objects).
 *
 * @example
 *   const kubelet = await Kubelet.start({ apiUrl: api.url, network, stateDir, images: () => image });
 *   // create pods through the API; they run, get IPs, probes and restarts
 *   await kubelet.stop();
 */
export class Kubelet {
  private readonly pods = new Map<string, PodRun>(); // uid → run
  private readonly nodeName: string;
  private readonly log: (line: string) => void;
  private stopped = false;
  private loop?: NodeJS.Timeout;
  private syncing?: Promise<void>;
  private lastSyncError = '';
  private readonly podErrors = new Map<string, string>(); // uid → the last sync error logged

  private constructor(private readonly options: KubeletOptions) {
    this.nodeName = options.nodeName ?? 'sim-node';
    this.log = options.log ?? (() => undefined);
  }

  /** Starts syncing at once (the first sync has run when this resolves). */
  static async start(options: KubeletOptions): Promise<Kubelet> {
    const kubelet = new Kubelet(options);
    mkdirSync(join(options.stateDir, 'logs'), { recursive: true });
    mkdirSync(join(options.stateDir, 'volumes'), { recursive: true });
    traversable(options.stateDir, join(options.stateDir, 'volumes'));
    await kubelet.tick();
    return kubelet;
  }

  /** The node address pods see as `status.hostIP`. */
  get hostIP(): string {
    return this.options.network.gateway;
  }

  /** PIDs of everything running in pod `namespace/name`'s network namespace (empty when it does not run here). */
  podPids(namespace: string, name: string): number[] {
    const run = this.runOf(namespace, name);
    return run === undefined ? [] : this.options.network.pidsIn(run.netns);
  }

  /** The network namespace pod `namespace/name` runs in, if it runs here. */
  podNetns(namespace: string, name: string): string | undefined {
    return this.runOf(namespace, name)?.netns;
  }

  /** A container's log so far (every container's, concatenated, when `container` is not given); '' when none. */
  logOf(namespace: string, pod: string, container?: string): string {
    const dir = join(this.options.stateDir, 'logs');
    const names =
      container !== undefined
        ? [`${namespace}_${pod}_${container}.log`]
        : readdirSync(dir)
            .filter((f) => f.startsWith(`${namespace}_${pod}_`))
            .sort();
    return names.map((f) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : '')).join('');
  }

  /** Rewrites every running pod's hosts file from the `hosts` callback (in place: it is bind-mounted). */
  refreshHosts(): void {
    for (const run of this.pods.values()) if (!run.terminating) this.writeHosts(run);
  }

  /**
   * Stops syncing, SIGKILLs every pod's processes and deletes their namespaces
   * (bounded: a few seconds per pod). The API objects stay as they are.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.loop);
    await this.syncing;
    const runs = [...this.pods.values()];
    this.pods.clear();
    for (const run of runs) {
      run.terminating = true;
      for (const c of run.containers) this.cancelTimers(c);
    }
    await Promise.all(runs.map((run) => this.options.network.removePod(run.netns)));
    for (const run of runs) rmSync(run.podDir, { recursive: true, force: true });
    if (runs.length > 0) this.log(`kubelet stopped: killed ${runs.map((r) => r.key).join(', ')}`);
  }

  // ---- the sync loop ---------------------------------------------------------------------

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.syncing = this.sync().catch((error: unknown) => {
      const message = (error as Error).message;
      if (message !== this.lastSyncError) this.log(`kubelet: sync failed: ${message}`);
      this.lastSyncError = message;
    });
    await this.syncing;
    if (!this.stopped) this.loop = setTimeout(() => void this.tick(), this.options.syncIntervalMillis ?? 100);
  }

  private async sync(): Promise<void> {
    const list = await this.api('GET', '/api/v1/pods');
    if (list.status !== 200) throw new Error(`GET /api/v1/pods answered ${list.status}`);
    this.lastSyncError = '';
    const seen = new Set<string>();
    for (const pod of (list.body as { items: Pod[] }).items) {
      if (this.stopped) return;
      try {
        await this.syncPod(pod, seen);
        this.podErrors.delete(pod.metadata.uid);
      } catch (error) {
        const message = (error as Error).message;
        if (this.podErrors.get(pod.metadata.uid) !== message)
          this.log(`${pod.metadata.namespace}/${pod.metadata.name}: sync failed: ${message}`);
        this.podErrors.set(pod.metadata.uid, message);
      }
    }
    for (const [uid, run] of this.pods) {
      if (seen.has(uid) || run.terminating) continue;
      // Removed from the API without us (deleted with gracePeriodSeconds=0): kill it.
      this.log(`${run.key}: gone from the API: killing it`);
      run.terminating = true;
      for (const c of run.containers) this.cancelTimers(c);
      this.pods.delete(uid);
      await this.options.network.removePod(run.netns);
      rmSync(run.podDir, { recursive: true, force: true });
    }
  }

  /** One pod of the list: bind it, start it, follow its deletion. `seen` collects this node's pods. */
  private async syncPod(pod: Pod, seen: Set<string>): Promise<void> {
    const meta = pod.metadata;
    if (!pod.spec.nodeName) {
      if (!meta.deletionTimestamp) await this.bind(pod);
      return;
    }
    if (pod.spec.nodeName !== this.nodeName) return;
    seen.add(meta.uid);
    const run = this.pods.get(meta.uid);
    if (run !== undefined) {
      run.pod = pod;
      if (meta.deletionTimestamp && !run.terminating) void this.terminate(run);
      else if (!run.terminating) this.writeStatus(run);
    } else if (meta.deletionTimestamp) {
      // Nothing of it runs here (stopped before, or started by an earlier kubelet): let it go.
      await this.finalDelete(pod);
    } else if (pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed') {
      if (this.runOf(meta.namespace, meta.name) !== undefined) return; // the old pod of that name still stops
      this.startPod(pod);
    }
  }

  private async bind(pod: Pod): Promise<void> {
    const path = `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`;
    const res = await this.api('PATCH', path, { spec: { nodeName: this.nodeName } }, 'application/merge-patch+json');
    if (res.status === 200) this.log(`${pod.metadata.namespace}/${pod.metadata.name}: scheduled to ${this.nodeName}`);
  }

  private async finalDelete(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    const res = await this.api('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}?gracePeriodSeconds=0`, {
      gracePeriodSeconds: 0,
      preconditions: { uid },
    });
    if (res.status === 200) this.log(`${namespace}/${name}: deleted`);
  }

  private runOf(namespace: string, name: string): PodRun | undefined {
    return [...this.pods.values()].find((r) => r.key === `${namespace}/${name}`);
  }

  // ---- pods ---------------------------------------------------------------------------------

  private startPod(pod: Pod): void {
    const { netns, ip } = this.options.network.addPod();
    const podDir = join(this.options.stateDir, 'pods', pod.metadata.uid);
    mkdirSync(podDir, { recursive: true });
    const run: PodRun = {
      pod,
      key: `${pod.metadata.namespace}/${pod.metadata.name}`,
      netns,
      ip,
      startTime: now(),
      podDir,
      terminating: false,
      conditions: new Map(),
      writing: false,
      writeAgain: false,
      containers: pod.spec.containers.map((spec) => ({
        spec,
        state: { kind: 'waiting', reason: 'ContainerCreating' },
        restartCount: 0,
        everStarted: false,
        started: false,
        ready: false,
        generation: 0,
        startedMillis: 0,
        backoffSeconds: 0,
        timers: new Set(),
        exited: Promise.resolve(),
        mountLines: [],
        env: {},
      })),
    };
    this.pods.set(pod.metadata.uid, run);
    mkdirSync(netnsEtcDir(netns), { recursive: true });
    this.writeHosts(run);
    this.log(`${run.key}: started in ${netns} at ${ip}`);
    this.writeStatus(run);
    for (const c of run.containers) void this.startContainer(run, c);
  }

  private hostnameOf(pod: Pod): string {
    return pod.spec.hostname ?? pod.metadata.name;
  }

  private writeHosts(run: PodRun): void {
    const hostname = this.hostnameOf(run.pod);
    const fqdn = run.pod.spec.subdomain
      ? `${hostname}.${run.pod.spec.subdomain}.${run.pod.metadata.namespace}.svc.cluster.local `
      : '';
    const given = this.options.hosts?.() ?? '';
    const extra = typeof given === 'string' ? given : given.join('\n');
    const text = `# Kubernetes-managed hosts file (simulated).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${run.ip}\t${fqdn}${hostname}\n${extra}${extra.endsWith('\n') || extra === '' ? '' : '\n'}`;
    // writeFileSync truncates and writes the same inode: the bind mounts see it.
    writeFileSync(join(netnsEtcDir(run.netns), 'hosts'), text);
  }

  /** Graceful deletion: SIGTERM, the grace period, SIGKILL, the namespace, then the API object. */
  private async terminate(run: PodRun): Promise<void> {
    run.terminating = true;
    const started = Date.now();
    const grace = () => run.pod.metadata.deletionGracePeriodSeconds ?? run.pod.spec.terminationGracePeriodSeconds ?? 30;
    this.log(`${run.key}: deleting: SIGTERM to its containers, grace ${grace()} s`);
    for (const c of run.containers) {
      this.cancelTimers(c);
      c.ready = false;
      if (c.state.kind === 'running' && c.pid !== undefined) kill(c.pid, 'SIGTERM');
    }
    this.writeStatus(run, true);
    const allExited = Promise.all(run.containers.map((c) => c.exited));
    let done = false;
    void allExited.then(() => {
      done = true;
    });
    while (!done && Date.now() - started < grace() * 1000 && !this.stopped) await delay(50);
    if (this.stopped) return; // stop() kills it
    const left = this.options.network.pidsIn(run.netns);
    if (!done || left.length > 0)
      this.log(`${run.key}: killed after grace (${left.length} processes left after ${Date.now() - started} ms)`);
    await this.options.network.removePod(run.netns);
    rmSync(run.podDir, { recursive: true, force: true });
    this.pods.delete(run.pod.metadata.uid);
    await this.finalDelete(run.pod).catch((error: unknown) =>
      this.log(`${run.key}: final delete failed (${(error as Error).message}); retried by the next sync`),
    );
  }

  // ---- containers ---------------------------------------------------------------------------

  private cancelTimers(c: ContainerRun): void {
    c.generation++;
    for (const t of c.timers) clearTimeout(t);
    c.timers.clear();
  }

  private after(c: ContainerRun, millis: number, fn: () => void): void {
    const t = setTimeout(() => {
      c.timers.delete(t);
      fn();
    }, millis);
    c.timers.add(t);
  }

  private async startContainer(run: PodRun, c: ContainerRun): Promise<void> {
    this.cancelTimers(c);
    const generation = c.generation;
    const pod = run.pod;
    let argv: string[];
    let env: Record<string, string>;
    let mounts: string[];
    let workingDir: string | undefined;
    // A container that cannot be made waits (as a real kubelet's does) and is retried.
    const retryLater = (error: unknown, defaultReason: string) => {
      if (generation !== c.generation || run.terminating) return;
      const message = (error as Error).message;
      if (c.state.kind !== 'waiting' || c.state.message !== message)
        this.log(`${run.key}: container ${c.spec.name} cannot start: ${message}`);
      const reason = (error as { reason?: string }).reason ?? defaultReason;
      c.state = { kind: 'waiting', reason, message };
      this.writeStatus(run);
      this.after(c, 1000, () => void this.startContainer(run, c));
    };
    try {
      let image: ImageConfig;
      try {
        image = this.options.images(c.spec.image);
      } catch (error) {
        throw Object.assign(new Error(`image ${c.spec.image}: ${(error as Error).message}`), {
          reason: 'ErrImagePull',
        });
      }
      const containerEnv = await this.resolveEnv(run, c.spec);
      const lookup = (name: string) => containerEnv.get(name);
      const command = c.spec.command ?? [...image.entrypoint];
      const args = c.spec.args ?? (c.spec.command === undefined ? [...(image.cmd ?? [])] : []);
      argv = [...command, ...args].map((s) => expandVariables(s, lookup));
      if (argv.length === 0) throw new Error('no command: the image has no entrypoint and the container no command');
      env = {
        PATH: defaultPath,
        ...image.env,
        HOSTNAME: this.hostnameOf(pod),
        ...(pod.spec.automountServiceAccountToken !== false && this.options.kubeconfigForPods
          ? { KUBECONFIG: this.options.kubeconfigForPods }
          : {}),
        ...Object.fromEntries(containerEnv),
      };
      mounts = await this.prepareMounts(run, c.spec);
      c.mountLines = mounts;
      c.env = env;
      workingDir = c.spec.workingDir ?? image.workingDir;
    } catch (error) {
      retryLater(error, 'CreateContainerConfigError');
      return;
    }
    if (generation !== c.generation || run.terminating) return;
    const script = [
      'set -e',
      `echo ${shq(this.hostnameOf(pod))} > /proc/sys/kernel/hostname`,
      ...mounts,
      ...(workingDir ? [`cd ${shq(workingDir)}`] : []),
      'exec "$@"',
    ].join('\n');
    const logPath = podLogPath(this.options.stateDir, pod.metadata.namespace, pod.metadata.name, c.spec.name);
    let child: ChildProcess;
    try {
      const fd = openSync(logPath, 'a');
      try {
        child = this.launch(run.netns, script, argv, env, ['ignore', fd, fd]);
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      retryLater(error, 'RunContainerError');
      return;
    }
    const startedAt = now();
    c.child = child;
    c.pid = child.pid;
    c.mntNs = undefined;
    c.startedMillis = Date.now();
    c.state = { kind: 'running', startedAt };
    c.everStarted = true;
    c.started = c.spec.startupProbe === undefined;
    c.ready = false;
    let exited!: () => void;
    c.exited = new Promise((resolve) => {
      exited = resolve;
    });
    let handled = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      if (handled) return;
      handled = true;
      exited();
      this.containerExited(run, c, generation, startedAt, code, signal);
    };
    child.once('exit', onExit);
    child.once('error', (error) => {
      this.log(`${run.key}: container ${c.spec.name} could not be run: ${error.message}`);
      onExit(128, null);
    });
    this.log(`${run.key}: container ${c.spec.name} started (pid ${child.pid}, restart ${c.restartCount})`);
    void this.learnMntNs(c, generation);
    this.writeStatus(run);
    this.startProbes(run, c, generation);
  }

  /** `sh -c script sh argv…` in the pod's namespaces, dying with this process, in its own process group. */
  private launch(
    netns: string,
    script: string,
    argv: string[],
    env: Record<string, string>,
    stdio: ['ignore', number | 'ignore' | 'pipe', number | 'ignore' | 'pipe'],
  ): ChildProcess {
    return spawn(
      'setpriv',
      [
        '--pdeathsig',
        'KILL',
        '--',
        'ip',
        'netns',
        'exec',
        netns,
        'unshare',
        '--uts',
        '--',
        'sh',
        '-c',
        script,
        'sh',
        ...argv,
      ],
      { env: { PATH: defaultPath, ...env }, stdio, detached: true },
    );
  }

  /** Waits (bounded) until the main process is in its own mount namespace, and records it. */
  private async learnMntNs(c: ContainerRun, generation: number): Promise<void> {
    const ours = mntNsOf(process.pid);
    const deadline = Date.now() + 5000;
    while (c.generation === generation && c.pid !== undefined && Date.now() < deadline) {
      const ns = mntNsOf(c.pid);
      if (ns === undefined) return; // exited
      if (ns !== ours) {
        c.mntNs = ns;
        return;
      }
      await delay(10);
    }
  }

  /** SIGKILLs what is left of a container: its process group and whatever shares its mount namespace. */
  private killContainer(run: PodRun, c: ContainerRun): void {
    if (c.pid !== undefined) kill(-c.pid, 'SIGKILL');
    if (c.mntNs === undefined) return;
    for (const pid of this.options.network.pidsIn(run.netns)) if (mntNsOf(pid) === c.mntNs) kill(pid, 'SIGKILL');
  }

  private containerExited(
    run: PodRun,
    c: ContainerRun,
    generation: number,
    startedAt: string,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    const exitCode = code ?? 128 + (signal === null ? 0 : (signalNumbers[signal] ?? 0));
    const ranMillis = Date.now() - c.startedMillis;
    this.killContainer(run, c);
    c.child = undefined;
    if (generation !== c.generation && !run.terminating) return; // superseded (cannot happen: one run at a time)
    const terminated: Terminated = {
      kind: 'terminated',
      exitCode,
      ...(signal !== null ? { signal } : {}),
      reason: exitCode === 0 ? 'Completed' : 'Error',
      startedAt,
      finishedAt: now(),
    };
    c.state = terminated;
    c.started = false;
    c.ready = false;
    this.log(
      `${run.key}: container ${c.spec.name} exited with code ${exitCode}${signal !== null ? ` (${signal})` : ''}`,
    );
    if (run.terminating || this.stopped) return;
    this.cancelTimers(c);
    const policy = run.pod.spec.restartPolicy ?? 'Always';
    if (policy === 'Never' || (policy === 'OnFailure' && exitCode === 0)) {
      this.writeStatus(run);
      return;
    }
    const { waitSeconds: wait, nextSeconds } = restartBackoff(c.backoffSeconds, ranMillis);
    c.backoffSeconds = nextSeconds;
    c.lastState = terminated;
    const restart = () => {
      c.restartCount++;
      void this.startContainer(run, c);
    };
    if (wait === 0) {
      this.log(`${run.key}: container ${c.spec.name} restarting now`);
      restart();
      return;
    }
    c.state = {
      kind: 'waiting',
      reason: 'CrashLoopBackOff',
      message: `back-off ${wait}s restarting failed container=${c.spec.name} pod=${run.pod.metadata.name}`,
    };
    this.log(`${run.key}: container ${c.spec.name} restarting in ${wait} s`);
    this.writeStatus(run);
    this.after(c, wait * 1000, restart);
  }

  // ---- env and volumes ------------------------------------------------------------------------

  private async readKey(
    namespace: string,
    kind: 'secrets' | 'configmaps',
    ref: { name: string; optional?: boolean },
  ): Promise<Record<string, string> | undefined> {
    const res = await this.api('GET', `/api/v1/namespaces/${namespace}/${kind}/${ref.name}`);
    if (res.status === 404) {
      if (ref.optional) return undefined;
      throw new Error(`${kind === 'secrets' ? 'secret' : 'configmap'} "${ref.name}" not found`);
    }
    if (res.status !== 200) throw new Error(`GET ${kind}/${ref.name} answered ${res.status}`);
    const body = res.body as { data?: Record<string, string>; stringData?: Record<string, string> };
    if (kind === 'configmaps') return { ...(body.data ?? {}) };
    return {
      ...(body.stringData ?? {}),
      ...Object.fromEntries(
        Object.entries(body.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
      ),
    };
  }

  private fieldRef(run: PodRun, path: string): string {
    const { metadata, spec } = run.pod;
    const indexed = /^metadata\.(labels|annotations)\['([^']*)'\]$/.exec(path);
    if (indexed !== null)
      return (indexed[1] === 'labels' ? metadata.labels : metadata.annotations)?.[indexed[2]!] ?? '';
    switch (path) {
      case 'metadata.name':
        return metadata.name;
      case 'metadata.namespace':
        return metadata.namespace;
      case 'metadata.uid':
        return metadata.uid;
      case 'spec.nodeName':
        return spec.nodeName ?? this.nodeName;
      case 'spec.serviceAccountName':
        return spec.serviceAccountName ?? 'default';
      case 'status.podIP':
      case 'status.podIPs':
        return run.ip;
      case 'status.hostIP':
      case 'status.hostIPs':
        return this.hostIP;
      default:
        throw new Error(`unsupported fieldRef ${JSON.stringify(path)}`);
    }
  }

  /** The container's own variables, in order (envFrom, then env), `$(VAR)`-expanded as Kubernetes does. */
  private async resolveEnv(run: PodRun, c: Container): Promise<Map<string, string>> {
    const namespace = run.pod.metadata.namespace;
    const env = new Map<string, string>();
    for (const from of c.envFrom ?? []) {
      const ref = from.secretRef ?? from.configMapRef;
      if (ref === undefined) continue;
      const data = await this.readKey(namespace, from.secretRef ? 'secrets' : 'configmaps', ref);
      for (const [k, v] of Object.entries(data ?? {})) env.set(`${from.prefix ?? ''}${k}`, v);
    }
    for (const v of c.env ?? []) {
      const from = v.valueFrom;
      if (from === undefined) {
        env.set(
          v.name,
          expandVariables(v.value ?? '', (n) => env.get(n)),
        );
        continue;
      }
      if (from.fieldRef) env.set(v.name, this.fieldRef(run, from.fieldRef.fieldPath));
      else if (from.secretKeyRef || from.configMapKeyRef) {
        const ref = (from.secretKeyRef ?? from.configMapKeyRef)!;
        const kind = from.secretKeyRef ? 'secrets' : 'configmaps';
        const data = await this.readKey(namespace, kind, ref);
        const value = data?.[ref.key];
        if (value !== undefined) env.set(v.name, value);
        else if (data !== undefined && !ref.optional)
          throw new Error(
            `couldn't find key ${ref.key} in ${kind === 'secrets' ? 'Secret' : 'ConfigMap'} ${namespace}/${ref.name}`,
          );
      } else throw new Error(`env ${v.name}: unsupported valueFrom ${JSON.stringify(from)}`);
    }
    return env;
  }

  /** Prepares the container's volumes on the host; returns the shell lines that bind-mount them. */
  private async prepareMounts(run: PodRun, c: Container): Promise<string[]> {
    const { namespace } = run.pod.metadata;
    const lines: string[] = [];
    const mounts = [...(c.volumeMounts ?? [])].sort((a, b) => a.mountPath.length - b.mountPath.length);
    for (const m of mounts) {
      const volume = run.pod.spec.volumes?.find((v) => v.name === m.name);
      if (volume === undefined) throw new Error(`volume mount ${m.name}: no volume of that name`);
      // Containers share the host's file system: a mount over a directory holding the
      // simulation's own files (the member pods' emptyDir at /tmp, when the state
      // directory is under /tmp) would hide the image stand-in and the volumes from
      // the container. Such a mount is not made; the container uses the host's directory.
      const mountPath = m.mountPath.replace(/\/+$/, '');
      if (this.options.stateDir === mountPath || this.options.stateDir.startsWith(`${mountPath}/`)) {
        this.options.log?.(
          `${namespace}/${run.pod.metadata.name}: volume ${m.name} not mounted at ${m.mountPath}: it holds the simulation's state directory`,
        );
        continue;
      }
      let source: string;
      let readOnly = m.readOnly === true;
      if (volume.persistentVolumeClaim) {
        source = volumeDir(this.options.stateDir, namespace, volume.persistentVolumeClaim.claimName);
        if (!existsSync(source)) {
          mkdirSync(source, { recursive: true });
          traversable(this.options.stateDir, source);
        }
        readOnly ||= volume.persistentVolumeClaim.readOnly === true;
      } else if (volume.emptyDir) {
        source = join(run.podDir, 'volumes', volume.name);
        mkdirSync(source, { recursive: true });
        traversable(this.options.stateDir, source);
        chmodSync(source, 0o777);
      } else if (volume.secret || volume.configMap) {
        // Written once per pod (containers of the pod, and restarts, bind-mount the same
        // directory; a real kubelet also updates it later, this one does not).
        source = join(run.podDir, 'volumes', volume.name);
        if (!existsSync(source)) {
          const data = volume.secret
            ? await this.readKey(namespace, 'secrets', {
                name: volume.secret.secretName,
                optional: volume.secret.optional,
              })
            : await this.readKey(namespace, 'configmaps', volume.configMap!);
          const staging = `${source}.new`;
          rmSync(staging, { recursive: true, force: true });
          mkdirSync(staging, { recursive: true });
          const items = (volume.secret ?? volume.configMap)!.items;
          for (const [key, value] of Object.entries(data ?? {})) {
            const path = items === undefined ? key : items.find((i) => i.key === key)?.path;
            if (path === undefined) continue;
            mkdirSync(dirname(join(staging, path)), { recursive: true });
            writeFileSync(join(staging, path), value, { mode: 0o644 });
          }
          renameSync(staging, source);
          traversable(this.options.stateDir, source);
        }
        readOnly = true;
      } else
        throw new Error(
          `volume ${volume.name}: only persistentVolumeClaim, emptyDir, secret and configMap are simulated`,
        );
      if (m.subPath) {
        source = join(source, m.subPath);
        mkdirSync(source, { recursive: true });
      }
      mkdirSync(m.mountPath, { recursive: true });
      lines.push(`mount --bind ${shq(source)} ${shq(m.mountPath)}`);
      if (readOnly) lines.push(`mount -o remount,bind,ro ${shq(m.mountPath)}`);
    }
    return lines;
  }

  // ---- probes ---------------------------------------------------------------------------------

  private startProbes(run: PodRun, c: ContainerRun, generation: number): void {
    const kinds = [
      ['startup', c.spec.startupProbe],
      ['readiness', c.spec.readinessProbe],
      ['liveness', c.spec.livenessProbe],
    ] as const;
    if (c.spec.readinessProbe === undefined && c.started) c.ready = true;
    for (const [kind, probe] of kinds) {
      if (probe === undefined) continue;
      const period = (probe.periodSeconds ?? 10) * 1000;
      const failureThreshold = probe.failureThreshold ?? 3;
      const successThreshold = kind === 'readiness' ? (probe.successThreshold ?? 1) : 1;
      let successes = 0;
      let failures = 0;
      const tick = async () => {
        if (c.generation !== generation || run.terminating) return;
        const skip = kind === 'startup' ? c.started : !c.started;
        if (!skip) {
          const ok = await this.probe(run, c, probe);
          if (c.generation !== generation || run.terminating) return;
          if (ok) {
            failures = 0;
            successes++;
          } else {
            successes = 0;
            failures++;
          }
          if (kind === 'startup' && successes >= 1) {
            c.started = true;
            if (c.spec.readinessProbe === undefined) c.ready = true;
            this.log(`${run.key}: container ${c.spec.name} started (startup probe succeeded)`);
            this.writeStatus(run);
            return; // the startup probe is done
          }
          if (kind === 'readiness') {
            if (!c.ready && successes >= successThreshold) {
              c.ready = true;
              this.writeStatus(run);
            } else if (c.ready && failures >= failureThreshold) {
              c.ready = false;
              this.log(`${run.key}: container ${c.spec.name} not ready (${failures} readiness failures)`);
              this.writeStatus(run);
            }
          }
          if ((kind === 'liveness' || kind === 'startup') && failures >= failureThreshold) {
            this.log(`${run.key}: container ${c.spec.name} failed its ${kind} probe ${failures} times: killing it`);
            void this.killForRestart(run, c, generation, probe);
            return;
          }
        }
        this.after(c, period, () => void tick());
      };
      this.after(c, (probe.initialDelaySeconds ?? 0) * 1000, () => void tick());
    }
  }

  /** A liveness or startup failure: SIGTERM, the grace period, then SIGKILL; the exit restarts it. */
  private async killForRestart(run: PodRun, c: ContainerRun, generation: number, probe: Probe): Promise<void> {
    const grace = probe.terminationGracePeriodSeconds ?? run.pod.spec.terminationGracePeriodSeconds ?? 30;
    const pid = c.pid;
    if (pid === undefined) return;
    kill(pid, 'SIGTERM');
    const exited = c.exited;
    let done = false;
    void exited.then(() => {
      done = true;
    });
    const deadline = Date.now() + grace * 1000;
    while (!done && Date.now() < deadline && c.generation === generation && !run.terminating) await delay(50);
    if (!done && c.generation === generation && !run.terminating) {
      this.log(`${run.key}: container ${c.spec.name} killed after grace (${grace} s)`);
      this.killContainer(run, c);
    }
  }

  private portOf(c: Container, port: number | string): number {
    if (typeof port === 'number') return port;
    if (/^\d+$/.test(port)) return Number(port);
    const named = c.ports?.find((p) => p.name === port);
    if (named === undefined) throw new Error(`no container port named ${port}`);
    return named.containerPort;
  }

  private async probe(run: PodRun, c: ContainerRun, probe: Probe): Promise<boolean> {
    const timeout = (probe.timeoutSeconds ?? 1) * 1000;
    try {
      if (probe.httpGet) {
        const g = probe.httpGet;
        const host = g.host ?? run.ip;
        const path = g.path ?? '/';
        const url = `${(g.scheme ?? 'HTTP').toLowerCase()}://${host}:${this.portOf(c.spec, g.port)}${path.startsWith('/') ? '' : '/'}${path}`;
        const res = await fetch(url, {
          headers: Object.fromEntries((g.httpHeaders ?? []).map((h) => [h.name, h.value])),
          signal: AbortSignal.timeout(timeout),
          redirect: 'manual',
        });
        await res.arrayBuffer().catch(() => undefined);
        return res.status >= 200 && res.status < 400;
      }
      if (probe.tcpSocket) {
        const port = this.portOf(c.spec, probe.tcpSocket.port);
        const host = probe.tcpSocket.host ?? run.ip;
        return await new Promise<boolean>((resolve) => {
          const socket = connect({ host, port, timeout });
          socket.once('connect', () => {
            socket.destroy();
            resolve(true);
          });
          socket.once('timeout', () => {
            socket.destroy();
            resolve(false);
          });
          socket.once('error', () => resolve(false));
        });
      }
      if (probe.exec) {
        const script = [
          'set -e',
          `echo ${shq(this.hostnameOf(run.pod))} > /proc/sys/kernel/hostname`,
          ...c.mountLines,
          'exec "$@"',
        ].join('\n');
        const child = this.launch(run.netns, script, probe.exec.command, c.env, ['ignore', 'ignore', 'ignore']);
        return await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => {
            if (child.pid !== undefined) kill(-child.pid, 'SIGKILL');
            resolve(false);
          }, timeout);
          child.once('exit', (code) => {
            clearTimeout(timer);
            resolve(code === 0);
          });
          child.once('error', () => {
            clearTimeout(timer);
            resolve(false);
          });
        });
      }
      return true; // a probe without a handler: the API server would have refused it
    } catch {
      return false;
    }
  }

  // ---- status ---------------------------------------------------------------------------------

  /** Writes the pod's status when it changed; one write at a time per pod, the latest state last. */
  private writeStatus(run: PodRun, evenWhenTerminating = false): void {
    if (this.stopped || (run.terminating && !evenWhenTerminating)) return;
    if (run.writing) {
      run.writeAgain = true;
      return;
    }
    const { status, conditions, ready } = podStatus({
      pod: run.pod,
      ip: run.ip,
      hostIP: this.hostIP,
      startTime: run.startTime,
      terminating: run.terminating,
      containers: run.containers,
      conditions: run.conditions,
      now: now(),
    });
    const wasReady = run.conditions.get('Ready')?.status === 'True';
    if (ready !== wasReady && run.conditions.has('Ready')) this.log(`${run.key}: ${ready ? 'ready' : 'not ready'}`);
    run.conditions = conditions;
    const text = JSON.stringify(status);
    if (text === run.lastWritten) return;
    run.writing = true;
    const { namespace, name } = run.pod.metadata;
    void this.api('PUT', `/api/v1/namespaces/${namespace}/pods/${name}/status`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace },
      status,
    })
      .then((res) => {
        if (res.status === 200) run.lastWritten = text;
      })
      .catch(() => undefined)
      .finally(() => {
        run.writing = false;
        if (run.writeAgain) {
          run.writeAgain = false;
          this.writeStatus(run, evenWhenTerminating);
        }
      });
  }

  private async api(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${this.options.apiUrl}${path}`, {
      method,
      headers: { 'content-type': contentType },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: res.status, body: parsed };
  }
}
