/**
 * The simulated cluster's StatefulSet controller, as far as the pgha operator uses
 * StatefulSets: ordinal pods with stable names and hostnames, one PVC per pod and
 * volume claim template (reused when the pod is re-created), the PVC retention
 * policy, Parallel and OrderedReady pod management, ControllerRevisions with
 * OnDelete and RollingUpdate (partition) updates, and the status subresource.
 *
 * `decideStatefulSet` is the pure decision over one StatefulSet's snapshot;
 * `StatefulSetController` is the shell that polls the test API server, decides
 * and applies. Not modelled: adopting orphan pods, `spec.ordinals`,
 * `maxUnavailable`, pod identity repair (labels/hostname of an existing pod), events.
 * Test utility, not shipped.
 */
import { type KubeCall, KubeCallError, type KubeList, kubeClient, repeatFilter, startLoop } from './controller-loop.js';
import {
  canonicalJson,
  controllerRef,
  isAvailable,
  isControlledBy,
  isFinished,
  isRunningAndReady,
  isTerminating,
  type LabelSelector,
  type ObjectMeta,
  type OwnerReference,
  type PersistentVolumeClaim,
  type Pod,
  type PodTemplate,
  templateHash,
} from './objects.js';

export const podNameLabel = 'statefulset.kubernetes.io/pod-name';
export const podIndexLabel = 'apps.kubernetes.io/pod-index';
export const revisionHashLabel = 'controller-revision-hash';
/** The label a ControllerRevision carries with its template hash. */
export const revisionDataHashLabel = 'controller.kubernetes.io/hash';
/** The finalizer that keeps a PVC while a pod uses it (the API server's admission adds it; here the creator does). */
export const pvcProtectionFinalizer = 'kubernetes.io/pvc-protection';

export type RetentionPolicyType = 'Retain' | 'Delete';

export interface StatefulSetStatus {
  observedGeneration?: number;
  replicas?: number;
  readyReplicas?: number;
  availableReplicas?: number;
  currentReplicas?: number;
  updatedReplicas?: number;
  currentRevision?: string;
  updateRevision?: string;
  collisionCount?: number;
  [key: string]: unknown;
}

export interface StatefulSet {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec: {
    replicas?: number;
    serviceName?: string;
    selector?: LabelSelector;
    podManagementPolicy?: 'OrderedReady' | 'Parallel';
    updateStrategy?: { type?: 'RollingUpdate' | 'OnDelete'; rollingUpdate?: { partition?: number } };
    persistentVolumeClaimRetentionPolicy?: { whenDeleted?: RetentionPolicyType; whenScaled?: RetentionPolicyType };
    minReadySeconds?: number;
    revisionHistoryLimit?: number;
    template: PodTemplate;
    volumeClaimTemplates?: { metadata: { name: string; labels?: Record<string, string> }; spec?: unknown }[];
  };
  status?: StatefulSetStatus;
}

export interface ControllerRevision {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  data: { spec: { template: PodTemplate & { $patch?: 'replace' } } };
  revision: number;
}

/** What the shell read for one StatefulSet: plain data, plus the time it read it. */
export interface StatefulSetSnapshot {
  readonly statefulSet: StatefulSet;
  /** Pods in the StatefulSet's namespace (the decision keeps those it controls). */
  readonly pods: readonly Pod[];
  /** PVCs in the StatefulSet's namespace (the decision keeps those named after its templates). */
  readonly claims: readonly PersistentVolumeClaim[];
  /** ControllerRevisions in the namespace (the decision keeps those it controls). */
  readonly revisions: readonly ControllerRevision[];
  readonly nowMillis: number;
}

