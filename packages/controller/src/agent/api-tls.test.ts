import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HealthSnapshot } from '../decide/health.js';
import { createLogger } from '../log.js';
import { createCertificateAuthority, issueCertificate } from '../runtime/local/certificates.js';
import { apiTlsFiles, postToMember } from './api-tls.js';
import { type HealthServer, startHealthServer } from './health-server.js';

// The agent API over HTTPS on loopback (no cluster): a failsafe request reaches a
// member only through a certificate that chains to the CA and names the host.
describe('the agent API over HTTPS', () => {
  const ca = createCertificateAuthority('t');
  const member = issueCertificate(ca, 't-1', ['127.0.0.1', 'localhost']);
  const otherCa = createCertificateAuthority('other');
  // Keys are made here, outside any test's time limit (RSA key generation is slow on a loaded machine).
  const wrong = issueCertificate(ca, 't-2', ['10.9.9.9']);
  let server: HealthServer;
  let url: string;

  beforeAll(async () => {
    server = await startHealthServer({
      host: '127.0.0.1',
      port: 0,
      tls: member,
      snapshot: () => ({}) as HealthSnapshot,
      failsafe: (req, res) => {
        req.resume();
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json', 'x-pgha-signature': 'sig' });
          res.end('{"confirmed":true}\n');
        });
      },
      log: createLogger('test', () => undefined),
    });
    url = `https://127.0.0.1:${server.port}`;
  });
  afterAll(() => server?.close());

  // First: Node warns once per process, so an earlier TLS connection would hide it.
  it('sets no TLS server name for an IP address (RFC 6066; Node would warn DEP0123); the IP is still verified (below)', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error & { code?: string }) => warnings.push(`${warning.code}: ${warning.message}`);
    process.on('warning', onWarning);
    try {
      await postToMember(`${url}/failsafe`, '{}', {}, { ca: ca.cert, timeoutMillis: 5000 });
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.filter((w) => w.startsWith('DEP0123'))).toEqual([]);
  });

  it('answers a POST from a member that trusts the CA', async () => {
    const answer = await postToMember(`${url}/failsafe`, '{}', {}, { ca: ca.cert, timeoutMillis: 5000 });
    expect(answer).toMatchObject({ status: 200, text: '{"confirmed":true}\n' });
    expect(answer.headers['x-pgha-signature']).toBe('sig');
  });

  it('is refused by a member that trusts another CA, or only the system CAs', async () => {
    await expect(
      postToMember(`${url}/failsafe`, '{}', {}, { ca: otherCa.cert, timeoutMillis: 5000 }),
    ).rejects.toThrow();
    await expect(postToMember(`${url}/failsafe`, '{}', {}, { ca: null, timeoutMillis: 5000 })).rejects.toThrow();
  });

  it('is refused when the certificate does not name the host connected to', async () => {
    const other = await startHealthServer({
      host: '127.0.0.1',
      port: 0,
      tls: wrong,
      snapshot: () => ({}) as HealthSnapshot,
      log: createLogger('test', () => undefined),
    });
    try {
      await expect(
        postToMember(`https://127.0.0.1:${other.port}/failsafe`, '{}', {}, { ca: ca.cert, timeoutMillis: 5000 }),
      ).rejects.toThrow(/IP: 127\.0\.0\.1 is not in the cert's list/);
    } finally {
      await other.close();
    }
  }, 20_000);

  it('does not speak plain HTTP on the HTTPS port', async () => {
    await expect(
      postToMember(`http://127.0.0.1:${server.port}/failsafe`, '{}', {}, { ca: null, timeoutMillis: 5000 }),
    ).rejects.toThrow();
  });
});

describe('apiTlsFiles', () => {
  it('takes certificate and key together, the CA optionally', () => {
    expect(apiTlsFiles({})).toBeNull();
    expect(apiTlsFiles({ apiCert: 'c', apiKey: 'k' })).toEqual({ certFile: 'c', keyFile: 'k', caFile: null });
    expect(() => apiTlsFiles({ apiCert: 'c' })).toThrow(/--api-key is missing/);
    expect(() => apiTlsFiles({ apiKey: 'k', apiCa: 'a' })).toThrow(/--api-cert is missing/);
  });
});
