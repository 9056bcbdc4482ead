/**
 * Failsafe mode's shell (issue 14; design in docs/architecture.md, "Failsafe mode"):
 *
 * - on the primary, *rounds*: while its keepalives go unacknowledged, it asks every
 *   other member of the failsafe record (`POST /failsafe`, HMAC-authenticated) for a
 *   promise; when all confirm, its failsafe deadline moves to send time + promise −
 *   margin, and {@link Leadership} keeps postgres writable until then;
 * - on every member, the `/failsafe` handler: the answer is the pure
 *   {@link decideFailsafeAnswer}; a confirmation records a promise that makes
 *   {@link Leadership.install} refuse;
 * - the failsafe record (`failsafe` key), kept by the leader with
 *   {@link decideFailsafeRecord}.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type ClusterKeys,
  FailsafeRecord,
  LeaderRecord,
  MemberRecord,
  PghaError,
  recordVersion,
  SyncRecord,
  TermRecord,
} from '@pgha/core';
import type { Etcd3 } from 'etcd3';
import type { Clock } from '../clock.js';
import {
  deadlineValid,
  decideFailsafeAnswer,
  decideFailsafeRecord,
  type FailsafeRequest,
  failsafeDeadline,
  type Instant,
  later,
  type MemberFacts,
  promiseEnd,
  promiseRunning,
  refuseInstall,
  stallThresholdMillis,
} from '../decide/failsafe.js';
import type { Logger } from '../log.js';
import { postToMember } from './api-tls.js';
import type { LeaseTiming } from './lease-keeper.js';

/** The header carrying a request's or an answer's HMAC-SHA256 (hex). */
export const signatureHeader = 'x-pgha-signature';
const maxBodyBytes = 4096;

/** HMAC-SHA256 of `data` under `secret`, hex. */
export function sign(secret: Buffer, data: string): string {
  return createHmac('sha256', secret).update(data).digest('hex');
}

/** Whether `signature` is `data`'s HMAC under `secret` (constant time). */
export function verify(secret: Buffer, data: string, signature: string | undefined): boolean {
  if (signature === undefined || !/^[0-9a-f]{64}$/.test(signature)) return false;
  return timingSafeEqual(Buffer.from(sign(secret, data), 'hex'), Buffer.from(signature, 'hex'));
}

/**
 * The members' shared API secret: the file's content (trimmed), else `PGHA_API_SECRET`,
 * else null (failsafe mode cannot run: the agent says so once).
 *
 * @throws PghaError `invalid-option` for a file that cannot be read or a secret shorter than 16 characters.
 */
export function readApiSecret(file: string | undefined, env: string | undefined): Buffer | null {
  let text: string | undefined = env;
  if (file !== undefined) {
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new PghaError(
        'invalid-option',
        `cannot read --api-secret-file ${file}: ${(error as Error).message}; give a readable file holding the members' shared secret`,
        { cause: error },
      );
    }
  }
  if (text === undefined) return null;
  const secret = text.trim();
  if (secret.length < 16)
    throw new PghaError(
      'invalid-option',
      `the API secret (${file === undefined ? 'PGHA_API_SECRET' : file}) has ${secret.length} characters: use at least 16, e.g. openssl rand -hex 32`,
    );
  return Buffer.from(secret, 'utf8');
}

/** A new random secret for `pgha up` (hex, 64 characters). */
export function newApiSecret(): string {
  return randomBytes(32).toString('hex');
}

/** What the primary's rounds need to know, asked at each round. */
export interface PrimaryFacts {
  /** Holds the leader record, postgres writable and confirmed healthy, not fenced, keepalives stalled. */
  readonly eligible: boolean;
  readonly term: number;
  readonly timeline: number;
}

/** What {@link Failsafe} asks the agent (set once the agent's parts exist). */
export interface FailsafeHost {
  primaryFacts(): PrimaryFacts;
  memberFacts(): Omit<MemberFacts, 'cluster' | 'self' | 'stallThresholdMillis'>;
  /** After a round moved the deadline: re-arm the watchdog. */
  extended(): void;
}

