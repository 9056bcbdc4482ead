/**
 * The Kubernetes objects one PgHaCluster needs, as plain data: a StatefulSet (one
 * member per pod, the agent as entrypoint, a PVC per member), a headless Service
 * (stable member addresses), `<name>-rw` and `<name>-ro` Services selecting by the
 * role label, a PodDisruptionBudget and a ServiceAccount. Every object is owned by
 * the PgHaCluster (deleting the cluster deletes them; PVCs follow
 * `spec.storage.pvcRetention`, Retain by default). A generated credentials Secret is
 * deliberately not owned (`generatedCredentialsSecret`). Member pods meet the
 * restricted Pod Security profile with a read-only root file system, get no
 * service-account token, and mount the TLS Secrets the spec names read-only
 * (`memberSecretWiring`). Pure.
 */
import { createHash } from 'node:crypto';
import { type PgHaClusterObject, type PgHaClusterSpec, pghaApiVersion, tlsSecretKeys } from './pgha-cluster.js';

/** A Kubernetes object as plain JSON data. */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
    readonly ownerReferences?: readonly unknown[];
    readonly resourceVersion?: string;
    readonly [key: string]: unknown;
  };
  readonly [key: string]: unknown;
}

/** The label every object and pod of a cluster carries; the StatefulSet selects by it. */
export const clusterLabel = 'pgha.dev/cluster';
/** The label the operator moves between pods: `primary` or `replica`. `-rw` and `-ro` select by it. */
export const roleLabel = 'pgha.dev/role';
/** The hash of what the operator last wanted, so a server's defaults never look like drift. */
export const desiredHashAnnotation = 'pgha.dev/desired-hash';
/**
 * The hash of the StatefulSet fields the API server never lets change (service name,
 * selector, pod management, volume claim templates), so a change to them is found by
 * comparing what was wanted, not the server's defaulted copy.
 */
export const immutableHashAnnotation = 'pgha.dev/immutable-hash';
export const immutableStatefulSetFields = [
  'serviceName',
  'selector',
  'podManagementPolicy',
  'volumeClaimTemplates',
] as const;

const hashOf = (value: unknown) => createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
export const postgresPort = 5432;
/** The agent's health API in the pod (Patroni's port): the probes' target. */
export const apiPort = 8008;
const dataDir = '/var/lib/pgha';

export function commonLabels(name: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'pgha',
    'app.kubernetes.io/instance': name,
    'app.kubernetes.io/managed-by': 'pgha-operator',
    [clusterLabel]: name,
  };
}

/** The ordinal of member `member` of cluster `cluster` (pods are `<cluster>-<ordinal>`), or undefined. */
export const ordinalOf = (member: string, cluster: string): number | undefined => {
  const m = new RegExp(`^${cluster.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(\\d+)$`).exec(member);
  return m ? Number(m[1]) : undefined;
};

/** The label selector string the scale subresource reports (status.selector). */
export const selectorString = (name: string) => `${clusterLabel}=${name}`;

