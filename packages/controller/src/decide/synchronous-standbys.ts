import { compareLsn, type LsnText, type SynchronousMode, type SyncRecord } from '@pgha/core';

/**
 * Synchronous quorum replication, the primary's side: which standbys postgres waits
 * for (`synchronous_standby_names`) and what the primary claims in etcd (the `sync`
 * record), and in which order they change. Pure.
 *
 * A claim `(standbys E, quorum k)` says: every commit this primary acknowledged in its
 * term is flushed on at least k members of E (k = 0 claims nothing). An election after
 * this primary is lost counts fresh positions from |E| − k + 1 members of E: any k of E
 * hold the newest acknowledged commit and any |E| − k + 1 of E include one of those,
 * so the most advanced of them holds every acknowledged commit.
 *
 * The invariant — the published claim is true at every moment — is kept by ordering
 * each change from postgres's setting (S, m) to a new one (S', m'):
 * 1. publish the weaker claim (E ∪ S ∪ S', min(k, m, m')), which the old claim, the old
 *    setting and the new setting all imply;
 * 2. apply (S', m') to postgres (pgha.conf, reload);
 * 3. once every walsender shows the new setting (its `sync_priority`) and it has held
 *    for `settleMillis`, note the primary's WAL position L; once m' members of S' have
 *    flushed L, every commit acknowledged before the change is on m' of S' too, and
 *    every later one by the setting: publish (S', m').
 * Weakening a claim is always safe, so it is published first; a stronger claim is
 * published only after it holds.
 */

/** A walsender as `pg_stat_replication` shows it. */
export interface ReplicationConnection {
  /** Its application_name: the member name for pgha's standbys. */
  readonly member: string;
  readonly state: string;
  readonly flushLsn: LsnText | null;
  /** 0: not a synchronous candidate under the walsender's current setting. */
  readonly syncPriority: number;
}

/**
 * What postgres waits for: `ANY quorum (standbys)`; quorum 0 is no synchronous
 * replication (''), and `standbys` empty with quorum > 0 is `ANY quorum (*)` (strict
 * mode with no known standby: commits wait for any standby to connect).
 */
export interface SynchronousSetting {
  readonly standbys: readonly string[];
  readonly quorum: number;
}

/** A published claim (the `sync` record's standbys and quorum). */
export interface SynchronousClaim {
  readonly standbys: readonly string[];
  readonly quorum: number;
}

/** A setting applied and not yet confirmed by a published claim. */
export interface PendingSetting {
  readonly setting: SynchronousSetting;
  /** Since when every walsender has shown the setting (clock ms); null until then. */
  readonly effectiveSince: number | null;
  /** The primary's position once the setting settled: the catch-up mark. */
  readonly mark: LsnText | null;
}

export interface SynchronousSnapshot {
  readonly mode: SynchronousMode;
  /** The n of `ANY n`. */
  readonly count: number;
  readonly strict: boolean;
  /** The other members that have a member record (the names standbys can have). */
  readonly members: readonly string[];
  /** The claim in etcd for this primary's term; null when none (claims nothing). */
  readonly published: SynchronousClaim | null;
  /** What postgres is configured with now. */
  readonly configured: SynchronousSetting;
  readonly pending: PendingSetting | null;
  readonly connections: readonly ReplicationConnection[];
  /**
   * Members counted as streaming although their walsender is not (yet): those that
   * streamed a moment ago (a restart, a reconnect) and, for a new primary, those of
   * its first claim while they re-point to it. Without this grace a new primary would
   * go asynchronous at its first report, before its standbys reconnect; with it,
   * commits wait for them for a bounded time instead.
   */
  readonly recentlyStreaming?: readonly string[];
  /** The primary's current WAL position. */
  readonly currentLsn: LsnText | null;
  readonly now: number;
  /** How long every walsender must show a new setting before the mark is taken (the checkpointer reloads too). */
  readonly settleMillis: number;
}

export type SynchronousAction =
  | { readonly type: 'publish'; readonly claim: SynchronousClaim; readonly why: string }
  | { readonly type: 'apply'; readonly setting: SynchronousSetting; readonly why: string };

export interface SynchronousDecision {
  /** In order; the shell stops at the first that fails (the next pass decides again). */
  readonly actions: readonly SynchronousAction[];
  readonly pending: PendingSetting | null;
  /** The setting wanted now. */
  readonly desired: SynchronousSetting;
  /** Why commits are not protected as configured, or null (status, log). */
  readonly degraded: string | null;
}