export interface FailsafeOptions {
  readonly cluster: string;
  readonly name: string;
  readonly keys: ClusterKeys;
  readonly etcd: Etcd3;
  readonly secret: Buffer | null;
  /** The CA (PEM) the other members' `https://` APIs must present certificates of (`--api-ca`). */
  readonly apiCa?: string | null;
  readonly lease: LeaseTiming;
  /** The config record's `failsafeMode` as last read. */
  readonly enabled: () => boolean;
  /** How long a listed member may have no record before the leader forgets it (the member slots TTL). */
  readonly forgetAfterMillis: number;
  readonly clock: Clock;
  readonly log: Logger;
}

const never: Instant = { mono: Number.NEGATIVE_INFINITY, wall: Number.NEGATIVE_INFINITY };

/** Failsafe mode's rounds, promises and record; see the file header. */
export class Failsafe {
  host: FailsafeHost | null = null;
  private deadline: Instant = never;
  private promise: { end: Instant; leader: string; term: number } | null = null;
  /** The failsafe record as last read or written. */
  private record: FailsafeRecord | null = null;
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;
  private lastOutcome: string | null = null;
  private noSecretLogged = false;

  constructor(private readonly o: FailsafeOptions) {}

  private now(): Instant {
    return { mono: this.o.clock.now(), wall: this.o.clock.date().getTime() };
  }

  /** Whether failsafe mode is on (the `config` record's `failsafeMode`, as last read). */
  get enabled(): boolean {
    return this.o.enabled();
  }

  get stallThresholdMillis(): number {
    return stallThresholdMillis(this.o.lease.keepaliveIntervalMillis);
  }

  // ---- the primary's side ------------------------------------------------------