/** One step for the shell, applied in order; the shell stops at the first that fails and decides again. */
export type StatefulSetAction =
  | { type: 'create-revision'; revision: ControllerRevision }
  /** The template went back to an older revision's: that revision becomes the newest (Kubernetes renumbers it). */
  | { type: 'update-revision'; name: string; revision: number }
  /** Beyond revisionHistoryLimit and used by no pod. */
  | { type: 'delete-revision'; name: string }
  | { type: 'create-pvc'; claim: PersistentVolumeClaim }
  /** Replaces the claim's owner references (from `claim`, the version read, so a concurrent write conflicts). */
  | { type: 'update-pvc-owner'; claim: PersistentVolumeClaim; ownerReferences: OwnerReference[] }
  | { type: 'create-pod'; pod: Pod }
  /** Deletes the pod with this uid only (a precondition), never a successor of the same name. */
  | { type: 'delete-pod'; name: string; uid: string; reason: string }
  | { type: 'update-status'; status: StatefulSetStatus };

const ordinalOf = (setName: string, podName: string): number | undefined => {
  const m = /^(\d+)$/.exec(podName.startsWith(`${setName}-`) ? podName.slice(setName.length + 1) : '');
  return m ? Number(m[1]) : undefined;
};

export const claimName = (templateName: string, setName: string, ordinal: number) =>
  `${templateName}-${setName}-${ordinal}`;

const revisionData = (template: PodTemplate): ControllerRevision['data'] => ({
  spec: { template: { ...structuredClone(template), $patch: 'replace' } },
});

const templateOf = (revision: ControllerRevision): PodTemplate => {
  const { $patch: _, ...template } = revision.data.spec.template;
  return template;
};

const setRef = (set: StatefulSet): OwnerReference => controllerRef(set, 'apps/v1', 'StatefulSet');

/** The claim's owner references the retention policy wants (others' references are kept). */
export function desiredClaimOwners(
  set: StatefulSet,
  claim: PersistentVolumeClaim,
  pod: Pod | undefined,
  condemned: boolean,
): OwnerReference[] {
  const policy = set.spec.persistentVolumeClaimRetentionPolicy ?? {};
  const setUid = set.metadata.uid;
  // Kubernetes' table: whenDeleted Delete → owned by the set; whenScaled Delete and
  // the pod condemned → owned by the pod *instead* (with the set as a second owner
  // the garbage collector would keep the claim as long as the set lives).
  const byPod = policy.whenScaled === 'Delete' && condemned && pod?.metadata.uid !== undefined;
  const bySet = policy.whenDeleted === 'Delete' && !byPod;
  const podUids = new Set(
    (claim.metadata.ownerReferences ?? []).filter((r) => r.kind === 'Pod' && r.apiVersion === 'v1').map((r) => r.uid),
  );
  const others = (claim.metadata.ownerReferences ?? []).filter((r) => r.uid !== setUid && !podUids.has(r.uid));
  return [
    ...others,
    ...(bySet ? [{ ...setRef(set), controller: false }] : []),
    ...(byPod && pod ? [{ ...controllerRef(pod, 'v1', 'Pod'), controller: false }] : []),
  ];
}

const sameOwners = (a: readonly OwnerReference[] | undefined, b: readonly OwnerReference[]) =>
  canonicalJson([...(a ?? [])].sort((x, y) => x.uid.localeCompare(y.uid))) ===
  canonicalJson([...b].sort((x, y) => x.uid.localeCompare(y.uid)));

interface Revisions {
  update: { name: string; template: PodTemplate };
  current: { name: string; template: PodTemplate };
  actions: StatefulSetAction[];
  /** A revision of another template holds the name this template's hash gives. */
  collision: boolean;
}

