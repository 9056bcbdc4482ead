import { MemberRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import type { PostgresObservation } from '../adapters/postgres-observe.js';
import { buildMemberRecord, type MemberReportSnapshot } from './member-report.js';

// Literal fixtures built with small override factories.
function primaryObservation(overrides: Partial<PostgresObservation> = {}): PostgresObservation {
  return {
    inRecovery: false,
    currentLsn: '0/5000100',
    receivedLsn: null,
    replayedLsn: null,
    replayAgeSeconds: null,
    receiverStatus: null,
    timeline: 2,
    version: '15.8',
    systemId: '7365048203312345678',
    ...overrides,
  };
}

function replicaObservation(overrides: Partial<PostgresObservation> = {}): PostgresObservation {
  return {
    inRecovery: true,
    currentLsn: null,
    receivedLsn: '0/5000100',
    replayedLsn: '0/5000100',
    replayAgeSeconds: 42.5,
    receiverStatus: 'streaming',
    timeline: 2,
    version: '15.8',
    systemId: '7365048203312345678',
    ...overrides,
  };
}

function snapshot(overrides: Partial<MemberReportSnapshot> = {}): MemberReportSnapshot {
  return {
    name: 'demo-1',
    host: '127.0.0.1',
    port: 5433,
    state: 'running',
    term: 3,
    tags: {},
    observation: replicaObservation(),
    problem: null,
    primaryLsn: '0/5000100',
    isLeader: false,
    now: new Date('2024-05-01T12:00:00.000Z'),
    ...overrides,
  };
}

/** Builds the record and checks it is one the protocol accepts. */
function build(overrides: Partial<MemberReportSnapshot> = {}): MemberRecord {
  const record = buildMemberRecord(snapshot(overrides));
  expect(MemberRecord.parse(record)).toEqual(record);
  return record;
}

describe('buildMemberRecord for a primary', () => {
  it('reports a healthy leading primary with its current position and no lag', () => {
    expect(
      build({ name: 'demo-0', port: 5432, observation: primaryObservation(), isLeader: true, primaryLsn: null }),
    ).toEqual({
      v: 1,
      name: 'demo-0',
      role: 'primary',
      state: 'running',
      host: '127.0.0.1',
      port: 5432,
      term: 3,
      timeline: 2,
      receivedLsn: '0/5000100',
      replayedLsn: '0/5000100',
      lagBytes: 0,
      lagSeconds: 0,
      streaming: false,
      postgresVersion: '15.8',
      systemId: '7365048203312345678',
      healthy: true,
      problem: null,
      tags: {},
      updatedAt: '2024-05-01T12:00:00.000Z',
    });
  });

  it('flags a writable postgres that the leader record does not name', () => {
    const record = build({ observation: primaryObservation(), isLeader: false });
    expect(record.role).toBe('primary');
    expect(record.problem).toBe('writable but not the leader');
    expect(record.healthy).toBe(false);
  });

  it('publishes the health API address when the agent runs one, and no field at all otherwise', () => {
    expect(build({ api: 'http://127.0.0.1:8009' }).api).toBe('http://127.0.0.1:8009');
    expect('api' in build({ api: null })).toBe(false);
  });

  it('publishes the parameters waiting for a restart, healthy all the same, and no field when none wait', () => {
    const record = build({ pendingRestart: ['max_files_per_process'] });
    expect(record.pendingRestart).toEqual(['max_files_per_process']);
    expect(record.healthy).toBe(true);
    expect(MemberRecord.parse(record)).toEqual(record);
    expect('pendingRestart' in build({ pendingRestart: [] })).toBe(false);
    expect('pendingRestart' in build({})).toBe(false);
  });

  it('ignores any published primary position for its own lag', () => {
    expect(build({ observation: primaryObservation(), isLeader: true, primaryLsn: '0/9000000' }).lagBytes).toBe(0);
  });
});

describe('buildMemberRecord for a replica', () => {
  it('reports a caught-up streaming replica as healthy with no lag', () => {
    const record = build();
    expect(record).toMatchObject({
      role: 'replica',
      receivedLsn: '0/5000100',
      replayedLsn: '0/5000100',
      lagBytes: 0,
      lagSeconds: 0,
      streaming: true,
      healthy: true,
      problem: null,
    });
  });

  it('measures lag in bytes from its replayed position to the primary’s published position', () => {
    const record = build({
      primaryLsn: '0/5001000',
      observation: replicaObservation({ receivedLsn: '0/5000F00', replayedLsn: '0/5000100' }),
    });
    expect(record.lagBytes).toBe(0x5001000 - 0x5000100);
    expect(record.receivedLsn).toBe('0/5000F00');
    expect(record.replayedLsn).toBe('0/5000100');
  });

  it('measures lag across the 4 GiB boundary of the WAL position', () => {
    const record = build({
      primaryLsn: '1/10',
      observation: replicaObservation({ receivedLsn: '0/FFFFFFF0', replayedLsn: '0/FFFFFFF0' }),
    });
    expect(record.lagBytes).toBe(0x20);
  });

  it('falls back to its received position when it has replayed nothing yet', () => {
    const record = build({
      primaryLsn: '0/5000200',
      observation: replicaObservation({ receivedLsn: '0/5000100', replayedLsn: null }),
    });
    expect(record.lagBytes).toBe(0x100);
  });

  it('reports 0 bytes, not a negative lag, when it is past the primary’s last published position', () => {
    expect(
      build({ primaryLsn: '0/5000000', observation: replicaObservation({ replayedLsn: '0/5000100' }) }).lagBytes,
    ).toBe(0);
  });

  it('reports unknown byte lag while the primary has published no position', () => {
    expect(build({ primaryLsn: null }).lagBytes).toBeNull();
  });

  it('reports unknown byte lag when it has neither received nor replayed anything', () => {
    expect(
      build({ observation: replicaObservation({ receivedLsn: null, replayedLsn: null, receiverStatus: null }) })
        .lagBytes,
    ).toBeNull();
  });

  it('counts lag in seconds as the age of the last replayed transaction while replay trails receipt', () => {
    const record = build({
      observation: replicaObservation({ receivedLsn: '0/5000200', replayedLsn: '0/5000100', replayAgeSeconds: 3.25 }),
    });
    expect(record.lagSeconds).toBe(3.25);
  });

  it('rounds lag in seconds to milliseconds', () => {
    const record = build({
      observation: replicaObservation({
        receivedLsn: '0/5000200',
        replayedLsn: '0/5000100',
        replayAgeSeconds: 1.234_567_8,
      }),
    });
    expect(record.lagSeconds).toBe(1.235);
  });

  it('reports 0 s behind when replay has caught up with receipt, however old its last transaction is', () => {
    expect(build({ observation: replicaObservation({ replayAgeSeconds: 86_400 }) }).lagSeconds).toBe(0);
  });

  it('reports 0 s behind, never negative, when the clock makes the last transaction look from the future', () => {
    const record = build({
      observation: replicaObservation({ receivedLsn: '0/5000200', replayedLsn: '0/5000100', replayAgeSeconds: -2 }),
    });
    expect(record.lagSeconds).toBe(0);
  });

  it('reports 0 s behind while replay trails but no transaction was replayed yet', () => {
    const record = build({
      observation: replicaObservation({ receivedLsn: '0/5000200', replayedLsn: '0/5000100', replayAgeSeconds: null }),
    });
    expect(record.lagSeconds).toBe(0);
  });

  it('flags a replica whose WAL receiver is not running', () => {
    const record = build({ observation: replicaObservation({ receiverStatus: null }) });
    expect(record.streaming).toBe(false);
    expect(record.problem).toBe('not streaming from the primary (receiver: not running)');
    expect(record.healthy).toBe(false);
  });

  it('flags a replica whose WAL receiver is not streaming yet, naming its status', () => {
    const record = build({ observation: replicaObservation({ receiverStatus: 'catchup' }) });
    expect(record.streaming).toBe(false);
    expect(record.problem).toBe('not streaming from the primary (receiver: catchup)');
    expect(record.healthy).toBe(false);
  });
});

describe('buildMemberRecord when postgres does not answer', () => {
  it('reports an unknown role with no positions, lag, timeline or version', () => {
    expect(build({ observation: null, problem: 'postgres does not answer: timeout' })).toEqual({
      v: 1,
      name: 'demo-1',
      role: 'unknown',
      state: 'running',
      host: '127.0.0.1',
      port: 5433,
      term: 3,
      timeline: null,
      receivedLsn: null,
      replayedLsn: null,
      lagBytes: null,
      lagSeconds: null,
      streaming: false,
      postgresVersion: null,
      systemId: null,
      healthy: false,
      problem: 'postgres does not answer: timeout',
      tags: {},
      updatedAt: '2024-05-01T12:00:00.000Z',
    });
  });

  it('is unhealthy without a stated problem too', () => {
    const record = build({ observation: null, state: 'running', problem: null });
    expect(record.healthy).toBe(false);
    expect(record.problem).toBeNull();
  });
});

describe('buildMemberRecord health', () => {
  it('is unhealthy while the member is not running, even when postgres answers well', () => {
    for (const state of ['initializing', 'cloning', 'starting', 'stopping', 'stopped', 'failed'] as const) {
      expect(build({ state }).healthy, state).toBe(false);
    }
  });

  it('reports the problem it was given in preference to what it sees', () => {
    const record = build({ problem: 'postgres exited', observation: replicaObservation({ receiverStatus: null }) });
    expect(record.problem).toBe('postgres exited');
    expect(record.healthy).toBe(false);
  });

  it('carries its tags, term and report time unchanged', () => {
    const record = build({ tags: { noFailover: true }, term: 17, now: new Date('2030-01-02T03:04:05.678Z') });
    expect(record.tags).toEqual({ noFailover: true });
    expect(record.term).toBe(17);
    expect(record.updatedAt).toBe('2030-01-02T03:04:05.678Z');
  });
});
