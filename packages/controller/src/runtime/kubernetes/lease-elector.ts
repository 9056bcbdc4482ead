/**
 * The leader-election shell: every retry period it reads the Lease, asks
 * `decideLeaderElection`, writes what that says (create, take, renew — each with
 * the resourceVersion read) and tracks its own deadline. It calls
 * `onStartedLeading` after a successful take or create, and `onStoppedLeading`
 * (awaited) when its renew deadline passes without a successful renewal, when it
 * reads that someone else holds the Lease, or when it is stopped; on `stop()` it
 * then releases the Lease so a standby takes over at once.
 *
 * Timing (client-go's defaults: 15 s / 10 s / 2 s): a renewal is tried every retry
 * period; the leader stops acting `renewDeadlineMillis` after *sending* its last
 * successful write, a timer makes sure of that even when a request hangs, and
 * `mayAct()` lets the work it guards check the deadline itself right before each
 * write (a timer can fire late on a busy event loop). See decide-leader-election.ts
 * for why that deadline precedes any take-over.
 *
 * May import: @kubernetes/client-node, the pure decision, the clock.
 */
import { ApiException, KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import { type Clock, systemClock } from '../../clock.js';
import {
  decideLeaderElection,
  decideRelease,
  type LeaseObservation,
  type LeaseSpec,
  leaderElectionTimingProblem,
  leadershipDeadline,
  microTime,
  type ObservedLease,
} from './decide-leader-election.js';

/** The three Lease requests leader election needs (a port, so tests can break it). */
export interface LeaseApi {
  /** The Lease, or null when it does not exist. */
  read(namespace: string, name: string): Promise<ObservedLease | null>;
  /** Creates it; rejects with a 409 when it exists. */
  create(namespace: string, name: string, spec: LeaseSpec): Promise<ObservedLease>;
  /** Replaces its spec if its resourceVersion is still `resourceVersion`; rejects with a 409 otherwise. */
  replace(namespace: string, name: string, resourceVersion: string, spec: LeaseSpec): Promise<ObservedLease>;
}

const statusCode = (error: unknown): number | undefined => (error instanceof ApiException ? error.code : undefined);

interface LeaseObject {
  metadata: { resourceVersion?: string };
  spec?: LeaseSpec;
}
/** MicroTime fields as strings whatever the client's deserializer made of them (a Date would lose the format). */
const time = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : v instanceof Date ? microTime(v) : undefined;
const observed = (o: unknown): ObservedLease => {
  const spec = (o as LeaseObject).spec ?? {};
  return {
    resourceVersion: (o as LeaseObject).metadata.resourceVersion ?? '',
    spec: { ...spec, acquireTime: time(spec.acquireTime), renewTime: time(spec.renewTime) },
  };
};

/** The Lease requests through @kubernetes/client-node, with a loaded KubeConfig or a kubeconfig file's path. */
export function kubernetesLeaseApi(kubeConfig: KubeConfig | string, fieldManager = 'pgha-operator'): LeaseApi {
  let config = kubeConfig;
  if (typeof config === 'string') {
    const path = config;
    config = new KubeConfig();
    config.loadFromFile(path);
  }
  const api = KubernetesObjectApi.makeApiClient(config);
  const object = (namespace: string, name: string, spec: LeaseSpec, resourceVersion?: string) =>
    ({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name, namespace, ...(resourceVersion !== undefined ? { resourceVersion } : {}) },
      spec,
    }) as never;
  return {
    async read(namespace, name) {
      try {
        return observed(await api.read(object(namespace, name, {})));
      } catch (error) {
        if (statusCode(error) === 404) return null;
        throw error;
      }
    },
    async create(namespace, name, spec) {
      return observed(await api.create(object(namespace, name, spec), undefined, undefined, fieldManager));
    },
    async replace(namespace, name, resourceVersion, spec) {
      return observed(
        await api.replace(object(namespace, name, spec, resourceVersion), undefined, undefined, fieldManager),
      );
    },
  };
}

/** Where the elector reports acquisitions, step-downs and failed requests. */
export interface LeaseElectorLog {
  info(message: string): void;
  warn(message: string): void;
}

