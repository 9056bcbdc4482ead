/**
 * A stand-in for the kubelet in the controllers' tests (the controllers are the
 * unit under test; the API server is real): it holds every pod with a finalizer, so
 * deletion is graceful as with a real kubelet, creates the pod's volume
 * directories, marks it Running and Ready through the status subresource, and lets
 * a deleting pod go unless the test holds it. Test utility, not shipped.
 */
import { mkdir } from 'node:fs/promises';
import { KubeCallError, type KubeList, kubeClient, startLoop } from './controller-loop.js';
import type { Pod } from './objects.js';
import { volumeDir } from './volumes.js';

export const stubKubeletFinalizer = 'test.pgha.dev/stub-kubelet';

export interface StubKubeletOptions {
  apiUrl: string;
  stateDir: string;
  log: (line: string) => void;
  /** Names of pods whose deletion the stub does not complete yet (they keep their deletionTimestamp). */
  held?: ReadonlySet<string>;
  /** Pods the stub leaves Running but not Ready (read on every pass). */
  unready?: (pod: Pod) => boolean;
}

/** Starts the stub; the function returned stops it (resolving once its pass in flight ended). */
export function startStubKubelet(options: StubKubeletOptions): () => Promise<void> {
  const call = kubeClient(options.apiUrl);
  return startLoop(
    async () => {
      const pods = await call<KubeList<Pod>>('GET', '/api/v1/pods');
      for (const p of pods.items) {
        const path = `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`;
        const finalizers = p.metadata.finalizers ?? [];
        try {
          if (p.metadata.deletionTimestamp) {
            if (!options.held?.has(p.metadata.name) && finalizers.includes(stubKubeletFinalizer))
              await call('PUT', path, {
                ...p,
                metadata: { ...p.metadata, finalizers: finalizers.filter((f) => f !== stubKubeletFinalizer) },
              });
            continue;
          }
          if (!finalizers.includes(stubKubeletFinalizer)) {
            await call('PUT', path, {
              ...p,
              metadata: { ...p.metadata, finalizers: [...finalizers, stubKubeletFinalizer] },
            });
            continue;
          }
          if (p.status?.phase === 'Failed' || p.status?.phase === 'Succeeded') continue;
          const ready = options.unready?.(p) ? 'False' : 'True';
          const readyNow = p.status?.conditions?.find((c) => c.type === 'Ready')?.status;
          if (p.status?.phase === 'Running' && readyNow === ready) continue;
          for (const v of p.spec?.volumes ?? [])
            if (v.persistentVolumeClaim)
              await mkdir(volumeDir(options.stateDir, p.metadata.namespace ?? '', v.persistentVolumeClaim.claimName), {
                recursive: true,
              });
          await call('PUT', `${path}/status`, {
            ...p,
            status: { phase: 'Running', conditions: [{ type: 'Ready', status: ready }] },
          });
        } catch (error) {
          if (!(error instanceof KubeCallError)) throw error;
          options.log(`stub kubelet: ${error.message}`);
        }
      }
    },
    20,
    options.log,
  );
}
