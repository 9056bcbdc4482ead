/**
 * Validates Kubernetes objects the way a cluster would before any of them runs:
 * each built-in object against the Kubernetes OpenAPI schema of its kind
 * (kubernetes-models 4.5.1, generated from the Kubernetes 1.33 OpenAPI: it has
 * Lifecycle.stopSignal, new in 1.33, and not PodSpec.hostnameOverride, new in 1.34),
 * each custom resource against its CRD's schema when the CRD is in the set, plus
 * what schemas cannot express: names are DNS labels or subdomains as their kind
 * needs, workload selectors match their pod template's labels, Services select
 * some pod template in the set, bindings name ServiceAccounts of the set, pod
 * templates use ServiceAccounts of the set, and every CRD schema is structural
 * with defaults that satisfy it.
 *
 * Not checked: unknown fields in built-in kinds (the Kubernetes schemas allow any),
 * CEL rules, admission policies, anything a scheduler or kubelet decides.
 */
import * as admissionV1 from 'kubernetes-models/admissionregistration.k8s.io/v1';
import * as apiextensionsV1 from 'kubernetes-models/apiextensions.k8s.io/v1';
import * as appsV1 from 'kubernetes-models/apps/v1';
import * as batchV1 from 'kubernetes-models/batch/v1';
import * as coordinationV1 from 'kubernetes-models/coordination.k8s.io/v1';
import * as networkingV1 from 'kubernetes-models/networking.k8s.io/v1';
import * as policyV1 from 'kubernetes-models/policy/v1';
import * as rbacV1 from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as coreV1 from 'kubernetes-models/v1';
import { applySchema, type Cause, type Schema, structuralViolations } from '../kube-api/crd-schema.js';
import { matchesLabelSelector } from '../kube-api/selectors.js';

/** The Kubernetes version whose OpenAPI schemas validate built-in kinds. */
export const schemaKubernetesVersion = '1.33';

export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

export interface Problem {
  object: string; // Kind/name
  message: string;
}

