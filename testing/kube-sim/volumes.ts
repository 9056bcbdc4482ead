// Where the simulated cluster keeps a PersistentVolumeClaim's data: one directory
// per claim under the simulation's state directory. The StatefulSet controller's
// volume handling and the kubelet agree on it through this function.
import { join } from 'node:path';

/** The directory backing claim `claimName` in `namespace`. */
export function volumeDir(stateDir: string, namespace: string, claimName: string): string {
  return join(stateDir, 'volumes', namespace, claimName);
}