function decideRevisions(set: StatefulSet, owned: readonly ControllerRevision[]): Revisions {
  const data = revisionData(set.spec.template);
  const wanted = canonicalJson(data);
  const sorted = [...owned].sort((a, b) => a.revision - b.revision);
  const newest = sorted.at(-1)?.revision ?? 0;
  const actions: StatefulSetAction[] = [];
  let update: { name: string; template: PodTemplate };
  let collision = false;
  const equal = sorted.filter((r) => canonicalJson(r.data) === wanted).at(-1);
  if (equal) {
    if (equal.revision < newest)
      actions.push({ type: 'update-revision', name: equal.metadata.name, revision: newest + 1 });
    update = { name: equal.metadata.name, template: templateOf(equal) };
  } else {
    const collisionCount = set.status?.collisionCount ?? 0;
    const hash = templateHash(data, collisionCount);
    const name = `${set.metadata.name}-${hash}`;
    collision = owned.some((r) => r.metadata.name === name);
    actions.push({
      type: 'create-revision',
      revision: {
        apiVersion: 'apps/v1',
        kind: 'ControllerRevision',
        metadata: {
          name,
          namespace: set.metadata.namespace,
          labels: { ...(set.spec.template.metadata?.labels ?? {}), [revisionDataHashLabel]: hash },
          ownerReferences: [setRef(set)],
        },
        data,
        revision: newest + 1,
      },
    });
    update = { name, template: set.spec.template };
  }
  const currentRevision = owned.find((r) => r.metadata.name === set.status?.currentRevision);
  const current = currentRevision
    ? { name: currentRevision.metadata.name, template: templateOf(currentRevision) }
    : update;
  return { update, current, actions, collision };
}

/** The pod for `ordinal` from `template`, labelled with its revision, its claims mounted. */
export function newStatefulSetPod(set: StatefulSet, ordinal: number, revision: string, template: PodTemplate): Pod {
  const name = `${set.metadata.name}-${ordinal}`;
  const claimVolumes = (set.spec.volumeClaimTemplates ?? []).map((t) => ({
    name: t.metadata.name,
    persistentVolumeClaim: { claimName: claimName(t.metadata.name, set.metadata.name, ordinal) },
  }));
  const spec = structuredClone(template.spec ?? {});
  const claimed = new Set(claimVolumes.map((v) => v.name));
  const volumes = [...(spec.volumes ?? []).filter((v) => !claimed.has(v.name)), ...claimVolumes];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: set.metadata.namespace,
      labels: {
        ...(template.metadata?.labels ?? {}),
        [podNameLabel]: name,
        [podIndexLabel]: String(ordinal),
        [revisionHashLabel]: revision,
      },
      ...(template.metadata?.annotations ? { annotations: { ...template.metadata.annotations } } : {}),
      ownerReferences: [setRef(set)],
    },
    spec: {
      ...spec,
      hostname: name,
      ...(set.spec.serviceName ? { subdomain: set.spec.serviceName } : {}),
      ...(volumes.length > 0 ? { volumes } : {}),
    },
  };
}

/** The PVC for `template` and `ordinal`: the template's labels and the selector's, a retention-policy owner. */
export function newStatefulSetClaim(
  set: StatefulSet,
  template: NonNullable<StatefulSet['spec']['volumeClaimTemplates']>[number],
  ordinal: number,
): PersistentVolumeClaim {
  const claim: PersistentVolumeClaim = {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: claimName(template.metadata.name, set.metadata.name, ordinal),
      namespace: set.metadata.namespace,
      labels: { ...(template.metadata.labels ?? {}), ...(set.spec.selector?.matchLabels ?? {}) },
      finalizers: [pvcProtectionFinalizer],
    },
    spec: structuredClone((template.spec ?? {}) as Record<string, unknown>),
  };
  const owners = desiredClaimOwners(set, claim, undefined, false);
  if (owners.length > 0) claim.metadata.ownerReferences = owners;
  return claim;
}

