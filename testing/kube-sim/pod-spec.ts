// Test support: the pod spec as the simulated kubelet reads it, and the pure parts of
// what it does with it: Kubernetes' `$(VAR)` expansion, the crash-loop back-off, and
// the pod status it reports from its containers' states (phase, conditions with
// their transition times, containerStatuses). The kubelet (kubelet.ts) is the shell.

export interface KeyRef {
  name: string;
  key: string;
  optional?: boolean;
}
export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: KeyRef; configMapKeyRef?: KeyRef };
}
export interface EnvFromSource {
  prefix?: string;
  secretRef?: { name: string; optional?: boolean };
  configMapRef?: { name: string; optional?: boolean };
}
export interface Probe {
  httpGet?: {
    port: number | string;
    path?: string;
    host?: string;
    scheme?: string;
    httpHeaders?: { name: string; value: string }[];
  };
  tcpSocket?: { port: number | string; host?: string };
  exec?: { command: string[] };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
  successThreshold?: number;
  terminationGracePeriodSeconds?: number;
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: EnvVar[];
  envFrom?: EnvFromSource[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; subPath?: string }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
}
export interface KeyToPath {
  key: string;
  path: string;
}
export interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  emptyDir?: object;
  secret?: { secretName: string; items?: KeyToPath[]; optional?: boolean };
  configMap?: { name: string; items?: KeyToPath[]; optional?: boolean };
}
export interface Pod {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
    deletionGracePeriodSeconds?: number;
  };
  spec: {
    nodeName?: string;
    containers: Container[];
    volumes?: Volume[];
    restartPolicy?: 'Always' | 'OnFailure' | 'Never';
    terminationGracePeriodSeconds?: number;
    serviceAccountName?: string;
    automountServiceAccountToken?: boolean;
    hostname?: string;
    subdomain?: string;
  };
  status?: { phase?: string };
}

// ---- runtime state ---------------------------------------------------------------------------

export type Terminated = {
  kind: 'terminated';
  exitCode: number;
  signal?: string;
  reason: string;
  startedAt: string;
  finishedAt: string;
};
export type ContainerState =
  | { kind: 'waiting'; reason: string; message?: string }
  | { kind: 'running'; startedAt: string }
  | Terminated;

/** Signal numbers for exit codes and `terminated.signal`. */
export const signalNumbers: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGTERM: 15,
};

/**
 * Kubernetes' `$(VAR)` expansion (command, args, env values): `$(NAME)` becomes the
 * variable's value when `lookup` knows it and stays as written when not; `$$`
 * becomes `$` (so `$$(NAME)` is the literal `$(NAME)`).
 */
export function expandVariables(text: string, lookup: (name: string) => string | undefined): string {
  let out = '';
  for (let i = 0; i < text.length; ) {
    if (text[i] === '$' && text[i + 1] === '$') {
      out += '$';
      i += 2;
    } else if (text[i] === '$' && text[i + 1] === '(') {
      const close = text.indexOf(')', i + 2);
      if (close < 0) {
        out += text.slice(i);
        break;
      }
      const value = lookup(text.slice(i + 2, close));
      out += value ?? text.slice(i, close + 1);
      i = close + 1;
    } else out += text[i++];
  }
  return out;
}

/**
 * The crash-loop back-off of a container that exited: how long to wait before this
 * restart, and the back-off kept for the next one. As the kubelet's: at once, then
 * 10 s doubling to 5 min; a container that ran 10 min starts over.
 */
export function restartBackoff(
  currentSeconds: number,
  ranMillis: number,
): { waitSeconds: number; nextSeconds: number } {
  const waitSeconds = ranMillis >= 10 * 60_000 ? 0 : currentSeconds;
  return { waitSeconds, nextSeconds: waitSeconds === 0 ? 10 : Math.min(waitSeconds * 2, 300) };
}

/** What the pod status is computed from: the pod, its run, each container's state. */
export interface PodStatusInput {
  readonly pod: Pick<Pod, 'metadata' | 'spec'>;
  readonly ip: string;
  readonly hostIP: string;
  readonly startTime: string;
  readonly terminating: boolean;
  readonly containers: readonly {
    readonly spec: Pick<Container, 'name' | 'image'>;
    readonly state: ContainerState;
    readonly lastState?: Terminated;
    readonly restartCount: number;
    readonly everStarted: boolean;
    readonly started: boolean;
    readonly ready: boolean;
  }[];
  /** Each condition's last status and transition time, as last reported. */
  readonly conditions: ReadonlyMap<string, { status: 'True' | 'False'; lastTransitionTime: string }>;
  /** The time a condition that changes now transitions at. */
  readonly now: string;
}

/**
 * The pod status a kubelet reports: phase (Pending until every container started,
 * Succeeded/Failed only under a restart policy that lets containers finish),
 * PodScheduled/Initialized/ContainersReady/Ready (ready: every container running and
 * ready, the pod not terminating), and containerStatuses. Returns the conditions
 * with their transition times carried over or set to `now` when they changed.
 */
export function podStatus(input: PodStatusInput): {
  status: Record<string, unknown>;
  conditions: Map<string, { status: 'True' | 'False'; lastTransitionTime: string }>;
  ready: boolean;
} {
  const policy = input.pod.spec.restartPolicy ?? 'Always';
  const containers = input.containers;
  const ready = !input.terminating && containers.every((c) => c.ready && c.state.kind === 'running');
  const finished =
    policy !== 'Always' &&
    containers.every((c) => c.state.kind === 'terminated' && (policy === 'Never' || c.state.exitCode === 0));
  const phase = finished
    ? containers.every((c) => c.state.kind === 'terminated' && c.state.exitCode === 0)
      ? 'Succeeded'
      : 'Failed'
    : containers.every((c) => c.everStarted)
      ? 'Running'
      : 'Pending';
  const conditions = new Map(input.conditions);
  const condition = (type: string, ok: boolean) => {
    const status = ok ? 'True' : 'False';
    const previous = conditions.get(type);
    if (previous === undefined || previous.status !== status)
      conditions.set(type, { status, lastTransitionTime: input.now });
    return { type, status, lastTransitionTime: conditions.get(type)!.lastTransitionTime };
  };
  const state = (s: ContainerState) =>
    s.kind === 'waiting'
      ? { waiting: { reason: s.reason, ...(s.message !== undefined ? { message: s.message } : {}) } }
      : s.kind === 'running'
        ? { running: { startedAt: s.startedAt } }
        : {
            terminated: {
              exitCode: s.exitCode,
              ...(s.signal !== undefined ? { signal: signalNumbers[s.signal] ?? 0 } : {}),
              reason: s.reason,
              startedAt: s.startedAt,
              finishedAt: s.finishedAt,
            },
          };
  const status = {
    phase,
    conditions: [
      condition('PodScheduled', true),
      condition('Initialized', true),
      condition('ContainersReady', ready),
      condition('Ready', ready),
    ],
    hostIP: input.hostIP,
    hostIPs: [{ ip: input.hostIP }],
    podIP: input.ip,
    podIPs: [{ ip: input.ip }],
    startTime: input.startTime,
    qosClass: 'BestEffort',
    containerStatuses: containers.map((c) => ({
      name: c.spec.name,
      image: c.spec.image,
      imageID: '',
      containerID: `sim://${input.pod.metadata.uid}/${c.spec.name}/${c.restartCount}`,
      ready: c.ready && c.state.kind === 'running',
      started: c.started && c.state.kind === 'running',
      restartCount: c.restartCount,
      state: state(c.state),
      lastState: c.lastState === undefined ? {} : state(c.lastState),
    })),
  };
  return { status, conditions, ready };
}
