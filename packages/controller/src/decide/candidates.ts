import { compareLsn, type LsnText, type MemberRecord } from '@pgha/core';

/** What ranking needs besides the member records. */
export interface RankingPolicy {
  /** Skip members more than this many bytes behind the most advanced known position. */
  readonly maximumLagOnFailoverBytes: number;
  /** The old primary's last known WAL position, when the controller saw one. */
  readonly lastPrimaryLsn: LsnText | null;
  /** Members that must not be chosen (the old primary, a failed target). */
  readonly exclude: ReadonlySet<string>;
  /**
   * The last primary's timeline, from its durable `last-primary` record of the
   * current term: members on an older one are never candidates, even when no member
   * reports that timeline. Members on a newer one forked out of band (pgha promotes
   * only in a new term, and that primary's record names its timeline): they are
   * candidates only when no member on the last primary's timeline qualifies, and do
   * not make that timeline look old.
   */
  readonly minimumTimeline?: number | null;
  /**
   * A position every candidate must hold (received, else replayed): the last
   * primary's clean shutdown checkpoint, past which nothing was acknowledged.
   */
  readonly mustHold?: LsnText | null;
  /** Skip replicas whose WAL receiver is not streaming from the primary (switchover). */
  readonly requireStreaming?: boolean;
  /** Skip members whose report is older than this (wall-clock ms; switchover ranks on fresh data only). */
  readonly reportedSince?: number | null;
}

/** A member ranking skipped, and why. */
export interface Rejection {
  readonly member: string;
  readonly reason: string;
}

/** The outcome of {@link rankCandidates}. */
export interface Ranking {
  /** Best first. */
  readonly candidates: readonly MemberRecord[];
  readonly rejected: readonly Rejection[];
}

function lagBehind(ahead: LsnText, behind: LsnText | null): number {
  if (behind === null) return Number.POSITIVE_INFINITY;
  const [ah, al] = ahead.split('/').map((h) => Number.parseInt(h, 16)) as [number, number];
  const [bh, bl] = behind.split('/').map((h) => Number.parseInt(h, 16)) as [number, number];
  return Math.max(0, (ah - bh) * 2 ** 32 + (al - bl));
}

/**
 * Orders the members that may become primary, best first (contract line 4): by
 * received LSN, then replayed LSN, then name. Pure.
 *
 * Skipped, each with its reason: members excluded by the caller, not running as a
 * healthy-enough replica, tagged noFailover, on an older timeline than the newest
 * any member reports or than `minimumTimeline`, on a timeline forked out of band
 * (newer than `minimumTimeline`), not streaming (`requireStreaming`),
 * reported before `reportedSince`, short of `mustHold`, or lagging more than
 * `maximumLagOnFailoverBytes` behind the most advanced position known (the old
 * primary's last known one, or the best replica's).
 */
export function rankCandidates(members: readonly MemberRecord[], policy: RankingPolicy): Ranking {
  // A timeline newer than the last primary's was forked out of band. Members on the
  // last primary's line are preferred; only when none qualifies (every member that
  // could lead followed the fork: standbys follow their upstream's promotion) is the
  // fork ranked as the cluster's line, as it was before forks were told apart.
  const lastTimeline = policy.minimumTimeline ?? null;
  const onFork = (m: MemberRecord) => lastTimeline !== null && m.timeline !== null && m.timeline > lastTimeline;
  if (!members.some(onFork)) return rank(members, policy, () => false);
  const onLine = rank(members, policy, onFork);
  return onLine.candidates.length > 0 ? onLine : rank(members, policy, () => false);
}

function rank(members: readonly MemberRecord[], policy: RankingPolicy, forked: (m: MemberRecord) => boolean): Ranking {
  const rejected: Rejection[] = [];
  const lastTimeline = policy.minimumTimeline ?? null;
  const newestTimeline = Math.max(0, ...members.filter((m) => !forked(m)).map((m) => m.timeline ?? 0));
  const eligible = members.filter((m) => {
    const reject = (reason: string) => {
      rejected.push({ member: m.name, reason });
      return false;
    };
    if (policy.exclude.has(m.name)) return reject('excluded (old primary or failed target)');
    if (m.tags.noFailover === true) return reject('tagged noFailover');
    if (m.role !== 'replica') return reject(`role is ${m.role}, not replica`);
    if (m.state !== 'running') return reject(`state is ${m.state}`);
    if (m.receivedLsn === null && m.replayedLsn === null) return reject('reports no WAL position');
    if (forked(m)) {
      return reject(
        `on timeline ${m.timeline}, newer than the last primary's ${lastTimeline}: promoted outside pgha, it follows the elected primary after a rewind`,
      );
    }
    if (m.timeline === null || m.timeline < newestTimeline) {
      return reject(`on timeline ${m.timeline ?? 'unknown'}, older than ${newestTimeline}`);
    }
    const minimumTimeline = policy.minimumTimeline ?? null;
    if (minimumTimeline !== null && m.timeline < minimumTimeline) {
      return reject(`on timeline ${m.timeline}, older than the last primary's ${minimumTimeline}`);
    }
    if (policy.requireStreaming === true && !m.streaming) return reject('not streaming from the primary');
    const since = policy.reportedSince ?? null;
    if (since !== null && Date.parse(m.updatedAt) < since) return reject(`report is stale (updated ${m.updatedAt})`);
    const mustHold = policy.mustHold ?? null;
    if (mustHold !== null && compareLsn((m.receivedLsn ?? m.replayedLsn)!, mustHold) < 0) {
      return reject(
        `holds ${m.receivedLsn ?? m.replayedLsn}, short of the last primary's clean shutdown position ${mustHold}`,
      );
    }
    return true;
  });
  const position = (m: MemberRecord): LsnText => (m.receivedLsn ?? m.replayedLsn)!;
  let mostAdvanced = policy.lastPrimaryLsn;
  for (const m of eligible)
    if (mostAdvanced === null || compareLsn(position(m), mostAdvanced) > 0) mostAdvanced = position(m);
  const withinLag = eligible.filter((m) => {
    const lag = mostAdvanced === null ? 0 : lagBehind(mostAdvanced, position(m));
    if (lag > policy.maximumLagOnFailoverBytes) {
      rejected.push({
        member: m.name,
        reason: `${lag} bytes behind, over maximumLagOnFailoverBytes ${policy.maximumLagOnFailoverBytes}`,
      });
      return false;
    }
    return true;
  });
  const candidates = [...withinLag].sort((a, b) => {
    const byReceived = compareLsn(position(b), position(a));
    if (byReceived !== 0) return byReceived;
    const byReplayed = compareLsn(b.replayedLsn ?? '0/0', a.replayedLsn ?? '0/0');
    if (byReplayed !== 0) return byReplayed;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
  return { candidates, rejected };
}
