import { describe, expect, it } from 'vitest';
import { type ClusterStatus, formatStatus, type MemberStatus } from './cluster-status.js';

// Literal fixtures built with small override factories.
function member(overrides: Partial<MemberStatus> = {}): MemberStatus {
  return {
    name: 'demo-0',
    role: 'primary',
    state: 'running',
    host: '127.0.0.1',
    port: 5432,
    timeline: 1,
    lagBytes: 0,
    lagSeconds: 0,
    streaming: false,
    healthy: true,
    problem: null,
    updatedAt: '2024-05-01T12:00:00.000Z',
    api: null,
    pendingRestart: [],
    ...overrides,
  };
}

function status(overrides: Partial<ClusterStatus> = {}): ClusterStatus {
  return {
    cluster: 'demo',
    term: 1,
    leader: { member: 'demo-0', host: '127.0.0.1', port: 5432, writable: true },
    members: [
      member(),
      member({ name: 'demo-1', role: 'replica', port: 5433, streaming: true }),
      member({ name: 'demo-2', role: 'replica', port: 5434, streaming: true }),
    ],
    failover: { inProgress: false, target: null },
    controller: { id: '4242-0a1b2c3d', waiting: null },
    config: null,
    synchronous: { mode: 'off', count: 1, strict: false, claim: null, degraded: null },
    urls: null,
    problems: [],
    ...overrides,
  };
}

/** The member rows of a formatted status (after the summary, blank line and header). */
function rows(text: string): string[] {
  return text.split('\n').slice(3, -1);
}

