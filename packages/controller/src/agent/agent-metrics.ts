// The agent's Prometheus metrics (`GET /metrics` on its health API). May import
// prom-client and the pure decide/ modules; reads nothing itself: every gauge is
// computed at scrape time from what the agent already holds (no query per scrape).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { type PostgresState, postgresStates } from '../decide/agent-role.js';

/** What the agent knows at scrape time; read once per scrape, must not throw. */
export interface AgentFacts {
  /** The agent's label for its postgres (down, starting, primary, replica). */
  readonly postgres: PostgresState;
  /** Whether this member holds the leader record. */
  readonly holdsLeader: boolean;
  /** The highest term this member has seen (0 before it read any). */
  readonly term: number;
  /** postgres's timeline from the last status query, null when unknown. */
  readonly timeline: number | null;
  /** The published member record's replication lag (0 on the primary, null while unknown). */
  readonly lagBytes: number | null;
  readonly lagSeconds: number | null;
  /** Milliseconds until our own lease deadline (negative: passed), null without a lease. */
  readonly millisToDeadline: number | null;
}

/**
 * Kinds of fence, for the `reason` label of `pgha_fences_total`. A label must have
 * few values, so the free-text reason the agent logs is reduced to one of these.
 */
export const fenceReasonClasses = ['lease-deadline', 'not-leader', 'etcd-unreachable', 'watchdog', 'other'] as const;
export type FenceReasonClass = (typeof fenceReasonClasses)[number];

/**
 * The class of a fence reason, as written by `decideAgentAction`, `decideWithoutEtcd`
 * and `Leadership` (see decide/agent-role.ts). Pure. Unknown text is `other`.
 */
export function fenceReasonClass(reason: string): FenceReasonClass {
  if (/no valid leader record/.test(reason)) return 'etcd-unreachable';
  if (/deadline passed/.test(reason)) return 'lease-deadline';
  if (/without holding the leader record|hold no leader record/.test(reason)) return 'not-leader';
  if (/watchdog/.test(reason)) return 'watchdog';
  return 'other';
}

/** Options of {@link AgentMetrics}. */
export interface AgentMetricsOptions {
  readonly cluster: string;
  readonly member: string;
  readonly facts: () => AgentFacts;
  /**
   * Also export prom-client's default process metrics (CPU, memory, event loop lag,
   * GC, handles) with the prefix `pgha_agent_`. Default false: a scrape then stays a
   * few dozen lines, and nothing samples the event loop in the background.
   */
  readonly processMetrics?: boolean;
}

/**
 * One agent's metrics, in a registry of its own (never prom-client's global one:
 * several agents may share a process, and a user's registry must not receive ours).
 * Every series carries the constant labels `cluster` and `member`.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly keepaliveLatency: Histogram;
  private readonly fences: Counter<'reason'>;
  private readonly restarts: Counter;

  constructor(options: AgentMetricsOptions) {
    const r = this.registry;
    r.setDefaultLabels({ cluster: options.cluster, member: options.member });
    const facts = options.facts;
    const registers = [r];
    new Gauge({
      name: 'pgha_role',
      help: "1 for the agent's current label of its postgres (down, starting, primary, replica), 0 for the others",
      labelNames: ['role'],
      registers,
      collect() {
        const current = facts().postgres;
        for (const role of postgresStates) this.set({ role }, role === current ? 1 : 0);
      },
    });
    new Gauge({
      name: 'pgha_leader',
      help: 'Whether this member holds the leader record (1) or not (0)',
      registers,
      collect() {
        this.set(facts().holdsLeader ? 1 : 0);
      },
    });
    new Gauge({
      name: 'pgha_term',
      help: 'The highest term this member has seen',
      registers,
      collect() {
        this.set(facts().term);
      },
    });
    // No sample while unknown: a 0 would read as "caught up" or "timeline 0". prom-client
    // always writes a 0 for a gauge without labels, so these declare `member` (the same
    // value the default label would give) and have no sample after reset().
    const member = options.member;
    const optional = (name: string, help: string, read: (f: AgentFacts) => number | null) =>
      new Gauge({
        name,
        help,
        labelNames: ['member'],
        registers,
        collect() {
          this.reset();
          const value = read(facts());
          if (value !== null) this.set({ member }, value);
        },
      });
    optional('pgha_timeline', "postgres's timeline at the last status query (absent while unknown)", (f) => f.timeline);
    optional(
      'pgha_replication_lag_bytes',
      "Bytes of WAL this member's replay is behind the primary, as in its member record (0 on the primary; absent while unknown)",
      (f) => f.lagBytes,
    );
    optional(
      'pgha_replication_lag_seconds',
      "Seconds this member's last replayed transaction is behind, as in its member record (0 on the primary; absent while unknown)",
      (f) => f.lagSeconds,
    );
    optional(
      'pgha_fencing_deadline_seconds',
      'Seconds until this member’s own lease deadline (negative: passed); a primary fences itself when it reaches 0',
      (f) => (f.millisToDeadline === null ? null : f.millisToDeadline / 1000),
    );
    this.keepaliveLatency = new Histogram({
      name: 'pgha_lease_keepalive_latency_seconds',
      help: 'Time from sending a lease keepalive to etcd acknowledging it',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.fences = new Counter({
      name: 'pgha_fences_total',
      help: 'Times this agent fenced its postgres (killed it because it must not accept writes), by kind of reason',
      labelNames: ['reason'],
      registers,
    });
    // Every class from the start: rate() and increase() need the 0 before the first.
    for (const reason of fenceReasonClasses) this.fences.inc({ reason }, 0);
    this.restarts = new Counter({
      name: 'pgha_postgres_restarts_total',
      help: 'Times the control loop started postgres again after it stopped (crashed, fenced, or stopped for new settings)',
      registers,
    });
    if (options.processMetrics === true) collectDefaultMetrics({ register: r, prefix: 'pgha_agent_' });
  }

  /** A keepalive was acknowledged `latencyMillis` after it was sent. */
  keepaliveAcknowledged(latencyMillis: number): void {
    this.keepaliveLatency.observe(latencyMillis / 1000);
  }

  /** The agent fenced its postgres for `reason`. */
  fenced(reason: string): void {
    this.fences.inc({ reason: fenceReasonClass(reason) });
  }

  /** The control loop started postgres again. */
  restarted(): void {
    this.restarts.inc();
  }

  /** The text a scrape answers, and its content type. */
  async scrape(): Promise<{ readonly contentType: string; readonly body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
