/**
 * The Kubernetes objects one PgHaCluster needs, as plain data: a StatefulSet (one
 * member per pod, the agent as entrypoint, a PVC per member), a headless Service
 * (stable member addresses), `<name>-rw` and `<name>-ro` Services selecting by the
 * role label, a PodDisruptionBudget and a ServiceAccount. Every object is owned by
 * the PgHaCluster (deleting the cluster deletes them; PVCs follow
 * `spec.storage.pvcRetention`, Retain by default). A generated credentials Secret is
 * deliberately not owned (`generatedCredentialsSecret`). Pure.
 */
import { createHash } from 'node:crypto';
import { type PgHaClusterObject, type PgHaClusterSpec, pghaApiVersion } from './pgha-cluster.js';

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
    '--host=$(POD_IP)',
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

export function desiredStatefulSet(cluster: PgHaClusterObject, spec: PgHaClusterSpec, replicas: number): KubeObject {
  const name = cluster.metadata.name;
  const labels = commonLabels(name);
  const secret = (key: string) => ({ secretKeyRef: { name: spec.credentialsSecret, key } });
  const optionalSecret = (key: string) => ({ secretKeyRef: { name: spec.credentialsSecret, key, optional: true } });
  const field = (fieldPath: string) => ({ fieldRef: { fieldPath } });
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
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 999,
            runAsGroup: 999,
            fsGroup: 999,
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
                httpGet: { path: '/liveness', port: 'api' },
                periodSeconds: 2,
                timeoutSeconds: 2,
                failureThreshold: 150,
              },
              livenessProbe: {
                httpGet: { path: '/liveness', port: 'api' },
                periodSeconds: 10,
                timeoutSeconds: 5,
                failureThreshold: 3,
              },
              // Ready: the writable primary holding the leader record, or a running replica.
              readinessProbe: {
                httpGet: { path: '/readiness', port: 'api' },
                periodSeconds: 2,
                timeoutSeconds: 2,
                failureThreshold: 2,
              },
              ...(spec.resources ? { resources: spec.resources } : {}),
              securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
              volumeMounts: [{ name: 'data', mountPath: dataDir }],
            },
          ],
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
