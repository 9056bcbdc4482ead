/**
 * The simulated cluster's Deployment controller, as far as the pgha operator's own
 * Deployment needs one: pods `<deployment>-<pod-template-hash>-<5 random>` owned
 * directly by the Deployment (no ReplicaSets in between: the pod-template-hash
 * label stands for the ReplicaSet), replaced when deleted, Failed or Succeeded,
 * scaled up and down, and a template change rolled out with RollingUpdate
 * (maxSurge and maxUnavailable, 25 % each by default: with 2 replicas one new pod
 * first, an old one deleted once it is available) or Recreate; the status with the
 * Available and Progressing conditions.
 *
 * `decideDeployment` is pure; `DeploymentController` is the shell. Not modelled:
 * ReplicaSet objects, revision history and rollback, paused deployments,
 * progressDeadlineSeconds, adopting orphan pods. Test utility, not shipped.
 */
import { type KubeCall, KubeCallError, type KubeList, kubeClient, repeatFilter, startLoop } from './controller-loop.js';
import {
  type Condition,
  canonicalJson,
  controllerRef,
  isAvailable,
  isControlledBy,
  isFinished,
  isoSeconds,
  isRunningAndReady,
  isTerminating,
  type LabelSelector,
  type ObjectMeta,
  type Pod,
  type PodTemplate,
  safeAlphabet,
  templateHash,
} from './objects.js';

export const podTemplateHashLabel = 'pod-template-hash';

export interface DeploymentStatus {
  observedGeneration?: number;
  replicas?: number;
  updatedReplicas?: number;
  readyReplicas?: number;
  availableReplicas?: number;
  unavailableReplicas?: number;
  conditions?: Condition[];
  [key: string]: unknown;
}

export interface Deployment {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec: {
    replicas?: number;
    selector?: LabelSelector;
    minReadySeconds?: number;
    strategy?: {
      type?: 'RollingUpdate' | 'Recreate';
      rollingUpdate?: { maxSurge?: number | string; maxUnavailable?: number | string };
    };
    template: PodTemplate;
  };
  status?: DeploymentStatus;
}

export interface DeploymentSnapshot {
  readonly deployment: Deployment;
  /** Pods in the Deployment's namespace (the decision keeps those it controls). */
  readonly pods: readonly Pod[];
  readonly nowMillis: number;
}

export type DeploymentAction =
  /** The pod has `generateName` (`<deployment>-<hash>-`); the shell gives it its random suffix. */
  | { type: 'create-pod'; pod: Pod }
  | { type: 'delete-pod'; name: string; uid: string; reason: string }
  | { type: 'update-status'; status: DeploymentStatus };

/** An int-or-percent of `total`: percentages round up for maxSurge, down for maxUnavailable, as Kubernetes does. */
function resolve(value: number | string | undefined, fallback: string, total: number, roundUp: boolean): number {
  const v = value ?? fallback;
  if (typeof v === 'number') return v;
  const m = /^(\d+)%$/.exec(v);
  if (!m) return Number(v) || 0;
  const exact = (Number(m[1]) * total) / 100;
  return roundUp ? Math.ceil(exact) : Math.floor(exact);
}

/** The pod template's hash, the `pod-template-hash` label of its pods. */
export const podTemplateHash = (template: PodTemplate) => templateHash(template);

/** A new pod from the template, labelled with its hash, owned by the Deployment; the shell names it. */
export function newDeploymentPod(deployment: Deployment, hash: string): Pod {
  const { template } = deployment.spec;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: '',
      generateName: `${deployment.metadata.name}-${hash}-`,
      namespace: deployment.metadata.namespace,
      labels: { ...(template.metadata?.labels ?? {}), [podTemplateHashLabel]: hash },
      ...(template.metadata?.annotations ? { annotations: { ...template.metadata.annotations } } : {}),
      ownerReferences: [controllerRef(deployment, 'apps/v1', 'Deployment')],
    },
    spec: structuredClone(template.spec ?? {}),
  };
}

/**
 * Kubernetes' order for deleting pods when there are too many: not Ready before
 * Ready, then the newest first (the oldest have proven themselves).
 */
const deletionOrder = (a: Pod, b: Pod) =>
  Number(isRunningAndReady(a)) - Number(isRunningAndReady(b)) ||
  (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? '') ||
  b.metadata.name.localeCompare(a.metadata.name);

/**
 * Decides what one Deployment needs next. Pods going (a deletionTimestamp) count for
 * nothing, as with a ReplicaSet: a replacement is created at once (names are random,
 * so nothing waits for the old one). Finished pods are deleted and replaced.
 * RollingUpdate: new pods up to replicas + maxSurge in total; old pods deleted, the
 * not available first, while at least replicas − maxUnavailable pods stay
 * available. Recreate: every old pod deleted, new ones only once no old pod is
 * left, going or not.
 */