/**
 * Decides what one StatefulSet needs next. Kubernetes' order: revisions first;
 * then ordinals 0..replicas-1 upwards (a missing pod gets its missing claims, then
 * the pod; a Failed or Succeeded pod is deleted; a pod with a deletionTimestamp is
 * waited for, never replaced while it exists); then pods at ordinals ≥ replicas,
 * highest first (under whenScaled Delete the claims are handed to the pod before
 * the pod is deleted); then, for RollingUpdate, the highest-ordinal pod ≥ partition
 * on an old revision is deleted, only while every pod is Running and Ready; then
 * the status, when it changed. OrderedReady does one creation or deletion per
 * decision and stops at the first pod that is not Running and Ready (for
 * minReadySeconds); Parallel does them all. A set being deleted gets nothing (the
 * garbage collector takes its pods).
 */
export function decideStatefulSet(snapshot: StatefulSetSnapshot): StatefulSetAction[] {
  const set = snapshot.statefulSet;
  if (isTerminating(set)) return [];
  const setName = set.metadata.name;
  const replicaCount = set.spec.replicas ?? 1;
  const monotonic = set.spec.podManagementPolicy !== 'Parallel';
  const minReadySeconds = set.spec.minReadySeconds ?? 0;
  const healthy = (pod: Pod) => !isTerminating(pod) && isAvailable(pod, minReadySeconds, snapshot.nowMillis);
  const rolling = (set.spec.updateStrategy?.type ?? 'RollingUpdate') === 'RollingUpdate';
  const partition = rolling ? (set.spec.updateStrategy?.rollingUpdate?.partition ?? 0) : 0;

  const ownedRevisions = snapshot.revisions.filter((r) => isControlledBy(r, set.metadata.uid));
  const revisions = decideRevisions(set, ownedRevisions);
  if (revisions.collision)
    return [
      { type: 'update-status', status: { ...set.status, collisionCount: (set.status?.collisionCount ?? 0) + 1 } },
    ];
  const actions: StatefulSetAction[] = [...revisions.actions];

  const pods = new Map<number, Pod>();
  for (const pod of snapshot.pods) {
    if (!isControlledBy(pod, set.metadata.uid) || pod.metadata.namespace !== set.metadata.namespace) continue;
    const ordinal = ordinalOf(setName, pod.metadata.name);
    if (ordinal !== undefined) pods.set(ordinal, pod);
  }
  const claims = new Map(
    snapshot.claims.filter((c) => c.metadata.namespace === set.metadata.namespace).map((c) => [c.metadata.name, c]),
  );
  const templates = set.spec.volumeClaimTemplates ?? [];
  const revisionFor = (ordinal: number) => (ordinal < partition ? revisions.current : revisions.update);

  /** Creates the ordinal's missing claims and sets the existing ones' owners; false while one is being deleted. */
  const claimActions = (ordinal: number, pod: Pod | undefined, condemned: boolean): boolean => {
    const steps: StatefulSetAction[] = [];
    for (const template of templates) {
      const claim = claims.get(claimName(template.metadata.name, setName, ordinal));
      if (claim && isTerminating(claim)) return false; // a new pod must not mount a volume on its way out
      if (!claim) {
        if (!condemned) steps.push({ type: 'create-pvc', claim: newStatefulSetClaim(set, template, ordinal) });
        continue;
      }
      const owners = desiredClaimOwners(set, claim, pod, condemned);
      if (!sameOwners(claim.metadata.ownerReferences, owners))
        steps.push({ type: 'update-pvc-owner', claim, ownerReferences: owners });
    }
    actions.push(...steps);
    return true;
  };

  let blocked = false; // OrderedReady: waiting for a pod before touching the next
  for (let ordinal = 0; ordinal < replicaCount && !blocked; ordinal++) {
    const pod = pods.get(ordinal);
    if (!pod) {
      if (claimActions(ordinal, undefined, false)) {
        const revision = revisionFor(ordinal);
        actions.push({ type: 'create-pod', pod: newStatefulSetPod(set, ordinal, revision.name, revision.template) });
      }
      blocked = monotonic;
    } else if (isTerminating(pod)) blocked = monotonic;
    else if (isFinished(pod)) {
      actions.push({
        type: 'delete-pod',
        name: pod.metadata.name,
        uid: pod.metadata.uid ?? '',
        reason: `phase ${pod.status?.phase}`,
      });
      blocked = monotonic;
    } else {
      claimActions(ordinal, pod, false);
      if (!healthy(pod)) blocked = monotonic;
    }
  }

  if (!blocked) {
    const condemned = [...pods.entries()].filter(([ordinal]) => ordinal >= replicaCount).sort(([a], [b]) => b - a);
    for (const [ordinal, pod] of condemned) {
      if (isTerminating(pod)) {
        blocked = monotonic;
        if (blocked) break;
        continue;
      }
      claimActions(ordinal, pod, true); // owners first: the pod's deletion then takes its claims along
      actions.push({ type: 'delete-pod', name: pod.metadata.name, uid: pod.metadata.uid ?? '', reason: 'scale down' });
      blocked = monotonic;
      if (blocked) break;
    }
  }

  if (!blocked && rolling) {
    const replicas = Array.from({ length: replicaCount }, (_, ordinal) => pods.get(ordinal));
    if (replicas.every((pod) => pod !== undefined && healthy(pod)))
      for (let ordinal = replicaCount - 1; ordinal >= partition; ordinal--) {
        const pod = replicas[ordinal]!;
        if (pod.metadata.labels?.[revisionHashLabel] !== revisions.update.name) {
          actions.push({ type: 'delete-pod', name: pod.metadata.name, uid: pod.metadata.uid ?? '', reason: 'update' });
          break;
        }
      }
  }

  actions.push(...historyActions(set, ownedRevisions, revisions, [...pods.values()]));

  const status = statefulSetStatus(set, [...pods.values()], revisions, snapshot.nowMillis);
  if (canonicalJson(status) !== canonicalJson(set.status ?? {})) actions.push({ type: 'update-status', status });
  return actions;
}

