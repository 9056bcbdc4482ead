import { describe, expect, it } from 'vitest';
import {
  configuredFloorValues,
  decideStartParameters,
  describeRaised,
  type FloorParameter,
  floorParameters,
  highestOf,
  insufficientSettings,
  parseControlDataSettings,
  parseInsufficientSettings,
} from './standby-parameters.js';

// pg_controldata output of PostgreSQL 15 (LC_ALL=C), captured from a fresh initdb
// here, with the five settings changed to distinct values so each label is checked.
const controlData = `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7714361200110397065
Database cluster state:               in archive recovery
pg_control last modified:             Tue Dec  1 15:41:24 2026
Latest checkpoint location:           0/17414F8
Latest checkpoint's REDO location:    0/17414F8
Latest checkpoint's REDO WAL file:    000000010000000000000001
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:724
Latest checkpoint's NextOID:          13572
Latest checkpoint's NextMultiXactId:  1
Latest checkpoint's NextMultiOffset:  0
Latest checkpoint's oldestXID:        716
Latest checkpoint's oldestXID's DB:   1
Latest checkpoint's oldestActiveXID:  0
Latest checkpoint's oldestMultiXid:   1
Latest checkpoint's oldestMulti's DB: 1
Latest checkpoint's oldestCommitTsXid:0
Latest checkpoint's newestCommitTsXid:0
Time of latest checkpoint:            Tue Dec  1 15:41:24 2026
Fake LSN counter for unlogged rels:   0/3E8
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
Backup start location:                0/0
Backup end location:                  0/0
End-of-backup record required:        no
wal_level setting:                    replica
wal_log_hints setting:                on
max_connections setting:              150
max_worker_processes setting:         12
max_wal_senders setting:              10
max_prepared_xacts setting:           5
max_locks_per_xact setting:           128
track_commit_timestamp setting:       off
Maximum data alignment:               8
Database block size:                  8192
Blocks per segment of large relation: 131072
WAL block size:                       8192
Bytes per WAL segment:                16777216
Maximum length of identifiers:        64
Maximum columns in an index:          32
Maximum size of a TOAST chunk:        1996
Size of a large-object chunk:         2048
Date/time type storage:               64-bit integers
Float8 argument passing:              by value
Data page checksum version:           1
Mock authentication nonce:            468385b5b38353cb0c4591298b4644cababc6375af5ac38806a62420fb1dd86a
`;

type Configured = Record<FloorParameter, number | null>;

function configured(overrides: Partial<Configured> = {}): Configured {
  return {
    max_connections: 100,
    max_worker_processes: 8,
    max_wal_senders: 10,
    max_prepared_transactions: 0,
    max_locks_per_transaction: 64,
    ...overrides,
  };
}

describe('parseControlDataSettings', () => {
  it('reads the five settings the primary recorded from pg_controldata output', () => {
    expect(parseControlDataSettings(controlData)).toEqual({
      max_connections: 150,
      max_worker_processes: 12,
      max_wal_senders: 10,
      max_prepared_transactions: 5,
      max_locks_per_transaction: 128,
    });
  });

  it('leaves out a setting whose line is missing or garbled (no floor for it)', () => {
    const text = controlData
      .replace(/^max_locks_per_xact setting:.*$/m, '')
      .replace(/^max_wal_senders setting:.*$/m, 'max_wal_senders setting:              lots');
    const recorded = parseControlDataSettings(text);
    expect(recorded).not.toHaveProperty('max_locks_per_transaction');
    expect(recorded).not.toHaveProperty('max_wal_senders');
    expect(recorded.max_connections).toBe(150);
    expect(parseControlDataSettings('')).toEqual({});
  });
});

describe('parseInsufficientSettings', () => {
  it("reads the primary's values from the FATAL's and WARNING's DETAIL lines, the highest per setting", () => {
    const log = [
      '2026-12-01 15:00:00.000 UTC [10] WARNING:  hot standby is not possible because of insufficient parameter settings',
      '2026-12-01 15:00:00.000 UTC [10] DETAIL:  max_locks_per_transaction = 64 is a lower setting than on the primary server, where its value was 96.',
      '2026-12-01 15:00:01.000 UTC [11] FATAL:  recovery aborted because of insufficient parameter settings',
      '2026-12-01 15:00:01.000 UTC [11] DETAIL:  max_locks_per_transaction = 64 is a lower setting than on the primary server, where its value was 128.',
      '2026-12-01 15:00:01.000 UTC [11] DETAIL:  max_connections = 100 is a lower setting than on the primary server, where its value was 200.',
      '2026-12-01 15:00:01.000 UTC [11] DETAIL:  work_mem = 1 is a lower setting than on the primary server, where its value was 2.',
    ].join('\n');
    expect(parseInsufficientSettings(log)).toEqual({ max_locks_per_transaction: 128, max_connections: 200 });
    expect(parseInsufficientSettings('LOG:  database system is ready to accept read-only connections')).toEqual({});
  });
});