  /** Starts the rounds' timer (every keepalive interval; a round runs only when eligible). */
  start(): void {
    this.timer = setInterval(() => void this.round(), this.o.lease.keepaliveIntervalMillis);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Whether the failsafe deadline is ahead on both clocks. */
  valid(): boolean {
    return deadlineValid(this.deadline, this.now());
  }

  /** The failsafe deadline on the monotonic clock (−∞ when none). */
  deadlineMono(): number {
    return this.deadline.mono;
  }

  /** Forgets the deadline (a fence: nothing may extend a claim we gave up). */
  clear(): void {
    this.deadline = never;
  }

  private outcome(text: string, level: 'info' | 'warn' = 'info'): void {
    if (text === this.lastOutcome) return;
    this.lastOutcome = text;
    this.o.log[level](`failsafe: ${text}`);
  }

  private async round(): Promise<void> {
    const host = this.host;
    if (host === null || this.inFlight || !this.o.enabled()) return;
    const facts = host.primaryFacts();
    if (!facts.eligible) {
      if (this.lastOutcome !== null && this.lastOutcome !== 'idle')
        this.outcome('idle (keepalives acknowledged again, or no longer the leading primary)');
      this.lastOutcome = 'idle';
      return;
    }
    const secret = this.o.secret;
    if (secret === null) {
      if (!this.noSecretLogged)
        this.o.log.warn(
          'failsafe mode is on but no API secret is set (--api-secret-file or PGHA_API_SECRET): this primary fences when etcd is unreachable, as without failsafe mode',
        );
      this.noSecretLogged = true;
      return;
    }
    const record = this.record;
    if (record === null || record.leader !== this.o.name) {
      this.outcome('etcd unreachable and no failsafe record of ours is known: fencing at the lease deadline', 'warn');
      return;
    }
    this.inFlight = true;
    try {
      const others = record.members.filter((m) => m.name !== this.o.name);
      const sentAt = this.now();
      const request: FailsafeRequest = {
        cluster: this.o.cluster,
        leader: this.o.name,
        term: facts.term,
        timeline: facts.timeline,
        nonce: randomBytes(16).toString('hex'),
        promiseMillis: this.o.lease.ttlMillis,
      };
      const body = JSON.stringify(request);
      const timeout = 2 * this.o.lease.keepaliveIntervalMillis;
      const answers = await Promise.all(
        others.map((m) =>
          ask(m.api, body, request.nonce, secret, timeout, this.o.apiCa ?? null).then((a) => ({
            member: m.name,
            ...a,
          })),
        ),
      );
      const refused = answers.filter((a) => !a.confirmed);
      // Still eligible now? A fence or a lost record while the round ran must not be undone.
      if (refused.length === 0 && host.primaryFacts().eligible) {
        const next = failsafeDeadline(sentAt, request.promiseMillis, this.o.lease.fencingMarginMillis);
        this.deadline = later(this.deadline, next);
        host.extended();
        this.outcome(
          `etcd unreachable: ${others.length === 0 ? 'no other member is listed' : `all ${others.length} members promised`}; staying writable on promises (each round extends to send time + ${request.promiseMillis} − ${this.o.lease.fencingMarginMillis} ms)`,
        );
      } else if (refused.length > 0) {
        this.outcome(
          `etcd unreachable and not every member promised (${refused.map((a) => `${a.member}: ${a.reason}`).join('; ')}): fencing at the current deadline`,
          'warn',
        );
      }
    } finally {
      this.inFlight = false;
    }
  }

  // ---- the record ----------------------------------------------------------------

  /**
   * Reads the failsafe record (cached for the rounds) and, for the leader, writes the
   * one {@link decideFailsafeRecord} asks for, guarded by holding the leader record
   * (`leaseId`). Called with each report of the leading primary while failsafe mode is on.
   */
  async maintain(leaseId: string, term: number): Promise<void> {
    const [text, members] = await Promise.all([
      this.o.etcd.get(this.o.keys.failsafe).string(),
      this.o.etcd.getAll().prefix(this.o.keys.membersPrefix).strings(),
    ]);
    this.record = text === null ? null : this.parse(text);
    const records = Object.values(members).flatMap((v) => {
      try {
        return [MemberRecord.decode(v)];
      } catch {
        return [];
      }
    });
    const next = decideFailsafeRecord(
      this.record,
      { name: this.o.name, term },
      records,
      this.o.clock.date().getTime(),
      this.o.forgetAfterMillis,
    );
    if (next === null) return;
    const result = await this.o.etcd
      .if(this.o.keys.leader, 'Lease', '==', leaseId)
      .then(this.o.etcd.put(this.o.keys.failsafe).value(FailsafeRecord.encode(next)))
      .commit();
    if (result.succeeded) {
      if (this.record === null || this.record.term !== next.term || this.record.members.length !== next.members.length)
        this.o.log.info(
          `failsafe record for term ${next.term}: ${next.members.map((m) => `${m.name} ${m.api}`).join(', ')}`,
        );
      this.record = next;
    }
  }

  private parse(text: string): FailsafeRecord | null {
    try {
      return FailsafeRecord.decode(text);
    } catch (error) {
      this.o.log.warn(`ignoring the failsafe record: ${(error as Error).message}`);
      return null;
    }
  }

  // ---- installs --------------------------------------------------------------------

  /** The promise this member gave, while it runs. */
  promised(): { leader: string; term: number } | null {
    const p = this.promise;
    return p !== null && promiseRunning(p.end, this.now()) ? { leader: p.leader, term: p.term } : null;
  }

  /**
   * Why this member may not install a leader record now (null: it may), and the failsafe
   * record's ModRevision for the install's guard (null: no record). Reads the record.
   */
  async installCheck(): Promise<{ refusal: string | null; mod: string | null }> {
    const promised = this.promised();
    if (promised !== null)
      return { refusal: refuseInstall({ self: this.o.name, failsafeMode: true, record: null, promised }), mod: null };
    if (!this.o.enabled()) return { refusal: null, mod: null };
    const res = await this.o.etcd.get(this.o.keys.failsafe).exec();
    const kv = res.kvs[0];
    const record = kv === undefined ? null : this.parse(kv.value.toString());
    return {
      refusal: refuseInstall({ self: this.o.name, failsafeMode: true, record, promised: null }),
      mod: kv === undefined ? null : kv.mod_revision,
    };
  }

  // ---- the member's side: POST /failsafe ------------------------------------------

  /** Answers one `POST /failsafe` (see {@link handleFailsafe}). */
  answer(
    body: string,
    signature: string | undefined,
    receivedAt: Instant,
  ): { status: number; body: string; signature?: string } {
    const secret = this.o.secret;
    if (secret === null || !verify(secret, body, signature))
      return {
        status: 401,
        body: JSON.stringify({
          error:
            secret === null
              ? 'this member has no API secret (--api-secret-file or PGHA_API_SECRET): it answers no failsafe request'
              : 'not authenticated: the x-pgha-signature header must be the HMAC-SHA256 of the body under the members’ shared API secret',
        }),
      };
    let request: FailsafeRequest;
    try {
      request = parseRequest(body);
    } catch (error) {
      return { status: 400, body: JSON.stringify({ error: (error as Error).message }) };
    }
    const facts = this.host?.memberFacts();
    const answer =
      facts === undefined
        ? { confirmed: false as const, reason: 'this agent has not started' }
        : decideFailsafeAnswer(request, {
            ...facts,
            cluster: this.o.cluster,
            self: this.o.name,
            stallThresholdMillis: this.stallThresholdMillis,
          });
    if (answer.confirmed) {
      const end = promiseEnd(receivedAt, request.promiseMillis);
      const before = this.promise;
      this.promise =
        before === null
          ? { end, leader: request.leader, term: request.term }
          : { end: later(before.end, end), leader: request.leader, term: request.term };
      if (before === null || !promiseRunning(before.end, receivedAt))
        this.o.log.warn(
          `failsafe: promised ${request.leader} (term ${request.term}) not to take over for ${request.promiseMillis} ms (etcd unreachable from here too); renewed with each of its rounds`,
        );
    }
    const text = JSON.stringify({ member: this.o.name, nonce: request.nonce, ...answer });
    return { status: 200, body: text, signature: sign(secret, request.nonce + text) };
  }
}

function parseRequest(body: string): FailsafeRequest {
  const value = JSON.parse(body) as Record<string, unknown>;
  const ok =
    typeof value === 'object' &&
    value !== null &&
    typeof value.cluster === 'string' &&
    typeof value.leader === 'string' &&
    typeof value.nonce === 'string' &&
    value.nonce.length <= 128 &&
    Number.isSafeInteger(value.term) &&
    Number.isSafeInteger(value.timeline) &&
    Number.isSafeInteger(value.promiseMillis);
  if (!ok)
    throw new Error('malformed failsafe request: expected {cluster, leader, term, timeline, nonce, promiseMillis}');
  return value as unknown as FailsafeRequest;
}

/** One member's answer to a round, bounded by `timeoutMillis`; unreachable or unauthenticated counts as refused. */
async function ask(
  api: string,
  body: string,
  nonce: string,
  secret: Buffer,
  timeoutMillis: number,
  ca: string | null,
): Promise<{ confirmed: boolean; reason: string }> {
  try {
    const response = await postToMember(
      `${api}/failsafe`,
      body,
      { 'content-type': 'application/json', [signatureHeader]: sign(secret, body) },
      { ca, timeoutMillis },
    );
    const text = response.text.replace(/\n$/, '');
    if (response.status !== 200) return { confirmed: false, reason: `HTTP ${response.status}` };
    const signature = response.headers[signatureHeader];
    if (!verify(secret, nonce + text, typeof signature === 'string' ? signature : undefined))
      return { confirmed: false, reason: 'the answer is not authenticated (another API secret?)' };
    const answer = JSON.parse(text) as { nonce?: unknown; confirmed?: unknown; reason?: unknown };
    if (answer.nonce !== nonce) return { confirmed: false, reason: 'the answer is for another request' };
    return answer.confirmed === true
      ? { confirmed: true, reason: '' }
      : { confirmed: false, reason: String(answer.reason ?? 'refused') };
  } catch (error) {
    return {
      confirmed: false,
      reason: `unreachable (${['TimeoutError', 'AbortError'].includes((error as Error).name) ? `no answer within ${timeoutMillis} ms` : (error as Error).message})`,
    };
  }
}

/**
 * The health server's `POST /failsafe`: reads the body (at most 4 KiB), answers 401
 * without a valid signature (or without a secret, or without failsafe support), 400
 * for a malformed request, else 200 with `{member, nonce, confirmed, reason?}` and the
 * answer's signature over nonce + body.
 */
export function handleFailsafe(
  req: IncomingMessage,
  res: ServerResponse,
  failsafe: Failsafe | null,
  clock: Clock,
): void {
  const receivedAt = { mono: clock.now(), wall: clock.date().getTime() };
  const reply = (status: number, text: string, signature?: string) => {
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text) + 1,
      'cache-control': 'no-store',
      ...(signature === undefined ? {} : { [signatureHeader]: signature }),
    });
    res.end(`${text}\n`);
  };
  if (req.method !== 'POST') {
    res.setHeader('allow', 'POST');
    reply(405, JSON.stringify({ error: `method ${req.method} not allowed: use POST` }));
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= maxBodyBytes) chunks.push(chunk);
  });
  req.on('error', () => undefined);
  req.on('end', () => {
    try {
      if (size > maxBodyBytes) {
        reply(413, JSON.stringify({ error: `body over ${maxBodyBytes} bytes` }));
        return;
      }
      const header = req.headers[signatureHeader];
      const signature = typeof header === 'string' ? header : undefined;
      if (failsafe === null) {
        reply(401, JSON.stringify({ error: 'this member answers no failsafe request (no API secret)' }));
        return;
      }
      const a = failsafe.answer(Buffer.concat(chunks).toString('utf8'), signature, receivedAt);
      // Signed without the trailing newline (the client strips it).
      reply(a.status, a.body, a.signature);
    } catch {
      if (!res.headersSent) reply(500, JSON.stringify({ error: 'internal error' }));
    }
  });
}

