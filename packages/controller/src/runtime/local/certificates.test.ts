import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCertificateAuthority, ensureMemberCertificates, issueCertificate } from './certificates.js';

describe('local certificates', () => {
  const ca = createCertificateAuthority('demo');
  const caCert = new X509Certificate(ca.cert);

  it('makes a CA that signs member certificates naming the host, 127.0.0.1 and localhost', () => {
    expect(caCert.ca).toBe(true);
    const leaf = new X509Certificate(issueCertificate(ca, 'demo-0', ['10.1.2.3', '127.0.0.1', 'localhost']).cert);
    expect(leaf.ca).toBe(false);
    expect(leaf.verify(caCert.publicKey)).toBe(true);
    expect(leaf.checkIssued(caCert)).toBe(true);
    expect(leaf.checkIP('10.1.2.3')).toBe('10.1.2.3');
    expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(leaf.checkHost('localhost')).toBe('localhost');
    expect(leaf.checkIP('10.1.2.4')).toBeUndefined();
    expect(leaf.subject).toContain('CN=demo-0');
  });

  it('writes each member a postgres and an API pair with private keys 0600, and keeps them on a second call', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'pgha-certs-')), 'tls');
    try {
      const first = ensureMemberCertificates(dir, 'demo', [{ name: 'demo-0', host: '127.0.0.1' }]);
      const files = first.get('demo-0')!;
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      for (const key of [files.postgresKey, files.apiKey, join(dir, 'ca.key')])
        expect(statSync(key).mode & 0o777).toBe(0o600);
      const before = readFileSync(files.postgresCert, 'utf8');
      ensureMemberCertificates(dir, 'demo', [{ name: 'demo-0', host: '127.0.0.1' }]);
      expect(readFileSync(files.postgresCert, 'utf8')).toBe(before);
      const leaf = new X509Certificate(before);
      expect(leaf.verify(new X509Certificate(readFileSync(files.ca, 'utf8')).publicKey)).toBe(true);
    } finally {
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });
});

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf('/'));
}
