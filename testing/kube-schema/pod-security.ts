/**
 * Test support: the checks of the Pod Security Standards' "restricted" profile
 * (Kubernetes 1.25+, what Pod Security Admission enforces with
 * `pod-security.kubernetes.io/enforce: restricted`) as they apply to a pod spec,
 * plus pgha's own rule that no container writes its image (readOnlyRootFilesystem).
 * Returns what a pod breaks, one line each; empty when it passes.
 */

interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  privileged?: boolean;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
  seccompProfile?: { type: string };
}
export interface PodSpec {
  securityContext?: SecurityContext;
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  volumes?: Record<string, unknown>[];
  containers: ({ name: string; securityContext?: SecurityContext } & Record<string, unknown>)[];
  initContainers?: ({ name: string; securityContext?: SecurityContext } & Record<string, unknown>)[];
}

/** Volume types the restricted profile allows. */
const allowedVolumeTypes = new Set([
  'configMap',
  'csi',
  'downwardAPI',
  'emptyDir',
  'ephemeral',
  'persistentVolumeClaim',
  'projected',
  'secret',
]);

export function restrictedViolations(pod: PodSpec): string[] {
  const out: string[] = [];
  const podContext = pod.securityContext ?? {};
  const containers = [...(pod.initContainers ?? []), ...pod.containers];
  if (pod.hostNetwork || pod.hostPID || pod.hostIPC) out.push('pod: shares a host namespace');
  for (const v of pod.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    if (type === undefined || !allowedVolumeTypes.has(type))
      out.push(`volume ${String(v.name)}: type ${type} is not allowed`);
  }
  const everyContainer = (test: (c: SecurityContext) => boolean) =>
    containers.every((c) => test(c.securityContext ?? {}));
  if (
    !(podContext.runAsNonRoot === true
      ? everyContainer((c) => c.runAsNonRoot !== false)
      : everyContainer((c) => c.runAsNonRoot === true))
  )
    out.push('pod: runAsNonRoot is not true');
  if (podContext.runAsUser === 0 || containers.some((c) => c.securityContext?.runAsUser === 0))
    out.push('pod: runs as user 0');
  const seccompOk = (p?: { type: string }) =>
    p !== undefined && (p.type === 'RuntimeDefault' || p.type === 'Localhost');
  const podSeccomp = podContext.seccompProfile;
  if (
    !(seccompOk(podSeccomp)
      ? everyContainer((c) => c.seccompProfile === undefined || seccompOk(c.seccompProfile))
      : everyContainer((c) => seccompOk(c.seccompProfile)))
  )
    out.push('pod: seccompProfile is not RuntimeDefault or Localhost');
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    if (sc.privileged) out.push(`container ${c.name}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`container ${c.name}: allowPrivilegeEscalation is not false`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) out.push(`container ${c.name}: capabilities do not drop ALL`);
    for (const added of sc.capabilities?.add ?? [])
      if (added !== 'NET_BIND_SERVICE') out.push(`container ${c.name}: adds capability ${added}`);
    // pgha's own rule, beyond the profile.
    if (sc.readOnlyRootFilesystem !== true) out.push(`container ${c.name}: readOnlyRootFilesystem is not true`);
  }
  return out;
}
