/**
 * The patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic
 * merge patch for the common cases (lists of named things merged by their key,
 * `$patch: delete|replace`, `$retainKeys` and `$setElementOrder` tolerated).
 */
import { ApiError, badRequest } from './status.js';

type Json = unknown;
type JsonObject = Record<string, Json>;

const isObject = (v: Json): v is JsonObject => v !== null && typeof v === 'object' && !Array.isArray(v);

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return patch;
  const result: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete result[k];
    else result[k] = mergePatch(result[k], v);
  }
  return result;
}

/**
 * The merge keys of lists in built-in types that strategic merge patch merges by key
 * (from the Kubernetes API's `x-kubernetes-patch-merge-key`). Lists not named here
 * are replaced, as for custom resources.
 */
const mergeKeys: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  ports: 'containerPort', // Service ports use 'port': handled below
  imagePullSecrets: 'name',
  conditions: 'type',
  ownerReferences: 'uid',
  tolerations: 'key',
  hostAliases: 'ip',
  topologySpreadConstraints: 'topologyKey',
  resourceClaims: 'name',
};
const setLists = new Set(['finalizers']); // merged as sets of scalars

function mergeKeyFor(field: string, items: Json[]): string | undefined {
  if (field === 'ports' && items.some((i) => isObject(i) && 'port' in i && !('containerPort' in i))) return 'port';
  return mergeKeys[field];
}

export function strategicMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return patch;
  if (patch.$patch === 'replace') {
    const { $patch: _, ...rest } = patch;
    return rest;
  }
  if (patch.$patch === 'delete') return undefined;
  const result: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$retainKeys' || k.startsWith('$setElementOrder/') || k === '$patch') continue;
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      const current = Array.isArray(result[field]) ? (result[field] as Json[]) : [];
      result[field] = current.filter((x) => !(v as Json[]).includes(x));
      continue;
    }
    if (v === null) {
      delete result[k];
      continue;
    }
    if (Array.isArray(v)) {
      const current = Array.isArray(result[k]) ? (result[k] as Json[]) : [];
      if (setLists.has(k)) {
        result[k] = [...current, ...v.filter((x) => !current.includes(x))];
        continue;
      }
      const key = mergeKeyFor(k, [...current, ...v]);
      if (key === undefined || !v.every(isObject)) {
        result[k] = v;
        continue;
      }
      const merged = [...current] as JsonObject[];
      for (const item of v as JsonObject[]) {
        const at = merged.findIndex((m) => isObject(m) && m[key] === item[key]);
        if (item.$patch === 'delete') {
          if (at >= 0) merged.splice(at, 1);
        } else if (at >= 0) merged[at] = strategicMergePatch(merged[at], item) as JsonObject;
        else merged.push(strategicMergePatch(undefined, item) as JsonObject);
      }
      result[k] = merged;
      continue;
    }
    const next = strategicMergePatch(result[k], v);
    if (next === undefined) delete result[k];
    else result[k] = next;
  }
  return result;
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw badRequest(`invalid JSON pointer ${JSON.stringify(path)}`);
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(doc: Json, parts: string[]): { parent: JsonObject | Json[]; key: string } {
  let node = doc;
  for (const part of parts.slice(0, -1)) {
    if (Array.isArray(node)) node = node[Number(part)];
    else if (isObject(node)) node = node[part];
    else node = undefined;
    if (node === undefined) throw new ApiError(422, 'Invalid', `JSON patch: path ${parts.join('/')} does not exist`);
  }
  if (!isObject(node) && !Array.isArray(node))
    throw new ApiError(422, 'Invalid', 'JSON patch: parent is not a container');
  return { parent: node, key: parts[parts.length - 1]! };
}

function get(doc: Json, parts: string[]): Json {
  let node = doc;
  for (const part of parts) {
    if (Array.isArray(node)) node = node[Number(part)];
    else if (isObject(node)) node = node[part];
    else return undefined;
  }
  return node;
}

export function jsonPatch(document: Json, operations: Json): Json {
  if (!Array.isArray(operations)) throw badRequest('a JSON patch is an array of operations');
  let doc = structuredClone(document);
  for (const op of operations as JsonObject[]) {
    const parts = pointer(String(op.path));
    const apply = (kind: 'add' | 'remove' | 'replace', value?: Json) => {
      if (parts.length === 0) {
        doc = kind === 'remove' ? {} : value;
        return;
      }
      const { parent, key } = parentOf(doc, parts);
      if (Array.isArray(parent)) {
        const index = key === '-' ? parent.length : Number(key);
        if (kind === 'add') parent.splice(index, 0, value);
        else if (index >= parent.length)
          throw new ApiError(422, 'Invalid', `JSON patch: index ${key} out of range at ${op.path}`);
        else if (kind === 'remove') parent.splice(index, 1);
        else parent[index] = value;
      } else {
        if (kind !== 'add' && !(key in parent))
          throw new ApiError(422, 'Invalid', `JSON patch: path ${String(op.path)} does not exist`);
        if (kind === 'remove') delete parent[key];
        else parent[key] = value;
      }
    };
    switch (op.op) {
      case 'add':
      case 'replace':
        apply(op.op, structuredClone(op.value));
        break;
      case 'remove':
        apply('remove');
        break;
      case 'test':
        if (JSON.stringify(get(doc, parts)) !== JSON.stringify(op.value))
          throw new ApiError(422, 'Invalid', `JSON patch: test failed at ${String(op.path)}`);
        break;
      case 'copy':
      case 'move': {
        const from = pointer(String(op.from));
        const value = structuredClone(get(doc, from));
        if (op.op === 'move') {
          const { parent, key } = parentOf(doc, from);
          if (Array.isArray(parent)) parent.splice(Number(key), 1);
          else delete parent[key];
        }
        apply('add', value);
        break;
      }
      default:
        throw badRequest(`unknown JSON patch operation ${JSON.stringify(op.op)}`);
    }
  }
  return doc;
}