function owned(
  cluster: PgHaClusterObject,
  kind: string,
  apiVersion: string,
  name: string,
  body: Record<string, unknown>,
): KubeObject {
  const metadata = {
    name,
    namespace: cluster.metadata.namespace,
    labels: commonLabels(cluster.metadata.name),
    ownerReferences: [
      {
        apiVersion: pghaApiVersion,
        kind: 'PgHaCluster',
        name: cluster.metadata.name,
        uid: cluster.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ],
  };
  const object = { apiVersion, kind, metadata, ...body };
  const annotations: Record<string, string> = { [desiredHashAnnotation]: hashOf(object) };
  if (kind === 'StatefulSet') {
    const spec = body.spec as Record<string, unknown>;
    annotations[immutableHashAnnotation] = hashOf(immutableStatefulSetFields.map((k) => spec[k]));
  }
  return { ...object, metadata: { ...metadata, annotations } };
}

/** True when the members advertise their DNS name (a TLS Secret is named for postgres or the API). */
export const tlsHost = (spec: PgHaClusterSpec): boolean =>
  spec.postgres.tlsSecret !== undefined || spec.api.tlsSecret !== undefined;

/**
 * The agent's command line in a pod. The member name is the pod name (downward
 * API), so members are `<cluster>-<ordinal>` as in the local runtime. Only ordinal 0
 * may bootstrap (initdb) a cluster that was never initialized, as `pgha up` does;
 * the shell wrapper only decides that flag and then execs the agent, which stays
 * the container's main process and receives SIGTERM itself.
 */
export function agentArgs(cluster: PgHaClusterObject, spec: PgHaClusterSpec): string[] {
  const { name } = cluster.metadata;
  // The kubelet expands $(VAR) in args and turns $$ into $: a value's own $ is doubled.
  const parameters = Object.entries(spec.postgresParameters).map(
    ([key, value]) => `--postgres-parameter=${key}=${value.replaceAll('$', '$$$$')}`,
  );
  return [
    `--name=$(POD_NAME)`,
    `--cluster=${name}`,
    `--etcd=${spec.etcd.endpoints.join(',')}`,
    `--key-root=${spec.etcd.keyRoot}`,
    `--member-dir=${dataDir}/member`,
    `--port=${postgresPort}`,
    // The pod IP, as Patroni's Kubernetes deployments advertise: it exists before the
    // container starts, needs no DNS (a new pod's headless-Service name can take
    // seconds to resolve everywhere), and is what the kubelet and the endpoints use.
    // A re-created pod gets a new one; its agent publishes it in its member record.
    // With TLS (postgres or API) the peers verify the host against the certificate
    // (verify-full), and a Secret shared by every member cannot name pod IPs that
    // change: the member's stable name under the headless Service is advertised
    // instead, which a certificate covers with *.<cluster>.<namespace>.svc.
    tlsHost(spec) ? `--host=$(POD_NAME).${name}.$(POD_NAMESPACE).svc` : '--host=$(POD_IP)',
    '--listen=*',
    '--allow-cidr=0.0.0.0/0', // pod networks differ per cluster; pg_hba stays SCRAM-only
    `--lease-ttl-millis=${spec.leaseTtlMillis}`,
    // The kubelet probes the pod IP: bind every interface, not the advertised DNS name
    // (which may not resolve yet when the agent starts).
    `--api-port=${apiPort}`,
    '--api-listen=0.0.0.0',
    ...parameters,
  ];
}

/** The member container's user and group: `postgres` in the member image (deploy/member.Dockerfile). */
export const memberUser = 999;

/**
 * Where a Secret named in the spec is mounted in the member container (read-only),
 * and the environment variables that point the agent at its files. The agent reads
 * these variables as the defaults of its `--etcd-ca`/`--etcd-cert`/`--etcd-key`,
 * `--ssl-*` and `--api-*` options.
 */
export const secretMounts = {
  etcd: {
    volume: 'etcd-tls',
    path: '/etc/pgha/etcd-tls',
    env: { 'ca.crt': 'PGHA_ETCD_CA', 'tls.crt': 'PGHA_ETCD_CERT', 'tls.key': 'PGHA_ETCD_KEY' },
  },
  postgres: {
    volume: 'postgres-tls',
    path: '/etc/pgha/postgres-tls',
    env: { 'ca.crt': 'PGHA_SSL_CA', 'tls.crt': 'PGHA_SSL_CERT', 'tls.key': 'PGHA_SSL_KEY' },
  },
  api: {
    volume: 'api-tls',
    path: '/etc/pgha/api-tls',
    env: { 'ca.crt': 'PGHA_API_CA', 'tls.crt': 'PGHA_API_CERT', 'tls.key': 'PGHA_API_KEY' },
  },
} as const;

/**
 * Files mode 0440, owned by root and the pod's fsGroup (the postgres group): readable
 * by the agent and postgres, which accepts a root-owned key file only without group
 * write or any world access (0640 at most).
 */
const secretFileMode = 0o440;

/** The volumes, mounts and environment the spec's TLS Secrets and etcd credentials add; none when it names none. */
export function memberSecretWiring(spec: PgHaClusterSpec): {
  volumes: Record<string, unknown>[];
  volumeMounts: Record<string, unknown>[];
  env: Record<string, unknown>[];
} {
  const volumes: Record<string, unknown>[] = [];
  const volumeMounts: Record<string, unknown>[] = [];
  const env: Record<string, unknown>[] = [];
  const tls = (secretName: string | undefined, mount: (typeof secretMounts)[keyof typeof secretMounts]) => {
    if (secretName === undefined) return;
    volumes.push({
      name: mount.volume,
      secret: {
        secretName,
        defaultMode: secretFileMode,
        // Listed: a Secret without one of them keeps the pod from starting, with an
        // event naming the missing key, instead of an agent failing on a missing file.
        items: tlsSecretKeys.map((key) => ({ key, path: key })),
      },
    });
    volumeMounts.push({ name: mount.volume, mountPath: mount.path, readOnly: true });
    for (const key of tlsSecretKeys) env.push({ name: mount.env[key], value: `${mount.path}/${key}` });
  };
  tls(spec.etcd.tlsSecret, secretMounts.etcd);
  if (spec.etcd.credentialsSecret !== undefined) {
    const ref = (key: string) => ({ secretKeyRef: { name: spec.etcd.credentialsSecret, key } });
    env.push({ name: 'PGHA_ETCD_USER', valueFrom: ref('username') });
    env.push({ name: 'PGHA_ETCD_PASSWORD', valueFrom: ref('password') });
  }
  tls(spec.postgres.tlsSecret, secretMounts.postgres);
  tls(spec.api.tlsSecret, secretMounts.api);
  return { volumes, volumeMounts, env };
}

export function desiredStatefulSet(cluster: PgHaClusterObject, spec: PgHaClusterSpec, replicas: number): KubeObject {
  const name = cluster.metadata.name;
  const labels = commonLabels(name);
  const secret = (key: string) => ({ secretKeyRef: { name: spec.credentialsSecret, key } });
  const optionalSecret = (key: string) => ({ secretKeyRef: { name: spec.credentialsSecret, key, optional: true } });
  const field = (fieldPath: string) => ({ fieldRef: { fieldPath } });
  const secrets = memberSecretWiring(spec);
  // An API with TLS is probed over https (the kubelet does not verify the certificate).
  const probeScheme = spec.api.tlsSecret !== undefined ? { scheme: 'HTTPS' } : {};
  return owned(cluster, 'StatefulSet', 'apps/v1', name, {
    spec: {
      serviceName: name,
      replicas,
      // Members start together: each waits for etcd, not for its lower ordinal.
      podManagementPolicy: 'Parallel',
      // The operator decides when a pod restarts (replicas first, the primary after a switchover).
      updateStrategy: { type: 'OnDelete' },
      persistentVolumeClaimRetentionPolicy: {
        whenDeleted: spec.storage.pvcRetention.whenDeleted,
        whenScaled: spec.storage.pvcRetention.whenScaled,
      },
      selector: { matchLabels: { [clusterLabel]: name } },
      template: {
        metadata: { labels },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false, // the agent talks to etcd, never to the Kubernetes API
          terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds,
          // Pod Security Standards "restricted": a non-root user (postgres), no
          // privilege escalation, no capabilities, the runtime's seccomp profile.
          securityContext: {
            runAsNonRoot: true,
            runAsUser: memberUser,
            runAsGroup: memberUser,
            fsGroup: memberUser,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: {
                    topologyKey: 'kubernetes.io/hostname',
                    labelSelector: { matchLabels: { [clusterLabel]: name } },
                  },
                },
                {
                  weight: 50,
                  podAffinityTerm: {
                    topologyKey: 'topology.kubernetes.io/zone',
                    labelSelector: { matchLabels: { [clusterLabel]: name } },
                  },
                },
              ],
            },
          },
          containers: [
            {
              name: 'postgres',
              image: spec.image,
              imagePullPolicy: spec.imagePullPolicy,
              command: [
                '/bin/sh',
                '-c',
                // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
                'if [ "${POD_NAME##*-}" = 0 ]; then set -- "$@" --bootstrap; fi; exec pgha agent "$@"',
                'pgha-agent',
              ],
              args: agentArgs(cluster, spec),
              env: [
                { name: 'POD_NAME', valueFrom: field('metadata.name') },
                { name: 'POD_NAMESPACE', valueFrom: field('metadata.namespace') },
                { name: 'POD_IP', valueFrom: field('status.podIP') },
                { name: 'PGHA_SUPERUSER_PASSWORD', valueFrom: secret('superuser-password') },
                { name: 'PGHA_REPLICATION_PASSWORD', valueFrom: secret('replication-password') },
                // The application role, when the Secret has one (the generated Secret
                // does; a user-supplied one may not): the agent reads PGHA_APP_USER as
                // its --app-user default.
                { name: 'PGHA_APP_USER', valueFrom: optionalSecret('app-username') },
                { name: 'PGHA_APP_PASSWORD', valueFrom: optionalSecret('app-password') },
                ...secrets.env,
              ],
              ports: [
                { name: 'postgres', containerPort: postgresPort },
                { name: 'api', containerPort: apiPort },
              ],
              // /liveness is the control loop's heartbeat: it never depends on postgres,
              // so initdb, a long base backup or a rewind (the loop keeps ticking around
              // them, or counts as busy inside one) never gets the pod restarted. The
              // startup probe only gives the agent's own start (etcd, lease, watchdog)
              // up to 5 min before liveness counts, and lets readiness start at once.
              startupProbe: {
                httpGet: { path: '/liveness', port: 'api', ...probeScheme },
                periodSeconds: 2,
                timeoutSeconds: 2,
                failureThreshold: 150,
              },
              livenessProbe: {
                httpGet: { path: '/liveness', port: 'api', ...probeScheme },
                periodSeconds: 10,
                timeoutSeconds: 5,
                failureThreshold: 3,
              },
              // Ready: the writable primary holding the leader record, or a running replica.
              readinessProbe: {
                httpGet: { path: '/readiness', port: 'api', ...probeScheme },
                periodSeconds: 2,
                timeoutSeconds: 2,
                failureThreshold: 2,
              },
              ...(spec.resources ? { resources: spec.resources } : {}),
              // The image is never written: the data directory is on the PVC, scratch
              // space on emptyDirs (postgres's socket directory, /tmp).
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [
                { name: 'data', mountPath: dataDir },
                { name: 'run', mountPath: '/var/run/postgresql' },
                { name: 'tmp', mountPath: '/tmp' },
                ...secrets.volumeMounts,
              ],
            },
          ],
          volumes: [{ name: 'run', emptyDir: {} }, { name: 'tmp', emptyDir: {} }, ...secrets.volumes],
        },
      },
      volumeClaimTemplates: [
        {
          metadata: { name: 'data', labels },
          spec: {
            accessModes: ['ReadWriteOnce'],
            resources: { requests: { storage: spec.storage.size } },
            ...(spec.storage.storageClassName !== undefined ? { storageClassName: spec.storage.storageClassName } : {}),
          },
        },
      ],
    },
  });
}