/** Revisions beyond revisionHistoryLimit (default 10), oldest first, that no pod and neither status revision uses. */
function historyActions(
  set: StatefulSet,
  owned: readonly ControllerRevision[],
  revisions: Revisions,
  pods: readonly Pod[],
): StatefulSetAction[] {
  const live = new Set([revisions.current.name, revisions.update.name]);
  for (const pod of pods) live.add(pod.metadata.labels?.[revisionHashLabel] ?? '');
  const old = owned.filter((r) => !live.has(r.metadata.name)).sort((a, b) => a.revision - b.revision);
  const excess = old.length - (set.spec.revisionHistoryLimit ?? 10);
  return old.slice(0, Math.max(0, excess)).map((r) => ({ type: 'delete-revision', name: r.metadata.name }));
}

/**
 * The status from the pods read: replicas counts every pod, current and updated
 * those not terminating on that revision. currentRevision becomes the update
 * revision once all `spec.replicas` pods exist, run it and are Ready (for both
 * update strategies; Kubernetes only moves it for RollingUpdate).
 */
function statefulSetStatus(
  set: StatefulSet,
  pods: readonly Pod[],
  revisions: Revisions,
  nowMillis: number,
): StatefulSetStatus {
  const replicaCount = set.spec.replicas ?? 1;
  const live = pods.filter((p) => !isTerminating(p));
  const on = (name: string) => live.filter((p) => p.metadata.labels?.[revisionHashLabel] === name).length;
  const ready = pods.filter(isRunningAndReady).length;
  const updated = on(revisions.update.name);
  const complete = pods.length === replicaCount && updated === replicaCount && ready === replicaCount;
  return {
    ...set.status,
    observedGeneration: set.metadata.generation ?? 0,
    replicas: pods.length,
    readyReplicas: ready,
    availableReplicas: pods.filter((p) => isAvailable(p, set.spec.minReadySeconds ?? 0, nowMillis)).length,
    currentReplicas: complete ? updated : on(revisions.current.name),
    updatedReplicas: updated,
    currentRevision: complete ? revisions.update.name : revisions.current.name,
    updateRevision: revisions.update.name,
    collisionCount: set.status?.collisionCount ?? 0,
  };
}

