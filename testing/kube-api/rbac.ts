/**
 * Test support: Kubernetes' RBAC authorizer, as far as a test needs it to ask "would
 * these roles allow the requests this client sent?". A request's attributes (verb,
 * API group, resource and subresource, namespace, name) are derived from its method
 * and path as the API server's RequestInfo does; rules match as RBAC's do (exact
 * names, `*` wildcards, resourceNames). ClusterRoles bound by a ClusterRoleBinding
 * apply everywhere; Roles bound by a RoleBinding only in their namespace. Discovery
 * paths (/api, /apis, /apis/<group>[/<version>], /openapi, /version) are
 * non-resource requests every authenticated user may make (system:discovery).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import type { RequestRecord } from './api-server.js';

/**
 * The RBAC objects of deploy/rbac.yaml, namespaced objects in deploy/kustomization.yaml's
 * namespace as `kubectl kustomize deploy` puts them (read directly: kubectl takes a
 * second or two to start; testing/kube-schema/deploy.test.ts builds it with kubectl).
 */
export function deployedRbac(): RbacObject[] {
  const deploy = join(resolve(import.meta.dirname, '../..'), 'deploy');
  const { namespace } = parse(readFileSync(join(deploy, 'kustomization.yaml'), 'utf8')) as { namespace: string };
  return parseAllDocuments(readFileSync(join(deploy, 'rbac.yaml'), 'utf8'))
    .map((d) => d.toJS() as RbacObject)
    .filter((o) => o !== null && /^(Cluster)?Role(Binding)?$/.test(o.kind))
    .map((o) => (o.kind.startsWith('Cluster') ? o : { ...o, metadata: { ...o.metadata, namespace } }));
}

/** The operator's ServiceAccount in deploy/. */
export const operatorServiceAccount = { namespace: 'pgha-system', name: 'pgha-operator' };

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
}

export interface RbacObject {
  kind: string;
  metadata: { name: string; namespace?: string };
  rules?: PolicyRule[];
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string; namespace?: string }[];
}

export interface ResourceRequest {
  verb: string;
  apiGroup: string;
  resource: string; // with "/subresource"
  namespace?: string;
  name?: string;
}

/** The RBAC attributes of a request, or null for a non-resource (discovery) request. */
export function requestAttributes(r: Pick<RequestRecord, 'method' | 'path' | 'query'>): ResourceRequest | null {
  const parts = r.path.split('/').filter((p) => p !== '');
  let apiGroup: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    apiGroup = '';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    apiGroup = parts[1]!;
    rest = parts.slice(3);
  } else return null;
  let namespace: string | undefined;
  // /namespaces/<ns>/<resource>...: namespaced; /namespaces and /namespaces/<ns>: the Namespace itself.
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource, name, subresource] = rest as [string, string | undefined, string | undefined];
  const watch = /[?&]watch=(true|1)(&|$)/.test(r.query);
  const verb =
    r.method === 'GET' || r.method === 'HEAD'
      ? name !== undefined
        ? 'get'
        : watch
          ? 'watch'
          : 'list'
      : r.method === 'POST'
        ? 'create'
        : r.method === 'PUT'
          ? 'update'
          : r.method === 'PATCH'
            ? 'patch'
            : r.method === 'DELETE'
              ? name !== undefined
                ? 'delete'
                : 'deletecollection'
              : r.method.toLowerCase();
  return {
    verb,
    apiGroup,
    resource: subresource !== undefined ? `${resource}/${subresource}` : resource,
    ...(namespace !== undefined ? { namespace } : {}),
    ...(name !== undefined ? { name } : {}),
  };
}

const matches = (values: string[] | undefined, value: string) => (values ?? []).some((v) => v === '*' || v === value);

function ruleAllows(rule: PolicyRule, request: ResourceRequest): boolean {
  return (
    matches(rule.verbs, request.verb) &&
    matches(rule.apiGroups, request.apiGroup) &&
    matches(rule.resources, request.resource) &&
    (rule.resourceNames === undefined ||
      rule.resourceNames.length === 0 ||
      (request.name !== undefined && rule.resourceNames.includes(request.name)))
  );
}

/**
 * The requests the ServiceAccount `namespace/name` may not make under these RBAC
 * objects, each as "VERB group/resource [ns/name]"; empty when all are allowed.
 */
export function deniedRequests(
  objects: readonly RbacObject[],
  serviceAccount: { namespace: string; name: string },
  requests: readonly Pick<RequestRecord, 'method' | 'path' | 'query'>[],
): string[] {
  const bound = (o: RbacObject) =>
    (o.subjects ?? []).some(
      (s) => s.kind === 'ServiceAccount' && s.name === serviceAccount.name && s.namespace === serviceAccount.namespace,
    );
  const roleRules = (kind: string, name: string, namespace?: string) =>
    objects
      .filter(
        (o) =>
          o.kind === kind &&
          o.metadata.name === name &&
          (namespace === undefined || o.metadata.namespace === namespace),
      )
      .flatMap((o) => o.rules ?? []);
  const everywhere = objects
    .filter((o) => o.kind === 'ClusterRoleBinding' && bound(o))
    .flatMap((o) => roleRules('ClusterRole', o.roleRef!.name));
  const inNamespace = (namespace: string) =>
    objects
      .filter((o) => o.kind === 'RoleBinding' && o.metadata.namespace === namespace && bound(o))
      .flatMap((o) =>
        o.roleRef!.kind === 'ClusterRole'
          ? roleRules('ClusterRole', o.roleRef!.name)
          : roleRules('Role', o.roleRef!.name, namespace),
      );
  const denied = new Set<string>();
  for (const r of requests) {
    const request = requestAttributes(r);
    if (request === null) continue;
    const rules = [...everywhere, ...(request.namespace !== undefined ? inNamespace(request.namespace) : [])];
    if (!rules.some((rule) => ruleAllows(rule, request)))
      denied.add(
        `${request.verb} ${request.apiGroup || 'core'}/${request.resource}${
          request.namespace !== undefined || request.name !== undefined
            ? ` ${request.namespace ?? ''}/${request.name ?? ''}`
            : ''
        }`,
      );
  }
  return [...denied];
}