type ModelClass = new (data: unknown) => { validate(): void };
const modules: Record<string, Record<string, unknown>> = {
  v1: coreV1,
  'apps/v1': appsV1,
  'batch/v1': batchV1,
  'policy/v1': policyV1,
  'rbac.authorization.k8s.io/v1': rbacV1,
  'apiextensions.k8s.io/v1': apiextensionsV1,
  'coordination.k8s.io/v1': coordinationV1,
  'networking.k8s.io/v1': networkingV1,
  'admissionregistration.k8s.io/v1': admissionV1,
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Kinds whose names become DNS labels (Services, namespaces) or pod host names (StatefulSet + "-<ordinal>"). */
const labelNamed = new Set(['Namespace', 'Service', 'StatefulSet', 'Deployment']);
const workloads = new Set(['StatefulSet', 'Deployment', 'DaemonSet', 'ReplicaSet', 'Job']);

interface PodTemplate {
  metadata?: { labels?: Record<string, string> };
  spec?: { serviceAccountName?: string };
}
interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

export interface ValidateOptions {
  /** Label keys pods get after creation (not in templates), which Service selectors may use. */
  runtimeLabels?: string[];
  /** ServiceAccounts that exist outside the set (e.g. "default"). */
  externalServiceAccounts?: string[];
}

export function validateObjects(objects: readonly Manifest[], options: ValidateOptions = {}): Problem[] {
  const problems: Problem[] = [];
  const report = (o: Manifest, message: string) => problems.push({ object: `${o.kind}/${o.metadata?.name}`, message });
  const crds = objects.filter((o) => o.kind === 'CustomResourceDefinition');
  const templates: { o: Manifest; template: PodTemplate }[] = [];
  for (const o of objects) {
    const template = (o.spec as { template?: PodTemplate } | undefined)?.template;
    if (workloads.has(o.kind) && template) templates.push({ o, template });
  }
  const serviceAccounts = new Set([
    ...(options.externalServiceAccounts ?? []),
    ...objects
      .filter((o) => o.kind === 'ServiceAccount')
      .map((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`),
  ]);

  for (const o of objects) {
    if (!o || typeof o !== 'object' || typeof o.kind !== 'string' || typeof o.apiVersion !== 'string') {
      problems.push({ object: '?', message: 'not a Kubernetes object (apiVersion and kind are required)' });
      continue;
    }
    const name = o.metadata?.name;
    if (typeof name !== 'string' || name === '') report(o, 'metadata.name is required');
    else if (o.kind.startsWith('Cluster') || o.kind === 'Role' || o.kind === 'RoleBinding') {
      if (/[/%]/.test(name)) report(o, `name ${JSON.stringify(name)} may not contain / or %`);
    } else if (
      labelNamed.has(o.kind)
        ? !(DNS_LABEL.test(name) && name.length <= 63)
        : !(DNS_SUBDOMAIN.test(name) && name.length <= 253)
    )
      report(o, `name ${JSON.stringify(name)} is not a DNS-1123 ${labelNamed.has(o.kind) ? 'label' : 'subdomain'}`);
    if (o.kind === 'StatefulSet' && typeof name === 'string' && name.length > 52)
      report(
        o,
        `name ${JSON.stringify(name)} is longer than 52 characters: its pods' controller-revision-hash label would not fit`,
      );

    const crd = crds.find((c) => {
      const spec = c.spec as { group: string; names: { kind: string } };
      return o.apiVersion.startsWith(`${spec.group}/`) && spec.names.kind === o.kind;
    });
    if (crd) {
      const version = o.apiVersion.split('/')[1];
      const v = (crd.spec as { versions: { name: string; schema?: { openAPIV3Schema?: Schema } }[] }).versions.find(
        (x) => x.name === version,
      );
      if (!v?.schema?.openAPIV3Schema) report(o, `its CRD serves no version ${version}`);
      else {
        const causes: Cause[] = [];
        const pruned: string[] = [];
        applySchema(structuredClone(o), v.schema.openAPIV3Schema, '', causes, true, pruned);
        for (const c of causes) report(o, `${c.field}: ${c.message}`);
        for (const p of pruned) report(o, `${p}: unknown field (the API server would drop it)`);
      }
    } else {
      const Model = modules[o.apiVersion]?.[o.kind] as ModelClass | undefined;
      if (!Model) report(o, `no schema known for ${o.apiVersion} ${o.kind}`);
      else {
        try {
          new Model(o).validate();
        } catch (error) {
          const errors = (error as { errors?: { instancePath: string; message: string }[] }).errors;
          if (!errors) report(o, String(error));
          else for (const e of errors) report(o, `${e.instancePath || '/'}: ${e.message}`);
        }
      }
    }

    if (o.kind === 'CustomResourceDefinition') {
      const spec = o.spec as {
        group: string;
        names: { plural: string };
        versions: { name: string; schema?: { openAPIV3Schema?: Schema } }[];
      };
      if (name !== `${spec.names.plural}.${spec.group}`) report(o, 'name must be <plural>.<group>');
      for (const v of spec.versions) {
        const schema = v.schema?.openAPIV3Schema;
        if (!schema) report(o, `version ${v.name} has no schema`);
        else {
          for (const m of structuralViolations(schema)) report(o, `version ${v.name} is not structural: ${m}`);
          checkDefaults(schema, `version ${v.name}`, (m) => report(o, m));
        }
      }
    }

    if (workloads.has(o.kind)) {
      const spec = o.spec as { selector?: LabelSelector; template?: PodTemplate };
      const labels = spec.template?.metadata?.labels ?? {};
      if (spec.selector && !matchesLabelSelector(spec.selector, labels))
        report(o, `spec.selector does not match the pod template's labels ${JSON.stringify(labels)}`);
      const sa = spec.template?.spec?.serviceAccountName;
      if (sa !== undefined && !serviceAccounts.has(`${o.metadata.namespace ?? ''}/${sa}`))
        report(o, `pod template uses ServiceAccount ${sa}, which is not in the set`);
    }
    if (o.kind === 'PodDisruptionBudget' || (o.kind === 'Service' && (o.spec as { selector?: object })?.selector)) {
      const selector: LabelSelector =
        o.kind === 'Service'
          ? { matchLabels: (o.spec as { selector: Record<string, string> }).selector }
          : ((o.spec as { selector?: LabelSelector }).selector ?? {});
      const runtime = new Set(options.runtimeLabels ?? []);
      const relaxed: LabelSelector = {
        matchLabels: Object.fromEntries(Object.entries(selector.matchLabels ?? {}).filter(([k]) => !runtime.has(k))),
        matchExpressions: (selector.matchExpressions ?? []).filter((e) => !runtime.has(e.key)),
      };
      const selected = templates.filter(
        (t) =>
          (t.o.metadata.namespace ?? '') === (o.metadata.namespace ?? '') &&
          matchesLabelSelector(relaxed, t.template.metadata?.labels ?? {}),
      );
      if (templates.length > 0 && selected.length === 0) report(o, 'its selector matches no pod template in the set');
    }
    if (o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding') {
      for (const s of (o.subjects as { kind: string; name: string; namespace?: string }[] | undefined) ?? []) {
        if (s.kind !== 'ServiceAccount') continue;
        const ns = s.namespace ?? o.metadata.namespace ?? '';
        if (!serviceAccounts.has(`${ns}/${s.name}`))
          report(o, `binds ServiceAccount ${ns}/${s.name}, which is not in the set`);
      }
    }
  }
  return problems;
}

/** Every default must itself satisfy its schema (the API server rejects such a CRD). */
function checkDefaults(schema: Schema, path: string, report: (m: string) => void): void {
  if (schema.default !== undefined) {
    const causes: Cause[] = [];
    applySchema(structuredClone(schema.default), schema, '', causes);
    for (const c of causes)
      report(`${path}: default ${JSON.stringify(schema.default)} is invalid: ${c.field} ${c.message}`);
  }
  for (const [k, s] of Object.entries(schema.properties ?? {})) checkDefaults(s, `${path}.${k}`, report);
  if (schema.items) checkDefaults(schema.items, `${path}[]`, report);
}