export interface StatefulSetControllerOptions {
  apiUrl: string;
  log?: (line: string) => void;
  /** Pause between passes. Default 100 ms. */
  intervalMillis?: number;
  /** The clock (for minReadySeconds). Default Date.now. */
  now?: () => number;
}

/**
 * The shell: every pass lists StatefulSets, pods, PVCs and ControllerRevisions in
 * all namespaces (the API server is in-process and consistent, so each pass sees
 * the previous pass's writes and needs no expectations cache), decides per
 * StatefulSet and applies the actions in order, stopping at the first failure
 * (409, 404: the next pass reads again).
 *
 * @example
 *   const sts = StatefulSetController.start({ apiUrl: api.url, log: console.log });
 *   await sts.stop();
 */
export class StatefulSetController {
  private constructor(
    private readonly call: KubeCall,
    private readonly log: (line: string) => void,
    private readonly now: () => number,
    private readonly stopLoop: () => Promise<void>,
  ) {}

  static start(options: StatefulSetControllerOptions): StatefulSetController {
    const log = options.log ?? (() => undefined);
    const call = kubeClient(options.apiUrl);
    let controller: StatefulSetController | undefined;
    const stop = startLoop(() => controller?.pass() ?? Promise.resolve(), options.intervalMillis ?? 100, log);
    controller = new StatefulSetController(call, log, options.now ?? Date.now, stop);
    return controller;
  }

  /** Stops polling; resolves once the pass in flight ended. */
  stop(): Promise<void> {
    return this.stopLoop();
  }

  private readonly failures = repeatFilter((line) => this.log(line));

  private async pass(): Promise<void> {
    try {
      await this.reconcileAll();
    } finally {
      this.failures.endPass();
    }
  }

  private async reconcileAll(): Promise<void> {
    const sets = await this.call<KubeList<StatefulSet>>('GET', '/apis/apps/v1/statefulsets');
    if (sets.items.length === 0) return;
    const [pods, claims, revisions] = await Promise.all([
      this.call<KubeList<Pod>>('GET', '/api/v1/pods'),
      this.call<KubeList<PersistentVolumeClaim>>('GET', '/api/v1/persistentvolumeclaims'),
      this.call<KubeList<ControllerRevision>>('GET', '/apis/apps/v1/controllerrevisions'),
    ]);
    const inNamespace = <T extends { metadata: ObjectMeta }>(items: T[], ns: string | undefined) =>
      items.filter((o) => o.metadata.namespace === ns);
    for (const set of sets.items) {
      const ns = set.metadata.namespace;
      const actions = decideStatefulSet({
        statefulSet: set,
        pods: inNamespace(pods.items, ns),
        claims: inNamespace(claims.items, ns),
        revisions: inNamespace(revisions.items, ns),
        nowMillis: this.now(),
      });
      for (const action of actions) {
        try {
          await this.apply(set, action);
        } catch (error) {
          if (!(error instanceof KubeCallError)) throw error;
          this.failures.failed(`statefulset ${ns}/${set.metadata.name}: ${describe(action)} failed: ${error.message}`);
          break;
        }
        if (action.type !== 'update-status') this.log(`statefulset ${ns}/${set.metadata.name}: ${describe(action)}`);
      }
    }
  }

