/**
 * The opt-in Prometheus metrics of a {@link Pool} (`metrics: { registry }`).
 *
 * prom-client is an optional peer dependency: this module imports only its types, and
 * loads it (synchronously, with a `require` made by `createRequire`) the first time a
 * pool is given a registry,
 * so an application that does not ask for metrics never loads it. It is resolved from
 * here, which finds the application's own copy (npm and pnpm link an installed peer
 * beside this package); even a second copy would do, as a metric registers itself in
 * the registry through the registry's public `registerMetric`.
 */
import { createRequire } from 'node:module';
import { isPghaError, PghaError } from '@pgha/core';
import type * as PromClient from 'prom-client';

/** The `metrics` option of a {@link Pool}. */
export interface PoolMetricsOptions {
  /** The prom-client `Registry` to register the pool's metrics in (`register` for the default one). */
  readonly registry: PromClient.Registry;
  /**
   * The value of the `pool` label, telling apart pools that share a registry (several
   * pools may use one name: their series add up). Default `'default'`.
   */
  readonly pool?: string;
}

/** What a pool reports at scrape time. */
export interface PoolMetricsSource {
  /** The `pool` label. */
  readonly name: string;
  /** Connections by role (primary, replica, candidate, connecting), now. */
  connections(): Readonly<Record<string, number>>;
  /** Seconds since the pool last had a writable primary to route to, 0 while it has one. */
  withoutPrimarySeconds(): number;
}

/** Roles of `pgha_client_connections`: where a connection goes, or `connecting` before it knows. */
export const connectionRoles = ['primary', 'replica', 'candidate', 'connecting'] as const;

/**
 * The type label of `pgha_client_errors_total`: a pgha error's `code` (no-primary,
 * primary-changed, outcome-unknown, not-primary, discovery-stale, no-replica...),
 * `database` for an error the server sent (pg's DatabaseError, untouched by pgha),
 * `other` for anything else (a connection refused before routing, a timeout of pg's).
 */
export function errorType(error: unknown): string {
  if (isPghaError(error)) return error.code;
  const e = error as { code?: unknown; severity?: unknown } | null;
  if (typeof e?.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && typeof e.severity === 'string') return 'database';
  return 'other';
}

/** The metrics of every pool using one registry (prom-client refuses a name registered twice). */
interface SharedMetrics {
  readonly sources: Set<PoolMetricsSource>;
  readonly reroutes: PromClient.Counter<'pool'>;
  readonly errors: PromClient.Counter<'pool' | 'type'>;
}

const byRegistry = new WeakMap<PromClient.Registry, SharedMetrics>();

let promClient: typeof PromClient | null = null;

/**
 * Where this module is, to resolve prom-client from: its URL in the ESM build, its
 * file name in the CommonJS one (whose `import.meta` the bundler leaves empty). Not a
 * bare `require`: the ESM bundle replaces it with a stub that refuses to load modules.
 */
function moduleLocation(): string {
  const url = (import.meta as { url?: string }).url;
  if (typeof url === 'string') return url;
  return typeof __filename === 'string' ? __filename : `${process.cwd()}/`;
}

function loadPromClient(): typeof PromClient {
  if (promClient !== null) return promClient;
  try {
    promClient = createRequire(moduleLocation())('prom-client') as typeof PromClient;
    return promClient;
  } catch (error) {
    throw new PghaError(
      'invalid-option',
      `the metrics option needs prom-client, which could not be loaded (${(error as Error).message.split('\n')[0]}); install it beside @pgha/client (npm install prom-client) or drop the metrics option`,
      { cause: error },
    );
  }
}

/**
 * Validates the `metrics` option and loads prom-client. @throws PghaError `invalid-option`
 */
export function checkMetricsOptions(value: unknown): PoolMetricsOptions {
  const o = value as Partial<PoolMetricsOptions> | null;
  if (typeof o !== 'object' || o === null || typeof o.registry?.registerMetric !== 'function') {
    throw new PghaError(
      'invalid-option',
      'metrics must be { registry } with a prom-client Registry: new Pool({ ..., metrics: { registry: new Registry() } }) (Registry from prom-client)',
    );
  }
  if (o.pool !== undefined && (typeof o.pool !== 'string' || o.pool === '')) {
    throw new PghaError('invalid-option', `metrics.pool must be a non-empty string, got ${String(o.pool)}`);
  }
  loadPromClient();
  return o as PoolMetricsOptions;
}

function sharedMetrics(registry: PromClient.Registry): SharedMetrics {
  const existing = byRegistry.get(registry);
  if (existing !== undefined) return existing;
  const { Counter, Gauge } = loadPromClient();
  const sources = new Set<PoolMetricsSource>();
  const registers = [registry];
  new Gauge({
    name: 'pgha_client_connections',
    help: 'Open connections of the pool, by the role of the server they go to (connecting: not yet routed)',
    labelNames: ['pool', 'role'],
    registers,
    collect() {
      this.reset();
      const totals = new Map<string, Record<string, number>>();
      for (const source of sources) {
        const total = totals.get(source.name) ?? Object.fromEntries(connectionRoles.map((r) => [r, 0]));
        for (const [role, n] of Object.entries(source.connections())) total[role] = (total[role] ?? 0) + n;
        totals.set(source.name, total);
      }
      for (const [pool, total] of totals) for (const [role, n] of Object.entries(total)) this.set({ pool, role }, n);
    },
  });
  new Gauge({
    name: 'pgha_client_without_primary_seconds',
    help: 'Seconds since the pool last had a writable primary to route new connections to; 0 while it has one',
    labelNames: ['pool'],
    registers,
    collect() {
      this.reset();
      const longest = new Map<string, number>();
      for (const s of sources) longest.set(s.name, Math.max(longest.get(s.name) ?? 0, s.withoutPrimarySeconds()));
      for (const [pool, seconds] of longest) this.set({ pool }, seconds);
    },
  });
  const shared: SharedMetrics = {
    sources,
    reroutes: new Counter({
      name: 'pgha_client_reroutes_total',
      help: 'Times the pool moved its new connections to a new primary (after the first one it found)',
      labelNames: ['pool'],
      registers,
    }),
    errors: new Counter({
      name: 'pgha_client_errors_total',
      help: "Failed checkouts and statements, by pgha's classification (an error code of @pgha/client, database, other)",
      labelNames: ['pool', 'type'],
      registers,
    }),
  };
  byRegistry.set(registry, shared);
  return shared;
}

/** One pool's handle on its metrics. */
export class PoolMetrics {
  private readonly shared: SharedMetrics;
  private readonly pool: string;
  private readonly registered: PoolMetricsSource;

  constructor(options: PoolMetricsOptions, source: Omit<PoolMetricsSource, 'name'>) {
    this.pool = options.pool ?? 'default';
    this.shared = sharedMetrics(options.registry);
    this.registered = {
      name: this.pool,
      connections: source.connections,
      withoutPrimarySeconds: source.withoutPrimarySeconds,
    };
    this.shared.sources.add(this.registered);
    // Series exist from the start (rate() needs the 0 before the first increment).
    this.shared.reroutes.inc({ pool: this.pool }, 0);
  }

  /** The pool moved to a new primary. */
  rerouted(): void {
    this.shared.reroutes.inc({ pool: this.pool });
  }

  /** A checkout or a statement failed with `error`. */
  failed(error: unknown): void {
    this.shared.errors.inc({ pool: this.pool, type: errorType(error) });
  }

  /** The pool ended: its gauges leave the scrape (its counters stay). */
  close(): void {
    this.shared.sources.delete(this.registered);
  }
}