const sorted = (names: Iterable<string>): string[] => [...new Set(names)].sort();

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = sorted(a);
  const y = sorted(b);
  return x.length === y.length && x.every((n, i) => n === y[i]);
}

export function sameSetting(a: SynchronousSetting, b: SynchronousSetting): boolean {
  if (a.quorum === 0 && b.quorum === 0) return true;
  return a.quorum === b.quorum && sameSet(a.standbys, b.standbys);
}

function sameClaim(a: SynchronousClaim, b: SynchronousClaim): boolean {
  return sameSetting(a, b);
}

/**
 * Whether `weak` follows from `strong`: a commit on `strong.quorum` of its standbys is
 * on at least that many minus those not in `weak.standbys` of `weak`'s.
 */
export function claimImplies(strong: SynchronousClaim, weak: SynchronousClaim): boolean {
  if (weak.quorum === 0) return true;
  const outside = strong.standbys.filter((n) => !weak.standbys.includes(n)).length;
  return weak.quorum <= strong.quorum - outside;
}

/** The claim a setting makes once it holds (a `*` setting names nobody and claims nothing). */
export function claimOf(setting: SynchronousSetting): SynchronousClaim {
  if (setting.quorum === 0 || setting.standbys.length === 0) return { standbys: [], quorum: 0 };
  return { standbys: sorted(setting.standbys), quorum: Math.min(setting.quorum, setting.standbys.length) };
}

/** `synchronous_standby_names` for a setting. Member names are DNS labels: quoted, they need no escaping. */
export function renderSynchronousStandbyNames(setting: SynchronousSetting): string {
  if (setting.quorum === 0) return '';
  if (setting.standbys.length === 0) return `ANY ${setting.quorum} (*)`;
  return `ANY ${setting.quorum} (${sorted(setting.standbys)
    .map((n) => `"${n}"`)
    .join(', ')})`;
}

/**
 * The setting the configuration asks for, given which standbys stream now, and what
 * is degraded about it. Quorum mode waits for `count` of the streaming standbys; with
 * fewer, strict mode keeps waiting for `count` of every known member (commits block
 * until enough return) and otherwise it waits for those that stream (asynchronous when
 * none does).
 */
export function desiredSetting(
  s: Pick<SynchronousSnapshot, 'mode' | 'count' | 'strict' | 'members' | 'connections' | 'recentlyStreaming'>,
): { setting: SynchronousSetting; degraded: string | null } {
  if (s.mode === 'off') return { setting: { standbys: [], quorum: 0 }, degraded: null };
  const streaming = sorted([
    ...s.connections.filter((c) => c.state === 'streaming' && s.members.includes(c.member)).map((c) => c.member),
    ...(s.recentlyStreaming ?? []).filter((m) => s.members.includes(m)),
  ]);
  if (streaming.length >= s.count) return { setting: { standbys: streaming, quorum: s.count }, degraded: null };
  const short = `${streaming.length} of the ${s.count} synchronous standbys required stream${streaming.length === 1 ? 's' : ''}${streaming.length > 0 ? ` (${streaming.join(', ')})` : ''}`;
  if (s.strict) {
    return {
      setting: { standbys: sorted([...streaming, ...s.members]), quorum: s.count },
      degraded: `${short}: strict mode, commits wait until ${s.count} confirm`,
    };
  }
  if (streaming.length === 0)
    return { setting: { standbys: [], quorum: 0 }, degraded: `${short}: asynchronous until one streams` };
  return {
    setting: { standbys: streaming, quorum: streaming.length },
    degraded: `${short}: commits wait for ${streaming.length}`,
  };
}

/** Whether every walsender's priority shows `setting` (listed: > 0, others: 0). */
function showsSetting(setting: SynchronousSetting, connections: readonly ReplicationConnection[]): boolean {
  const everyone = setting.quorum > 0 && setting.standbys.length === 0;
  return connections.every((c) => {
    const listed = setting.quorum > 0 && (everyone || setting.standbys.includes(c.member));
    return listed ? c.syncPriority > 0 : c.syncPriority === 0;
  });
}

