import { describe, expect, it } from 'vitest';
import { leader } from './__fixtures__/records.js';
import { decideHealth, type HealthCheck, type HealthSnapshot, healthPaths, parseLagBytes } from './health.js';

// Literal fixtures built with small override factories. Monotonic time: now is
// 10 000 ms; the loop last finished a pass at 9 500 ms and postgres answered at 9 600.

/** demo-1, a running replica streaming from demo-0, primary of term 3, 0 bytes behind. */
function replica(overrides: Partial<HealthSnapshot> = {}): HealthSnapshot {
  return {
    member: 'demo-1',
    now: 10_000,
    lastTickAt: 9_500,
    actingSince: null,
    livenessTimeoutMillis: 15_000,
    state: 'running',
    postgres: 'replica',
    postgresRunning: true,
    observation: {
      inRecovery: true,
      receiverStatus: 'streaming',
      timeline: 2,
      lsn: '0/5000000',
      replayedLsn: '0/5000000',
    },
    observedAt: 9_600,
    observationMaxAgeMillis: 3_000,
    holdsLeader: false,
    leaseValid: true,
    leader: leader(),
    term: 3,
    fenced: null,
    lagBytes: 0,
    lagSeconds: 0,
    ...overrides,
  };
}

/** demo-0, the writable primary of term 3. */
function primary(overrides: Partial<HealthSnapshot> = {}): HealthSnapshot {
  return replica({
    member: 'demo-0',
    postgres: 'primary',
    observation: { inRecovery: false, receiverStatus: null, timeline: 2, lsn: '0/5000000', replayedLsn: '0/5000000' },
    holdsLeader: true,
    ...overrides,
  });
}

const ask = (s: HealthSnapshot, check: HealthCheck, maxLagBytes: number | null = null) =>
  decideHealth(s, { check, maxLagBytes });
const status = (s: HealthSnapshot, check: HealthCheck, maxLagBytes: number | null = null) =>
  ask(s, check, maxLagBytes).status;

describe('decideHealth: /primary', () => {
  it('answers 200 on the member holding the writable leader record whose postgres is out of recovery', () => {
    const answer = ask(primary(), 'primary');
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ member: 'demo-0', role: 'primary', term: 3, timeline: 2, reason: null });
  });

  it('answers 503 on a replica, naming the leader', () => {
    const answer = ask(replica(), 'primary');
    expect(answer.status).toBe(503);
    expect(answer.body.reason).toBe('demo-0 holds the leader record');
  });

  it('answers 503 while the leader record is not writable yet (promotion in progress)', () => {
    expect(status(primary({ leader: leader({ writable: false }) }), 'primary')).toBe(503);
  });

  it('answers 503 past the lease deadline, even though postgres still answers as writable', () => {
    expect(ask(primary({ leaseValid: false }), 'primary').body.reason).toMatch(/lease deadline/);
  });

  it('answers 503 after a fence', () => {
    const fenced = primary({ postgresRunning: false, postgres: 'down', fenced: 'lease deadline passed' });
    expect(ask(fenced, 'primary').body.reason).toBe('postgres was fenced: lease deadline passed');
  });

  it('answers 503 while postgres is still in recovery, though the record is ours and writable', () => {
    const promoting = primary({ observation: replica().observation });
    expect(ask(promoting, 'primary').body.reason).toBe('postgres is still in recovery');
  });

  it('answers 503 when the last answer of postgres is stale (the loop is stuck), failing closed', () => {
    expect(ask(primary({ observedAt: 5_000 }), 'primary').body.reason).toMatch(/did not answer/);
  });

  it('answers 503 when the leader record names someone else, whatever postgres says (an out-of-band promotion)', () => {
    const rogue = primary({ holdsLeader: false, leader: leader({ member: 'demo-2' }) });
    expect(status(rogue, 'primary')).toBe(503);
    expect(status(rogue, 'replica')).toBe(503);
  });

  it('answers 503 when the leader record names this member under a lease it does not hold (its previous run)', () => {
    expect(ask(primary({ holdsLeader: false }), 'primary').body.reason).toMatch(/not held under our lease/);
  });

  it('answers 503 everywhere when there is no leader', () => {
    expect(ask(replica({ leader: null }), 'primary').body.reason).toBe('there is no leader');
  });

  it('answers the same for /leader and /read-write', () => {
    expect(healthPaths['/leader']).toBe('primary');
    expect(healthPaths['/read-write']).toBe('primary');
  });
});

