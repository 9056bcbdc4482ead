import { formatLsn } from '@pgha/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  claimImplies,
  decideSynchronousStandbys,
  desiredSetting,
  initialSynchronousSetting,
  type PendingSetting,
  promotionSetting,
  type ReplicationConnection,
  renderSynchronousStandbyNames,
  type SynchronousClaim,
  type SynchronousSetting,
  type SynchronousSnapshot,
} from './synchronous-standbys.js';

const none: SynchronousSetting = { standbys: [], quorum: 0 };

function conn(member: string, flushLsn = '0/100', syncPriority = 0, state = 'streaming'): ReplicationConnection {
  return { member, state, flushLsn, syncPriority };
}

function snapshot(overrides: Partial<SynchronousSnapshot> = {}): SynchronousSnapshot {
  return {
    mode: 'quorum',
    count: 1,
    strict: false,
    members: ['demo-1', 'demo-2'],
    published: null,
    configured: none,
    pending: null,
    connections: [conn('demo-1'), conn('demo-2')],
    currentLsn: '0/100',
    now: 10_000,
    settleMillis: 1000,
    ...overrides,
  };
}

describe('renderSynchronousStandbyNames', () => {
  it('renders off, a quorum and the strict wildcard', () => {
    expect(renderSynchronousStandbyNames(none)).toBe('');
    expect(renderSynchronousStandbyNames({ standbys: ['demo-2', 'demo-1'], quorum: 1 })).toBe(
      'ANY 1 ("demo-1", "demo-2")',
    );
    expect(renderSynchronousStandbyNames({ standbys: [], quorum: 2 })).toBe('ANY 2 (*)');
  });
});

describe('desiredSetting', () => {
  it('waits for count of the streaming standbys', () => {
    expect(desiredSetting(snapshot({ count: 1 }))).toEqual({
      setting: { standbys: ['demo-1', 'demo-2'], quorum: 1 },
      degraded: null,
    });
  });

  it('ignores walsenders that are no member (a base backup) and ones not streaming', () => {
    const d = desiredSetting(snapshot({ connections: [conn('pg_basebackup'), conn('demo-1', '0/1', 0, 'catchup')] }));
    expect(d.setting).toEqual(none);
    expect(d.degraded).toMatch(/0 of the 1 synchronous standbys required stream: asynchronous until one streams/);
  });

  it('degrades to the streaming standbys when fewer than count stream (not strict)', () => {
    const d = desiredSetting(snapshot({ count: 2, connections: [conn('demo-1')] }));
    expect(d.setting).toEqual({ standbys: ['demo-1'], quorum: 1 });
    expect(d.degraded).toMatch(/1 of the 2 .* \(demo-1\): commits wait for 1/);
  });

  it('strict mode keeps waiting for count of every known member', () => {
    const d = desiredSetting(snapshot({ strict: true, connections: [] }));
    expect(d.setting).toEqual({ standbys: ['demo-1', 'demo-2'], quorum: 1 });
    expect(d.degraded).toMatch(/strict mode, commits wait until 1 confirm/);
  });

  it('off mode wants nothing', () => {
    expect(desiredSetting(snapshot({ mode: 'off' }))).toEqual({ setting: none, degraded: null });
  });
});

describe('claimImplies', () => {
  it('holds for supersets with a lower quorum, not for subsets', () => {
    const ab1 = { standbys: ['a', 'b'], quorum: 1 };
    expect(claimImplies(ab1, { standbys: ['a', 'b', 'c'], quorum: 1 })).toBe(true);
    expect(claimImplies(ab1, { standbys: ['a'], quorum: 1 })).toBe(false);
    expect(claimImplies({ standbys: ['a', 'b'], quorum: 2 }, { standbys: ['a'], quorum: 1 })).toBe(true);
    expect(claimImplies(ab1, { standbys: [], quorum: 0 })).toBe(true);
  });
});

