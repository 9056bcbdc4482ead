/**
 * The PgHaCluster custom resource (pgha.dev/v1alpha1) as the operator reads it:
 * its spec with the CRD's defaults, and `parsePgHaCluster`, which accepts only what
 * the operator can act on and otherwise says why (the operator then reports the
 * reasons in a condition and changes nothing). Pure; no I/O.
 */

import { isPostgresParameterName, reservedPostgresParameters } from '../../agent/postgres-config.js';

export const pghaGroup = 'pgha.dev';
export const pghaVersion = 'v1alpha1';
export const pghaApiVersion = `${pghaGroup}/${pghaVersion}`;
export const supportedPostgresVersions = [15, 16, 17] as const;
export type PostgresVersion = (typeof supportedPostgresVersions)[number];
export const pvcRetentionPolicies = ['Retain', 'Delete'] as const;
export type PvcRetentionPolicy = (typeof pvcRetentionPolicies)[number];
/**
 * `spec.synchronous.mode`: `off` (asynchronous streaming) or `quorum` (each commit
 * waits for `count` of the streaming standbys; the cluster's `config` record in etcd,
 * which the operator keeps equal to the spec).
 */
export const synchronousModes = ['off', 'quorum'] as const;
export type SynchronousMode = (typeof synchronousModes)[number];

/** The most standbys a count can name: a cluster has at most 9 instances. */
export const maximumSynchronousCount = 8;

/** `spec.synchronous`, defaults applied. */
export interface SynchronousSpec {
  readonly mode: SynchronousMode;
  /** `quorum`: how many standbys confirm each commit (1 ≤ count ≤ instances − 1). Default 1. */
  readonly count: number;
  /** `quorum`: commits wait rather than go on with fewer confirmations. Default false. */
  readonly strict: boolean;
}

/**
 * The smallest termination grace period that covers an agent's handover: a stopping
 * primary requests a switchover and waits up to 10 s for it, then stops within 5 s
 * (docs/architecture.md, "Switchover").
 */
export const minimumTerminationGracePeriodSeconds = 20;
/** StatefulSet names longer than 52 leave no room for the pods' controller-revision-hash label. */
export const maximumClusterNameLength = 52;

/**
 * `spec.etcd`: where the cluster's state lives and how the members authenticate to
 * it. `tlsSecret` names a Secret with `ca.crt`, `tls.crt` and `tls.key` (a
 * kubernetes.io/tls Secret plus the CA, as cert-manager writes it): the members
 * verify etcd with the CA and present the certificate (with etcd's client-certificate
 * authentication its CN is the etcd user). `credentialsSecret` names a Secret with
 * `username` and `password` (etcd password authentication). Every member mounts the
 * same Secrets: one etcd identity for the whole cluster, not one per member.
 */
export interface EtcdSpec {
  readonly endpoints: readonly string[];
  readonly keyRoot: string;
  readonly tlsSecret?: string;
  readonly credentialsSecret?: string;
}

/** The keys a TLS Secret named in the spec must hold (cert-manager's layout). */
export const tlsSecretKeys = ['ca.crt', 'tls.crt', 'tls.key'] as const;
/** The keys `spec.etcd.credentialsSecret` must hold. */
export const etcdCredentialsSecretKeys = ['username', 'password'] as const;

/** What a PgHaCluster asks for, defaults applied. */
export interface PgHaClusterSpec {
  readonly instances: number;
  readonly postgresVersion: PostgresVersion;
  readonly image: string;
  readonly imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  readonly etcd: EtcdSpec;
  /** `spec.postgres`: PostgreSQL's server certificate (TLS for clients and replication). */
  readonly postgres: { readonly tlsSecret?: string };
  /** `spec.api`: the agents' HTTP API certificate (https). */
  readonly api: { readonly tlsSecret?: string };
  readonly storage: {
    readonly size: string;
    readonly storageClassName?: string;
    /** The StatefulSet's persistentVolumeClaimRetentionPolicy; Retain for both by default. */
    readonly pvcRetention: { readonly whenDeleted: PvcRetentionPolicy; readonly whenScaled: PvcRetentionPolicy };
  };
  readonly credentialsSecret: string;
  /**
   * True when the spec names no Secret (the default `<name>-credentials`): then the
   * operator generates it when absent. A Secret the spec names is never invented.
   */
  readonly credentialsSecretGenerated: boolean;
  /** Extra postgresql.conf settings, by name (never one of {@link reservedPostgresParameters}). */
  readonly postgresParameters: Readonly<Record<string, string>>;
  readonly synchronous: SynchronousSpec;
  readonly resources?: Readonly<Record<string, unknown>>;
  readonly leaseTtlMillis: number;
  readonly maximumLagOnFailoverBytes: number;
  readonly terminationGracePeriodSeconds: number;
}