export function decideDeployment(snapshot: DeploymentSnapshot): DeploymentAction[] {
  const deployment = snapshot.deployment;
  if (isTerminating(deployment)) return [];
  const replicas = deployment.spec.replicas ?? 1;
  const minReadySeconds = deployment.spec.minReadySeconds ?? 0;
  const available = (p: Pod) => isAvailable(p, minReadySeconds, snapshot.nowMillis);
  const hash = podTemplateHash(deployment.spec.template);
  const owned = snapshot.pods.filter(
    (p) => isControlledBy(p, deployment.metadata.uid) && p.metadata.namespace === deployment.metadata.namespace,
  );
  const actions: DeploymentAction[] = [];
  const remove = (pod: Pod, reason: string) =>
    actions.push({ type: 'delete-pod', name: pod.metadata.name, uid: pod.metadata.uid ?? '', reason });
  const create = (count: number) => {
    for (let i = 0; i < count; i++) actions.push({ type: 'create-pod', pod: newDeploymentPod(deployment, hash) });
  };

  for (const pod of owned) if (!isTerminating(pod) && isFinished(pod)) remove(pod, `phase ${pod.status?.phase}`);
  const active = owned.filter((p) => !isTerminating(p) && !isFinished(p));
  const fresh = active.filter((p) => p.metadata.labels?.[podTemplateHashLabel] === hash);
  const old = active.filter((p) => p.metadata.labels?.[podTemplateHashLabel] !== hash).sort(deletionOrder);

  const recreate = deployment.spec.strategy?.type === 'Recreate';
  const maxSurge = resolve(deployment.spec.strategy?.rollingUpdate?.maxSurge, '25%', replicas, true);
  let maxUnavailable = Math.min(
    replicas,
    resolve(deployment.spec.strategy?.rollingUpdate?.maxUnavailable, '25%', replicas, false),
  );
  if (maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1; // Kubernetes: the rollout must be able to move
  if (recreate || replicas === 0) maxUnavailable = 0; // for the Available condition, as Kubernetes counts it

  if (old.length === 0) {
    const oldGoing = owned.some((p) => isTerminating(p) && p.metadata.labels?.[podTemplateHashLabel] !== hash);
    if (fresh.length < replicas && !(recreate && oldGoing)) create(replicas - fresh.length);
    for (const pod of [...fresh].sort(deletionOrder).slice(0, Math.max(0, fresh.length - replicas)))
      remove(pod, 'scale down');
  } else if (recreate) {
    for (const pod of old) remove(pod, 'recreate');
  } else {
    const total = fresh.length + old.length;
    create(Math.max(0, Math.min(replicas + maxSurge - total, replicas - fresh.length)));
    const minAvailable = replicas - maxUnavailable;
    const going = new Set<Pod>();
    // Old pods that are not available cost no availability: they go first, within
    // what the new pods still starting leave (Kubernetes' cleanupUnhealthyReplicas).
    let budget = total - minAvailable - fresh.filter((p) => !available(p)).length;
    for (const pod of old.filter((p) => !available(p))) {
      if (budget <= 0) break;
      remove(pod, 'rolling update (not available)');
      going.add(pod);
      budget--;
    }
    // Then available old pods, as long as replicas − maxUnavailable stay available.
    let spare = active.filter(available).length - minAvailable;
    for (const pod of old.filter(available)) {
      if (spare <= 0 || budget <= 0) break;
      remove(pod, 'rolling update');
      going.add(pod);
      spare--;
      budget--;
    }
    // More pods than replicas + maxSurge (a scale-down during a rollout): old ones go too.
    const surplus = total - going.size - (replicas + maxSurge);
    for (const pod of old.filter((p) => !going.has(p)).slice(0, Math.max(0, surplus))) remove(pod, 'scale down');
  }

  const status = deploymentStatus(deployment, active, fresh, available, maxUnavailable, snapshot.nowMillis);
  if (canonicalJson(status) !== canonicalJson(deployment.status ?? {})) actions.push({ type: 'update-status', status });
  return actions;
}

function deploymentStatus(
  deployment: Deployment,
  active: readonly Pod[],
  fresh: readonly Pod[],
  available: (p: Pod) => boolean,
  maxUnavailable: number,
  nowMillis: number,
): DeploymentStatus {
  const replicas = deployment.spec.replicas ?? 1;
  const availableCount = active.filter(available).length;
  const complete =
    fresh.length === replicas && active.length === replicas && fresh.filter(available).length === replicas;
  const previous = deployment.status?.conditions ?? [];
  /** A condition keeps its times while its status and reason stay. */
  const condition = (type: string, status: 'True' | 'False', reason: string, message: string): Condition => {
    const before = previous.find((c) => c.type === type);
    const same = before?.status === status && before.reason === reason;
    const now = isoSeconds(nowMillis);
    return {
      type,
      status,
      reason,
      message,
      lastUpdateTime: same ? (before.lastUpdateTime ?? now) : now,
      lastTransitionTime: before?.status === status ? (before.lastTransitionTime ?? now) : now,
    };
  };
  const minimum = availableCount >= replicas - maxUnavailable;
  const hash = podTemplateHash(deployment.spec.template);
  return {
    ...deployment.status,
    observedGeneration: deployment.metadata.generation ?? 0,
    replicas: active.length,
    updatedReplicas: fresh.length,
    readyReplicas: active.filter(isRunningAndReady).length,
    availableReplicas: availableCount,
    unavailableReplicas: Math.max(0, replicas - availableCount),
    conditions: [
      condition(
        'Available',
        minimum ? 'True' : 'False',
        minimum ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
        minimum ? 'Deployment has minimum availability.' : 'Deployment does not have minimum availability.',
      ),
      condition(
        'Progressing',
        'True',
        complete ? 'NewReplicaSetAvailable' : 'ReplicaSetUpdated',
        complete
          ? `Pods of template hash ${hash} have successfully progressed.`
          : `Pods of template hash ${hash} are progressing.`,
      ),
    ],
  };
}

export interface DeploymentControllerOptions {
  apiUrl: string;
  log?: (line: string) => void;
  /** Pause between passes. Default 100 ms. */
  intervalMillis?: number;
  /** The clock (minReadySeconds, condition times). Default Date.now. */
  now?: () => number;
  /** Random numbers in [0, 1) for pod name suffixes. Default Math.random. */
  random?: () => number;
}

/**
 * The shell: every pass lists Deployments and pods in all namespaces, decides per
 * Deployment and applies the actions in order, stopping at the first failure (the
 * next pass reads again). Pod names get 5 random characters of Kubernetes' alphabet.
 *
 * @example
 *   const deployments = DeploymentController.start({ apiUrl: api.url, log: console.log });
 *   await deployments.stop();
 */
export class DeploymentController {
  private constructor(private readonly stopLoop: () => Promise<void>) {}

  static start(options: DeploymentControllerOptions): DeploymentController {
    const log = options.log ?? (() => undefined);
    const call = kubeClient(options.apiUrl);
    const now = options.now ?? Date.now;
    const random = options.random ?? Math.random;
    const failures = repeatFilter(log);
    const pass = () => reconcileAll().finally(() => failures.endPass());
    const reconcileAll = async () => {
      const deployments = await call<KubeList<Deployment>>('GET', '/apis/apps/v1/deployments');
      if (deployments.items.length === 0) return;
      const pods = await call<KubeList<Pod>>('GET', '/api/v1/pods');
      for (const deployment of deployments.items) {
        const ns = deployment.metadata.namespace;
        const actions = decideDeployment({
          deployment,
          pods: pods.items.filter((p) => p.metadata.namespace === ns),
          nowMillis: now(),
        });
        for (const action of actions) {
          const what = `deployment ${ns}/${deployment.metadata.name}: ${describe(action)}`;
          try {
            await apply(call, deployment, action, random);
          } catch (error) {
            if (!(error instanceof KubeCallError)) throw error;
            failures.failed(`${what} failed: ${error.message}`);
            break;
          }
          if (action.type !== 'update-status') log(what);
        }
      }
    };
    return new DeploymentController(startLoop(pass, options.intervalMillis ?? 100, log));
  }

  /** Stops polling; resolves once the pass in flight ended. */
  stop(): Promise<void> {
    return this.stopLoop();
  }
}

async function apply(call: KubeCall, deployment: Deployment, action: DeploymentAction, random: () => number) {
  const ns = `/namespaces/${deployment.metadata.namespace}`;
  switch (action.type) {
    case 'create-pod': {
      const suffix = Array.from({ length: 5 }, () => safeAlphabet[Math.floor(random() * safeAlphabet.length)]).join('');
      const { generateName: _, ...metadata } = action.pod.metadata;
      await call('POST', `/api/v1${ns}/pods`, {
        ...action.pod,
        metadata: { ...metadata, name: `${action.pod.metadata.generateName}${suffix}` },
      });
      return;
    }
    case 'delete-pod':
      await call('DELETE', `/api/v1${ns}/pods/${action.name}`, { preconditions: { uid: action.uid } });
      return;
    case 'update-status':
      await call('PUT', `/apis/apps/v1${ns}/deployments/${deployment.metadata.name}/status`, {
        ...deployment,
        status: action.status,
      });
      return;
    default: {
      const never: never = action;
      throw new Error(`unknown action ${JSON.stringify(never)}`);
    }
  }
}

function describe(action: DeploymentAction): string {
  switch (action.type) {
    case 'create-pod':
      return `create pod ${action.pod.metadata.generateName}*`;
    case 'delete-pod':
      return `delete pod ${action.name} (${action.reason})`;
    case 'update-status':
      return 'update status';
    default: {
      const never: never = action;
      return String(never);
    }
  }
}
