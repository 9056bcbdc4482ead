/**
 * What the operator's `/healthz` and `/readyz` answer, decided from what the
 * leader-election loop last did. Pure: the shell passes the times it kept.
 *
 * - `/healthz` (liveness): the election loop is still going round. It runs every
 *   retry period whatever the API server does (each request has a timeout), so a
 *   loop that has not run for `stallMillis` means a stuck process, which a restart
 *   fixes. An unreachable API server does not fail liveness: restarting would not
 *   bring it back.
 * - `/readyz` (readiness): a request to the API server succeeded within
 *   `apiStaleMillis`. A standby is ready too: it reads the Lease every retry period,
 *   so it is ready exactly when it could take over. (No Service routes to the
 *   operator; readiness gates a rolling update, which should wait for a new pod that
 *   can reach the API server, leader or not.)
 *
 * May import: nothing.
 */

/** What the probes are decided from: the election loop's last round and last API success, on the monotonic clock. */
export interface OperatorHealthSnapshot {
  nowMillis: number;
  /** Monotonic time the election loop last started a round (null: never yet). */
  lastRoundMillis: number | null;
  /** Monotonic time a request to the API server last succeeded (null: never). */
  lastApiSuccessMillis: number | null;
  startedMillis: number;
  leading: boolean;
  identity: string;
  /** The Lease's holder as last read (null: unknown or none). */
  holder: string | null;
  stallMillis: number;
  apiStaleMillis: number;
}

/** One probe's answer: 200 when ok, else 503; the message is the response body. */
export interface ProbeAnswer {
  ok: boolean;
  message: string;
}

/** The answers of both probes. */
export interface OperatorHealth {
  healthz: ProbeAnswer;
  readyz: ProbeAnswer;
}

/** Decides `/healthz` and `/readyz` (see the header for what each means). */
export function decideOperatorHealth(s: OperatorHealthSnapshot): OperatorHealth {
  const since = (t: number | null) => (t === null ? null : Math.round(s.nowMillis - t));
  const role = s.leading ? 'leader' : `standby (leader: ${s.holder ?? 'none'})`;
  const roundAge = since(s.lastRoundMillis);
  const alive = (roundAge ?? s.nowMillis - s.startedMillis) < s.stallMillis;
  const healthz: ProbeAnswer = alive
    ? { ok: true, message: `ok: ${s.identity} ${role}` }
    : {
        ok: false,
        message: `the leader-election loop has not run for ${roundAge ?? Math.round(s.nowMillis - s.startedMillis)} ms (limit ${s.stallMillis} ms)`,
      };
  const apiAge = since(s.lastApiSuccessMillis);
  const readyz: ProbeAnswer =
    apiAge !== null && apiAge < s.apiStaleMillis
      ? { ok: true, message: `ok: ${s.identity} ${role}; API server answered ${apiAge} ms ago` }
      : {
          ok: false,
          message:
            apiAge === null
              ? `no request to the API server has succeeded yet (${s.identity} ${role})`
              : `the API server last answered ${apiAge} ms ago (limit ${s.apiStaleMillis} ms); ${s.identity} ${role}`,
        };
  return { healthz, readyz };
}
