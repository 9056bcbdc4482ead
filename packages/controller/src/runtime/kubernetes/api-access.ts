/**
 * Every Kubernetes API request the operator makes, by resource and verb, with the
 * reason: the source of deploy/rbac.yaml, kept next to the calls (operator.ts,
 * lease-elector.ts). testing/kube-schema/deploy.test.ts checks that rbac.yaml grants
 * exactly this, and the operator tests against the test API server check that every
 * request the operator sent there is one this grants. Change a call, change this list
 * and rbac.yaml with it. Pure data.
 */

/** RBAC verbs as the API server derives them from a request (GET with a name: get; without: list or watch). */
export const apiVerbs = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'] as const;
export type ApiVerb = (typeof apiVerbs)[number];

/** One resource the operator touches, and how. */
export interface ApiAccess {
  /** The API group; `''` for the core group. */
  readonly apiGroup: string;
  /** The resource, with `/subresource` where one is named. */
  readonly resource: string;
  readonly verbs: readonly ApiVerb[];
  /**
   * `clusters`: in every namespace holding PgHaClusters (a ClusterRole, as the
   * operator watches all namespaces by default); `own-namespace`: only the
   * operator's own (a Role), and only `resourceNames` where the name is known.
   */
  readonly scope: 'clusters' | 'own-namespace';
  readonly resourceNames?: readonly string[];
  /** Why the operator needs it: the call, and what it does with it. */
  readonly why: string;
}

/** The Lease the operator replicas elect a leader with (`--lease-name`, default). */
export const defaultLeaseName = 'pgha-operator';

export const operatorApiAccess: readonly ApiAccess[] = [
  {
    apiGroup: 'pgha.dev',
    resource: 'pghaclusters',
    verbs: ['get', 'list', 'watch'],
    scope: 'clusters',
    why: 'the work queue lists and watches PgHaClusters; each reconcile reads its cluster again',
  },
  {
    apiGroup: 'pgha.dev',
    resource: 'pghaclusters/status',
    verbs: ['update'],
    scope: 'clusters',
    why: 'the status (phase, primary, conditions) is written with a PUT carrying the resourceVersion read',
  },
  {
    apiGroup: 'pgha.dev',
    resource: 'pghaclusters/finalizers',
    verbs: ['update'],
    scope: 'clusters',
    why: 'the objects it creates carry an owner reference with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin allows only to who may update the owner’s finalizers',
  },
  {
    apiGroup: 'apps',
    resource: 'statefulsets',
    verbs: ['get', 'create', 'update'],
    scope: 'clusters',
    why: 'the members: read by name, created, replaced when they drift from the spec (scale, image, rolling update)',
  },
  {
    apiGroup: '',
    resource: 'services',
    verbs: ['get', 'create', 'update'],
    scope: 'clusters',
    why: 'the headless, -rw and -ro Services: read by name, created, replaced on drift',
  },
  {
    apiGroup: '',
    resource: 'serviceaccounts',
    verbs: ['get', 'create', 'update'],
    scope: 'clusters',
    why: 'the members’ ServiceAccount (no token mounted): read by name, created, replaced on drift',
  },
  {
    apiGroup: 'policy',
    resource: 'poddisruptionbudgets',
    verbs: ['get', 'create', 'update'],
    scope: 'clusters',
    why: 'the PodDisruptionBudget (one member down at a time): read by name, created, replaced on drift',
  },
  {
    apiGroup: '',
    resource: 'pods',
    verbs: ['list', 'patch', 'delete'],
    scope: 'clusters',
    why: 'list: a cluster’s pods by label; patch: the pgha.dev/role label; delete: the rolling update of the OnDelete StatefulSet, one pod at a time (the only delete granted)',
  },
  {
    apiGroup: '',
    resource: 'secrets',
    verbs: ['get', 'create'],
    scope: 'clusters',
    why: 'get: the credentials Secret by name (only which keys it has is looked at); create: the generated <name>-credentials. Never list, watch, update or delete',
  },
  {
    apiGroup: '',
    resource: 'events',
    verbs: ['create'],
    scope: 'clusters',
    why: 'Events on a PgHaCluster (bad spec, synchronous replication degraded or restored)',
  },
  {
    apiGroup: 'coordination.k8s.io',
    resource: 'leases',
    verbs: ['create'],
    scope: 'own-namespace',
    why: 'the first candidate creates the election Lease (RBAC cannot limit create by name: the name is in the body)',
  },
  {
    apiGroup: 'coordination.k8s.io',
    resource: 'leases',
    verbs: ['get', 'update'],
    scope: 'own-namespace',
    resourceNames: [defaultLeaseName],
    why: 'candidates read the Lease by name and renew or take it with a PUT carrying the resourceVersion read',
  },
];
