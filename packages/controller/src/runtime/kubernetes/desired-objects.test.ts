import { describe, expect, it } from 'vitest';
import { desiredServiceAccount, desiredStatefulSet, memberUser, secretMounts } from './desired-objects.js';
import { type PgHaClusterObject, type PgHaClusterSpec, parsePgHaCluster } from './pgha-cluster.js';

const cluster = (spec: Record<string, unknown> = {}): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name: 'demo', namespace: 'db', uid: 'uid-1' },
  spec: { etcd: { endpoints: ['https://etcd:2379'] }, ...spec },
});

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface PodTemplateSpec {
  automountServiceAccountToken?: boolean;
  securityContext: Record<string, unknown>;
  volumes: { name: string; emptyDir?: object; secret?: Record<string, unknown> }[];
  containers: {
    args: string[];
    env: EnvVar[];
    securityContext: Record<string, unknown>;
    volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
    startupProbe: { httpGet: Record<string, unknown> };
    livenessProbe: { httpGet: Record<string, unknown> };
    readinessProbe: { httpGet: Record<string, unknown> };
  }[];
}

function podOf(spec: Record<string, unknown> = {}): PodTemplateSpec {
  const c = cluster(spec);
  const parsed = parsePgHaCluster(c);
  if (!parsed.ok) throw new Error(parsed.problems.join('; '));
  return podFor(c, parsed.spec);
}
const podFor = (c: PgHaClusterObject, spec: PgHaClusterSpec) =>
  (desiredStatefulSet(c, spec, 3) as unknown as { spec: { template: { spec: PodTemplateSpec } } }).spec.template.spec;

const securityEnv = /^PGHA_(ETCD|SSL|API)_/;

