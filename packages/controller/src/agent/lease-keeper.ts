import { EventEmitter } from 'node:events';
import { PghaError } from '@pgha/core';
import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import type { Clock } from '../clock.js';

/** Timing of a lease. See docs/architecture.md, "Timing budget". */
export interface LeaseTiming {
  readonly ttlMillis: number;
  readonly keepaliveIntervalMillis: number;
  /** Subtracted from the lease's expiry to give our own deadline. */
  readonly fencingMarginMillis: number;
}

/**
 * Keeps one etcd lease alive on its own timer and tracks the member's own deadline:
 * the *send* time of the last keepalive etcd acknowledged + TTL − margin. etcd
 * extends the lease when it *receives* a keepalive, which is after we sent it, so
 * the lease cannot expire in etcd before our deadline (the margin covers clock rate
 * differences and the time to fence). We never wait for the etcd3 client's "lost"
 * event, which can arrive about 2×TTL late.
 *
 * Emits `renewed` (with the new deadline) after each acknowledged keepalive that
 * extends it, `acknowledged` (milliseconds from sending that keepalive to its answer,
 * for the latency metric) after every answered one, and `expired` when etcd answers
 * that the lease no longer exists.
 */
export class LeaseKeeper extends EventEmitter {
  private leaseId: string | null = null;
  private stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | null = null;
  private opening: Promise<void> | null = null;
  /** Send times of the current stream's unanswered keepalives (that stream's own list). */
  private sent: number[] = [];
  private sentWall: number[] = [];
  private lastAckedSend = Number.NEGATIVE_INFINITY;
  /** Wall-clock time (ms) of the same send: a suspended VM's monotonic clock stands still, the wall clock does not. */
  private lastAckedSendWall = Number.NEGATIVE_INFINITY;
  /** When (monotonic) the last keepalive acknowledgement (or the grant) arrived. */
  private lastAckAt = Number.NEGATIVE_INFINITY;
  /**
   * Asked before every keepalive: while it answers false no keepalive is sent, so
   * the lease runs out (the primary's agent renews only while its postgres is
   * confirmed healthy, and not after a fence).
   */
  renewalGate: (() => boolean) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ttlSeconds: number;

  constructor(
    private readonly client: Etcd3,
    private readonly timing: LeaseTiming,
    private readonly clock: Clock,
  ) {
    super();
    this.ttlSeconds = Math.max(1, Math.ceil(timing.ttlMillis / 1000));
  }

  /** The lease ID (decimal string), once granted. */
  get id(): string {
    if (this.leaseId === null) throw new PghaError('etcd-unavailable', 'the lease has not been granted yet');
    return this.leaseId;
  }

  /** Grants a new lease and starts keeping it alive. The deadline starts at the grant's send time. */
  async grant(): Promise<string> {
    this.stop();
    const sentAt = this.clock.now();
    const sentAtWall = this.clock.date().getTime();
    const response = await this.client.leaseClient.leaseGrant({ TTL: this.ttlSeconds, ID: 0 });
    this.leaseId = String(response.ID);
    this.ttlSeconds = Number(response.TTL);
    this.lastAckedSend = sentAt;
    this.lastAckedSendWall = sentAtWall;
    this.lastAckAt = this.clock.now();
    this.timer = setInterval(() => this.tick(), this.timing.keepaliveIntervalMillis);
    return this.leaseId;
  }

  /**
   * Our own deadline (clock milliseconds): past it, etcd may already have expired the
   * lease, so a primary must no longer accept writes.
   */
  deadline(): number {
    return this.lastAckedSend + this.ttlSeconds * 1000 - this.timing.fencingMarginMillis;
  }

  /**
   * Whether the deadline is still ahead, on the monotonic clock *and* on the wall
   * clock: the monotonic clock does not advance while a VM is suspended, so after a
   * resume it alone would call a long-expired lease valid.
   */
  isValid(): boolean {
    if (this.leaseId === null || this.clock.now() >= this.deadline()) return false;
    const wallDeadline = this.lastAckedSendWall + this.ttlSeconds * 1000 - this.timing.fencingMarginMillis;
    return this.clock.date().getTime() < wallDeadline;
  }

  /**
   * Milliseconds since etcd last acknowledged a keepalive (or granted the lease):
   * failsafe mode's measure of "cannot reach etcd" (compared with the stall threshold).
   */
  sinceLastAck(): number {
    return this.clock.now() - this.lastAckAt;
  }

  private tick(): void {
    if (this.leaseId === null) return;
    // A stream whose oldest keepalive has gone unanswered for two intervals (at
    // least 500 ms) is treated as dead — its etcd member may be gone without the
    // connection saying so — and replaced, which may pick another endpoint.
    const oldest = this.sent[0];
    const stallMillis = Math.max(500, 2 * this.timing.keepaliveIntervalMillis);
    if (this.stream !== null && oldest !== undefined && this.clock.now() - oldest > stallMillis) this.dropStream();
    if (this.renewalGate !== null && !this.renewalGate()) return;
    void this.sendKeepalive();
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = null;
    this.sent = [];
    this.sentWall = [];
    try {
      stream?.end();
    } catch {
      /* already closed */
    }
  }

  private async openStream(): Promise<void> {
    const stream = await this.client.leaseClient.leaseKeepAlive();
    // Send times of this stream's keepalives, in order; responses on a stream come
    // in the order of its requests, and only this stream's responses consume them.
    const sent: number[] = [];
    const sentWall: number[] = [];
    stream.on('data', (response: ILeaseKeepAliveResponse) => {
      const sentAt = sent.shift();
      const sentAtWall = sentWall.shift();
      if (Number(response.TTL) <= 0) {
        this.emit('expired');
        return;
      }
      this.lastAckAt = this.clock.now();
      if (sentAt !== undefined && sentAt > this.lastAckedSend) {
        this.lastAckedSend = sentAt;
        this.lastAckedSendWall = sentAtWall ?? Number.NEGATIVE_INFINITY;
        this.emit('renewed', this.deadline());
      }
      // After the deadline moved: a listener of the metric cannot hold back a renewal.
      if (sentAt !== undefined) this.emit('acknowledged', this.clock.now() - sentAt);
    });
    const drop = () => {
      if (this.stream !== stream) return;
      this.stream = null;
      this.sent = [];
      this.sentWall = [];
      // Replace a broken stream at once rather than at the next tick.
      if (this.timer !== null) void this.sendKeepalive();
    };
    stream.on('error', drop);
    stream.on('end', drop);
    this.stream = stream;
    this.sent = sent;
    this.sentWall = sentWall;
  }

  private async sendKeepalive(): Promise<void> {
    try {
      if (this.stream === null) {
        this.opening ??= this.openStream().finally(() => {
          this.opening = null;
        });
        await this.opening;
      }
      if (this.stream === null || this.leaseId === null) return;
      this.sent.push(this.clock.now());
      this.sentWall.push(this.clock.date().getTime());
      this.stream.write({ ID: this.leaseId });
    } catch {
      // Unanswered keepalives simply do not extend the deadline; the next tick retries.
      this.dropStream();
    }
  }

  /** Stops keepalives without revoking (the lease then expires by TTL). */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const stream = this.stream;
    this.stream = null;
    if (stream !== null) {
      try {
        stream.end();
      } catch {
        /* already closed */
      }
    }
  }

  /** Stops keepalives and revokes the lease, deleting every key bound to it at once. */
  async revoke(): Promise<void> {
    this.stop();
    if (this.leaseId === null) return;
    const id = this.leaseId;
    this.leaseId = null;
    await this.client.leaseClient.leaseRevoke({ ID: id });
  }
}