export function desiredServices(cluster: PgHaClusterObject): KubeObject[] {
  const name = cluster.metadata.name;
  const ports = [{ name: 'postgres', port: postgresPort, targetPort: postgresPort, protocol: 'TCP' }];
  return [
    // Members find each other before they are ready (a replica's base backup needs the primary's address).
    owned(cluster, 'Service', 'v1', name, {
      spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector: { [clusterLabel]: name }, ports },
    }),
    owned(cluster, 'Service', 'v1', `${name}-rw`, {
      spec: { type: 'ClusterIP', selector: { [clusterLabel]: name, [roleLabel]: 'primary' }, ports },
    }),
    owned(cluster, 'Service', 'v1', `${name}-ro`, {
      spec: { type: 'ClusterIP', selector: { [clusterLabel]: name, [roleLabel]: 'replica' }, ports },
    }),
  ];
}

export function desiredPodDisruptionBudget(cluster: PgHaClusterObject): KubeObject {
  const name = cluster.metadata.name;
  // One voluntary disruption at a time: a drain never takes two members at once.
  return owned(cluster, 'PodDisruptionBudget', 'policy/v1', name, {
    spec: { maxUnavailable: 1, selector: { matchLabels: { [clusterLabel]: name } } },
  });
}

export function desiredServiceAccount(cluster: PgHaClusterObject): KubeObject {
  return owned(cluster, 'ServiceAccount', 'v1', cluster.metadata.name, { automountServiceAccountToken: false });
}