/** Options of {@link LeaseElector}; the timing must pass `leaderElectionTimingProblem` (the constructor throws otherwise). */
export interface LeaseElectorOptions {
  api: LeaseApi;
  namespace: string;
  /** The Lease's name. */
  name: string;
  /** This candidate's identity (the pod name): written as `holderIdentity`. */
  identity: string;
  /** Written as the Lease's `leaseDurationSeconds`; others take over that long after they last saw it change. Default 15. */
  leaseDurationSeconds?: number;
  /** The leader stops acting this long after sending its last successful renewal. Default 10 000 ms. */
  renewDeadlineMillis?: number;
  /** How often the Lease is read and renewed or tried. Default 2000 ms. */
  retryPeriodMillis?: number;
  clock?: Clock;
  log: LeaseElectorLog;
  onStartedLeading(): void;
  /** Must stop everything the leadership allowed before it resolves (the Lease is released after it). */
  onStoppedLeading(reason: string): Promise<void> | void;
}

/** State for health answers. */
export interface LeaseElectorStatus {
  leading: boolean;
  holder: string | null;
  lastRoundMillis: number | null;
  lastApiSuccessMillis: number | null;
}

/** One candidate for the Lease: `start()` runs its rounds, `mayAct()` says whether it may act as leader now, `stop()` steps down and releases. */
export class LeaseElector {
  private readonly clock: Clock;
  private readonly leaseDurationSeconds: number;
  private readonly renewDeadlineMillis: number;
  private readonly retryPeriodMillis: number;
  private observation: LeaseObservation | null = null;
  /** Monotonic deadline of the current leadership; null while not leading. */
  private deadline: number | null = null;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private sleepTimer: NodeJS.Timeout | undefined;
  private wake: () => void = () => undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private stepping: Promise<void> | undefined;
  private holder: string | null = null;
  private lastRoundMillis: number | null = null;
  private lastApiSuccessMillis: number | null = null;
  /** Successful takes and creates (for tests and logs). */
  acquisitions = 0;

  constructor(private readonly options: LeaseElectorOptions) {
    this.clock = options.clock ?? systemClock;
    this.leaseDurationSeconds = options.leaseDurationSeconds ?? 15;
    this.renewDeadlineMillis = options.renewDeadlineMillis ?? 10_000;
    this.retryPeriodMillis = options.retryPeriodMillis ?? 2000;
    const problem = leaderElectionTimingProblem({
      leaseDurationSeconds: this.leaseDurationSeconds,
      renewDeadlineMillis: this.renewDeadlineMillis,
      retryPeriodMillis: this.retryPeriodMillis,
    });
    if (problem !== null) throw new Error(`leader election: ${problem}`);
  }

  /** True while this candidate leads and its renew deadline has not passed (checked on the clock, not by a timer). */
  mayAct(): boolean {
    return this.deadline !== null && this.clock.now() < this.deadline;
  }

  get leading(): boolean {
    return this.deadline !== null;
  }

