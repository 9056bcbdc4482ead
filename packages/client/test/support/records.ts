// Test fixtures: literal records with override factories, shared by the client's
// integration tests (the tests play the agents and write these into etcd).
import type { LeaderRecord, MemberRecord } from '@pgha/core';

/** A writable leader of term 1 on 127.0.0.1:5432, installed now. */
export function leaderRecord(overrides: Partial<LeaderRecord> = {}): LeaderRecord {
  return {
    v: 1,
    term: 1,
    member: 'demo-0',
    host: '127.0.0.1',
    port: 5432,
    timeline: 1,
    since: new Date().toISOString(),
    writable: true,
    ...overrides,
  };
}

/** A running, healthy replica streaming with no lag, reported now. */
export function memberRecord(overrides: Partial<MemberRecord> & Pick<MemberRecord, 'name'>): MemberRecord {
  return {
    v: 1,
    role: 'replica',
    state: 'running',
    host: '127.0.0.1',
    port: 5433,
    term: 1,
    timeline: 1,
    receivedLsn: '0/3000000',
    replayedLsn: '0/3000000',
    lagBytes: 0,
    lagSeconds: 0,
    streaming: true,
    postgresVersion: '15',
    systemId: '1',
    healthy: true,
    problem: null,
    tags: {},
    updatedAt: new Date().toISOString(),
    ...overrides,
  };
}
