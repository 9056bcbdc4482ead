import { LeaderRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { leader } from './__fixtures__/records.js';
import { decideLeaderView, type LeaderKey, type LeaderViewSnapshot } from './leader-view.js';

function key(overrides: Partial<LeaderKey> = {}): LeaderKey {
  return { value: LeaderRecord.encode(leader()), lease: '7', modRevision: '40', ...overrides };
}

/** demo-0 holding lease 7, having last read its own record of term 3. */
function snapshot(overrides: Partial<LeaderViewSnapshot> = {}): LeaderViewSnapshot {
  return { self: 'demo-0', key: key(), last: leader(), ourLease: '7', warned: null, ...overrides };
}

const garbage = { value: '{"v":1,"term":"\u001b[2Jx"', modRevision: '41' };

describe('decideLeaderView', () => {
  it('reads a valid record, ours only under our own lease', () => {
    expect(decideLeaderView(snapshot())).toEqual({
      leader: leader(),
      lease: '7',
      ours: true,
      warned: null,
      warning: null,
    });
    expect(decideLeaderView(snapshot({ ourLease: '8' })).ours).toBe(false);
    expect(decideLeaderView(snapshot({ self: 'demo-1' })).ours).toBe(false);
    expect(decideLeaderView(snapshot({ key: null }))).toEqual({
      leader: null,
      lease: null,
      ours: false,
      warned: null,
      warning: null,
    });
  });

  it('keeps the last record for one that does not parse, and warns once per revision', () => {
    const first = decideLeaderView(snapshot({ self: 'demo-1', ourLease: '9', key: key({ ...garbage, lease: '0' }) }));
    expect(first.leader).toEqual(leader());
    expect(first.lease).toBe('0');
    expect(first.ours).toBe(false);
    expect(first.warned).toBe('41');
    expect(first.warning).not.toContain('\u001b'); // the record's text, escaped
    expect(first.warning).toContain('\\u001b[2Jx');
    expect(first.warning).toMatch(
      /^ignoring the leader record \(revision 41\): leader record: .*; keeping the last one read \(demo-0, term 3\)\. No member can take leadership while the key exists/,
    );
    // The next tick, same revision: no warning again.
    const again = decideLeaderView(snapshot({ self: 'demo-1', key: key({ ...garbage, lease: '0' }), warned: '41' }));
    expect(again.warning).toBeNull();
    expect(again.warned).toBe('41');
    // Another unreadable revision warns again; a readable record clears the memory.
    expect(decideLeaderView(snapshot({ key: key({ ...garbage, modRevision: '42' }), warned: '41' })).warning).toMatch(
      /revision 42/,
    );
    expect(decideLeaderView(snapshot({ warned: '41' })).warned).toBeNull();
  });

  it('never makes an unreadable record ours under another lease: a primary whose key was overwritten lets go', () => {
    const view = decideLeaderView(snapshot({ key: key({ ...garbage, lease: '0' }) }));
    expect(view.leader).toEqual(leader()); // the last one read names us...
    expect(view.ours).toBe(false); // ...but the key is no longer under our lease
  });

  it('keeps the claim of a primary whose key is still under its own lease (its deadline logic decides)', () => {
    expect(decideLeaderView(snapshot({ key: key(garbage) })).ours).toBe(true);
  });

  it('gives a member that read no leader before no record to follow or claim', () => {
    const view = decideLeaderView(snapshot({ self: 'demo-1', ourLease: '9', last: null, key: key(garbage) }));
    expect(view).toMatchObject({ leader: null, lease: '7', ours: false });
    expect(view.warning).toMatch(/keeping the last one read \(none\)/);
  });
});
