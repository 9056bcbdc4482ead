import type { MemberRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { member } from './__fixtures__/records.js';
import { type RankingPolicy, rankCandidates } from './candidates.js';

// Literal fixtures built with small override factories.

function policy(overrides: Partial<RankingPolicy> = {}): RankingPolicy {
  return {
    maximumLagOnFailoverBytes: 16 * 1024 * 1024,
    lastPrimaryLsn: null,
    exclude: new Set(),
    ...overrides,
  };
}

const names = (members: readonly MemberRecord[]) => members.map((m) => m.name);

describe('rankCandidates ordering', () => {
  it('puts the member that received the most WAL first', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', receivedLsn: '0/5000000', replayedLsn: '0/5000000' }),
        member({ name: 'demo-2', receivedLsn: '0/6000000', replayedLsn: '0/4000000' }),
        member({ name: 'demo-3', receivedLsn: '0/5800000', replayedLsn: '0/5800000' }),
      ],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2', 'demo-3', 'demo-1']);
    expect(ranking.rejected).toEqual([]);
  });

  it('compares received positions across the 32-bit halves of the LSN', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/FFFFFFFF' }), member({ name: 'demo-2', receivedLsn: '1/0' })],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2', 'demo-1']);
  });

  it('breaks a tie on received WAL by the replayed position', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', receivedLsn: '0/5000000', replayedLsn: '0/4000000' }),
        member({ name: 'demo-2', receivedLsn: '0/5000000', replayedLsn: '0/4800000' }),
      ],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2', 'demo-1']);
  });

  it('breaks a tie on both positions by name', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-3' }), member({ name: 'demo-1' }), member({ name: 'demo-2' })],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-1', 'demo-2', 'demo-3']);
  });

  it('ranks a member that reports only a replayed position by that position', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', receivedLsn: null, replayedLsn: '0/7000000' }),
        member({ name: 'demo-2', receivedLsn: '0/6000000', replayedLsn: '0/6000000' }),
      ],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-1', 'demo-2']);
  });

  it('does not depend on the order the records arrive in', () => {
    const members = [
      member({ name: 'demo-1', receivedLsn: '0/5000000', replayedLsn: '0/4000000' }),
      member({ name: 'demo-2', receivedLsn: '0/5000000', replayedLsn: '0/5000000' }),
      member({ name: 'demo-3', receivedLsn: '0/6000000', replayedLsn: '0/1000000' }),
      member({ name: 'demo-0', receivedLsn: '0/5000000', replayedLsn: '0/5000000' }),
    ];
    const expected = ['demo-3', 'demo-0', 'demo-2', 'demo-1'];
    expect(names(rankCandidates(members, policy()).candidates)).toEqual(expected);
    expect(names(rankCandidates([...members].reverse(), policy()).candidates)).toEqual(expected);
  });

  it('returns no candidate and no rejection when no member reports', () => {
    expect(rankCandidates([], policy())).toEqual({ candidates: [], rejected: [] });
  });
});