  private async apply(set: StatefulSet, action: StatefulSetAction): Promise<void> {
    const ns = `/namespaces/${set.metadata.namespace}`;
    switch (action.type) {
      case 'create-revision':
        await this.call('POST', `/apis/apps/v1${ns}/controllerrevisions`, action.revision);
        return;
      case 'update-revision': {
        const path = `/apis/apps/v1${ns}/controllerrevisions/${action.name}`;
        const current = await this.call<ControllerRevision>('GET', path);
        await this.call('PUT', path, { ...current, revision: action.revision });
        return;
      }
      case 'delete-revision':
        await this.call('DELETE', `/apis/apps/v1${ns}/controllerrevisions/${action.name}`);
        return;
      case 'create-pvc': {
        const created = await this.call<PersistentVolumeClaim>(
          'POST',
          `/api/v1${ns}/persistentvolumeclaims`,
          action.claim,
        );
        // Dynamic provisioning, immediately: the claim is Bound to a volume of its own.
        // Best effort: the volume controller binds any claim this misses (and may win
        // the race, answering this one 409), and the pod need not wait for it.
        await bindClaim(this.call, created).catch((error: unknown) => {
          if (!(error instanceof KubeCallError)) throw error;
        });
        return;
      }
      case 'update-pvc-owner': {
        const { claim } = action;
        const { ownerReferences: _, ...metadata } = claim.metadata;
        const next = {
          ...claim,
          metadata:
            action.ownerReferences.length > 0 ? { ...metadata, ownerReferences: action.ownerReferences } : metadata,
        };
        await this.call('PUT', `/api/v1${ns}/persistentvolumeclaims/${claim.metadata.name}`, next);
        return;
      }
      case 'create-pod':
        await this.call('POST', `/api/v1${ns}/pods`, action.pod);
        return;
      case 'delete-pod':
        await this.call('DELETE', `/api/v1${ns}/pods/${action.name}`, { preconditions: { uid: action.uid } });
        return;
      case 'update-status':
        await this.call('PUT', `/apis/apps/v1${ns}/statefulsets/${set.metadata.name}/status`, {
          ...set,
          status: action.status,
        });
        return;
      default: {
        const never: never = action;
        throw new Error(`unknown action ${JSON.stringify(never)}`);
      }
    }
  }
}

/** Marks a claim Bound to its own volume `pvc-<uid>` (spec.volumeName, then status), as a provisioner and the binder would. */
export async function bindClaim(call: KubeCall, claim: PersistentVolumeClaim): Promise<void> {
  const path = `/api/v1/namespaces/${claim.metadata.namespace}/persistentvolumeclaims/${claim.metadata.name}`;
  let current = claim;
  const volumeName = `pvc-${claim.metadata.uid}`;
  if (claim.spec?.volumeName !== volumeName)
    current = await call<PersistentVolumeClaim>('PUT', path, {
      ...claim,
      metadata: {
        ...claim.metadata,
        annotations: {
          ...claim.metadata.annotations,
          'pv.kubernetes.io/bind-completed': 'yes',
          'pv.kubernetes.io/bound-by-controller': 'yes',
        },
      },
      spec: { ...claim.spec, volumeName },
    });
  const spec = current.spec as { accessModes?: string[]; resources?: { requests?: { storage?: string } } };
  await call('PUT', `${path}/status`, {
    ...current,
    status: {
      phase: 'Bound',
      ...(spec.accessModes ? { accessModes: spec.accessModes } : {}),
      ...(spec.resources?.requests?.storage ? { capacity: { storage: spec.resources.requests.storage } } : {}),
    },
  });
}

function describe(action: StatefulSetAction): string {
  switch (action.type) {
    case 'create-revision':
      return `create revision ${action.revision.metadata.name} (${action.revision.revision})`;
    case 'update-revision':
      return `renumber revision ${action.name} to ${action.revision}`;
    case 'delete-revision':
      return `delete revision ${action.name}`;
    case 'create-pvc':
      return `create pvc ${action.claim.metadata.name}`;
    case 'update-pvc-owner':
      return `set pvc ${action.claim.metadata.name} owners to [${action.ownerReferences.map((r) => `${r.kind}/${r.name}`).join(', ')}]`;
    case 'create-pod':
      return `create pod ${action.pod.metadata.name} (${action.pod.metadata.labels?.[revisionHashLabel]})`;
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
