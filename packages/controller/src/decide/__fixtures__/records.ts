// Test fixtures: literal records with small override factories, shared by the
// decision tests. Not part of the package's build (nothing imports it but tests).
import type { LastPrimaryRecord, LeaderRecord, MemberRecord, TargetRecord } from '@pgha/core';

/** A running, streaming replica; every member reported at 12:00:09.5. */
export function member(overrides: Partial<MemberRecord> = {}): MemberRecord {
  return {
    v: 1,
    name: 'demo-1',
    role: 'replica',
    state: 'running',
    host: '127.0.0.1',
    port: 5433,
    term: 3,
    timeline: 2,
    receivedLsn: '0/5000000',
    replayedLsn: '0/5000000',
    lagBytes: 0,
    lagSeconds: 0,
    streaming: true,
    postgresVersion: '15.8',
    systemId: '7365048203312345678',
    healthy: true,
    problem: null,
    tags: {},
    updatedAt: '2024-05-01T12:00:09.500Z',
    ...overrides,
  };
}

/** The writable leader of term 3. */
export function leader(overrides: Partial<LeaderRecord> = {}): LeaderRecord {
  return {
    v: 1,
    term: 3,
    member: 'demo-0',
    host: '127.0.0.1',
    port: 5432,
    timeline: 2,
    since: '2024-05-01T11:00:00.000Z',
    writable: true,
    ...overrides,
  };
}

/** A failover target for term 4. */
export function target(overrides: Partial<TargetRecord> = {}): TargetRecord {
  return {
    v: 1,
    term: 4,
    member: 'demo-1',
    reason: 'failover',
    from: 'demo-0',
    decidedAt: '2024-05-01T12:00:00.000Z',
    ...overrides,
  };
}

/** The durable last-primary record of demo-0, primary of term 3, published while it ran (not clean). */
export function lastPrimaryRecord(overrides: Partial<LastPrimaryRecord> = {}): LastPrimaryRecord {
  return {
    v: 1,
    term: 3,
    member: 'demo-0',
    timeline: 2,
    lsn: '0/5000000',
    clean: false,
    at: '2024-05-01T12:00:09.000Z',
    ...overrides,
  };
}
