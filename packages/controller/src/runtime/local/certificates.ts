import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { PghaError } from '@pgha/core';
import forge from 'node-forge';
import type { OsUser } from '../../adapters/os-user.js';
import { etcdUserNames } from '../../decide/etcd-permissions.js';

/** A certificate and its key, as PEM files. */
export interface CertificateFiles {
  readonly cert: string;
  readonly key: string;
}

/**
 * The files `pgha up --secure` keeps under `<state-dir>/tls/`: a CA, etcd's server
 * certificate, one client certificate per etcd user (its CN is the user name: etcd's
 * `--client-cert-auth` authenticates by it), and per member a certificate for its
 * postgres and one for its health API.
 */
export interface TlsLayout {
  readonly dir: string;
  readonly ca: CertificateFiles;
  readonly etcd: CertificateFiles;
  /** The client certificate of etcd user `user` (`root`, `C-admin`, `C-client`, ...). */
  client(user: string): CertificateFiles;
  postgres(member: string): CertificateFiles;
  api(member: string): CertificateFiles;
}

/** Where the certificates of the state directory `stateDir` live. */
export function tlsLayout(stateDir: string): TlsLayout {
  const dir = join(stateDir, 'tls');
  const pair = (name: string): CertificateFiles => ({ cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) });
  return {
    dir,
    ca: pair('ca'),
    etcd: pair('etcd'),
    client: (user) => pair(user),
    postgres: (member) => pair(`postgres-${member}`),
    api: (member) => pair(`api-${member}`),
  };
}

/** Options of {@link ensureCertificates}. */
export interface EnsureCertificatesOptions {
  readonly stateDir: string;
  readonly cluster: string;
  /** Every member with the host it advertises (a SAN of its postgres and API certificates). */
  readonly members: ReadonlyArray<{ readonly name: string; readonly host: string }>;
  /** The host etcd is reached at (a SAN of its certificate besides 127.0.0.1 and localhost). */
  readonly etcdHost?: string;
  /**
   * postgres's OS user when pgha runs as root: it gets the directory's search bit and
   * owns its members' postgres certificate and key (postgres refuses a key others read).
   */
  readonly postgresUser: OsUser | null;
  readonly now?: Date;
}

/** What {@link ensureCertificates} did. */
export interface EnsuredCertificates {
  readonly layout: TlsLayout;
  /** Base names (`ca`, `etcd`, `pgha-client`, ...) of the certificates written now; empty when all were kept. */
  readonly generated: readonly string[];
}

const renewWithinMillis = 30 * 24 * 3600 * 1000;
const caLifetimeDays = 3650;
const leafLifetimeDays = 825;

type Usage = 'server' | 'client' | 'both';

interface LeafSpec {
  readonly name: string;
  readonly commonName: string;
  readonly usage: Usage;
  readonly hosts: readonly string[];
  /** Owned by postgres's OS user (when pgha runs as root). */
  readonly forPostgres: boolean;
}

/**
 * Creates the CA and every certificate of {@link TlsLayout} that is missing, expires
 * within 30 days or was not signed by the current CA (all of them when the CA itself
 * is new); keeps the others, so a restarted cluster keeps its certificates. Keys are
 * RSA 2048 (node:crypto), certificates SHA-256 (node-forge). The directory is 0700
 * (0711 when postgres runs as another OS user: it may enter, not list); keys are 0600.
 *
 * @throws PghaError `conflict` when an existing file cannot be parsed (remove the tls
 *   directory to start over: clients then need the new CA).
 */
export function ensureCertificates(options: EnsureCertificatesOptions): EnsuredCertificates {
  const layout = tlsLayout(options.stateDir);
  const now = options.now ?? new Date();
  const mode = options.postgresUser === null ? 0o700 : 0o711;
  mkdirSync(layout.dir, { recursive: true, mode });
  chmodSync(layout.dir, mode);
  const generated: string[] = [];

  const local = ['127.0.0.1', 'localhost'];
  const leaves: LeafSpec[] = [
    {
      name: 'etcd',
      commonName: 'etcd',
      usage: 'both',
      hosts: unique([...local, ...(options.etcdHost ? [options.etcdHost] : [])]),
      forPostgres: false,
    },
    ...etcdUserNames(
      options.cluster,
      options.members.map((m) => m.name),
    ).map((user): LeafSpec => ({ name: user, commonName: user, usage: 'client', hosts: [], forPostgres: false })),
    ...options.members.flatMap((m): LeafSpec[] => [
      {
        name: `postgres-${m.name}`,
        commonName: m.host,
        usage: 'both',
        hosts: unique([m.host, ...local]),
        forPostgres: true,
      },
      {
        name: `api-${m.name}`,
        commonName: m.host,
        usage: 'both',
        hosts: unique([m.host, ...local]),
        forPostgres: false,
      },
    ]),
  ];

  let ca = readPair(layout.ca);
  if (ca === null || expiresSoon(ca.cert, now) || !isCa(ca.cert)) {
    const fresh = createCertificate({
      commonName: `pgha ${options.cluster} local CA`,
      now,
      days: caLifetimeDays,
      ca: true,
    });
    writePair(layout.ca, fresh.certPem, fresh.keyPem, null);
    ca = { cert: forge.pki.certificateFromPem(fresh.certPem), key: forge.pki.privateKeyFromPem(fresh.keyPem) };
    generated.push('ca');
  }
  // The CA certificate is public: every client needs it.
  chmodSync(layout.ca.cert, 0o644);
  const caCert = ca.cert;
  const caKey = ca.key;

  for (const leaf of leaves) {
    const files = join(layout.dir, `${leaf.name}.crt`);
    const pair = { cert: files, key: join(layout.dir, `${leaf.name}.key`) };
    const existing = readPair(pair);
    const owner = leaf.forPostgres ? options.postgresUser : null;
    if (
      existing !== null &&
      !expiresSoon(existing.cert, now) &&
      signedBy(existing.cert, caCert) &&
      coversHosts(existing.cert, leaf.hosts)
    ) {
      if (owner !== null) chownSync(pair.key, owner.uid, owner.gid);
      continue;
    }
    const fresh = createCertificate({
      commonName: leaf.commonName,
      now,
      days: leafLifetimeDays,
      ca: false,
      usage: leaf.usage,
      hosts: leaf.hosts,
      issuer: { cert: caCert, key: caKey },
    });
    writePair(pair, fresh.certPem, fresh.keyPem, owner);
    generated.push(leaf.name);
  }
  return { layout, generated };
}

