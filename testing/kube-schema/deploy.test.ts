/**
 * deploy/ builds with kustomize and every object in it (and the example
 * PgHaCluster) is valid before it ever meets a cluster.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { defaultLeaseName, operatorApiAccess } from '../../packages/controller/src/runtime/kubernetes/api-access.js';
import {
  type PgHaClusterObject,
  parsePgHaCluster,
} from '../../packages/controller/src/runtime/kubernetes/pgha-cluster.js';
import { type PodSpec, restrictedViolations } from './pod-security.js';
import { type Manifest, validateObjects } from './validate-objects.js';

const repo = resolve(import.meta.dirname, '../..');
const parse = (text: string) =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Manifest)
    .filter((o) => o !== null);
const kustomize = (dir: string) => parse(execFileSync('kubectl', ['kustomize', join(repo, dir)], { encoding: 'utf8' }));

describe('deploy/', () => {
  const operator = kustomize('deploy');
  const etcd = kustomize('deploy/etcd');
  const example = parse(readFileSync(join(repo, 'deploy/examples/pghacluster.yaml'), 'utf8'));
  const synchronousExample = parse(readFileSync(join(repo, 'deploy/examples/pghacluster-synchronous.yaml'), 'utf8'));

  it('builds with kubectl kustomize into the operator and the optional etcd', () => {
    expect(operator.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'ClusterRole/pgha-operator',
      'ClusterRoleBinding/pgha-operator',
      'CustomResourceDefinition/pghaclusters.pgha.dev',
      'Deployment/pgha-operator',
      'Namespace/pgha-system',
      'Role/pgha-operator-election',
      'RoleBinding/pgha-operator-election',
      'ServiceAccount/pgha-operator',
    ]);
    expect(etcd.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'PodDisruptionBudget/etcd',
      'Service/etcd',
      'StatefulSet/etcd',
    ]);
    for (const o of [...operator, ...etcd])
      if (o.kind !== 'Namespace' && o.kind !== 'CustomResourceDefinition' && !o.kind.startsWith('Cluster'))
        expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('pgha-system');
  });

  it('validates every object against the Kubernetes schemas and the CRD, with selectors, names and bindings consistent', () => {
    expect(validateObjects([...operator, ...etcd, ...example, ...synchronousExample])).toEqual([]);
  });

  it('runs the operator with 2 replicas and etcd with heartbeat 50 ms and election timeout 300 ms', () => {
    const deployment = operator.find((o) => o.kind === 'Deployment') as Manifest & { spec: { replicas: number } };
    expect(deployment.spec.replicas).toBe(2);
    const args = JSON.stringify(etcd.find((o) => o.kind === 'StatefulSet'));
    expect(args).toContain('--heartbeat-interval=50');
    expect(args).toContain('--election-timeout=300');
  });

  it('gives the operator delete on pods only (rolling updates), and only get and create (a generated Secret) on Secrets', () => {
    const rules = operator
      .filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
      .flatMap((o) => o.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]);
    expect(rules.filter((r) => r.verbs.includes('delete'))).toEqual([
      expect.objectContaining({ apiGroups: [''], resources: ['pods'] }),
    ]);
    for (const r of rules)
      for (const field of [r.apiGroups, r.resources, r.verbs]) expect(field, JSON.stringify(r)).not.toContain('*');
    expect(rules.filter((r) => r.resources.includes('secrets')).flatMap((r) => r.verbs)).toEqual(['get', 'create']);
  });

  it('grants the operator exactly the requests api-access.ts lists next to its API calls: a Role for the Lease, a ClusterRole for the rest', () => {
    const rules = (kind: string) =>
      operator
        .filter((o) => o.kind === kind && o.metadata.name.startsWith('pgha-operator'))
        .flatMap(
          (o) => o.rules as { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[],
        )
        .flatMap((r) =>
          r.apiGroups.flatMap((g) =>
            r.resources.map(
              (res) => `${g}/${res} ${[...r.verbs].sort().join(',')} ${r.resourceNames?.join(',') ?? ''}`,
            ),
          ),
        )
        .sort();
    const listed = (scope: string) =>
      operatorApiAccess
        .filter((a) => a.scope === scope)
        .map((a) => `${a.apiGroup}/${a.resource} ${[...a.verbs].sort().join(',')} ${a.resourceNames?.join(',') ?? ''}`)
        .sort();
    expect(rules('ClusterRole')).toEqual(listed('clusters'));
    expect(rules('Role')).toEqual(listed('own-namespace'));
    // The Lease the Role names is the operator's --lease-name.
    expect(JSON.stringify(operator.find((o) => o.kind === 'Deployment'))).toContain(`--lease-name=${defaultLeaseName}`);
  });

  it('runs the operator under Pod Security "restricted" in a namespace that enforces it', () => {
    const namespace = operator.find((o) => o.kind === 'Namespace')!;
    expect(namespace.metadata.labels).toMatchObject({
      'pod-security.kubernetes.io/enforce': 'restricted',
      'pod-security.kubernetes.io/audit': 'restricted',
      'pod-security.kubernetes.io/warn': 'restricted',
    });
    const pod = (operator.find((o) => o.kind === 'Deployment') as Manifest & { spec: { template: { spec: PodSpec } } })
      .spec.template.spec;
    expect(restrictedViolations(pod)).toEqual([]);
    const etcdPod = (etcd.find((o) => o.kind === 'StatefulSet') as Manifest & { spec: { template: { spec: PodSpec } } })
      .spec.template.spec;
    expect(restrictedViolations(etcdPod)).toEqual([]);
    // A pod without the settings is caught.
    expect(restrictedViolations({ containers: [{ name: 'c' }] })).toEqual([
      'pod: runAsNonRoot is not true',
      'pod: seccompProfile is not RuntimeDefault or Localhost',
      'container c: allowPrivilegeEscalation is not false',
      'container c: capabilities do not drop ALL',
      'container c: readOnlyRootFilesystem is not true',
    ]);
  });

  it('lets the operator create Leases and get or update only its own, in its namespace, named as its --lease-name', () => {
    const role = operator.find((o) => o.kind === 'Role' && o.metadata.name === 'pgha-operator-election') as Manifest & {
      rules: { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }[];
    };
    expect(role.metadata.namespace).toBe('pgha-system');
    expect(role.rules).toEqual([
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        resourceNames: ['pgha-operator'],
        verbs: ['get', 'update'],
      },
    ]);
    const clusterRules = operator
      .filter((o) => o.kind === 'ClusterRole')
      .flatMap((o) => o.rules as { resources: string[] }[]);
    expect(clusterRules.filter((r) => r.resources.includes('leases'))).toEqual([]);
    const container = (
      operator.find((o) => o.kind === 'Deployment') as Manifest & {
        spec: { template: { spec: { containers: { args: string[]; env: { name: string }[] }[] } } };
      }
    ).spec.template.spec.containers[0]!;
    expect(container.args).toContain('--lease-name=pgha-operator');
    expect(container.env.map((e) => e.name)).toEqual(expect.arrayContaining(['POD_NAME', 'POD_NAMESPACE']));
  });

  it('builds the operator with the etcd TLS patch of deploy/examples: valid, restricted, the Secret read-only and the agent-style variables', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgha-kustomize-'));
    try {
      copyFileSync(
        join(repo, 'deploy/examples/operator-etcd-tls.patch.yaml'),
        join(dir, 'operator-etcd-tls.patch.yaml'),
      );
      writeFileSync(
        join(dir, 'kustomization.yaml'),
        `resources: [${relative(dir, join(repo, 'deploy'))}]\npatches: [{path: operator-etcd-tls.patch.yaml}]\n`,
      );
      const patched = parse(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' }));
      expect(validateObjects(patched)).toEqual([]);
      const pod = (patched.find((o) => o.kind === 'Deployment') as Manifest & { spec: { template: { spec: PodSpec } } })
        .spec.template.spec;
      expect(restrictedViolations(pod)).toEqual([]);
      const container = pod.containers[0] as unknown as {
        env: { name: string; value?: string }[];
        volumeMounts: unknown[];
      };
      expect(container.env.filter((e) => e.name.startsWith('PGHA_ETCD_'))).toEqual([
        { name: 'PGHA_ETCD_CA', value: '/etc/pgha/etcd-tls/ca.crt' },
        { name: 'PGHA_ETCD_CERT', value: '/etc/pgha/etcd-tls/tls.crt' },
        { name: 'PGHA_ETCD_KEY', value: '/etc/pgha/etcd-tls/tls.key' },
      ]);
      expect(container.volumeMounts).toEqual([{ name: 'etcd-tls', mountPath: '/etc/pgha/etcd-tls', readOnly: true }]);
      expect(pod.volumes).toEqual([
        expect.objectContaining({ secret: expect.objectContaining({ defaultMode: 0o440 }) }),
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('validates the secure example (namespace restricted, every TLS Secret) against the CRD', () => {
    const secure = parse(readFileSync(join(repo, 'deploy/examples/pghacluster-secure.yaml'), 'utf8'));
    const crd = operator.find((o) => o.kind === 'CustomResourceDefinition')!;
    expect(validateObjects([crd, ...secure])).toEqual([]);
    expect(secure.find((o) => o.kind === 'Namespace')!.metadata.labels).toMatchObject({
      'pod-security.kubernetes.io/enforce': 'restricted',
    });
    const cluster = secure.find((o) => o.kind === 'PgHaCluster')! as unknown as PgHaClusterObject;
    const parsed = parsePgHaCluster({ ...cluster, metadata: { ...cluster.metadata, uid: 'u' } });
    expect(parsed).toMatchObject({
      ok: true,
      spec: {
        etcd: { tlsSecret: 'etcd-member-tls', credentialsSecret: 'etcd-member-auth' },
        postgres: { tlsSecret: 'secure-demo-postgres-tls' },
        api: { tlsSecret: 'secure-demo-api-tls' },
      },
    });
  });

  it('probes the operator on its --health-port: startup and liveness /healthz, readiness /readyz', () => {
    const container = (
      operator.find((o) => o.kind === 'Deployment') as Manifest & {
        spec: { template: { spec: { containers: Record<string, unknown>[] } } };
      }
    ).spec.template.spec.containers[0]! as {
      args: string[];
      ports: { name: string; containerPort: number }[];
      startupProbe: { httpGet: { path: string; port: string } };
      livenessProbe: { httpGet: { path: string; port: string } };
      readinessProbe: { httpGet: { path: string; port: string } };
    };
    const port = Number(container.args.find((a) => a.startsWith('--health-port='))!.split('=')[1]);
    expect(container.ports).toContainEqual({ name: 'health', containerPort: port });
    expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'health' });
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'health' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'health' });
  });

  it('reports what is wrong with bad objects', () => {
    const crd = operator.find((o) => o.kind === 'CustomResourceDefinition')!;
    const problems = validateObjects([
      crd,
      {
        apiVersion: 'pgha.dev/v1alpha1',
        kind: 'PgHaCluster',
        metadata: { name: 'x' },
        spec: { instances: -1, etcd: { endpoints: [] }, colour: 1 },
      },
      {
        apiVersion: 'apps/v1',
        kind: 'StatefulSet',
        metadata: { name: 'Bad_Name' },
        spec: {
          serviceName: 's',
          replicas: 'three',
          selector: { matchLabels: { app: 'a' } },
          template: { metadata: { labels: { app: 'b' } }, spec: { containers: [{ name: 'c', image: 'i' }] } },
        },
      },
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'svc' },
        spec: { selector: { app: 'zzz' }, ports: [{ port: 1 }] },
      },
      { apiVersion: 'example.com/v1', kind: 'Thing', metadata: { name: 'thing' } },
    ]).map((p) => `${p.object}: ${p.message}`);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^PgHaCluster\/x: spec.instances: .*greater than or equal to 1/),
        expect.stringMatching(/^PgHaCluster\/x: spec.etcd.endpoints: .*at least 1 items/),
        'PgHaCluster/x: spec.colour: unknown field (the API server would drop it)',
        'StatefulSet/Bad_Name: name "Bad_Name" is not a DNS-1123 label',
        'StatefulSet/Bad_Name: /spec/replicas: must be integer',
        expect.stringMatching(/^StatefulSet\/Bad_Name: spec.selector does not match/),
        'Service/svc: its selector matches no pod template in the set',
        'Thing/thing: no schema known for example.com/v1 Thing',
      ]),
    );
  });

  it('finds a CRD that is not structural or whose default breaks its own schema', () => {
    const crd = structuredClone(operator.find((o) => o.kind === 'CustomResourceDefinition')!) as Manifest & {
      spec: { versions: { schema: { openAPIV3Schema: { properties: Record<string, Record<string, unknown>> } } }[] };
    };
    const props = crd.spec.versions[0]!.schema.openAPIV3Schema.properties;
    props.spec!.properties = {
      ...(props.spec!.properties as object),
      instances: { type: 'integer', minimum: 1, default: 0 },
      loose: {},
    };
    expect(validateObjects([crd]).map((p) => p.message)).toEqual([
      expect.stringMatching(/not structural: .*properties\[loose\]\.type: Required value/),
      expect.stringMatching(/default 0 is invalid/),
    ]);
  });
});
