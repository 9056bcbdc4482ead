import { describe, expect, it } from 'vitest';
import { type PgHaClusterObject, parsePgHaCluster } from './pgha-cluster.js';

const cluster = (spec: Record<string, unknown> = {}): PgHaClusterObject => ({
  apiVersion: 'pgha.dev/v1alpha1',
  kind: 'PgHaCluster',
  metadata: { name: 'demo', namespace: 'db', uid: 'uid-1' },
  spec: { etcd: { endpoints: ['http://etcd:2379'] }, ...spec },
});
const problems = (spec: Record<string, unknown>) => {
  const r = parsePgHaCluster(cluster(spec));
  return r.ok ? [] : r.problems;
};

describe('parsePgHaCluster', () => {
  it('applies the defaults of the new fields', () => {
    expect(parsePgHaCluster(cluster())).toMatchObject({
      ok: true,
      spec: {
        storage: { size: '10Gi', pvcRetention: { whenDeleted: 'Retain', whenScaled: 'Retain' } },
        credentialsSecret: 'demo-credentials',
        credentialsSecretGenerated: true,
        postgresParameters: {},
        synchronous: { mode: 'off' },
      },
    });
  });

  it('marks a named credentials Secret as not to be generated, even under the default name', () => {
    for (const name of ['mine', 'demo-credentials'])
      expect(parsePgHaCluster(cluster({ credentialsSecret: name }))).toMatchObject({
        ok: true,
        spec: { credentialsSecret: name, credentialsSecretGenerated: false },
      });
  });

  it('reads storage.pvcRetention and refuses other values', () => {
    expect(
      parsePgHaCluster(cluster({ storage: { pvcRetention: { whenDeleted: 'Delete', whenScaled: 'Delete' } } })),
    ).toMatchObject({ ok: true, spec: { storage: { pvcRetention: { whenDeleted: 'Delete', whenScaled: 'Delete' } } } });
    expect(problems({ storage: { pvcRetention: { whenDeleted: 'delete' } } })).toEqual([
      'spec.storage.pvcRetention.whenDeleted "delete" is not one of Retain, Delete',
    ]);
    expect(problems({ storage: { pvcRetention: 'Retain' } })).toContain('spec.storage.pvcRetention must be an object');
  });

  it('reads postgresParameters, names lowercased', () => {
    expect(
      parsePgHaCluster(cluster({ postgresParameters: { Work_Mem: '64MB', 'auto_explain.log_min_duration': '1s' } })),
    ).toMatchObject({
      ok: true,
      spec: { postgresParameters: { work_mem: '64MB', 'auto_explain.log_min_duration': '1s' } },
    });
  });

  it('refuses parameters pgha owns, names that are not identifiers and values that are not strings', () => {
    for (const name of [
      'port',
      'listen_addresses',
      'hba_file',
      'primary_conninfo',
      'wal_level',
      'hot_standby',
      'max_wal_senders',
      'max_replication_slots',
      'synchronous_standby_names',
      'PORT',
    ])
      expect(problems({ postgresParameters: { [name]: 'x' } })).toEqual([
        `spec.postgresParameters: ${name} is set by pgha and cannot be overridden`,
      ]);
    expect(problems({ postgresParameters: { 'work mem': '1' } })).toEqual([
      'spec.postgresParameters: "work mem" is not a parameter name (an identifier)',
    ]);
    expect(problems({ postgresParameters: { work_mem: 64 } })).toEqual([
      'spec.postgresParameters.work_mem must be a string, not 64',
    ]);
    expect(problems({ postgresParameters: ['work_mem=1'] })).toEqual([
      'spec.postgresParameters must be a map of parameter names to string values',
    ]);
  });

  it('accepts only synchronous.mode off for now', () => {
    expect(parsePgHaCluster(cluster({ synchronous: { mode: 'off' } }))).toMatchObject({ ok: true });
    expect(problems({ synchronous: { mode: 'quorum' } })).toEqual([
      'spec.synchronous.mode "quorum" is not supported: only off (synchronous replication is issue 13)',
    ]);
    // YAML's bare off is a boolean.
    expect(problems({ synchronous: { mode: false } })).toHaveLength(1);
  });

  it('accepts the reserved etcd.credentialsSecret and refuses a non-name', () => {
    expect(
      parsePgHaCluster(cluster({ etcd: { endpoints: ['http://etcd:2379'], credentialsSecret: 'etcd-auth' } })),
    ).toMatchObject({ ok: true, spec: { etcdCredentialsSecret: 'etcd-auth' } });
    expect(problems({ etcd: { endpoints: ['http://etcd:2379'], credentialsSecret: '' } })).toEqual([
      'spec.etcd.credentialsSecret must be a Secret name',
    ]);
  });
});
