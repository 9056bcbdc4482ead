/**
 * Failsafe mode (issue 14): riding out an etcd outage. Pure parts — the failsafe
 * record the leader keeps, a member's answer to a primary's request for a promise,
 * the window arithmetic, and whether a member may install a leader record. The shell
 * is agent/failsafe.ts; the design and its safety argument are in docs/architecture.md,
 * "Failsafe mode (issue 14)".
 *
 * Safety (tested in failsafe.test.ts):
 * - A primary's failsafe deadline is `s + promiseMillis − margin` for a round sent at
 *   `s`; every member that confirmed it received the request at `r ≥ s` and promised
 *   until `r + promiseMillis`, so the primary's window ends at least `margin` before
 *   every promise does.
 * - A member under a promise does not install a leader record (nor promote, which
 *   needs the install).
 * - While failsafe mode is on and a failsafe record exists, a member it does not name
 *   does not install a leader record (the primary never asked it for a promise).
 */
import type { FailsafeRecord, MemberRecord } from '@pgha/core';
import { recordVersion } from '@pgha/core';

/** The minimum time without an acknowledged keepalive that counts as "cannot reach etcd". */
export function stallThresholdMillis(keepaliveIntervalMillis: number): number {
  // The same as LeaseKeeper's stream stall: two intervals, at least 500 ms.
  return Math.max(500, 2 * keepaliveIntervalMillis);
}

// ---- the record --------------------------------------------------------------

/** What {@link decideFailsafeRecord} needs of a member record. */
export type FailsafeMemberFacts = Pick<MemberRecord, 'name' | 'api'>;

/**
 * The failsafe record the leader should hold, or null when the stored one is right as
 * it is (no write: the leader calls this every report and writes only on a change).
 *
 * Every member with a member record and an `api` is listed (the leader too), with its
 * current api. A listed member without a record is kept until it has had none for
 * `forgetAfterMillis` (the member slots TTL: a member that restarts, or whose lease ran
 * out in an outage, stays asked). `lastSeen` is refreshed only when it is older than a
 * tenth of that, so a stable cluster does not rewrite the record; a member is forgotten
 * only when `lastSeen` is older than `forgetAfterMillis` plus that tenth (never early).
 *
 * @param now wall-clock milliseconds (lastSeen is a wall-clock timestamp: it is read by
 *   the next leader, on another host).
 */
export function decideFailsafeRecord(
  previous: FailsafeRecord | null,
  leader: { readonly name: string; readonly term: number },
  memberRecords: readonly FailsafeMemberFacts[],
  now: number,
  forgetAfterMillis: number,
): FailsafeRecord | null {
  const refreshMillis = forgetAfterMillis / 10;
  const sameLeadership = previous !== null && previous.term === leader.term && previous.leader === leader.name;
  const old = new Map((previous?.members ?? []).map((m) => [m.name, m]));
  const nowText = new Date(now).toISOString();
  const members: FailsafeRecord['members'][number][] = [];
  const present = new Set<string>();
  for (const record of memberRecords) {
    if (record.api === undefined || present.has(record.name)) continue;
    present.add(record.name);
    const before = old.get(record.name);
    const fresh = before !== undefined && now - Date.parse(before.lastSeen) < refreshMillis;
    members.push({ name: record.name, api: record.api, lastSeen: fresh ? before.lastSeen : nowText });
  }
  for (const before of previous?.members ?? []) {
    if (present.has(before.name)) continue;
    if (now - Date.parse(before.lastSeen) > forgetAfterMillis + refreshMillis) continue; // forgotten
    members.push(before);
  }
  if (members.length === 0) return null;
  members.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const next: FailsafeRecord = { v: recordVersion, term: leader.term, leader: leader.name, members };
  if (sameLeadership && sameMembers(previous.members, members)) return null;
  return next;
}

function sameMembers(a: FailsafeRecord['members'], b: FailsafeRecord['members']): boolean {
  if (a.length !== b.length) return false;
  const byName = new Map(a.map((m) => [m.name, m]));
  return b.every((m) => {
    const o = byName.get(m.name);
    return o !== undefined && o.api === m.api && o.lastSeen === m.lastSeen;
  });
}

// ---- installing a leader record ------------------------------------------------

/** What decides whether this member may install a leader record now. */
export interface InstallFacts {
  readonly self: string;
  /** The config record's `failsafeMode`. */
  readonly failsafeMode: boolean;
  /** The stored failsafe record, null when none. */
  readonly record: FailsafeRecord | null;
  /** Whether a promise this member gave a primary is still running (see {@link promiseRunning}). */
  readonly promised: { readonly leader: string; readonly term: number } | null;
}

