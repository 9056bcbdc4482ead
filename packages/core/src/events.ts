import type { Term } from './terms.js';

/** Where the primary is, as clients see it. */
export interface PrimaryEndpoint {
  readonly member: string;
  readonly host: string;
  readonly port: number;
  readonly term: Term;
  readonly timeline: number;
  readonly writable: boolean;
}

/** Why the primary changed. */
export const primaryChangeReasons = ['initial', 'failover', 'switchover', 'restart', 'unknown'] as const;
export type PrimaryChangeReason = (typeof primaryChangeReasons)[number];

/**
 * Events about a cluster, a discriminated union on `type`. Emitted by the client's
 * watcher and written to logs by the agent and controller.
 */
export type ClusterEvent =
  | {
      readonly type: 'primary-changed';
      readonly previous: PrimaryEndpoint | null;
      readonly current: PrimaryEndpoint;
      readonly term: Term;
      readonly reason: PrimaryChangeReason;
    }
  | { readonly type: 'no-primary'; readonly previous: PrimaryEndpoint | null; readonly term: Term }
  | { readonly type: 'discovery-error'; readonly error: Error }
  | { readonly type: 'discovery-stale'; readonly sinceMillis: number }
  | { readonly type: 'discovery-restored' };

/** The `type` of every {@link ClusterEvent}. */
export const clusterEventTypes = [
  'primary-changed',
  'no-primary',
  'discovery-error',
  'discovery-stale',
  'discovery-restored',
] as const satisfies ReadonlyArray<ClusterEvent['type']>;

/** Describes an event in one line, for logs. */
export function describeEvent(event: ClusterEvent): string {
  switch (event.type) {
    case 'primary-changed':
      return `primary is now ${event.current.member} (${event.current.host}:${event.current.port}) in term ${event.term}${
        event.previous === null ? '' : `, was ${event.previous.member}`
      } (${event.reason})`;
    case 'no-primary':
      return `no primary in term ${event.term}${event.previous === null ? '' : `; last was ${event.previous.member}`}`;
    case 'discovery-error':
      return `discovery error: ${event.error.message}`;
    case 'discovery-stale':
      return `discovery stale: etcd unanswered for ${event.sinceMillis} ms`;
    case 'discovery-restored':
      return 'discovery restored';
    default: {
      const unreachable: never = event;
      return unreachable;
    }
  }
}