/**
 * The reclaim (etcd back, our lease gone, our failsafe deadline still valid): one
 * transaction guarded by "no leader record, term unchanged since we led" puts a leader
 * record for term+1 naming us, writable, on the same timeline (postgres is writable
 * already: no promotion), the term, and a sync claim copying ours (`sync` when it is
 * our claim of `held.term`). Returns what was written, or why not (someone else was
 * installed: the caller fences). etcd errors pass through (the caller reads back).
 */
export async function reclaimLeaderRecord(
  etcd: Etcd3,
  keys: ClusterKeys,
  held: LeaderRecord,
  sync: SyncRecord | null,
  leaseId: string,
  now: Date,
): Promise<{ record: LeaderRecord; sync: SyncRecord } | string> {
  const termRes = await etcd.get(keys.term).exec();
  const kv = termRes.kvs[0];
  const current = kv === undefined ? 0 : TermRecord.decode(kv.value.toString()).term;
  if (kv === undefined || current !== held.term) return `the term moved from ${held.term} to ${current}`;
  const term = held.term + 1;
  const record: LeaderRecord = { ...held, term, since: now.toISOString(), writable: true };
  const claim = sync !== null && sync.term === held.term && sync.member === held.member ? sync : null;
  const nextSync: SyncRecord = {
    v: recordVersion,
    term,
    member: held.member,
    standbys: claim === null ? [] : [...claim.standbys],
    quorum: claim?.quorum ?? 0,
    strict: claim?.strict ?? false,
    at: record.since,
  };
  const result = await etcd
    .if(keys.leader, 'Create', '==', 0)
    .and(keys.term, 'Mod', '==', kv.mod_revision)
    .then(
      etcd.put(keys.leader).value(LeaderRecord.encode(record)).lease(leaseId),
      etcd.put(keys.term).value(TermRecord.encode({ v: recordVersion, term })),
      etcd.put(keys.sync).value(SyncRecord.encode(nextSync)),
    )
    .commit();
  return result.succeeded ? { record, sync: nextSync } : `another leader was installed for term ${term} meanwhile`;
}
