import type { LeaderRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { type DataDirKind, decideStartup, type StartupSnapshot } from './startup.js';

// Literal fixtures built with small override factories.
function leader(overrides: Partial<LeaderRecord> = {}): LeaderRecord {
  return {
    v: 1,
    term: 4,
    member: 'demo-1',
    host: '127.0.0.1',
    port: 5433,
    timeline: 2,
    since: '2024-05-01T12:00:00.000Z',
    writable: true,
    ...overrides,
  };
}

function snapshot(overrides: Partial<StartupSnapshot> = {}): StartupSnapshot {
  return {
    self: 'demo-0',
    dataDir: 'ours',
    foreignReason: null,
    standby: false,
    localSystemId: '7365048203312345678',
    clusterSystemId: '7365048203312345678',
    leader: null,
    mayBootstrap: false,
    ...overrides,
  };
}

describe('decideStartup with a foreign data directory', () => {
  it('refuses with the reason the inspection gave', () => {
    const decision = decideStartup(
      snapshot({ dataDir: 'foreign', foreignReason: '/x/data belongs to member "a" of cluster "b"' }),
    );
    expect(decision).toEqual({ action: 'refuse', reason: '/x/data belongs to member "a" of cluster "b"' });
  });

  it('refuses with a generic reason when the inspection gave none', () => {
    const decision = decideStartup(snapshot({ dataDir: 'foreign', foreignReason: null }));
    expect(decision).toEqual({
      action: 'refuse',
      reason: 'the data directory is not empty and does not belong to this member',
    });
  });

  it('refuses even when it may bootstrap and no cluster exists yet', () => {
    const decision = decideStartup(
      snapshot({
        dataDir: 'foreign',
        foreignReason: 'junk',
        mayBootstrap: true,
        clusterSystemId: null,
        localSystemId: null,
      }),
    );
    expect(decision.action).toBe('refuse');
  });
});

describe('decideStartup with an empty data directory', () => {
  const empty = { dataDir: 'empty' as const, localSystemId: null, clusterSystemId: null };

  it('bootstraps when it may, the cluster was never initialized and nobody leads', () => {
    expect(decideStartup(snapshot({ ...empty, mayBootstrap: true }))).toEqual({ action: 'bootstrap' });
  });

  it('bootstraps again when the leader record it left behind names itself (initdb did not finish)', () => {
    expect(decideStartup(snapshot({ ...empty, mayBootstrap: true, leader: leader({ member: 'demo-0' }) }))).toEqual({
      action: 'bootstrap',
    });
  });

  it('clones when another member already leads, even if it may bootstrap', () => {
    expect(decideStartup(snapshot({ ...empty, mayBootstrap: true, leader: leader({ member: 'demo-1' }) }))).toEqual({
      action: 'clone',
    });
  });

  it('clones when the cluster was already initialized, even if it may bootstrap', () => {
    expect(decideStartup(snapshot({ ...empty, mayBootstrap: true, clusterSystemId: '7365048203312345678' }))).toEqual({
      action: 'clone',
    });
  });

  it('clones when it may not bootstrap, even with no cluster and no leader', () => {
    expect(decideStartup(snapshot({ ...empty, mayBootstrap: false }))).toEqual({ action: 'clone' });
  });
});

describe('decideStartup with its own data directory', () => {
  it('refuses data of another database system than the cluster and says how to re-clone', () => {
    const decision = decideStartup(snapshot({ localSystemId: '111', clusterSystemId: '222' }));
    expect(decision.action).toBe('refuse');
    expect(decision).toHaveProperty('reason', expect.stringContaining('database system 111 but the cluster is 222'));
    expect(decision).toHaveProperty('reason', expect.stringContaining('move it away to re-clone'));
  });

  it('refuses a mismatched system identifier even when it is a standby', () => {
    expect(decideStartup(snapshot({ localSystemId: '111', clusterSystemId: '222', standby: true })).action).toBe(
      'refuse',
    );
  });

  it('refuses a mismatched system identifier even when it is the leader', () => {
    const decision = decideStartup(
      snapshot({ localSystemId: '111', clusterSystemId: '222', leader: leader({ member: 'demo-0' }) }),
    );
    expect(decision.action).toBe('refuse');
  });

  it('does not compare system identifiers the cluster has not published yet', () => {
    expect(decideStartup(snapshot({ localSystemId: '111', clusterSystemId: null }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });

  it('does not compare system identifiers it could not read locally', () => {
    expect(decideStartup(snapshot({ localSystemId: null, clusterSystemId: '222' }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });

  it('starts a standby as a replica without rewinding when no one leads', () => {
    expect(decideStartup(snapshot({ standby: true, leader: null }))).toEqual({
      action: 'start-replica',
      rewind: false,
    });
  });

  it('starts a standby as a replica without rewinding even when the leader record names itself', () => {
    expect(decideStartup(snapshot({ standby: true, leader: leader({ member: 'demo-0' }) }))).toEqual({
      action: 'start-replica',
      rewind: false,
    });
  });

  it('starts a standby as a replica without rewinding when another member leads', () => {
    expect(decideStartup(snapshot({ standby: true, leader: leader({ member: 'demo-1' }) }))).toEqual({
      action: 'start-replica',
      rewind: false,
    });
  });

  it('starts a former primary as a replica to be rewound when another member leads', () => {
    expect(decideStartup(snapshot({ standby: false, leader: leader({ member: 'demo-1' }) }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });

  it('starts a former primary as a replica to be rewound even when no one leads (the controller elects)', () => {
    expect(decideStartup(snapshot({ standby: false, leader: null }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });

  it('starts a former primary as a replica to be rewound even when the leader record still names itself', () => {
    expect(decideStartup(snapshot({ standby: false, leader: leader({ member: 'demo-0' }) }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });

  it('starts the only member of a single-member cluster as a replica too', () => {
    expect(decideStartup(snapshot({ standby: false, mayBootstrap: true, leader: null }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });

  it('never bootstraps over existing data, even when it may bootstrap', () => {
    expect(decideStartup(snapshot({ mayBootstrap: true, clusterSystemId: null }))).toEqual({
      action: 'start-replica',
      rewind: true,
    });
  });
});

describe('decideStartup safety', () => {
  const kinds: DataDirKind[] = ['empty', 'ours', 'foreign'];
  const ids = [null, '111', '222'];
  const all: StartupSnapshot[] = kinds.flatMap((dataDir) =>
    [true, false].flatMap((standby) =>
      [true, false].flatMap((mayBootstrap) =>
        ids.flatMap((localSystemId) =>
          ids.map((clusterSystemId) =>
            snapshot({
              dataDir,
              standby,
              mayBootstrap,
              localSystemId,
              clusterSystemId,
              foreignReason: dataDir === 'foreign' ? 'x' : null,
            }),
          ),
        ),
      ),
    ),
  );

  const leaders = [
    null,
    leader({ member: 'demo-0' }),
    leader({ member: 'demo-2' }),
    leader({ member: 'demo-2', writable: false }),
  ];

  it('never decides to bootstrap when another member leads', () => {
    for (const writable of [true, false]) {
      for (const s of all) {
        const decision = decideStartup({ ...s, leader: leader({ member: 'demo-2', writable }) });
        expect(decision.action, JSON.stringify(s)).not.toBe('bootstrap');
      }
    }
  });

  it('starts every existing data directory of its own as a replica or refuses it, whoever leads', () => {
    for (const s of all.filter((x) => x.dataDir === 'ours')) {
      for (const l of leaders) {
        expect(['start-replica', 'refuse'], JSON.stringify(s)).toContain(decideStartup({ ...s, leader: l }).action);
      }
    }
  });

  it('rewinds existing data exactly when it was not a standby', () => {
    for (const s of all.filter((x) => x.dataDir === 'ours')) {
      for (const l of leaders) {
        const decision = decideStartup({ ...s, leader: l });
        if (decision.action === 'start-replica') expect(decision.rewind, JSON.stringify(s)).toBe(!s.standby);
      }
    }
  });

  it('never runs initdb unless the member may bootstrap and its data directory is empty', () => {
    for (const s of all) {
      for (const l of leaders) {
        if (decideStartup({ ...s, leader: l }).action === 'bootstrap') {
          expect(s.mayBootstrap).toBe(true);
          expect(s.dataDir).toBe('empty');
          expect(s.clusterSystemId).toBeNull();
        }
      }
    }
  });

  it('refuses every foreign data directory whatever else it knows', () => {
    for (const s of all.filter((x) => x.dataDir === 'foreign')) {
      for (const l of leaders) {
        expect(decideStartup({ ...s, leader: l }).action).toBe('refuse');
      }
    }
  });
});