describe('decideHealth: /replica', () => {
  it('answers 200 on a running replica that streams', () => {
    expect(ask(replica(), 'replica')).toMatchObject({ status: 200, body: { role: 'replica', streaming: true } });
  });

  it('answers 503 on the primary', () => {
    expect(ask(primary(), 'replica').body.reason).toBe('postgres is out of recovery');
  });

  it('answers 503 on a replica that does not stream', () => {
    const alone = replica({ observation: { ...replica().observation!, receiverStatus: null } });
    expect(ask(alone, 'replica').body.reason).toBe('not streaming from the primary (receiver: not running)');
  });

  it('answers 503 on a replica still starting or cloning', () => {
    expect(status(replica({ state: 'starting' }), 'replica')).toBe(503);
    expect(status(replica({ state: 'cloning', postgresRunning: false, postgres: 'down' }), 'replica')).toBe(503);
  });

  it('answers 503 on the elected member holding the leader record while it still replays', () => {
    expect(ask(replica({ holdsLeader: true }), 'replica').body.reason).toBe('this member holds the leader record');
  });

  it('with ?lag, answers 200 within the bound and 503 beyond it', () => {
    const behind = replica({ lagBytes: 4096 });
    expect(status(behind, 'replica', 4096)).toBe(200);
    expect(ask(behind, 'replica', 0).body.reason).toBe('lag 4096 B exceeds 0 B');
    expect(status(replica(), 'replica', 0)).toBe(200);
  });

  it('with ?lag, answers 503 when the lag is not known', () => {
    expect(ask(replica({ lagBytes: null }), 'replica', 1024).body.reason).toBe('the lag is not known yet');
    expect(status(replica({ lagBytes: null }), 'replica')).toBe(200);
  });

  it('answers the same for /read-only', () => {
    expect(healthPaths['/read-only']).toBe('replica');
  });
});

describe('decideHealth: /readiness and /health', () => {
  it('is ready as the writable primary, or as a running replica even when it does not stream', () => {
    expect(status(primary(), 'readiness')).toBe(200);
    expect(status(replica({ observation: { ...replica().observation!, receiverStatus: null } }), 'readiness')).toBe(
      200,
    );
  });

  it('is not ready while holding a leader record that is not writable yet, nor while postgres is down', () => {
    expect(status(primary({ leader: leader({ writable: false }) }), 'readiness')).toBe(503);
    expect(status(replica({ postgresRunning: false, postgres: 'down' }), 'readiness')).toBe(503);
    expect(status(replica({ state: 'cloning' }), 'readiness')).toBe(503);
  });

  it('is healthy whenever postgres runs and answered recently, in any role', () => {
    expect(status(primary(), 'health')).toBe(200);
    expect(
      status(
        replica({ state: 'starting', observation: { ...replica().observation!, receiverStatus: null } }),
        'health',
      ),
    ).toBe(200);
    expect(status(replica({ observation: null }), 'health')).toBe(503);
    expect(ask(replica({ postgresRunning: false }), 'health').body).toMatchObject({
      reason: 'postgres is not running',
      role: 'replica',
    });
  });

  it('reports unknown role and no positions when postgres has not answered recently', () => {
    const body = ask(replica({ observedAt: 1_000 }), 'health').body;
    expect(body).toMatchObject({ role: 'unknown', timeline: null, lsn: null, lagBytes: null, streaming: false });
  });
});

describe('decideHealth: /liveness', () => {
  it('is alive while the control loop finishes passes within the bound, whatever postgres does', () => {
    expect(status(replica({ postgresRunning: false, observation: null, state: 'cloning' }), 'liveness')).toBe(200);
    expect(status(replica({ lastTickAt: 10_000 - 15_000 }), 'liveness')).toBe(200);
  });

  it('is not alive once the loop has not finished a pass for longer than the bound', () => {
    expect(ask(replica({ lastTickAt: 10_000 - 15_001 }), 'liveness').body.reason).toBe(
      'the control loop has not finished a pass for 15001 ms (bound 15000 ms)',
    );
  });

  it('is alive during a long action (a re-clone inside the loop may last as long as a base backup)', () => {
    expect(status(replica({ lastTickAt: -3_600_000, actingSince: -3_500_000 }), 'liveness')).toBe(200);
  });
});

describe('parseLagBytes', () => {
  it.each([
    ['0', 0],
    ['4096', 4096],
    ['16MB', 16 * 1024 * 1024],
    ['16mb', 16 * 1024 * 1024],
    ['512kB', 512 * 1024],
    ['1GiB', 1024 ** 3],
    ['1.5M', 1.5 * 1024 * 1024],
    [' 10 B ', 10],
  ])('reads %j as %d bytes', (text, bytes) => {
    expect(parseLagBytes(text)).toBe(bytes);
  });

  it.each(['', 'x', '-1', '16 parsecs', '1e3', '99999999999TB'])('refuses %j', (text) => {
    expect(parseLagBytes(text)).toBeNull();
  });
});