describe('rankCandidates rejections', () => {
  it('skips a member the caller excludes (the old primary, a failed target)', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/9000000' }), member({ name: 'demo-2' })],
      policy({ exclude: new Set(['demo-1']) }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'excluded (old primary or failed target)' }]);
  });

  it('skips a member tagged noFailover however advanced it is', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/9000000', tags: { noFailover: true } }), member({ name: 'demo-2' })],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'tagged noFailover' }]);
  });

  it('keeps a member whose noFailover tag is explicitly false', () => {
    expect(names(rankCandidates([member({ tags: { noFailover: false } })], policy()).candidates)).toEqual(['demo-1']);
  });

  it('skips a member that is not running as a replica', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', role: 'primary' }),
        member({ name: 'demo-2', role: 'unknown' }),
        member({ name: 'demo-3' }),
      ],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-3']);
    expect(ranking.rejected).toEqual([
      { member: 'demo-1', reason: 'role is primary, not replica' },
      { member: 'demo-2', reason: 'role is unknown, not replica' },
    ]);
  });

  it('skips a replica that is not in the running state', () => {
    for (const state of ['initializing', 'cloning', 'starting', 'stopping', 'stopped', 'failed'] as const) {
      const ranking = rankCandidates([member({ state })], policy());
      expect(ranking.candidates, state).toEqual([]);
      expect(ranking.rejected, state).toEqual([{ member: 'demo-1', reason: `state is ${state}` }]);
    }
  });

  it('still ranks a running replica whose only problem is that its primary is gone', () => {
    // After the primary dies every replica stops streaming and reports itself
    // unhealthy for that reason; refusing them would block every failover.
    const orphan = member({ streaming: false, healthy: false, problem: 'not streaming from the primary' });
    expect(names(rankCandidates([orphan], policy()).candidates)).toEqual(['demo-1']);
  });

  it('skips a replica that reports no WAL position at all', () => {
    const ranking = rankCandidates([member({ receivedLsn: null, replayedLsn: null })], policy());
    expect(ranking.candidates).toEqual([]);
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'reports no WAL position' }]);
  });

  it('skips a member on an older timeline than the newest any member reports, however advanced', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', timeline: 2, receivedLsn: '0/9000000' }),
        member({ name: 'demo-2', timeline: 3, receivedLsn: '0/5000000' }),
      ],
      policy(),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'on timeline 2, older than 3' }]);
  });

  it('counts the timeline of members it skips for other reasons when finding the newest', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-0', role: 'unknown', timeline: 4 }), member({ name: 'demo-1', timeline: 3 })],
      policy(),
    );
    expect(ranking.candidates).toEqual([]);
    expect(ranking.rejected).toContainEqual({ member: 'demo-1', reason: 'on timeline 3, older than 4' });
  });

  it('skips a member whose timeline is unknown', () => {
    const ranking = rankCandidates([member({ timeline: null })], policy());
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'on timeline unknown, older than 0' }]);
  });

  it('skips a member lagging more than the limit behind the old primary’s last known position', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/1000000' }), member({ name: 'demo-2', receivedLsn: '0/1F00000' })],
      policy({ maximumLagOnFailoverBytes: 0x100000, lastPrimaryLsn: '0/2000000' }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([
      { member: 'demo-1', reason: `${0x1000000} bytes behind, over maximumLagOnFailoverBytes ${0x100000}` },
    ]);
  });

  it('keeps a member exactly at the lag limit', () => {
    const ranking = rankCandidates(
      [member({ receivedLsn: '0/1F00000' })],
      policy({ maximumLagOnFailoverBytes: 0x100000, lastPrimaryLsn: '0/2000000' }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-1']);
  });

  it('rejects every member when all lag too far behind the old primary', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/1000000' }), member({ name: 'demo-2', receivedLsn: '0/1000000' })],
      policy({ maximumLagOnFailoverBytes: 1024, lastPrimaryLsn: '1/0' }),
    );
    expect(ranking.candidates).toEqual([]);
    expect(ranking.rejected.map((r) => r.member)).toEqual(['demo-1', 'demo-2']);
  });

  it('measures lag against the best replica when the old primary’s position is unknown', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/1000000' }), member({ name: 'demo-2', receivedLsn: '0/3000000' })],
      policy({ maximumLagOnFailoverBytes: 0x100000, lastPrimaryLsn: null }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected.map((r) => r.member)).toEqual(['demo-1']);
  });

  it('measures lag against a replica that is ahead of the old primary’s last published position', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', receivedLsn: '0/1000000' }), member({ name: 'demo-2', receivedLsn: '0/3000000' })],
      policy({ maximumLagOnFailoverBytes: 0x100000, lastPrimaryLsn: '0/2000000' }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
  });

  it('measures lag against no excluded or ineligible member', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-0', role: 'primary', receivedLsn: '0/9000000' }), member({ name: 'demo-1' })],
      policy({ maximumLagOnFailoverBytes: 0 }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-1']);
  });

  it('gives one rejection per skipped member, each with its first reason', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', role: 'primary', state: 'failed', tags: { noFailover: true } })],
      policy({ exclude: new Set(['demo-1']) }),
    );
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'excluded (old primary or failed target)' }]);
  });
});