  status(): LeaseElectorStatus {
    return {
      leading: this.mayAct(),
      holder: this.holder,
      lastRoundMillis: this.lastRoundMillis,
      lastApiSuccessMillis: this.lastApiSuccessMillis,
    };
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops trying; a leader stops acting, then releases the Lease (best effort: else it expires). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.sleepTimer);
    this.wake();
    await this.loop;
    await this.stepDown('stopping');
    // Also when not leading: a take that succeeded while stopping left the Lease ours.
    try {
      const lease = await this.withTimeout(this.options.api.read(this.options.namespace, this.options.name));
      const release = decideRelease(lease, this.options.identity, microTime(this.clock.date()));
      if (release === null) return;
      await this.withTimeout(
        this.options.api.replace(this.options.namespace, this.options.name, release.resourceVersion, release.spec),
      );
      this.options.log.info(`released Lease ${this.options.namespace}/${this.options.name}`);
    } catch (error) {
      this.options.log.warn(
        `could not release Lease ${this.options.namespace}/${this.options.name} (${(error as Error).message}); it expires after ${this.leaseDurationSeconds} s`,
      );
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await this.round();
      if (this.stopped) break;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.sleepTimer = setTimeout(resolve, this.retryPeriodMillis);
      });
    }
  }

  /** Every request is bounded by the renew deadline, so a hung connection never stops the loop. */
  private withTimeout<T>(request: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${this.renewDeadlineMillis} ms`)),
        this.renewDeadlineMillis,
      );
    });
    return Promise.race([request, timeout]).finally(() => clearTimeout(timer));
  }

  private async round(): Promise<void> {
    const { api, namespace, name, identity, log } = this.options;
    const where = `Lease ${namespace}/${name}`;
    this.lastRoundMillis = this.clock.now();
    this.checkDeadline();
    let lease: ObservedLease | null;
    try {
      lease = await this.withTimeout(api.read(namespace, name));
      this.lastApiSuccessMillis = this.clock.now();
    } catch (error) {
      log.warn(`reading ${where} failed: ${(error as Error).message}`);
      this.checkDeadline();
      return;
    }
    if (this.stopped) return;
    const decision = decideLeaderElection({
      identity,
      leaseDurationSeconds: this.leaseDurationSeconds,
      lease,
      previous: this.observation,
      nowMillis: this.clock.now(),
      nowTime: microTime(this.clock.date()),
    });
    this.observation = decision.observation;
    const action = decision.action;
    this.holder = lease?.spec.holderIdentity || null;
    if (action.type === 'wait') {
      // Someone else holds it: if we thought we led, our renewals were lost. Stop now.
      if (this.deadline !== null) await this.stepDown(`${where} is held by ${action.holder}`);
      return;
    }
    const sentAt = this.clock.now();
    try {
      await this.withTimeout(
        action.type === 'create'
          ? api.create(namespace, name, action.spec)
          : api.replace(namespace, name, action.resourceVersion, action.spec),
      );
      this.lastApiSuccessMillis = this.clock.now();
      this.holder = identity;
      this.observation = null; // our own record; a later reader starts its observation afresh
    } catch (error) {
      const conflict = statusCode(error) === 409;
      if (conflict) {
        // The API server answered; someone else wrote first (normal contention between candidates).
        this.lastApiSuccessMillis = this.clock.now();
        log.info(`${action.type} of ${where}: another candidate wrote first; reading again`);
      } else log.warn(`${action.type} of ${where} failed: ${(error as Error).message}`);
      this.checkDeadline();
      return;
    }
    if (this.stopped) return; // stop() steps down and releases
    // A renewal that succeeds after the deadline passed (its timer not run yet) starts a
    // new leadership: the old one's Operator is stopped first, not carried across the gap.
    if (this.deadline !== null && this.clock.now() >= this.deadline)
      await this.stepDown(`no successful renewal within ${this.renewDeadlineMillis} ms`);
    if (this.stopped) return;
    const wasLeading = this.deadline !== null;
    this.deadline = leadershipDeadline(sentAt, this.renewDeadlineMillis);
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(() => this.checkDeadline(), Math.max(0, this.deadline - this.clock.now()) + 1);
    if (!wasLeading) {
      this.acquisitions++;
      log.info(
        action.type === 'acquire'
          ? `acquired ${where} (${action.reason}${action.from ? ` from ${action.from}` : ''}); leading as ${identity}`
          : action.type === 'create'
            ? `created ${where}; leading as ${identity}`
            : `renewed ${where}, still held by ${identity} (after a gap, or left by a previous process of this pod); leading`,
      );
      this.options.onStartedLeading();
    }
  }

  private checkDeadline(): void {
    if (this.deadline !== null && this.clock.now() >= this.deadline)
      void this.stepDown(`no successful renewal within ${this.renewDeadlineMillis} ms`);
  }

  private stepDown(reason: string): Promise<void> {
    if (this.deadline === null) return this.stepping ?? Promise.resolve();
    this.deadline = null;
    clearTimeout(this.deadlineTimer);
    this.options.log.warn(`stopped leading: ${reason}`);
    this.stepping = Promise.resolve(this.options.onStoppedLeading(reason)).catch((error) =>
      this.options.log.warn(`stopping the leader's work failed: ${(error as Error).message}`),
    );
    return this.stepping;
  }
}