describe('decideSynchronousStandbys', () => {
  it('applies a new setting first and claims it only after the standbys flushed the mark', () => {
    const first = decideSynchronousStandbys(snapshot());
    expect(first.actions.map((a) => a.type)).toEqual(['apply']);
    const setting = { standbys: ['demo-1', 'demo-2'], quorum: 1 };
    // Applied; the walsenders do not show it yet.
    const second = decideSynchronousStandbys(snapshot({ configured: setting, pending: first.pending }));
    expect(second.actions).toEqual([]);
    // They show it: the settle period starts.
    const shown = [conn('demo-1', '0/100', 1), conn('demo-2', '0/100', 1)];
    const third = decideSynchronousStandbys(
      snapshot({ configured: setting, pending: second.pending, connections: shown }),
    );
    expect(third.actions).toEqual([]);
    expect(third.pending?.effectiveSince).toBe(10_000);
    // Settled: the mark is the current position.
    const fourth = decideSynchronousStandbys(
      snapshot({ configured: setting, pending: third.pending, connections: shown, now: 11_000, currentLsn: '0/200' }),
    );
    expect(fourth.actions).toEqual([]);
    expect(fourth.pending?.mark).toBe('0/200');
    // One standby flushed the mark: quorum 1 holds.
    const fifth = decideSynchronousStandbys(
      snapshot({
        configured: setting,
        pending: fourth.pending,
        connections: [conn('demo-1', '0/200', 1), conn('demo-2', '0/150', 1)],
        now: 11_500,
        currentLsn: '0/300',
      }),
    );
    expect(fifth.actions).toEqual([
      { type: 'publish', claim: { standbys: ['demo-1', 'demo-2'], quorum: 1 }, why: expect.stringMatching(/demo-1/) },
    ]);
  });

  it('weakens the published claim before narrowing the setting', () => {
    const published = { standbys: ['demo-1', 'demo-2'], quorum: 1 };
    const d = decideSynchronousStandbys(
      snapshot({ published, configured: published, connections: [conn('demo-1', '0/100', 1)] }),
    );
    // demo-2 stopped streaming: the claim must still count it until demo-1 has everything.
    expect(d.actions.map((a) => a.type)).toEqual(['apply']);
    expect(d.desired).toEqual({ standbys: ['demo-1'], quorum: 1 });
    const afterApply = decideSynchronousStandbys(
      snapshot({
        published,
        configured: d.desired,
        pending: d.pending,
        connections: [conn('demo-1', '0/100', 1)],
      }),
    );
    expect(afterApply.actions).toEqual([]);
  });

  it('publishes "nothing" before going asynchronous', () => {
    const published = { standbys: ['demo-1', 'demo-2'], quorum: 1 };
    const d = decideSynchronousStandbys(snapshot({ published, configured: published, connections: [] }));
    expect(d.actions).toEqual([
      { type: 'publish', claim: { standbys: [], quorum: 0 }, why: expect.any(String) },
      { type: 'apply', setting: none, why: expect.any(String) },
    ]);
  });

  it('does nothing when the setting and the claim are current', () => {
    const setting = { standbys: ['demo-1', 'demo-2'], quorum: 1 };
    const d = decideSynchronousStandbys(
      snapshot({
        published: setting,
        configured: setting,
        connections: [conn('demo-1', '0/1', 1), conn('demo-2', '0/1', 1)],
      }),
    );
    expect(d.actions).toEqual([]);
    expect(d.degraded).toBeNull();
  });
});

describe('initialSynchronousSetting', () => {
  it('claims count of every other member in quorum mode', () => {
    expect(initialSynchronousSetting({ mode: 'quorum', count: 1, strict: false, members: ['b', 'a'] })).toEqual({
      setting: { standbys: ['a', 'b'], quorum: 1 },
      claim: { standbys: ['a', 'b'], quorum: 1 },
    });
  });

  it('claims nothing alone or off; strict alone waits for any standby', () => {
    expect(initialSynchronousSetting({ mode: 'off', count: 1, strict: true, members: ['a'] }).claim.quorum).toBe(0);
    expect(initialSynchronousSetting({ mode: 'quorum', count: 1, strict: false, members: [] }).setting).toEqual(none);
    expect(initialSynchronousSetting({ mode: 'quorum', count: 2, strict: true, members: [] })).toEqual({
      setting: { standbys: [], quorum: 2 },
      claim: { standbys: [], quorum: 0 },
    });
  });
});

