import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureCertificates } from './certificates.js';

const stateDir = mkdtempSync(join(tmpdir(), 'pgha-certificates-'));
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

const options = { stateDir, cluster: 'demo', members: [{ name: 'demo-0', host: '10.0.0.5' }], postgresUser: null };

describe('ensureCertificates', () => {
  it('writes a CA and every certificate once, keeps them on the next run, renews what expires within 30 days', () => {
    const now = new Date('2030-01-01T00:00:00Z');
    const first = ensureCertificates({ ...options, now });
    expect(first.generated).toEqual([
      'ca',
      'etcd',
      'root',
      'demo-admin',
      'demo-controller',
      'demo-member-demo-0',
      'demo-client',
      'postgres-demo-0',
      'api-demo-0',
    ]);
    const { layout } = first;
    expect((statSync(layout.dir).mode & 0o777).toString(8)).toBe('700');
    expect((statSync(layout.client('demo-client').key).mode & 0o777).toString(8)).toBe('600');
    const ca = forge.pki.certificateFromPem(readFileSync(layout.ca.cert, 'utf8'));
    const client = forge.pki.certificateFromPem(readFileSync(layout.client('demo-client').cert, 'utf8'));
    expect(client.subject.getField('CN').value).toBe('demo-client');
    expect(ca.verify(client)).toBe(true);
    const pgCert = forge.pki.certificateFromPem(readFileSync(layout.postgres('demo-0').cert, 'utf8'));
    const sans = (pgCert.getExtension('subjectAltName') as { altNames: Array<{ ip?: string; value?: string }> })
      .altNames;
    expect(sans.map((n) => n.ip ?? n.value)).toEqual(['10.0.0.5', '127.0.0.1', 'localhost']);

    expect(ensureCertificates({ ...options, now: new Date('2030-06-01T00:00:00Z') }).generated).toEqual([]);
    // 825-day leaves, a 10-year CA: two years on, every leaf is renewed under the same CA.
    const later = ensureCertificates({ ...options, now: new Date('2032-03-20T00:00:00Z') });
    expect(later.generated).toHaveLength(8);
    expect(later.generated).not.toContain('ca');
  }, 120_000);
});
