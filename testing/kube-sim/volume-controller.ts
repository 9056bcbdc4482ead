/**
 * The simulated cluster's volumes: every PVC is dynamically provisioned as the
 * directory `volumeDir(stateDir, namespace, claim)` with reclaim policy Delete.
 * Stands in for the external provisioner, the PV binder and the PVC protection
 * controller:
 *
 * - a PVC that is not Bound is bound to its own volume `pvc-<uid>`;
 * - a PVC gets the `kubernetes.io/pvc-protection` finalizer; a PVC being deleted
 *   keeps it while a pod that is not Failed or Succeeded (terminating pods
 *   included) names it in `spec.volumes`, so a running pod's data is never removed
 *   under it;
 * - a deleted PVC's directory is removed *before* the finalizer is released, so a
 *   claim re-created with the same name (a StatefulSet scaled down and up again
 *   under whenScaled Delete) never sees the old data;
 * - a directory whose PVC is gone (deleted without the finalizer) is removed.
 *
 * `decideVolumes` is pure; `VolumeController` is the shell. Test utility, not shipped.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type KubeCall, KubeCallError, type KubeList, kubeClient, repeatFilter, startLoop } from './controller-loop.js';
import { isFinished, isTerminating, type PersistentVolumeClaim, type Pod } from './objects.js';
import { bindClaim, pvcProtectionFinalizer } from './statefulset-controller.js';
import { volumeDir } from './volumes.js';

export interface VolumeSnapshot {
  /** Volume directories found on disk (read before the claims, so a claim created meanwhile is listed). */
  readonly volumes: readonly { namespace: string; claim: string }[];
  readonly claims: readonly PersistentVolumeClaim[];
  readonly pods: readonly Pod[];
}

export type VolumeAction =
  | { type: 'bind'; claim: PersistentVolumeClaim }
  | { type: 'protect'; claim: PersistentVolumeClaim }
  /** Removes the directory, then the finalizer: the claim goes once its data went. */
  | { type: 'release'; claim: PersistentVolumeClaim }
  | { type: 'remove-volume'; namespace: string; claim: string };

const hasProtection = (claim: PersistentVolumeClaim) =>
  (claim.metadata.finalizers ?? []).includes(pvcProtectionFinalizer);

/** Decides the bindings, finalizers and removals for every claim and directory. */
export function decideVolumes(snapshot: VolumeSnapshot): VolumeAction[] {
  const actions: VolumeAction[] = [];
  const key = (namespace: string | undefined, name: string) => `${namespace ?? ''}/${name}`;
  const used = new Set<string>();
  for (const pod of snapshot.pods)
    if (!isFinished(pod))
      for (const v of pod.spec?.volumes ?? [])
        if (v.persistentVolumeClaim) used.add(key(pod.metadata.namespace, v.persistentVolumeClaim.claimName));
  const claims = new Set(snapshot.claims.map((c) => key(c.metadata.namespace, c.metadata.name)));
  for (const v of snapshot.volumes)
    if (!claims.has(key(v.namespace, v.claim)))
      actions.push({ type: 'remove-volume', namespace: v.namespace, claim: v.claim });
  for (const claim of snapshot.claims) {
    if (isTerminating(claim)) {
      if (hasProtection(claim) && !used.has(key(claim.metadata.namespace, claim.metadata.name)))
        actions.push({ type: 'release', claim });
      continue;
    }
    if (!hasProtection(claim)) actions.push({ type: 'protect', claim });
    else if (claim.status?.phase !== 'Bound') actions.push({ type: 'bind', claim });
  }
  return actions;
}

export interface VolumeControllerOptions {
  apiUrl: string;
  /** The simulation's state directory (volumes live under `<stateDir>/volumes`). */
  stateDir: string;
  log?: (line: string) => void;
  /** Pause between passes. Default 100 ms. */
  intervalMillis?: number;
}

/**
 * The shell: each pass reads the volume directories, then lists PVCs and pods in
 * all namespaces, decides and applies each action independently (a failed one is
 * logged and retried on the next pass).
 *
 * @example
 *   const volumes = VolumeController.start({ apiUrl: api.url, stateDir, log: console.log });
 *   await volumes.stop();
 */
export class VolumeController {
  private constructor(private readonly stopLoop: () => Promise<void>) {}

  static start(options: VolumeControllerOptions): VolumeController {
    const log = options.log ?? (() => undefined);
    const call = kubeClient(options.apiUrl);
    const failures = repeatFilter(log);
    const pass = () => reconcileAll().finally(() => failures.endPass());
    const reconcileAll = async () => {
      const volumes = await volumeDirs(options.stateDir);
      const [claims, pods] = await Promise.all([
        call<KubeList<PersistentVolumeClaim>>('GET', '/api/v1/persistentvolumeclaims'),
        call<KubeList<Pod>>('GET', '/api/v1/pods'),
      ]);
      for (const action of decideVolumes({ volumes, claims: claims.items, pods: pods.items })) {
        try {
          await apply(call, options.stateDir, action);
          log(`volumes: ${describe(action)}`);
        } catch (error) {
          if (!(error instanceof KubeCallError)) throw error;
          failures.failed(`volumes: ${describe(action)} failed: ${error.message}`);
        }
      }
    };
    return new VolumeController(startLoop(pass, options.intervalMillis ?? 100, log));
  }

  /** Stops polling; resolves once the pass in flight ended. */
  stop(): Promise<void> {
    return this.stopLoop();
  }
}

async function volumeDirs(stateDir: string): Promise<{ namespace: string; claim: string }[]> {
  const list = async (dir: string) => {
    try {
      return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  };
  const root = join(stateDir, 'volumes');
  const found: { namespace: string; claim: string }[] = [];
  for (const namespace of await list(root))
    for (const claim of await list(join(root, namespace))) found.push({ namespace, claim });
  return found;
}

async function apply(call: KubeCall, stateDir: string, action: VolumeAction): Promise<void> {
  const path = (c: PersistentVolumeClaim) =>
    `/api/v1/namespaces/${c.metadata.namespace}/persistentvolumeclaims/${c.metadata.name}`;
  switch (action.type) {
    case 'bind':
      await bindClaim(call, action.claim);
      return;
    case 'protect': {
      const { claim } = action;
      await call('PUT', path(claim), {
        ...claim,
        metadata: { ...claim.metadata, finalizers: [...(claim.metadata.finalizers ?? []), pvcProtectionFinalizer] },
      });
      return;
    }
    case 'release': {
      const { claim } = action;
      await rm(volumeDir(stateDir, claim.metadata.namespace ?? '', claim.metadata.name), {
        recursive: true,
        force: true,
      });
      await call('PUT', path(claim), {
        ...claim,
        metadata: {
          ...claim.metadata,
          finalizers: (claim.metadata.finalizers ?? []).filter((f) => f !== pvcProtectionFinalizer),
        },
      });
      return;
    }
    case 'remove-volume':
      await rm(volumeDir(stateDir, action.namespace, action.claim), { recursive: true, force: true });
      return;
    default: {
      const never: never = action;
      throw new Error(`unknown action ${JSON.stringify(never)}`);
    }
  }
}

function describe(action: VolumeAction): string {
  switch (action.type) {
    case 'remove-volume':
      return `remove volume ${action.namespace}/${action.claim} (its claim is gone)`;
    case 'release':
      return `remove volume ${action.claim.metadata.namespace}/${action.claim.metadata.name} and release the claim`;
    default:
      return `${action.type} claim ${action.claim.metadata.namespace}/${action.claim.metadata.name}`;
  }
}