/** A PgHaCluster object as listed from the API (only what the operator reads). */
export interface PgHaClusterObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace: string;
    readonly uid: string;
    readonly generation?: number;
    readonly deletionTimestamp?: string;
  };
  readonly spec?: unknown;
  readonly status?: PgHaClusterStatus;
}

export interface Condition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime: string;
}

export const phases = ['Pending', 'Creating', 'Healthy', 'Degraded', 'Failed'] as const;
export type Phase = (typeof phases)[number];

export interface PgHaClusterStatus {
  readonly phase?: Phase;
  readonly primary?: string;
  readonly term?: number;
  readonly ready?: string;
  readonly instances?: number;
  readonly readyInstances?: number;
  readonly selector?: string;
  readonly observedGeneration?: number;
  readonly conditions?: readonly Condition[];
}

export type ParseResult = { ok: true; spec: PgHaClusterSpec } | { ok: false; problems: string[] };

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUANTITY = /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Reads a PgHaCluster: the API version must be one this operator knows, the name
 * must leave room for pod and Service names, and the spec must hold what the CRD's
 * schema allows (the API server enforces that schema too; this guards against an
 * older CRD, a schema edited by hand, or a spec written before a default existed).
 */
export function parsePgHaCluster(cluster: PgHaClusterObject): ParseResult {
  const problems: string[] = [];
  if (cluster.apiVersion !== pghaApiVersion)
    problems.push(
      `apiVersion ${JSON.stringify(cluster.apiVersion)} is not supported: this operator reads ${pghaApiVersion}`,
    );
  const name = cluster.metadata.name;
  if (!DNS_LABEL.test(name) || name.length > maximumClusterNameLength)
    problems.push(
      `metadata.name ${JSON.stringify(name)} must be a DNS label of at most ${maximumClusterNameLength} characters`,
    );
  const spec = isObject(cluster.spec) ? cluster.spec : {};
  if (!isObject(cluster.spec)) problems.push('spec is missing');

  const integer = (key: string, fallback: number, min: number, max: number): number => {
    const v = spec[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      problems.push(`spec.${key} must be a whole number from ${min} to ${max}, not ${JSON.stringify(v)}`);
      return fallback;
    }
    return v;
  };
  const instances = integer('instances', 3, 1, 9);
  const postgresVersion = spec.postgresVersion ?? 17;
  if (!supportedPostgresVersions.includes(postgresVersion as PostgresVersion))
    problems.push(
      `spec.postgresVersion ${JSON.stringify(postgresVersion)} is not supported (supported: ${supportedPostgresVersions.join(', ')})`,
    );
  const image = spec.image ?? `ghcr.io/pgha/member:${String(postgresVersion)}`;
  if (typeof image !== 'string' || image === '') problems.push('spec.image must be a non-empty string');
  const imagePullPolicy = spec.imagePullPolicy ?? 'IfNotPresent';
  if (!['Always', 'IfNotPresent', 'Never'].includes(imagePullPolicy as string))
    problems.push(`spec.imagePullPolicy ${JSON.stringify(imagePullPolicy)} is not one of Always, IfNotPresent, Never`);

  const etcd = isObject(spec.etcd) ? spec.etcd : {};
  const endpoints = etcd.endpoints;
  if (
    !Array.isArray(endpoints) ||
    endpoints.length === 0 ||
    !endpoints.every((e) => typeof e === 'string' && /^https?:\/\/\S+$/.test(e))
  )
    problems.push('spec.etcd.endpoints must list at least one http(s) URL');
  const keyRoot = etcd.keyRoot ?? '/pgha/';
  if (typeof keyRoot !== 'string' || !/^\/.*\/$/.test(keyRoot))
    problems.push('spec.etcd.keyRoot must start and end with /');

  const storage = isObject(spec.storage) ? spec.storage : {};
  const size = storage.size ?? '10Gi';
  if (typeof size !== 'string' || !QUANTITY.test(size))
    problems.push(`spec.storage.size ${JSON.stringify(size)} is not a quantity such as 10Gi`);
  const storageClassName = storage.storageClassName;
  if (storageClassName !== undefined && typeof storageClassName !== 'string')
    problems.push('spec.storage.storageClassName must be a string');
  const retention = storage.pvcRetention ?? {};
  if (!isObject(retention)) problems.push('spec.storage.pvcRetention must be an object');
  const retentionOf = (key: 'whenDeleted' | 'whenScaled'): PvcRetentionPolicy => {
    const v = isObject(retention) ? (retention[key] ?? 'Retain') : 'Retain';
    if (!pvcRetentionPolicies.includes(v as PvcRetentionPolicy)) {
      problems.push(`spec.storage.pvcRetention.${key} ${JSON.stringify(v)} is not one of Retain, Delete`);
      return 'Retain';
    }
    return v as PvcRetentionPolicy;
  };
  const pvcRetention = { whenDeleted: retentionOf('whenDeleted'), whenScaled: retentionOf('whenScaled') };

  const credentialsSecret = spec.credentialsSecret ?? `${name}-credentials`;
  if (typeof credentialsSecret !== 'string' || credentialsSecret === '')
    problems.push('spec.credentialsSecret must be a Secret name');

  const postgresParameters: Record<string, string> = {};
  if (spec.postgresParameters !== undefined && !isObject(spec.postgresParameters))
    problems.push('spec.postgresParameters must be a map of parameter names to string values');
  else
    for (const [key, value] of Object.entries(spec.postgresParameters ?? {})) {
      if (!isPostgresParameterName(key))
        problems.push(`spec.postgresParameters: ${JSON.stringify(key)} is not a parameter name (an identifier)`);
      else if (reservedPostgresParameters.has(key.toLowerCase()))
        problems.push(`spec.postgresParameters: ${key} is set by pgha and cannot be overridden`);
      else if (typeof value !== 'string')
        problems.push(`spec.postgresParameters.${key} must be a string, not ${JSON.stringify(value)}`);
      else postgresParameters[key.toLowerCase()] = value;
    }

  const synchronous = readSynchronous(spec.synchronous, instances, problems);

  const secretName = (path: string, value: unknown): string | undefined => {
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || !DNS_SUBDOMAIN.test(value) || value.length > 253) {
      problems.push(
        `spec.${path} must be the name of a Secret in the cluster's namespace, not ${JSON.stringify(value)}`,
      );
      return undefined;
    }
    return value;
  };
  const etcdTlsSecret = secretName('etcd.tlsSecret', etcd.tlsSecret);
  const etcdCredentialsSecret = secretName('etcd.credentialsSecret', etcd.credentialsSecret);
  // A client certificate or a CA is of no use over plain http: refuse rather than
  // send the password (or connect) unencrypted.
  if (etcd.tlsSecret !== undefined && Array.isArray(endpoints))
    for (const e of endpoints)
      if (typeof e === 'string' && e.startsWith('http://'))
        problems.push(
          `spec.etcd.endpoints: ${e} is plain http but spec.etcd.tlsSecret is set: use https:// endpoints (etcd's --listen-client-urls with TLS)`,
        );
  const section = (key: 'postgres' | 'api') => {
    const value = spec[key] ?? {};
    if (!isObject(value)) {
      problems.push(`spec.${key} must be an object such as {tlsSecret: my-${key}-tls}`);
      return {};
    }
    const tlsSecret = secretName(`${key}.tlsSecret`, value.tlsSecret);
    return tlsSecret !== undefined ? { tlsSecret } : {};
  };
  const postgres = section('postgres');
  const api = section('api');
  if (spec.resources !== undefined && !isObject(spec.resources)) problems.push('spec.resources must be an object');

  const leaseTtlMillis = integer('leaseTtlMillis', 2000, 2000, 600_000);
  const maximumLagOnFailoverBytes = integer('maximumLagOnFailoverBytes', 16 * 1024 * 1024, 0, Number.MAX_SAFE_INTEGER);
  const terminationGracePeriodSeconds = integer(
    'terminationGracePeriodSeconds',
    30,
    minimumTerminationGracePeriodSeconds,
    3600,
  );

  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    spec: {
      instances,
      postgresVersion: postgresVersion as PostgresVersion,
      image: image as string,
      imagePullPolicy: imagePullPolicy as PgHaClusterSpec['imagePullPolicy'],
      etcd: {
        endpoints: endpoints as string[],
        keyRoot: keyRoot as string,
        ...(etcdTlsSecret !== undefined ? { tlsSecret: etcdTlsSecret } : {}),
        ...(etcdCredentialsSecret !== undefined ? { credentialsSecret: etcdCredentialsSecret } : {}),
      },
      postgres,
      api,
      storage: {
        size: size as string,
        ...(storageClassName !== undefined ? { storageClassName: storageClassName as string } : {}),
        pvcRetention,
      },
      credentialsSecret: credentialsSecret as string,
      credentialsSecretGenerated: spec.credentialsSecret === undefined,
      postgresParameters,
      synchronous,
      ...(spec.resources !== undefined ? { resources: spec.resources as Record<string, unknown> } : {}),
      leaseTtlMillis,
      maximumLagOnFailoverBytes,
      terminationGracePeriodSeconds,
    },
  };
}