describe('formatStatus', () => {
  it('prints a summary line, a header and one aligned row per member, the leader starred', () => {
    expect(formatStatus(status())).toBe(
      [
        'Cluster demo  term 1  leader demo-0 (127.0.0.1:5432)',
        '',
        'MEMBER    ROLE     STATE    HOST:PORT       TL  LAG  HEALTH',
        'demo-0 *  primary  running  127.0.0.1:5432  1   0 B  ok',
        'demo-1    replica  running  127.0.0.1:5433  1   0 B  ok',
        'demo-2    replica  running  127.0.0.1:5434  1   0 B  ok',
        '',
      ].join('\n'),
    );
  });

  it('adds an API column when some member serves a health API, a dash for one that does not', () => {
    const text = formatStatus(
      status({
        members: [
          member({ api: 'http://127.0.0.1:8008' }),
          member({ name: 'demo-1', role: 'replica', port: 5433, streaming: true }),
        ],
      }),
    );
    expect(text.split('\n').slice(2, 5)).toEqual([
      'MEMBER    ROLE     STATE    HOST:PORT       TL  LAG  API                    HEALTH',
      'demo-0 *  primary  running  127.0.0.1:5432  1   0 B  http://127.0.0.1:8008  ok',
      'demo-1    replica  running  127.0.0.1:5433  1   0 B  -                      ok',
    ]);
  });

  it('widens columns to the longest value', () => {
    const text = formatStatus(
      status({
        leader: null,
        members: [member({ name: 'a-very-long-member-name-0', host: '2001:db8::1234', port: 65535 })],
      }),
    );
    expect(text.split('\n')[2]).toBe(
      'MEMBER                     ROLE     STATE    HOST:PORT             TL  LAG  HEALTH',
    );
    expect(rows(text)).toEqual(['a-very-long-member-name-0  primary  running  2001:db8::1234:65535  1   0 B  ok']);
  });

  it('says when there is no leader', () => {
    expect(formatStatus(status({ leader: null })).split('\n')[0]).toBe('Cluster demo  term 1  leader none');
  });

  it('prints a FAILOVER IN PROGRESS line under the summary when no leader is there yet and nothing is targeted', () => {
    const text = formatStatus(status({ leader: null, failover: { inProgress: true, target: null } }));
    expect(text.split('\n').slice(0, 4)).toEqual([
      'Cluster demo  term 1  leader none',
      'FAILOVER IN PROGRESS',
      '',
      'MEMBER  ROLE     STATE    HOST:PORT       TL  LAG  HEALTH',
    ]);
  });

  it('names the target, its term and the reason on the FAILOVER IN PROGRESS line', () => {
    const text = formatStatus(
      status({
        term: 3,
        leader: null,
        failover: { inProgress: true, target: { member: 'demo-2', term: 4, reason: 'failover' } },
      }),
    );
    expect(text.split('\n')[1]).toBe('FAILOVER IN PROGRESS: failover to demo-2 for term 4');
  });

  it('prints the FAILOVER IN PROGRESS line during a switchover while the old leader still holds the record', () => {
    const text = formatStatus(
      status({ failover: { inProgress: true, target: { member: 'demo-1', term: 2, reason: 'switchover' } } }),
    );
    expect(text.split('\n').slice(0, 2)).toEqual([
      'Cluster demo  term 1  leader demo-0 (127.0.0.1:5432)',
      'FAILOVER IN PROGRESS: switchover to demo-1 for term 2',
    ]);
  });

  it('says what the election waits for, and since when, under the FAILOVER line', () => {
    const reason =
      'waiting for demo-0 (primary of term 3, last known at 0/5000000, not shut down cleanly) to report as a running replica: it does not report; at most 30000 ms since 2024-05-01T12:00:09.200Z';
    const text = formatStatus(
      status({
        leader: null,
        failover: { inProgress: true, target: null },
        controller: { id: '4242-0a1b2c3d', waiting: { reason, since: '2024-05-01T12:00:10.000Z' } },
      }),
    );
    expect(text.split('\n').slice(0, 3)).toEqual([
      'Cluster demo  term 1  leader none',
      'FAILOVER IN PROGRESS',
      `ELECTION WAITING since 2024-05-01T12:00:10.000Z: ${reason}`,
    ]);
  });

  it('says that nothing elects a primary when no controller is active during a failover', () => {
    const text = formatStatus(status({ leader: null, failover: { inProgress: true, target: null }, controller: null }));
    expect(text.split('\n')[2]).toBe('no active controller: nothing elects a primary (is `pgha controller` running?)');
  });

  it('shows the synchronous claim, and says when it is degraded', () => {
    const claim = { standbys: ['demo-1', 'demo-2'], quorum: 1, term: 1 };
    expect(
      formatStatus(status({ synchronous: { mode: 'quorum', count: 1, strict: false, claim, degraded: null } })).split(
        '\n',
      )[1],
    ).toBe('synchronous quorum 1: ANY 1 of demo-1, demo-2');
    const degraded = formatStatus(
      status({
        synchronous: {
          mode: 'quorum',
          count: 1,
          strict: true,
          claim: null,
          degraded: 'no standby confirms commits: strict mode, commits wait',
        },
      }),
    ).split('\n')[1];
    expect(degraded).toBe(
      'synchronous quorum 1 strict: no standby holds every commit — DEGRADED: no standby confirms commits: strict mode, commits wait',
    );
    expect(formatStatus(status())).not.toContain('synchronous');
  });

  it('prints no FAILOVER line when none is in progress', () => {
    expect(formatStatus(status())).not.toContain('FAILOVER');
  });

  it('says when the leader is not writable yet', () => {
    const text = formatStatus(
      status({ term: 7, leader: { member: 'demo-1', host: '10.0.0.2', port: 5433, writable: false } }),
    );
    expect(text.split('\n')[0]).toBe('Cluster demo  term 7  leader demo-1 (10.0.0.2:5433, not writable yet)');
    expect(rows(text)[1]).toMatch(/^demo-1 \* /);
    expect(rows(text)[0]).toMatch(/^demo-0 {3}/);
  });

  it('shows lag in bytes, KiB and MiB, and seconds only when behind', () => {
    const text = formatStatus(
      status({
        members: [
          member({ name: 'demo-0', lagBytes: 1023, lagSeconds: 0 }),
          member({ name: 'demo-1', lagBytes: 1536, lagSeconds: 0.25 }),
          member({ name: 'demo-2', lagBytes: 5 * 1024 * 1024 + 512 * 1024, lagSeconds: 12.5 }),
        ],
      }),
    );
    const lag = rows(text).map((r) => r.split(/ {2,}/)[5]);
    expect(lag).toEqual(['1023 B', '1.5 KiB / 0.25s', '5.5 MiB / 12.5s']);
  });

  it('shows a dash for an unknown lag and timeline', () => {
    const text = formatStatus(
      status({ members: [member({ role: 'unknown', timeline: null, lagBytes: null, lagSeconds: null })] }),
    );
    expect(rows(text)[0]!.split(/ {2,}/)).toEqual(['demo-0 *', 'unknown', 'running', '127.0.0.1:5432', '-', '-', 'ok']);
  });

  it('shows the problem of an unhealthy member, else says it is unhealthy', () => {
    const text = formatStatus(
      status({
        members: [
          member({ name: 'demo-0' }),
          member({ name: 'demo-1', healthy: false, problem: 'not streaming from the primary (receiver: not running)' }),
          member({ name: 'demo-2', healthy: false, problem: null, state: 'cloning' }),
        ],
      }),
    );
    expect(rows(text).map((r) => r.split(/ {2,}/).at(-1))).toEqual([
      'ok',
      'not streaming from the primary (receiver: not running)',
      'unhealthy',
    ]);
  });

  it('says when no member reports', () => {
    const text = formatStatus(status({ leader: null, members: [], failover: { inProgress: true, target: null } }));
    expect(text).toBe(
      [
        'Cluster demo  term 1  leader none',
        'FAILOVER IN PROGRESS',
        '',
        'MEMBER  ROLE  STATE  HOST:PORT  TL  LAG  HEALTH',
        '(no member reports: are the agents running?)',
        '',
      ].join('\n'),
    );
  });

  it('lists records it could not parse after the table', () => {
    const text = formatStatus(status({ problems: ['/pgha/demo/members/demo-9: v must be 1', 'bad leader'] }));
    expect(text.split('\n').slice(-3)).toEqual(['! /pgha/demo/members/demo-9: v must be 1', '! bad leader', '']);
  });

  it('adds the stored settings version to the summary line, and an asynchronous mode', () => {
    const config = {
      version: 4,
      synchronousMode: 'quorum' as const,
      synchronousCount: 2,
      synchronousStrict: true,
      maximumLagOnFailoverBytes: 1024,
      failsafeMode: false,
      updatedAt: '2024-05-01T12:00:00.000Z',
      updatedBy: 'pgha config set',
    };
    expect(formatStatus(status({ config })).split('\n')[0]).toBe(
      'Cluster demo  term 1  leader demo-0 (127.0.0.1:5432)  failsafe: off  settings v4',
    );
    expect(formatStatus(status({ config: { ...config, synchronousMode: 'off' } })).split('\n')[0]).toMatch(
      /leader demo-0 \(127\.0\.0\.1:5432\) {2}synchronous off {2}failsafe: off {2}settings v4$/,
    );
    expect(formatStatus(status({ config: { ...config, failsafeMode: true } })).split('\n')[0]).toMatch(
      /failsafe: on {2}settings v4$/,
    );
  });

  it('says which parameters wait for a restart of a member', () => {
    const text = formatStatus(
      status({ members: [member({ pendingRestart: ['max_files_per_process', 'shared_preload_libraries'] })] }),
    );
    expect(rows(text)).toEqual([
      'demo-0 *  primary  running  127.0.0.1:5432  1   0 B  ok (pending restart: max_files_per_process, shared_preload_libraries)',
    ]);
  });

  it('prints the multi-host connection strings after the table when there are any', () => {
    const urls = {
      readWrite: 'postgresql://postgres@127.0.0.1:5432,127.0.0.1:5433/postgres?target_session_attrs=read-write',
      readOnly: 'postgresql://postgres@127.0.0.1:5432,127.0.0.1:5433/postgres?target_session_attrs=prefer-standby',
      jdbcReadWrite: 'jdbc:postgresql://127.0.0.1:5432,127.0.0.1:5433/postgres?targetServerType=primary',
      jdbcReadOnly: 'jdbc:postgresql://127.0.0.1:5432,127.0.0.1:5433/postgres?targetServerType=preferSecondary',
    };
    expect(formatStatus(status({ urls })).split('\n').slice(-5)).toEqual([
      '',
      `read-write:  ${urls.readWrite}`,
      `read-only:   ${urls.readOnly}`,
      `JDBC:        ${urls.jdbcReadWrite}`,
      '',
    ]);
  });
});