/** The next steps of the primary's synchronous replication (see the module comment). */
export function decideSynchronousStandbys(s: SynchronousSnapshot): SynchronousDecision {
  const { setting: desired, degraded } = desiredSetting(s);
  const published = s.published ?? { standbys: [], quorum: 0 };
  const actions: SynchronousAction[] = [];
  if (!sameSetting(s.configured, desired)) {
    const quorum = Math.min(published.quorum, claimOf(s.configured).quorum, claimOf(desired).quorum);
    const weaker: SynchronousClaim =
      quorum === 0
        ? { standbys: [], quorum: 0 }
        : { standbys: sorted([...published.standbys, ...s.configured.standbys, ...desired.standbys]), quorum };
    if (!sameClaim(weaker, published))
      actions.push({ type: 'publish', claim: weaker, why: 'before changing the synchronous standbys' });
    actions.push({
      type: 'apply',
      setting: desired,
      why: `synchronous_standby_names '${renderSynchronousStandbyNames(desired)}' (was '${renderSynchronousStandbyNames(s.configured)}')`,
    });
    return { actions, pending: { setting: desired, effectiveSince: null, mark: null }, desired, degraded };
  }
  const target = claimOf(desired);
  if (sameClaim(target, published)) return { actions, pending: null, desired, degraded };
  if (claimImplies(published, target)) {
    // It follows from what is published: true already.
    actions.push({ type: 'publish', claim: target, why: 'a weaker claim' });
    return { actions, pending: null, desired, degraded };
  }
  // A stronger claim: only once the setting is in force and the standbys caught up.
  let pending: PendingSetting =
    s.pending !== null && sameSetting(s.pending.setting, desired)
      ? s.pending
      : { setting: desired, effectiveSince: null, mark: null };
  if (!showsSetting(desired, s.connections))
    return { actions, pending: { ...pending, effectiveSince: null, mark: null }, desired, degraded };
  if (pending.effectiveSince === null) pending = { ...pending, effectiveSince: s.now };
  if (pending.mark === null) {
    if (s.now - pending.effectiveSince! < s.settleMillis || s.currentLsn === null)
      return { actions, pending, desired, degraded };
    pending = { ...pending, mark: s.currentLsn };
  }
  const mark = pending.mark!;
  const caughtUp = s.connections.filter(
    (c) => target.standbys.includes(c.member) && c.flushLsn !== null && compareLsn(c.flushLsn, mark) >= 0,
  );
  if (new Set(caughtUp.map((c) => c.member)).size < target.quorum) return { actions, pending, desired, degraded };
  actions.push({
    type: 'publish',
    claim: target,
    why: `${caughtUp.map((c) => c.member).join(', ')} flushed ${mark} under the new setting`,
  });
  return { actions, pending: null, desired, degraded };
}

/**
 * The setting and claim a member takes the leader record with (before it can write):
 * every other member it knows may be a standby, so quorum mode waits for `count` of
 * them (strict: `count` of any standby when it knows none) and claims it in the same
 * transaction as the leader record; the primary narrows it to the streaming standbys
 * at its first report. Off mode (and a bootstrap) claims nothing.
 */
export function initialSynchronousSetting(s: Pick<SynchronousSnapshot, 'mode' | 'count' | 'strict' | 'members'>): {
  setting: SynchronousSetting;
  claim: SynchronousClaim;
} {
  if (s.mode === 'off') return { setting: { standbys: [], quorum: 0 }, claim: { standbys: [], quorum: 0 } };
  const standbys = sorted(s.members);
  if (standbys.length === 0) {
    const setting = s.strict ? { standbys: [], quorum: s.count } : { standbys: [], quorum: 0 };
    return { setting, claim: { standbys: [], quorum: 0 } };
  }
  const setting = { standbys, quorum: s.strict ? s.count : Math.min(s.count, standbys.length) };
  return { setting, claim: claimOf(setting) };
}

/**
 * What postgres waits for before a promotion whose leader record is already held is
 * finished (the agent restarted between the install and `pg_promote`): what our
 * published claim of this term names, `count` of them in strict mode; nothing when
 * there is no claim of ours for the term (then nothing was claimed either).
 */
export function promotionSetting(s: {
  readonly self: string;
  readonly term: number | null;
  readonly published: SyncRecord | null;
  readonly count: number;
}): SynchronousSetting {
  const sync = s.published;
  if (sync === null || sync.term !== s.term || sync.member !== s.self) return { standbys: [], quorum: 0 };
  return { standbys: sync.standbys, quorum: sync.strict ? Math.max(s.count, sync.quorum) : sync.quorum };
}