/** Null when the install may go ahead, else why not (logged by the shell). */
export function refuseInstall(f: InstallFacts): string | null {
  if (f.promised !== null)
    return `this member promised ${f.promised.leader} (term ${f.promised.term}) in failsafe mode not to take over while etcd was unreachable; the promise has not run out`;
  if (f.failsafeMode && f.record !== null && !f.record.members.some((m) => m.name === f.self))
    return `failsafe mode is on and the failsafe record (term ${f.record.term}, leader ${f.record.leader}) does not name this member: the primary could not have asked it for a promise; it may install once the leader lists it (it needs a member record with an api)`;
  return null;
}

// ---- a member's answer -----------------------------------------------------------

/** The body of a `POST /failsafe` (authenticated by an HMAC of the shell's). */
export interface FailsafeRequest {
  readonly cluster: string;
  readonly leader: string;
  readonly term: number;
  readonly timeline: number;
  readonly nonce: string;
  readonly promiseMillis: number;
}

/** What a member knows when a primary asks it for a promise. */
export interface MemberFacts {
  readonly cluster: string;
  readonly self: string;
  /** The agent's label of its postgres. */
  readonly postgres: 'down' | 'starting' | 'primary' | 'replica';
  /** The last status query: true in recovery, null when it did not answer (or too long ago). */
  readonly observedInRecovery: boolean | null;
  readonly holdsLeader: boolean;
  /** Installing a leader record or promoting right now. */
  readonly takingOver: boolean;
  /** The leader record of the member's last read cluster view. */
  readonly viewLeader: { readonly member: string; readonly term: number } | null;
  /** Milliseconds since its own lease keeper last had a keepalive acknowledged. */
  readonly sinceLastAckMillis: number;
  readonly stallThresholdMillis: number;
}

/** A member's answer: a promise, or why not. */
export type FailsafeAnswer = { readonly confirmed: true } | { readonly confirmed: false; readonly reason: string };

/**
 * Whether this member promises `request.leader` not to take over for
 * `request.promiseMillis`. Every condition must hold; the first that does not is the
 * reason. The last one — this member cannot reach etcd either — limits failsafe to
 * real etcd outages: a primary cut off from etcd alone must fence, and the normal
 * failover runs (clients follow etcd).
 */
export function decideFailsafeAnswer(request: FailsafeRequest, f: MemberFacts): FailsafeAnswer {
  const no = (reason: string): FailsafeAnswer => ({ confirmed: false, reason });
  if (request.cluster !== f.cluster) return no(`wrong cluster: this member belongs to ${f.cluster}`);
  if (request.leader === f.self) return no('a member does not promise itself');
  if (!Number.isSafeInteger(request.promiseMillis) || request.promiseMillis <= 0 || request.promiseMillis > 600_000)
    return no(`promiseMillis ${request.promiseMillis} is not between 1 and 600000`);
  if (f.holdsLeader) return no('this member holds the leader record');
  if (f.takingOver) return no('this member is installing a leader record or promoting');
  if (f.postgres !== 'replica' || f.observedInRecovery !== true)
    return no(`this member's postgres is not a running replica (${f.postgres}, in recovery: ${f.observedInRecovery})`);
  if (f.viewLeader === null) return no('this member last read no leader record');
  if (f.viewLeader.member !== request.leader || f.viewLeader.term !== request.term)
    return no(
      `this member last read ${f.viewLeader.member} as leader in term ${f.viewLeader.term}, not ${request.leader} in term ${request.term}`,
    );
  if (f.sinceLastAckMillis <= f.stallThresholdMillis)
    return no('etcd is reachable from here: the primary alone is cut off; it must fence');
  return { confirmed: true };
}

// ---- the windows ------------------------------------------------------------------

/** A time on both clocks (monotonic and wall, milliseconds). */
export interface Instant {
  readonly mono: number;
  readonly wall: number;
}

/**
 * The primary's failsafe deadline after a round sent at `sentAt` that every member
 * confirmed: `s + promiseMillis − margin` on both clocks.
 */
export function failsafeDeadline(sentAt: Instant, promiseMillis: number, marginMillis: number): Instant {
  return { mono: sentAt.mono + promiseMillis - marginMillis, wall: sentAt.wall + promiseMillis - marginMillis };
}

/** The end of a promise received at `receivedAt`: `r + promiseMillis` on both clocks. */
export function promiseEnd(receivedAt: Instant, promiseMillis: number): Instant {
  return { mono: receivedAt.mono + promiseMillis, wall: receivedAt.wall + promiseMillis };
}

/** The primary's deadline is valid only while *both* clocks are before it (a suspended VM's monotonic clock stands still). */
export function deadlineValid(deadline: Instant, now: Instant): boolean {
  return now.mono < deadline.mono && now.wall < deadline.wall;
}

/** A promise runs until *both* clocks are past its end (the conservative side for the member). */
export function promiseRunning(end: Instant, now: Instant): boolean {
  return now.mono < end.mono || now.wall < end.wall;
}

/** The later of two instants, per clock. */
export function later(a: Instant, b: Instant): Instant {
  return { mono: Math.max(a.mono, b.mono), wall: Math.max(a.wall, b.wall) };
}