describe('the member pod', () => {
  it('runs as postgres, non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, read-only root', () => {
    const pod = podOf();
    expect(pod.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: memberUser,
      runAsGroup: memberUser,
      fsGroup: memberUser,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(pod.containers[0]!.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(desiredServiceAccount(cluster())).toMatchObject({ automountServiceAccountToken: false });
  });

  it('writes only to the PVC and to emptyDirs for the socket directory and /tmp', () => {
    const pod = podOf();
    expect(pod.volumes).toEqual([
      { name: 'run', emptyDir: {} },
      { name: 'tmp', emptyDir: {} },
    ]);
    expect(pod.containers[0]!.volumeMounts).toEqual([
      { name: 'data', mountPath: '/var/lib/pgha' },
      { name: 'run', mountPath: '/var/run/postgresql' },
      { name: 'tmp', mountPath: '/tmp' },
    ]);
  });

  it('mounts no Secret, sets no etcd, SSL or API variable and advertises its pod IP over http probes when the spec names no Secret', () => {
    const pod = podOf();
    const container = pod.containers[0]!;
    expect(container.env.filter((e) => securityEnv.test(e.name))).toEqual([]);
    expect(pod.volumes.filter((v) => v.secret !== undefined)).toEqual([]);
    expect(container.args).toContain('--host=$(POD_IP)');
    expect(container.readinessProbe.httpGet.scheme).toBeUndefined();
  });

  it('mounts each TLS Secret read-only (0440, the three keys listed) and points the agent at its files', () => {
    const pod = podOf({
      etcd: { endpoints: ['https://etcd:2379'], tlsSecret: 'etcd-client', credentialsSecret: 'etcd-user' },
      postgres: { tlsSecret: 'pg-server' },
      api: { tlsSecret: 'api-server' },
    });
    const container = pod.containers[0]!;
    const items = [
      { key: 'ca.crt', path: 'ca.crt' },
      { key: 'tls.crt', path: 'tls.crt' },
      { key: 'tls.key', path: 'tls.key' },
    ];
    expect(pod.volumes.filter((v) => v.secret !== undefined)).toEqual([
      { name: 'etcd-tls', secret: { secretName: 'etcd-client', defaultMode: 0o440, items } },
      { name: 'postgres-tls', secret: { secretName: 'pg-server', defaultMode: 0o440, items } },
      { name: 'api-tls', secret: { secretName: 'api-server', defaultMode: 0o440, items } },
    ]);
    expect(container.volumeMounts.filter((m) => m.name.endsWith('-tls'))).toEqual([
      { name: 'etcd-tls', mountPath: '/etc/pgha/etcd-tls', readOnly: true },
      { name: 'postgres-tls', mountPath: '/etc/pgha/postgres-tls', readOnly: true },
      { name: 'api-tls', mountPath: '/etc/pgha/api-tls', readOnly: true },
    ]);
    expect(container.env.filter((e) => securityEnv.test(e.name))).toEqual([
      { name: 'PGHA_ETCD_CA', value: '/etc/pgha/etcd-tls/ca.crt' },
      { name: 'PGHA_ETCD_CERT', value: '/etc/pgha/etcd-tls/tls.crt' },
      { name: 'PGHA_ETCD_KEY', value: '/etc/pgha/etcd-tls/tls.key' },
      { name: 'PGHA_ETCD_USER', valueFrom: { secretKeyRef: { name: 'etcd-user', key: 'username' } } },
      { name: 'PGHA_ETCD_PASSWORD', valueFrom: { secretKeyRef: { name: 'etcd-user', key: 'password' } } },
      { name: 'PGHA_SSL_CA', value: '/etc/pgha/postgres-tls/ca.crt' },
      { name: 'PGHA_SSL_CERT', value: '/etc/pgha/postgres-tls/tls.crt' },
      { name: 'PGHA_SSL_KEY', value: '/etc/pgha/postgres-tls/tls.key' },
      { name: 'PGHA_API_CA', value: '/etc/pgha/api-tls/ca.crt' },
      { name: 'PGHA_API_CERT', value: '/etc/pgha/api-tls/tls.crt' },
      { name: 'PGHA_API_KEY', value: '/etc/pgha/api-tls/tls.key' },
    ]);
    // Certificates name the member's stable DNS name, not a pod IP that changes.
    expect(container.args).toContain('--host=$(POD_NAME).demo.$(POD_NAMESPACE).svc');
    for (const probe of [container.startupProbe, container.livenessProbe, container.readinessProbe])
      expect(probe.httpGet.scheme).toBe('HTTPS');
    // The read-only root and the security context stay as without Secrets.
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true });
    expect(Object.values(secretMounts).map((m) => m.path)).toEqual(
      container.volumeMounts.filter((m) => m.readOnly).map((m) => m.mountPath),
    );
  });

  it('takes etcd credentials alone from secretKeyRef, with no volume, the pod IP and http probes', () => {
    const pod = podOf({ etcd: { endpoints: ['http://etcd:2379'], credentialsSecret: 'etcd-user' } });
    const container = pod.containers[0]!;
    expect(container.env.filter((e) => securityEnv.test(e.name)).map((e) => e.name)).toEqual([
      'PGHA_ETCD_USER',
      'PGHA_ETCD_PASSWORD',
    ]);
    expect(pod.volumes.map((v) => v.name)).toEqual(['run', 'tmp']);
    expect(container.args).toContain('--host=$(POD_IP)');
  });

  it('postgres TLS alone: its Secret only, the DNS name, http probes', () => {
    const pod = podOf({ postgres: { tlsSecret: 'pg-server' } });
    const container = pod.containers[0]!;
    expect(pod.volumes.map((v) => v.name)).toEqual(['run', 'tmp', 'postgres-tls']);
    expect(container.env.filter((e) => securityEnv.test(e.name)).map((e) => e.name)).toEqual([
      'PGHA_SSL_CA',
      'PGHA_SSL_CERT',
      'PGHA_SSL_KEY',
    ]);
    expect(container.args).toContain('--host=$(POD_NAME).demo.$(POD_NAMESPACE).svc');
    expect(container.readinessProbe.httpGet.scheme).toBeUndefined();
  });
});