/**
 * `spec.synchronous`: the mode, and in quorum mode a count that leaves the primary
 * out (at most instances − 1: a count no standby set can reach would block every
 * commit in strict mode and claim nothing otherwise). Count and strict are checked for
 * their type in every mode (the CRD's schema does too) and kept, so switching the mode
 * back on keeps them.
 */
function readSynchronous(value: unknown, instances: number, problems: string[]): SynchronousSpec {
  const fallback: SynchronousSpec = { mode: 'off', count: 1, strict: false };
  if (value === undefined) return fallback;
  if (!isObject(value)) {
    problems.push('spec.synchronous must be an object such as {mode: quorum, count: 1}');
    return fallback;
  }
  const mode = value.mode ?? 'off';
  if (!synchronousModes.includes(mode as SynchronousMode))
    problems.push(
      `spec.synchronous.mode ${JSON.stringify(mode)} is not one of ${synchronousModes.join(', ')}${
        mode === false ? ' (a bare off in YAML is a boolean: quote it, "off")' : ''
      }`,
    );
  const count = value.count ?? 1;
  const countOk =
    typeof count === 'number' && Number.isInteger(count) && count >= 1 && count <= maximumSynchronousCount;
  if (!countOk)
    problems.push(
      `spec.synchronous.count must be a whole number from 1 to ${maximumSynchronousCount}, not ${JSON.stringify(count)}`,
    );
  else if (mode === 'quorum' && count > instances - 1)
    problems.push(
      instances === 1
        ? 'spec.synchronous.mode quorum needs at least 2 instances (a primary and a standby to confirm its commits): raise spec.instances or set mode "off"'
        : `spec.synchronous.count ${count} is more than the ${instances - 1} standbys of ${instances} instances: lower it to at most ${instances - 1} or raise spec.instances`,
    );
  const strict = value.strict ?? false;
  if (typeof strict !== 'boolean')
    problems.push(`spec.synchronous.strict must be true or false, not ${JSON.stringify(strict)}`);
  return {
    mode: synchronousModes.includes(mode as SynchronousMode) ? (mode as SynchronousMode) : 'off',
    count: countOk ? (count as number) : 1,
    strict: strict === true,
  };
}