function isCa(cert: forge.pki.Certificate): boolean {
  return (cert.getExtension('basicConstraints') as { cA?: boolean } | undefined)?.cA === true;
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}

function readPair(files: CertificateFiles): { cert: forge.pki.Certificate; key: forge.pki.PrivateKey } | null {
  if (!existsSync(files.cert) || !existsSync(files.key)) return null;
  try {
    return {
      cert: forge.pki.certificateFromPem(readFileSync(files.cert, 'utf8')),
      key: forge.pki.privateKeyFromPem(readFileSync(files.key, 'utf8')),
    };
  } catch (cause) {
    throw new PghaError(
      'conflict',
      `${files.cert} or its key cannot be parsed: remove it to have pgha up --secure write a new one (remove the whole tls directory to start over with a new CA; clients then need the new ca.crt)`,
      { cause },
    );
  }
}

function expiresSoon(cert: forge.pki.Certificate, now: Date): boolean {
  return cert.validity.notAfter.getTime() - now.getTime() < renewWithinMillis;
}

function signedBy(cert: forge.pki.Certificate, ca: forge.pki.Certificate): boolean {
  try {
    return ca.verify(cert);
  } catch {
    return false;
  }
}

function coversHosts(cert: forge.pki.Certificate, hosts: readonly string[]): boolean {
  const ext = cert.getExtension('subjectAltName') as { altNames?: Array<{ value?: string; ip?: string }> } | undefined;
  const names = new Set((ext?.altNames ?? []).map((n) => n.ip ?? n.value ?? ''));
  return hosts.every((h) => names.has(h));
}

/** Writes the key first (0600, then chowned) and each file by rename, so a reader never sees half a file. */
function writePair(files: CertificateFiles, certPem: string, keyPem: string, owner: OsUser | null): void {
  const write = (path: string, content: string, mode: number) => {
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, content, { mode });
    chmodSync(tmp, mode);
    if (owner !== null) chownSync(tmp, owner.uid, owner.gid);
    renameSync(tmp, path);
  };
  write(files.key, keyPem, 0o600);
  write(files.cert, certPem, 0o644);
}

interface CreateOptions {
  readonly commonName: string;
  readonly now: Date;
  readonly days: number;
  readonly ca: boolean;
  readonly usage?: Usage;
  readonly hosts?: readonly string[];
  readonly issuer?: { readonly cert: forge.pki.Certificate; readonly key: forge.pki.PrivateKey };
}

function createCertificate(o: CreateOptions): { certPem: string; keyPem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  // A positive serial: a leading 01 byte keeps the high bit clear.
  cert.serialNumber = `01${randomBytes(15).toString('hex')}`;
  // An hour back: a clock slightly behind ours still accepts the certificate.
  cert.validity.notBefore = new Date(o.now.getTime() - 3600 * 1000);
  cert.validity.notAfter = new Date(o.now.getTime() + o.days * 24 * 3600 * 1000);
  const subject = [{ name: 'commonName', value: o.commonName }];
  cert.setSubject(subject);
  cert.setIssuer(o.issuer === undefined ? subject : o.issuer.cert.subject.attributes);
  const extensions: object[] = o.ca
    ? [
        { name: 'basicConstraints', cA: true, critical: true },
        { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
        { name: 'subjectKeyIdentifier' },
      ]
    : [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        {
          name: 'extKeyUsage',
          serverAuth: o.usage !== 'client',
          clientAuth: o.usage !== 'server',
        },
        { name: 'subjectKeyIdentifier' },
        ...((o.hosts ?? []).length === 0
          ? []
          : [
              {
                name: 'subjectAltName',
                altNames: (o.hosts ?? []).map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h })),
              },
            ]),
      ];
  if (o.issuer !== undefined) {
    const ski = o.issuer.cert.generateSubjectKeyIdentifier().getBytes();
    extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: ski });
  }
  cert.setExtensions(extensions);
  cert.sign((o.issuer?.key ?? forgeKey) as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}

/** A certificate and its key as PEM text (not files). */
export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

/** A new self-signed CA for `cluster` (PEM), as {@link ensureCertificates} makes one. */
export function createCertificateAuthority(cluster: string): PemPair {
  const made = createCertificate({
    commonName: `pgha ${cluster} local CA`,
    now: new Date(),
    days: caLifetimeDays,
    ca: true,
  });
  return { cert: made.certPem, key: made.keyPem };
}

/** A certificate for `commonName` naming `hosts`, usable by servers and clients, signed by `ca` (PEM). */
export function issueCertificate(ca: PemPair, commonName: string, hosts: readonly string[]): PemPair {
  const made = createCertificate({
    commonName,
    now: new Date(),
    days: leafLifetimeDays,
    ca: false,
    usage: 'both',
    hosts: unique(hosts),
    issuer: { cert: forge.pki.certificateFromPem(ca.cert), key: forge.pki.privateKeyFromPem(ca.key) },
  });
  return { cert: made.certPem, key: made.keyPem };
}