describe('rankCandidates with the last primary’s durable record and switchover checks', () => {
  it('skips a member on a timeline older than the last primary’s, even when no member reports a newer one', () => {
    const ranking = rankCandidates([member({ timeline: 2 })], policy({ minimumTimeline: 3 }));
    expect(ranking.candidates).toEqual([]);
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: "on timeline 2, older than the last primary's 3" }]);
  });

  it('keeps a member on the last primary’s timeline', () => {
    expect(names(rankCandidates([member({ timeline: 3 })], policy({ minimumTimeline: 3 })).candidates)).toEqual([
      'demo-1',
    ]);
  });

  it('skips a member on a timeline forked out of band, and the last primary’s timeline stays the newest', () => {
    // demo-2 was promoted by hand (timeline 4) after the last primary of this term
    // wrote its record on timeline 3: it must not make demo-1 look old.
    const ranking = rankCandidates(
      [member({ name: 'demo-1', timeline: 3 }), member({ name: 'demo-2', timeline: 4, receivedLsn: '0/9000000' })],
      policy({ minimumTimeline: 3 }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-1']);
    expect(ranking.rejected).toEqual([
      {
        member: 'demo-2',
        reason:
          "on timeline 4, newer than the last primary's 3: promoted outside pgha, it follows the elected primary after a rewind",
      },
    ]);
  });

  it('ranks the fork as usual when every member followed it', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', timeline: 4 }), member({ name: 'demo-2', timeline: 4 })],
      policy({ minimumTimeline: 3 }),
    );
    expect(names(ranking.candidates).sort()).toEqual(['demo-1', 'demo-2']);
    expect(ranking.rejected).toEqual([]);
  });

  it('without a durable record, the newest reported timeline still wins', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', timeline: 3 }), member({ name: 'demo-2', timeline: 4 })],
      policy({}),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
  });

  it('skips a member short of the clean shutdown position and keeps one exactly at it', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', receivedLsn: '0/4FFFFFF', replayedLsn: '0/4FFFFFF' }),
        member({ name: 'demo-2', receivedLsn: '0/5000000', replayedLsn: '0/4000000' }),
      ],
      policy({ mustHold: '0/5000000' }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([
      { member: 'demo-1', reason: "holds 0/4FFFFFF, short of the last primary's clean shutdown position 0/5000000" },
    ]);
  });

  it('counts the replayed position of a standby that has no WAL receiver against the clean shutdown position', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-0', receivedLsn: null, replayedLsn: '0/5000028', streaming: false })],
      policy({ mustHold: '0/5000000' }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-0']);
  });

  it('skips a replica that is not streaming when streaming is required', () => {
    const ranking = rankCandidates(
      [member({ name: 'demo-1', streaming: false }), member({ name: 'demo-2' })],
      policy({ requireStreaming: true }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([{ member: 'demo-1', reason: 'not streaming from the primary' }]);
  });

  it('keeps a replica that is not streaming when streaming is not required (failover)', () => {
    expect(names(rankCandidates([member({ streaming: false })], policy()).candidates)).toEqual(['demo-1']);
  });

  it('skips a member whose report is older than reportedSince and keeps one reported exactly then', () => {
    const ranking = rankCandidates(
      [
        member({ name: 'demo-1', updatedAt: '2024-05-01T12:00:06.999Z' }),
        member({ name: 'demo-2', updatedAt: '2024-05-01T12:00:07.000Z' }),
      ],
      policy({ reportedSince: Date.parse('2024-05-01T12:00:07.000Z') }),
    );
    expect(names(ranking.candidates)).toEqual(['demo-2']);
    expect(ranking.rejected).toEqual([
      { member: 'demo-1', reason: 'report is stale (updated 2024-05-01T12:00:06.999Z)' },
    ]);
  });
});
