import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { castEtcdError, etcdCredentials, parseEndpoints, poolEtcdOptions } from './etcd.js';

/** Runs `fn` and returns the PghaError it throws. */
function thrown(fn: () => unknown): PghaError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PghaError);
    return error as PghaError;
  }
  throw new Error('expected a PghaError, nothing was thrown');
}

describe('parseEndpoints', () => {
  it('accepts one http endpoint', () => {
    expect(parseEndpoints('http://127.0.0.1:2379')).toEqual(['http://127.0.0.1:2379']);
  });

  it('splits a comma-separated list, trimming spaces and dropping empty entries', () => {
    expect(parseEndpoints(' http://10.0.0.1:2379, http://10.0.0.2:2379,,https://etcd.example:2379 ,')).toEqual([
      'http://10.0.0.1:2379',
      'http://10.0.0.2:2379',
      'https://etcd.example:2379',
    ]);
  });

  it('accepts an array of endpoints and does not change it', () => {
    const given = ['http://[::1]:2379', ' http://127.0.0.1:2379 '] as const;
    expect(parseEndpoints(given)).toEqual(['http://[::1]:2379', 'http://127.0.0.1:2379']);
    expect(given[1]).toBe(' http://127.0.0.1:2379 ');
  });

  it.each(['', ' ', ',', ' , ,'])('refuses an empty list and says how to give one: %j', (text) => {
    const error = thrown(() => parseEndpoints(text));
    expect(error.code).toBe('invalid-option');
    expect(error.message).toBe('no etcd endpoint given: pass --etcd http://HOST:PORT or set PGHA_ETCD');
  });

  it('refuses an empty array', () => {
    expect(thrown(() => parseEndpoints([])).code).toBe('invalid-option');
  });

  it.each(['127.0.0.1:2379', 'etcd', '//127.0.0.1:2379', 'http//127.0.0.1:2379'])(
    'refuses an endpoint that is not a URL and shows the expected form: %j',
    (endpoint) => {
      const error = thrown(() => parseEndpoints(`http://10.0.0.1:2379,${endpoint}`));
      expect(error.code).toBe('invalid-option');
      expect(error.message).toBe(`etcd endpoint "${endpoint}" is not a URL: use http://HOST:PORT`);
    },
  );

  it.each(['ftp://127.0.0.1:2379', 'unix:///run/etcd.sock', 'localhost:2379'])(
    'refuses an endpoint with a scheme other than http or https: %j',
    (endpoint) => {
      const error = thrown(() => parseEndpoints(endpoint));
      expect(error.code).toBe('invalid-option');
      expect(error.message).toBe(`etcd endpoint "${endpoint}" must use http: or https:`);
    },
  );
  it.each(['http://root:s3cret@127.0.0.1:2379', 'https://:s3cret@etcd-0:2379', 'http://root@127.0.0.1:2379'])(
    'refuses an endpoint with credentials in it without repeating them: %j',
    (endpoint) => {
      const error = thrown(() => parseEndpoints(`http://127.0.0.1:2379,${endpoint}`));
      expect(error.code).toBe('invalid-option');
      expect(error.message).toMatch(/carries credentials: give the etcd user with --etcd-user .* never in the URL/);
      expect(error.message).not.toMatch(/s3cret|root/);
    },
  );
});

describe('castEtcdError', () => {
  it('says etcd cannot be reached, where, while doing what, and what to do', () => {
    const error = castEtcdError(
      new Error('14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:1'),
      'http://127.0.0.1:1',
      'reading the cluster',
    );
    expect(error.code).toBe('etcd-unavailable');
    expect(error.retryable).toBe(true);
    expect(error.message).toBe(
      'cannot reach etcd at http://127.0.0.1:1 while reading the cluster (14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:1): check that etcd runs there, or omit --etcd to let `pgha up` start its own (an etcd with TLS is reached at https:// with --etcd-ca)',
    );
  });

  it('drops the empty resolution note grpc appends and keeps only the first line', () => {
    const raw = new Error(
      '14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: \nstack',
    );
    expect(castEtcdError(raw, ['http://127.0.0.1:1'], 'x').message).toContain(
      '(14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1.): check',
    );
  });

  it('passes a pgha error through unchanged', () => {
    const original = new PghaError('conflict', 'mine');
    expect(castEtcdError(original, 'http://127.0.0.1:1', 'x')).toBe(original);
  });
});