// A model primary: commits are acknowledged only as postgres's setting allows (the
// walsenders show a setting as soon as it is applied); standbys connect, disconnect
// and flush at random; the mode changes. After every step, every acknowledged commit
// must be on `quorum` of the published claim's standbys.
describe('property: the published claim always holds', () => {
  const names = ['m1', 'm2', 'm3'] as const;
  type Step =
    | { kind: 'write' }
    | { kind: 'flush'; member: number; all: boolean }
    | { kind: 'toggle'; member: number }
    | { kind: 'tick'; advance: number }
    | { kind: 'config'; mode: 'off' | 'quorum'; count: number; strict: boolean };
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.constant<Step>({ kind: 'write' }),
    fc.record({ kind: fc.constant('flush' as const), member: fc.integer({ min: 0, max: 2 }), all: fc.boolean() }),
    fc.record({ kind: fc.constant('toggle' as const), member: fc.integer({ min: 0, max: 2 }) }),
    fc.record({ kind: fc.constant('tick' as const), advance: fc.integer({ min: 0, max: 1500 }) }),
    fc.record({
      kind: fc.constant('config' as const),
      mode: fc.constantFrom('off' as const, 'quorum' as const),
      count: fc.integer({ min: 1, max: 3 }),
      strict: fc.boolean(),
    }),
  );

  it('holds over random histories', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 120 }), (steps) => {
        let lsn = 1;
        const flush = [0, 0, 0];
        const connected = [true, true, true];
        let configured: SynchronousSetting = none;
        let published: SynchronousClaim = { standbys: [], quorum: 0 };
        let pending: PendingSetting | null = null;
        let config = { mode: 'quorum' as 'off' | 'quorum', count: 1, strict: false };
        let now = 0;
        const waiting: number[] = [];
        const acked: number[] = [];
        const ack = () => {
          for (let i = waiting.length - 1; i >= 0; i--) {
            const c = waiting[i]!;
            const everyone = configured.quorum > 0 && configured.standbys.length === 0;
            const confirmations = names.filter(
              (n, j) => connected[j] && (everyone || configured.standbys.includes(n)) && flush[j]! >= c,
            ).length;
            if (configured.quorum === 0 || confirmations >= configured.quorum) {
              acked.push(c);
              waiting.splice(i, 1);
            }
          }
        };
        const holds = () =>
          acked.every(
            (c) =>
              published.quorum === 0 ||
              names.filter((n, j) => published.standbys.includes(n) && flush[j]! >= c).length >= published.quorum,
          );
        for (const s of steps) {
          switch (s.kind) {
            case 'write':
              lsn += 1;
              waiting.push(lsn);
              break;
            case 'flush':
              if (connected[s.member]) flush[s.member] = s.all ? lsn : Math.max(flush[s.member]!, lsn - 1);
              break;
            case 'toggle':
              connected[s.member] = !connected[s.member];
              break;
            case 'config':
              config = { mode: s.mode, count: s.count, strict: s.strict };
              break;
            case 'tick': {
              now += s.advance;
              const everyone = configured.quorum > 0 && configured.standbys.length === 0;
              const d = decideSynchronousStandbys({
                ...config,
                members: [...names],
                published,
                configured,
                pending,
                connections: names.flatMap((n, j) =>
                  connected[j]
                    ? [
                        conn(
                          n,
                          formatLsn(BigInt(flush[j]!)),
                          configured.quorum > 0 && (everyone || configured.standbys.includes(n)) ? 1 : 0,
                        ),
                      ]
                    : [],
                ),
                currentLsn: formatLsn(BigInt(lsn)),
                now,
                settleMillis: 1000,
              });
              pending = d.pending;
              for (const a of d.actions) {
                if (a.type === 'publish') {
                  published = a.claim;
                  if (!holds()) return false;
                } else {
                  configured = a.setting;
                }
              }
              break;
            }
          }
          ack();
          if (!holds()) return false;
        }
        return true;
      }),
      { numRuns: 500 },
    );
  });
});

describe('the streaming grace', () => {
  it('keeps a standby that streamed a moment ago in the setting (commits wait for it)', () => {
    const d = desiredSetting(snapshot({ connections: [], recentlyStreaming: ['demo-2'] }));
    expect(d.setting).toEqual({ standbys: ['demo-2'], quorum: 1 });
    expect(d.degraded).toBeNull();
  });

  it('never counts a name that is no member', () => {
    expect(desiredSetting(snapshot({ connections: [], recentlyStreaming: ['gone'] })).setting).toEqual(none);
  });
});

describe('promotionSetting', () => {
  const sync = {
    v: 1 as const,
    term: 5,
    member: 'demo-1',
    standbys: ['demo-0', 'demo-2'],
    quorum: 1,
    strict: false,
    at: '2024-05-01T12:00:00.000Z',
  };

  it('waits for what our claim of the term names; strict: count of them', () => {
    expect(promotionSetting({ self: 'demo-1', term: 5, published: sync, count: 2 })).toEqual({
      standbys: ['demo-0', 'demo-2'],
      quorum: 1,
    });
    expect(promotionSetting({ self: 'demo-1', term: 5, published: { ...sync, strict: true }, count: 2 }).quorum).toBe(
      2,
    );
  });

  it('waits for nothing without a claim of ours for the term', () => {
    expect(promotionSetting({ self: 'demo-1', term: 6, published: sync, count: 1 })).toEqual(none);
    expect(promotionSetting({ self: 'demo-2', term: 5, published: sync, count: 1 })).toEqual(none);
    expect(promotionSetting({ self: 'demo-1', term: 5, published: null, count: 1 })).toEqual(none);
  });
});
