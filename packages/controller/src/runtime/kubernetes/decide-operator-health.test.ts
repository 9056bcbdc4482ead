import { describe, expect, it } from 'vitest';
import { decideOperatorHealth, type OperatorHealthSnapshot } from './decide-operator-health.js';

const snapshot = (overrides: Partial<OperatorHealthSnapshot> = {}): OperatorHealthSnapshot => ({
  nowMillis: 100_000,
  lastRoundMillis: 99_000,
  lastApiSuccessMillis: 99_000,
  startedMillis: 0,
  leading: false,
  identity: 'op-a',
  holder: 'op-b',
  stallMillis: 30_000,
  apiStaleMillis: 10_000,
  ...overrides,
});

describe('decideOperatorHealth', () => {
  it('calls a standby that reaches the API server live and ready, naming the leader', () => {
    const h = decideOperatorHealth(snapshot());
    expect(h.healthz.ok).toBe(true);
    expect(h.readyz).toEqual({ ok: true, message: 'ok: op-a standby (leader: op-b); API server answered 1000 ms ago' });
  });

  it('is not ready when the API server has not answered within the limit, but stays live (a restart would not help)', () => {
    const h = decideOperatorHealth(snapshot({ lastApiSuccessMillis: 80_000, leading: true }));
    expect(h.healthz.ok).toBe(true);
    expect(h.readyz.ok).toBe(false);
    expect(h.readyz.message).toMatch(/last answered 20000 ms ago/);
  });

  it('is not ready before any request has succeeded', () => {
    expect(decideOperatorHealth(snapshot({ lastApiSuccessMillis: null })).readyz.ok).toBe(false);
  });

  it('fails liveness when the election loop has stalled', () => {
    const h = decideOperatorHealth(snapshot({ lastRoundMillis: 60_000 }));
    expect(h.healthz).toEqual({
      ok: false,
      message: 'the leader-election loop has not run for 40000 ms (limit 30000 ms)',
    });
  });

  it('gives a process that has not run a round yet until the stall limit after its start', () => {
    expect(decideOperatorHealth(snapshot({ lastRoundMillis: null, startedMillis: 90_000 })).healthz.ok).toBe(true);
    expect(decideOperatorHealth(snapshot({ lastRoundMillis: null, startedMillis: 10_000 })).healthz.ok).toBe(false);
  });
});
