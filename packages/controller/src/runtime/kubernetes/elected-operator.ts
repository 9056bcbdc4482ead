/**
 * One operator replica: a `LeaseElector` candidate that runs an `Operator` only
 * while it leads. Each leadership gets a fresh Operator (a fresh list, queue and
 * watch), started when the Lease is won and stopped — awaited, so no write of it
 * is still to be sent — before the Lease is released or could be taken by
 * another replica. Every write of that Operator is also vetoed once the renew
 * deadline has passed (`mayWrite` ← `LeaseElector.mayAct`).
 *
 * The leadership's Operator also runs each cluster's failover controller
 * (cluster-controllers.ts); stopping the Operator stops them (bounded), so they run
 * only while this replica leads, give or take that bound. Their safety is not the
 * Lease's: each cluster's controllers elect one active controller through etcd,
 * and every controller write is guarded by holding that cluster's `controller`
 * key. What the Operator writes to etcd (switchover requests) is create-if-absent.
 * See docs/kubernetes.md, "Operator leader election".
 *
 * May import: the operator, the elector, the health decision, the clock.
 */
import { type Clock, systemClock } from '../../clock.js';
import { decideOperatorHealth, type OperatorHealth } from './decide-operator-health.js';
import { type LeaseApi, LeaseElector, type LeaseElectorLog } from './lease-elector.js';
import type { Operator } from './operator.js';

/** Options of {@link ElectedOperator}: the Lease, the identity and timing, and how to build one leadership's Operator. */
export interface ElectedOperatorOptions {
  api: LeaseApi;
  leaseNamespace: string;
  leaseName: string;
  identity: string;
  leaseDurationSeconds?: number;
  renewDeadlineMillis?: number;
  retryPeriodMillis?: number;
  clock?: Clock;
  log: LeaseElectorLog;
  /** Builds the Operator for one leadership; `mayWrite` must be passed to it as its option of that name. */
  createOperator(mayWrite: () => boolean): Operator;
  /** Called after the leadership's Operator has started (e.g. to log it). */
  onStartedLeading?(): void;
}

/** One operator replica: a Lease candidate that runs an Operator while it leads (see the file header). */
export class ElectedOperator {
  private readonly elector: LeaseElector;
  private readonly clock: Clock;
  private readonly startedMillis: number;
  /** The Operator of the current leadership, if any. */
  operator: Operator | undefined;
  /** Leaderships this replica has had (for tests and logs). */
  leaderships = 0;

  constructor(private readonly options: ElectedOperatorOptions) {
    this.clock = options.clock ?? systemClock;
    this.startedMillis = this.clock.now();
    this.elector = new LeaseElector({
      api: options.api,
      namespace: options.leaseNamespace,
      name: options.leaseName,
      identity: options.identity,
      leaseDurationSeconds: options.leaseDurationSeconds,
      renewDeadlineMillis: options.renewDeadlineMillis,
      retryPeriodMillis: options.retryPeriodMillis,
      clock: this.clock,
      log: options.log,
      onStartedLeading: () => this.lead(),
      onStoppedLeading: () => this.follow(),
    });
  }

  get identity(): string {
    return this.options.identity;
  }

  /** True while this replica leads and may write. */
  get leading(): boolean {
    return this.elector.mayAct();
  }

  start(): void {
    this.elector.start();
  }

  /** Stops the Operator (if leading), then releases the Lease so a standby takes over at its next try. */
  async stop(): Promise<void> {
    await this.elector.stop();
  }

  /** Answers for /healthz and /readyz. */
  health(): OperatorHealth {
    const s = this.elector.status();
    const retry = this.options.retryPeriodMillis ?? 2000;
    const renewDeadline = this.options.renewDeadlineMillis ?? 10_000;
    return decideOperatorHealth({
      nowMillis: this.clock.now(),
      lastRoundMillis: s.lastRoundMillis,
      lastApiSuccessMillis: s.lastApiSuccessMillis,
      startedMillis: this.startedMillis,
      leading: s.leading,
      identity: this.options.identity,
      holder: s.holder,
      // a round takes at most one read and one write, each bounded by the renew deadline
      stallMillis: retry + 2 * renewDeadline + 5000,
      // a healthy replica succeeds every retry period; a leader that has missed its renew deadline is not ready
      apiStaleMillis: Math.max(renewDeadline, 2 * retry),
    });
  }

  private lead(): void {
    this.leaderships++;
    const operator = this.options.createOperator(() => this.elector.mayAct());
    this.operator = operator;
    void operator.start().then(
      () => {
        if (this.operator === operator) this.options.onStartedLeading?.(); // not if the leadership already ended
      },
      (error) => this.options.log.warn(`the operator did not start: ${(error as Error).message}`),
    );
  }

  /**
   * Resolves once the Operator has stopped: no write of it can still be sent. If a
   * request of it hangs, so does this (and the Lease is then never released, only
   * left to expire): the safe way round. Its writes are refused anyway once the
   * renew deadline has passed (`mayWrite`).
   */
  private async follow(): Promise<void> {
    const operator = this.operator;
    this.operator = undefined;
    await operator?.stop();
  }
}
