/**
 * The resource types the test API server serves: built-in kinds the operator and its
 * manifests use, plus whatever CustomResourceDefinitions register at run time.
 */

export interface ScaleSubresource {
  specReplicasPath: string;
  statusReplicasPath: string;
  labelSelectorPath?: string;
}

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface ResourceType {
  group: string; // '' for the core group
  versions: string[]; // served versions; the first is the preferred one
  kind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  status: boolean; // has a status subresource
  scale?: ScaleSubresource;
  /** OpenAPI v3 schema per version (custom resources only): validation, defaults, pruning. */
  schemas?: Record<string, unknown>;
  printerColumns?: Record<string, PrinterColumn[]>;
}

function builtin(
  group: string,
  version: string,
  kind: string,
  plural: string,
  namespaced: boolean,
  extra: Partial<ResourceType> = {},
): ResourceType {
  return {
    group,
    versions: [version],
    kind,
    plural,
    singular: kind.toLowerCase(),
    namespaced,
    status: false,
    ...extra,
  };
}

const replicasScale: ScaleSubresource = {
  specReplicasPath: '.spec.replicas',
  statusReplicasPath: '.status.replicas',
  labelSelectorPath: '.status.selector',
};

export function builtinResources(): ResourceType[] {
  return [
    builtin('', 'v1', 'Namespace', 'namespaces', false, { shortNames: ['ns'], status: true }),
    builtin('', 'v1', 'Pod', 'pods', true, { shortNames: ['po'], status: true, categories: ['all'] }),
    builtin('', 'v1', 'Service', 'services', true, { shortNames: ['svc'], status: true, categories: ['all'] }),
    builtin('', 'v1', 'ServiceAccount', 'serviceaccounts', true, { shortNames: ['sa'] }),
    builtin('', 'v1', 'Secret', 'secrets', true),
    builtin('', 'v1', 'ConfigMap', 'configmaps', true, { shortNames: ['cm'] }),
    builtin('', 'v1', 'Event', 'events', true, { shortNames: ['ev'] }),
    builtin('', 'v1', 'Endpoints', 'endpoints', true, { shortNames: ['ep'] }),
    builtin('', 'v1', 'PersistentVolumeClaim', 'persistentvolumeclaims', true, { shortNames: ['pvc'], status: true }),
    builtin('apps', 'v1', 'StatefulSet', 'statefulsets', true, {
      shortNames: ['sts'],
      status: true,
      scale: replicasScale,
      categories: ['all'],
    }),
    builtin('apps', 'v1', 'Deployment', 'deployments', true, {
      shortNames: ['deploy'],
      status: true,
      scale: replicasScale,
      categories: ['all'],
    }),
    builtin('apps', 'v1', 'ControllerRevision', 'controllerrevisions', true),
    builtin('policy', 'v1', 'PodDisruptionBudget', 'poddisruptionbudgets', true, { shortNames: ['pdb'], status: true }),
    builtin('coordination.k8s.io', 'v1', 'Lease', 'leases', true),
    builtin('events.k8s.io', 'v1', 'Event', 'events', true, { shortNames: ['ev'] }),
    builtin('rbac.authorization.k8s.io', 'v1', 'Role', 'roles', true),
    builtin('rbac.authorization.k8s.io', 'v1', 'RoleBinding', 'rolebindings', true),
    builtin('rbac.authorization.k8s.io', 'v1', 'ClusterRole', 'clusterroles', false),
    builtin('rbac.authorization.k8s.io', 'v1', 'ClusterRoleBinding', 'clusterrolebindings', false),
    builtin('apiextensions.k8s.io', 'v1', 'CustomResourceDefinition', 'customresourcedefinitions', false, {
      shortNames: ['crd', 'crds'],
      status: true,
    }),
  ];
}

/** `{.status.phase}`-style or `.status.phase` JSON paths (simple dotted paths only). */
export function readPath(object: unknown, jsonPath: string): unknown {
  const path = jsonPath.replace(/^\{|\}$/g, '').replace(/^\./, '');
  if (path === '') return object;
  let value: unknown = object;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

export function writePath(object: Record<string, unknown>, jsonPath: string, value: unknown): void {
  const parts = jsonPath.replace(/^\./, '').split('.');
  let target = object;
  for (const part of parts.slice(0, -1)) {
    if (target[part] === null || typeof target[part] !== 'object') target[part] = {};
    target = target[part] as Record<string, unknown>;
  }
  target[parts[parts.length - 1]!] = value;
}
