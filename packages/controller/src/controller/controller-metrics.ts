// The controller's Prometheus metrics (`pgha controller --metrics-port`). May import
// prom-client and @pgha/core; the controller tells it what happened, and the gauges
// are computed at scrape time from what it remembers.
import { type HistoryRecord, targetReasons } from '@pgha/core';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Why a promotion happened, as history records say: the target's reasons, plus `restart` (re-elected without a target). */
export const promotionReasons = [...targetReasons, 'restart'] as const;

/** Options of {@link ControllerMetrics}. */
export interface ControllerMetricsOptions {
  readonly cluster: string;
  /** Milliseconds of the controller's clock (the wall clock: history records carry wall times). */
  readonly now: () => number;
}

/**
 * One controller's metrics, in a registry of its own, each series labelled with the
 * constant `cluster`.
 *
 * Every controller, active or standing by, follows the cluster, so each reports the
 * time without a primary; only the active one writes history, so promotions and
 * election durations are counted by the controller that was active when the new
 * primary became writable (sum them over controllers; `pgha_controller_active` says
 * which one is).
 */
export class ControllerMetrics {
  readonly registry = new Registry();
  private readonly promotions: Counter<'reason'>;
  private readonly election: Histogram<'reason'>;
  /** When this controller last saw the cluster lose its writable primary; null while it has one. */
  private withoutPrimarySince: number | null = null;
  /** Milliseconds without a primary in intervals that have ended. */
  private closedMillis = 0;
  /** Seconds already added to the counter (it is advanced to the total at each scrape). */
  private reportedSeconds = 0;
  private active = false;

  constructor(private readonly options: ControllerMetricsOptions) {
    const r = this.registry;
    r.setDefaultLabels({ cluster: options.cluster });
    const registers = [r];
    const self = this;
    this.promotions = new Counter({
      name: 'pgha_promotions_total',
      help: 'New primaries recorded in the history by this controller, by reason (failover, switchover, manual-failover, bootstrap, restart)',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of promotionReasons) this.promotions.inc({ reason }, 0);
    this.election = new Histogram({
      name: 'pgha_election_duration_seconds',
      help: 'From this controller seeing no writable primary to it seeing the new primary writable, by reason',
      labelNames: ['reason'],
      buckets: [0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120],
      registers,
    });
    new Gauge({
      name: 'pgha_without_primary_seconds',
      help: 'Seconds since the cluster has had no writable primary (no leader record, or one not writable yet); 0 while it has one',
      registers,
      collect() {
        const since = self.withoutPrimarySince;
        this.set(since === null ? 0 : Math.max(0, self.options.now() - since) / 1000);
      },
    });
    new Counter({
      name: 'pgha_without_primary_seconds_total',
      help: 'Total seconds this controller has seen the cluster without a writable primary',
      registers,
      collect() {
        const since = self.withoutPrimarySince;
        const total = (self.closedMillis + (since === null ? 0 : Math.max(0, self.options.now() - since))) / 1000;
        if (total > self.reportedSeconds) {
          this.inc(total - self.reportedSeconds);
          self.reportedSeconds = total;
        }
      },
    });
    new Gauge({
      name: 'pgha_controller_active',
      help: 'Whether this controller is the active one (1) or stands by (0)',
      registers,
      collect() {
        this.set(self.active ? 1 : 0);
      },
    });
  }

  /** What a pass saw: whether the cluster has a writable primary now, and whether we are active. */
  observe(hasWritablePrimary: boolean, active: boolean): void {
    this.active = active;
    const now = this.options.now();
    if (hasWritablePrimary) {
      if (this.withoutPrimarySince !== null) this.closedMillis += Math.max(0, now - this.withoutPrimarySince);
      this.withoutPrimarySince = null;
    } else this.withoutPrimarySince ??= now;
  }

  /**
   * This controller recorded `history`: one promotion, and (when the loss of the old
   * primary was seen, `detectedAt`) the election's duration up to now, when the new
   * primary is writable.
   */
  promoted(history: HistoryRecord): void {
    this.promotions.inc({ reason: history.reason });
    if (history.detectedAt === null) return;
    const seconds = (this.options.now() - Date.parse(history.detectedAt)) / 1000;
    if (seconds >= 0) this.election.observe({ reason: history.reason }, seconds);
  }

  /** The text a scrape answers, and its content type. */
  async scrape(): Promise<{ readonly contentType: string; readonly body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