describe('etcdCredentials', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-etcd-tls-'));
  const pem = join(dir, 'a.pem');
  writeFileSync(pem, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  const notPem = join(dir, 'b.txt');
  writeFileSync(notPem, 'hello');

  it('is undefined for http:// without TLS files, and reads every given file for https://', () => {
    expect(etcdCredentials({ endpoints: 'http://127.0.0.1:2379' })).toBeUndefined();
    expect(etcdCredentials({ endpoints: 'https://e:2379' })).toEqual({});
    const c = etcdCredentials({ endpoints: 'https://e:2379', tls: { caFile: pem, certFile: pem, keyFile: pem } });
    expect(c?.rootCertificate?.toString()).toContain('BEGIN CERTIFICATE');
    expect(c?.certChain).toBeDefined();
    expect(c?.privateKey).toBeDefined();
  });

  it('says what to do about http:// with TLS files, mixed schemes, half a pair, missing or non-PEM files', () => {
    expect(thrown(() => etcdCredentials({ endpoints: 'http://e:2379', tls: { caFile: pem } })).message).toBe(
      'etcd TLS files were given (--etcd-ca/--etcd-cert/--etcd-key) but the endpoint http://e:2379 is http://: use https://e:2379',
    );
    expect(thrown(() => etcdCredentials({ endpoints: 'https://a:1,http://b:2' })).message).toMatch(
      /mix http:\/\/ and https:\/\//,
    );
    expect(thrown(() => etcdCredentials({ endpoints: 'https://e', tls: { certFile: pem } })).message).toMatch(
      /without its key: pass --etcd-key/,
    );
    expect(thrown(() => etcdCredentials({ endpoints: 'https://e', tls: { caFile: join(dir, 'nope') } })).message).toBe(
      `cannot read the etcd CA certificate ${join(dir, 'nope')} (no such file): pass an existing PEM file readable by this user with --etcd-ca`,
    );
    expect(thrown(() => etcdCredentials({ endpoints: 'https://e', tls: { caFile: notPem } })).message).toMatch(
      /is not a PEM file/,
    );
  });
});

describe('poolEtcdOptions', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgha-etcd-pool-'));
  const pem = join(dir, 'a.pem');
  writeFileSync(pem, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');

  it("hands the Pool the CLI's endpoints, user and TLS files, read", () => {
    expect(poolEtcdOptions({ endpoints: 'http://a:1, http://b:2' })).toEqual({
      endpoints: ['http://a:1', 'http://b:2'],
    });
    const options = poolEtcdOptions({
      endpoints: 'https://e:2379',
      username: 'u',
      password: 'pw',
      tls: { caFile: pem, certFile: pem, keyFile: pem },
    });
    expect(options).toMatchObject({ endpoints: ['https://e:2379'], username: 'u', password: 'pw' });
    expect(options.credentials?.rootCertificate.toString()).toContain('BEGIN CERTIFICATE');
    expect(options.credentials?.certChain).toBeDefined();
    expect(options.credentials?.privateKey).toBeDefined();
  });
});

describe('castEtcdError on refusals', () => {
  it('says which credentials to pass when etcd refuses the handshake, the user, or its certificate', () => {
    const handshake = castEtcdError(
      new Error('14 UNAVAILABLE: No connection established. Last error: ssl3_read_bytes:sslv3 alert bad certificate'),
      'https://e:2379',
      'x',
    );
    expect(handshake.retryable).toBe(false);
    expect(handshake.message).toMatch(
      /requires a client certificate signed by its CA; pass --etcd-cert and --etcd-key/,
    );
    const denied = castEtcdError(
      new Error('7 PERMISSION_DENIED: etcdserver: permission denied'),
      'https://e:2379',
      'writing',
    );
    expect(denied.message).toMatch(/refused writing .*lacks the permission/);
    const unknownCa = castEtcdError(
      new Error('14 UNAVAILABLE: No connection established. Last error: self-signed certificate in certificate chain'),
      'https://e:2379',
      'x',
    );
    expect(unknownCa.message).toMatch(/pass the CA that signed it with --etcd-ca/);
  });
});
