// What the harness needs from a system under test. A target owns every process it
// starts and kills them all in teardown(); the harness owns the writer and the clock.
import type pg from 'pg';

/** The faults the benchmark injects, in the order it runs them. */
export const faults = ['host-loss', 'postgres-crash', 'switchover'] as const;
export type Fault = (typeof faults)[number];

/**
 * Replication modes a target runs in: `async` (the systems' default) and `sync`
 * (pgha's `config` record in `quorum` mode with count 1; Patroni's
 * `synchronous_mode: true` with `synchronous_node_count` 1): a commit is
 * acknowledged only once one standby has flushed it.
 */
export const modes = ['async', 'sync'] as const;
export type Mode = (typeof modes)[number];

/** A named settings profile of a system (its defaults, its tightest accepted, ...). */
export interface Settings {
  readonly name: string;
  /** One line for the report: the values that matter for failover timing. */
  readonly description: string;
}

/** One member of a running cluster. */
export interface TargetMember {
  /** The member's name: its application_name in pg_stat_replication. */
  readonly name: string;
  readonly host: string;
  readonly port: number;
}

/** The processes that make up a member right now (null when not running). */
export interface MemberPids {
  /** The HA daemon: Patroni, or pgha's agent. */
  readonly daemon: number | null;
  readonly postmaster: number | null;
}

/** A system under test. */
export interface Target {
  /** `patroni` or `pgha`. */
  readonly system: string;
  readonly profiles: readonly Settings[];
  /**
   * Starts a fresh three-member cluster with `settings` in `mode` and waits until it
   * is healthy (in `sync` mode: and until a standby confirms commits).
   */
  setup(settings: Settings, mode: Mode): Promise<readonly TargetMember[]>;
  /**
   * Switches the running cluster's replication mode through the system's own
   * cluster-wide setting and resolves once the primary applies it (`sync`: a standby
   * confirms commits; `async`: none is asked to).
   */
  setMode(mode: Mode, timeoutMillis: number): Promise<void>;
  /**
   * Resolves once the system itself says a standby confirms the current primary's
   * commits (pgha: the `sync` claim of the current term has quorum ≥ 1; Patroni: a
   * member has the `sync_standby` role).
   */
  waitSynchronous(timeoutMillis: number): Promise<void>;
  pids(member: TargetMember): MemberPids;
  /** How to connect to `member` as a superuser (the harness adds its own timeouts). */
  clientConfig(member: TargetMember): pg.ClientConfig;
  /** kill -9 of the member's HA daemon and its postmaster together: the host is gone. */
  hostLoss(member: TargetMember): Promise<void>;
  /** kill -9 of the member's postmaster only; its HA daemon lives on. */
  postgresCrash(member: TargetMember): Promise<void>;
  /**
   * Starts the system's planned switchover away from `primary` and resolves when its
   * command has finished (the harness measures from the moment this is called).
   */
  switchover(primary: TargetMember): Promise<void>;
  /** The lost host is back: start the member's HA daemon again, as a supervisor would. */
  restartHost(member: TargetMember): Promise<void>;
  /** Resolves with the primary once there is one and every other member streams from it. */
  waitHealthy(timeoutMillis: number): Promise<TargetMember>;
  /** Where its logs are, for error messages. */
  readonly logDir: string | null;
  /** Kills every process it started and removes its files. Idempotent. */
  teardown(): Promise<void>;
}
