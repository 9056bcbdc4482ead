import { describe, expect, test } from 'vitest';
import {
  assertSettings,
  type CheckSettings,
  faultKinds,
  faultSchedule,
  parseDuration,
  parseFaults,
  seededRandom,
} from './settings.js';

const settings = (overrides: Partial<CheckSettings> = {}): CheckSettings => ({
  cluster: 'check',
  members: 3,
  durationMillis: 300_000,
  faultsPerKind: null,
  faults: ['switchover'],
  rate: 100,
  seed: 1,
  synchronousMode: 'off',
  synchronousCount: 1,
  synchronousStrict: false,
  leaseTtlMillis: 2000,
  keepaliveIntervalMillis: 250,
  fencingMarginMillis: 500,
  etcdHeartbeatMillis: null,
  etcdElectionTimeoutMillis: null,
  cpuHog: 0,
  ...overrides,
});

describe('check settings', () => {
  test('durations take ms, s, m, h or bare seconds, and refuse anything else', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('1500ms')).toBe(1500);
    expect(parseDuration('45')).toBe(45_000);
    expect(() => parseDuration('5x')).toThrow(/--duration must look like 90s/);
    expect(() => parseDuration('10ms')).toThrow(/at least 1s/);
  });

  test('fault lists name known kinds, once each, in the documented order; all is every kind', () => {
    expect(parseFaults('all')).toEqual([...faultKinds]);
    expect(parseFaults('switchover, host-loss,switchover')).toEqual(['host-loss', 'switchover']);
    expect(() => parseFaults('host-loss,meteor')).toThrow(/unknown fault kind "meteor".*choose from host-loss/);
    expect(() => parseFaults(' , ')).toThrow(/at least one/);
  });

  test('a quorum larger than the replicas, one member, or a rate below one per member is refused with what to pass', () => {
    expect(() => assertSettings(settings())).not.toThrow();
    expect(() => assertSettings(settings({ synchronousMode: 'quorum', synchronousCount: 3 }))).toThrow(
      /needs at least 4 members; pass --members 4/,
    );
    expect(() => assertSettings(settings({ members: 1 }))).toThrow(/nobody to fail over to/);
    expect(() => assertSettings(settings({ rate: 2 }))).toThrow(/at least 3/);
  });

  test('a lease profile that cannot keep its own deadlines, or an etcd election etcd refuses, is refused with why', () => {
    expect(() =>
      assertSettings(settings({ leaseTtlMillis: 1000, keepaliveIntervalMillis: 125, fencingMarginMillis: 250 })),
    ).not.toThrow();
    expect(() => assertSettings(settings({ leaseTtlMillis: 500 }))).toThrow(/below the minimum lease TTL/);
    expect(() => assertSettings(settings({ leaseTtlMillis: 1000, keepaliveIntervalMillis: 600 }))).toThrow(
      /--keepalive 600 must be at most half of --lease-ttl 1000/,
    );
    expect(() =>
      assertSettings(settings({ leaseTtlMillis: 1000, keepaliveIntervalMillis: 250, fencingMarginMillis: 100 })),
    ).toThrow(/--fencing-margin 100 must be at least --keepalive 250/);
    expect(() =>
      assertSettings(settings({ leaseTtlMillis: 1000, keepaliveIntervalMillis: 250, fencingMarginMillis: 750 })),
    ).toThrow(/must be below --lease-ttl 1000/);
    expect(() => assertSettings(settings({ etcdHeartbeatMillis: 100, etcdElectionTimeoutMillis: 300 }))).toThrow(
      /at least 5 times --etcd-heartbeat 100/,
    );
  });

  test('the same seed gives the same schedule; every round holds every kind once', () => {
    const kinds = ['host-loss', 'switchover', 'postgres-kill'] as const;
    const a = faultSchedule(kinds, 4, seededRandom(42));
    const b = faultSchedule(kinds, 4, seededRandom(42));
    expect(a).toEqual(b);
    expect(a).toHaveLength(12);
    for (let r = 0; r < 4; r++) expect([...a.slice(r * 3, r * 3 + 3)].sort()).toEqual([...kinds].sort());
    const others = [1, 2, 3, 4, 5].map((seed) => faultSchedule(kinds, 4, seededRandom(seed)).join());
    expect(new Set(others).size).toBeGreaterThan(1);
  });

  test('the seeded source stays in range', () => {
    const random = seededRandom(7);
    for (let i = 0; i < 1000; i++) {
      const x = random.next();
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      const n = random.int(1000, 3000);
      expect(n).toBeGreaterThanOrEqual(1000);
      expect(n).toBeLessThanOrEqual(3000);
    }
  });
});
