/**
 * TLS for the agents' HTTP API (`--api-cert`, `--api-key`, `--api-ca`): the files read
 * once at start, and the one client the agents use to call each other's API (failsafe
 * mode's `POST /failsafe`), which verifies the other member's certificate against the CA.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { PghaError } from '@pgha/core';

/** Where the API's certificate, key and CA are (PEM files). */
export interface ApiTlsFiles {
  /** The API's server certificate; it must name the member's host (its record says https://host:port). */
  readonly certFile: string;
  readonly keyFile: string;
  /** The CA other members' API certificates chain to; absent: the system's CAs. */
  readonly caFile?: string | null;
}

/** The API's TLS material, read. */
export interface ApiTls {
  readonly cert: string;
  readonly key: string;
  readonly ca: string | null;
}

/** A PEM file's text; a PghaError naming `flag` when it cannot be read. */
export function readPem(file: string, flag: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new PghaError(
      'invalid-option',
      `cannot read ${flag} ${file}: ${(error as Error).message}; give a readable PEM file`,
      { cause: error },
    );
  }
}

/**
 * Reads the API's TLS files.
 *
 * @throws PghaError `invalid-option` naming the flag whose file cannot be read.
 */
export function readApiTls(files: ApiTlsFiles): ApiTls {
  return {
    cert: readPem(files.certFile, '--api-cert'),
    key: readPem(files.keyFile, '--api-key'),
    ca: files.caFile == null ? null : readPem(files.caFile, '--api-ca'),
  };
}

/**
 * Checks that `--api-cert` and `--api-key` come together (`--api-ca` alone is allowed:
 * a member without its own certificate can still verify the others').
 *
 * @throws PghaError `invalid-option` saying which flag is missing.
 */
export function apiTlsFiles(o: {
  readonly apiCert?: string;
  readonly apiKey?: string;
  readonly apiCa?: string;
}): ApiTlsFiles | null {
  if ((o.apiCert === undefined) !== (o.apiKey === undefined))
    throw new PghaError(
      'invalid-option',
      `--api-cert and --api-key go together (${o.apiCert === undefined ? '--api-cert' : '--api-key'} is missing): give both for HTTPS, or neither`,
    );
  if (o.apiCert === undefined || o.apiKey === undefined) return null;
  return { certFile: o.apiCert, keyFile: o.apiKey, caFile: o.apiCa ?? null };
}

/** An answer of {@link postToMember}. */
export interface MemberAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
}

/**
 * POSTs `body` to another member's API (`http://` or `https://`; an `https://` peer's
 * certificate must chain to `ca` and name its host). Bounded by `timeoutMillis`
 * overall; rejects on any failure (the caller counts it as "unreachable").
 */
export function postToMember(
  url: string,
  body: string,
  headers: Readonly<Record<string, string>>,
  options: { readonly ca: string | null; readonly timeoutMillis: number },
): Promise<MemberAnswer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(
      target,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': Buffer.byteLength(body) },
        ...(target.protocol === 'https:' && options.ca !== null ? { ca: options.ca } : {}),
        signal: AbortSignal.timeout(options.timeoutMillis),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > 64 * 1024) req.destroy(new Error('answer larger than 64 KiB'));
          else chunks.push(chunk);
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