describe('configuredFloorValues', () => {
  it("takes pgha's own values, then --postgres-parameter, else PostgreSQL's defaults", () => {
    expect(configuredFloorValues({ maxConnections: 50, maxWalSenders: 10 })).toEqual(
      configured({ max_connections: 50 }),
    );
    expect(
      configuredFloorValues({
        maxConnections: 100,
        maxWalSenders: 10,
        extraParameters: { max_locks_per_transaction: ' 128 ', max_prepared_transactions: '10', work_mem: '1MB' },
      }),
    ).toEqual(configured({ max_locks_per_transaction: 128, max_prepared_transactions: 10 }));
  });

  it('marks a value that is not a plain integer as unknown (never floored)', () => {
    expect(
      configuredFloorValues({
        maxConnections: 100,
        maxWalSenders: 10,
        extraParameters: { max_worker_processes: '1e2' },
      }).max_worker_processes,
    ).toBeNull();
  });
});

describe('decideStartParameters', () => {
  const recorded = parseControlDataSettings(controlData);

  it('raises a standby to every value the primary recorded above its configuration, and only those', () => {
    const decision = decideStartParameters({ as: 'standby', configured: configured(), recorded });
    expect(decision.overrides).toEqual({
      max_connections: 150,
      max_worker_processes: 12,
      max_prepared_transactions: 5,
      max_locks_per_transaction: 128,
    });
    expect(decision.raised.map((r) => r.name)).toEqual([
      'max_connections',
      'max_worker_processes',
      'max_prepared_transactions',
      'max_locks_per_transaction',
    ]);
  });

  it('keeps a configured value at or above the recorded one', () => {
    const decision = decideStartParameters({
      as: 'standby',
      configured: configured({
        max_connections: 150,
        max_locks_per_transaction: 256,
        max_worker_processes: 12,
        max_prepared_transactions: 9,
      }),
      recorded,
    });
    expect(decision).toEqual({ overrides: {}, raised: [] });
  });

  it('starts a primary with its configuration, lower values included', () => {
    expect(decideStartParameters({ as: 'primary', configured: configured(), recorded })).toEqual({
      overrides: {},
      raised: [],
    });
  });

  it('floors nothing it cannot compare: no recorded value, or a configured one that is not an integer', () => {
    const decision = decideStartParameters({
      as: 'standby',
      configured: configured({ max_locks_per_transaction: null }),
      recorded: { max_locks_per_transaction: 128 },
    });
    expect(decision).toEqual({ overrides: {}, raised: [] });
    expect(decideStartParameters({ as: 'standby', configured: configured(), recorded: {} }).raised).toEqual([]);
  });

  it('never lowers a configured value, for any recorded one', () => {
    for (const name of floorParameters)
      for (const value of [0, 1, 64, 100, 1000]) {
        const { overrides } = decideStartParameters({
          as: 'standby',
          configured: configured(),
          recorded: { [name]: value },
        });
        const written = overrides[name] ?? configured()[name]!;
        expect(written).toBe(Math.max(configured()[name]!, value));
      }
  });
});

describe('describeRaised', () => {
  it('says what was raised, what the primary recorded and what was configured', () => {
    expect(describeRaised([{ name: 'max_locks_per_transaction', configured: 64, recorded: 128 }])).toBe(
      'starting as a standby with max_locks_per_transaction=128 (the primary recorded 128; configured 64)',
    );
    expect(describeRaised([])).toBeNull();
  });
});

describe('insufficientSettings', () => {
  it('lists the settings a running standby has less of than the control data records', () => {
    expect(
      insufficientSettings(
        { max_locks_per_transaction: 64, max_connections: 200 },
        { max_locks_per_transaction: 128, max_connections: 100 },
      ),
    ).toEqual([{ name: 'max_locks_per_transaction', configured: 64, recorded: 128 }]);
    expect(insufficientSettings({ max_locks_per_transaction: 128 }, { max_locks_per_transaction: 128 })).toEqual([]);
  });
});

describe('highestOf', () => {
  it('keeps the highest of each setting', () => {
    expect(highestOf({ max_connections: 100 }, { max_connections: 150, max_wal_senders: 5 }, {})).toEqual({
      max_connections: 150,
      max_wal_senders: 5,
    });
  });
});