/** The label a Secret generated by the operator carries (value: `credentials`). */
export const generatedLabel = 'pgha.dev/generated';
/** The application user's name in a generated credentials Secret (`app-username`). */
export const defaultApplicationUser = 'app';
/** Bytes of randomness per generated password (base64url: 32 characters). */
export const generatedPasswordBytes = 24;

/**
 * The credentials Secret the operator generates when the spec names none and
 * `<name>-credentials` does not exist: random passwords for the superuser, the
 * replication role and an application user (`app-username`, `app-password`).
 *
 * Not owned by the PgHaCluster, on purpose: PVCs are retained by default, and data
 * kept without its passwords could not be opened by a cluster re-created over it.
 * It is labelled (`pgha.dev/generated=credentials` and the cluster's labels) so it
 * can be found and deleted by hand. The agent does not create the application role
 * yet: its password is only stored.
 */
export function generatedCredentialsSecret(
  cluster: PgHaClusterObject,
  spec: PgHaClusterSpec,
  randomBytes: (size: number) => Uint8Array,
): KubeObject {
  const password = () => Buffer.from(randomBytes(generatedPasswordBytes)).toString('base64url');
  const base64 = (value: string) => Buffer.from(value, 'utf8').toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: spec.credentialsSecret,
      namespace: cluster.metadata.namespace,
      labels: { ...commonLabels(cluster.metadata.name), [generatedLabel]: 'credentials' },
    },
    type: 'Opaque',
    data: {
      'superuser-password': base64(password()),
      'replication-password': base64(password()),
      'app-username': base64(defaultApplicationUser),
      'app-password': base64(password()),
    },
  };
}
