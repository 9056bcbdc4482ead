/**
 * The Kubernetes objects the simulated cluster's controllers read and write, as
 * plain JSON shapes (only the fields the controllers use), and the small pure
 * predicates they share: a pod's health, a pod's owner, a template's hash. Pure:
 * imported by the decisions and the shells alike. Test utility, not shipped.
 */

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
  lastUpdateTime?: string;
}

export interface PodTemplate {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown> & { volumes?: { name: string; [key: string]: unknown }[] };
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: Record<string, unknown> & {
    hostname?: string;
    subdomain?: string;
    nodeName?: string;
    volumes?: { name: string; persistentVolumeClaim?: { claimName: string }; [key: string]: unknown }[];
  };
  status?: { phase?: string; conditions?: Condition[]; [key: string]: unknown };
}

export interface PersistentVolumeClaim {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: Record<string, unknown> & { volumeName?: string };
  status?: { phase?: string; [key: string]: unknown };
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** A time in the API server's timestamp form: ISO 8601 to the second (`2026-01-01T00:00:00Z`). */
export const isoSeconds = (millis: number) => new Date(millis).toISOString().replace(/\.\d+Z$/, 'Z');

/** The controller owner reference to `owner` (controller: true, blockOwnerDeletion: true). */
export function controllerRef(
  owner: { apiVersion?: string; kind?: string; metadata: ObjectMeta },
  apiVersion: string,
  kind: string,
): OwnerReference {
  return {
    apiVersion,
    kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid ?? '',
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Whether `object`'s controller owner reference names the object with `uid`. */
export const isControlledBy = (object: { metadata: ObjectMeta }, uid: string | undefined) =>
  uid !== undefined && (object.metadata.ownerReferences ?? []).some((r) => r.controller === true && r.uid === uid);

/** Going: the API server set a deletionTimestamp; the object stays until the kubelet (or a finalizer) lets it go. */
export const isTerminating = (object: { metadata: ObjectMeta }) => object.metadata.deletionTimestamp !== undefined;

/** The pod's containers exited for good (restartPolicy aside): it will never be Ready again. */
export const isFinished = (pod: Pod) => pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded';

const readyCondition = (pod: Pod) => pod.status?.conditions?.find((c) => c.type === 'Ready');

/** Phase Running with the Ready condition True. */
export const isRunningAndReady = (pod: Pod) =>
  pod.status?.phase === 'Running' && readyCondition(pod)?.status === 'True';

/**
 * Running and Ready for at least `minReadySeconds` at `nowMillis` (Kubernetes'
 * "available"). With 0 it is just Running and Ready; a Ready condition without a
 * transition time counts as ready since forever.
 */
export function isAvailable(pod: Pod, minReadySeconds: number, nowMillis: number): boolean {
  if (!isRunningAndReady(pod)) return false;
  if (minReadySeconds <= 0) return true;
  const since = Date.parse(readyCondition(pod)?.lastTransitionTime ?? '');
  return Number.isNaN(since) || since + minReadySeconds * 1000 <= nowMillis;
}

/** JSON with object keys sorted, so equal data compares (and hashes) equal whatever the key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object')
    return `{${Object.keys(value)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(value);
}

/** The characters Kubernetes uses in generated names and hashes (no vowels, no 0/1/3: no words). */
export const safeAlphabet = 'bcdfghjklmnpqrstvwxz2456789';

/**
 * A template hash in Kubernetes' style: FNV-1a (32 bit) over the canonical JSON
 * (and the collision count, when non-zero), its decimal digits mapped into the safe
 * alphabet. Deterministic; not byte-identical to Kubernetes' (which hashes Go's
 * serialization), so names match the shape, not the value.
 */
export function templateHash(value: unknown, collisionCount = 0): string {
  let hash = 0x811c9dc5;
  const text = canonicalJson(value) + (collisionCount > 0 ? String(collisionCount) : '');
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return [...String(hash)].map((c) => safeAlphabet[c.charCodeAt(0) % safeAlphabet.length]).join('');
}
