/**
 * The rolling update's next step, one per reconcile round (pure; called by
 * decideReconcile). The rules are in decide-reconcile.ts's header and tested in
 * decide-reconcile.test.ts.
 */
import type { ObservedPod } from './decide-reconcile.js';
import { type KubeObject, ordinalOf } from './desired-objects.js';

/** The label a StatefulSet controller puts on each pod: the revision of the template it was made from. */
export const revisionLabel = 'controller-revision-hash';
/** The condition that reports the rolling update (True: every pod runs the StatefulSet's update revision). */
export const updatedConditionType = 'Updated';

/** One round of a rolling update; see the header for the rules. */
export type RollingUpdateStep =
  /** Nothing to say: no StatefulSet status (no revision published yet). */
  | { readonly kind: 'unknown' }
  | { readonly kind: 'up-to-date'; readonly reason: 'UpToDate'; readonly message: string }
  | { readonly kind: 'wait'; readonly reason: string; readonly message: string }
  | {
      readonly kind: 'delete-pod';
      readonly reason: 'RollingUpdate';
      readonly message: string;
      readonly pod: ObservedPod;
      readonly from: string;
      readonly to: string;
    }
  | {
      readonly kind: 'switchover';
      readonly reason: 'SwitchoverRequested';
      readonly message: string;
      readonly from: string;
      readonly candidates: readonly string[];
      readonly to: string;
    };

export interface RollingUpdateInput {
  readonly cluster: string;
  /** The StatefulSet as read (its spec.replicas, metadata.generation and status). */
  readonly statefulSet: KubeObject;
  /** This round creates or updates the StatefulSet: its status describes the old spec. */
  readonly statefulSetChanging: boolean;
  /** This round already requests a switchover (scaling down away from the primary). */
  readonly switchoverUnderWay: boolean;
  readonly pods: readonly ObservedPod[];
  readonly leader: { readonly member: string; readonly term: number } | null;
  /** The term the previous round saw (the status's). */
  readonly previousTerm: number | undefined;
}

/**
 * The rolling update's next step (pure). At most one pod is ever down because of it:
 * a pod is deleted only when every member pod exists, is ready and is not being
 * deleted, so the pod deleted in one round keeps every later round waiting until it
 * is back and ready. The primary (the member the leader record names) is never
 * deleted: it is switched over to a ready, updated replica first.
 */
export function decideRollingUpdate(input: RollingUpdateInput): RollingUpdateStep {
  const sts = input.statefulSet as KubeObject & {
    spec?: { replicas?: number };
    status?: { updateRevision?: string; observedGeneration?: number };
  };
  const to = sts.status?.updateRevision;
  if (to === undefined || to === '') return { kind: 'unknown' };
  const wait = (reason: string, message: string): RollingUpdateStep => ({ kind: 'wait', reason, message });
  const generation = sts.metadata.generation as number | undefined;
  const observedGeneration = sts.status?.observedGeneration;
  if (
    input.statefulSetChanging ||
    (generation !== undefined && (observedGeneration === undefined || observedGeneration < generation))
  )
    return wait(
      'WaitingForStatefulSet',
      `the StatefulSet controller has not published the revision of the current spec yet (generation ${generation ?? '?'}, observed ${observedGeneration ?? 'none'})`,
    );
  const byOrdinal = (a: ObservedPod, b: ObservedPod) =>
    (ordinalOf(a.name, input.cluster) ?? 0) - (ordinalOf(b.name, input.cluster) ?? 0);
  const pods = [...input.pods].sort(byOrdinal);
  const revisionOf = (p: ObservedPod) => p.labels[revisionLabel];
  const outdated = pods.filter((p) => revisionOf(p) !== to);
  const replicas = sts.spec?.replicas ?? pods.length;
  if (outdated.length === 0)
    return { kind: 'up-to-date', reason: 'UpToDate', message: `every pod runs revision ${to}` };
  const progress = `${outdated.length} of ${replicas} pods to update to revision ${to}`;
  if (input.leader === null) return wait('WaitingForPrimary', `${progress}: waiting until a primary is known`);
  const leader = input.leader.member;
  if (input.previousTerm !== input.leader.term)
    return wait(
      'WaitingForStableLeader',
      `${progress}: the leader changed (term ${input.leader.term}); looking again before the next step`,
    );
  if (input.switchoverUnderWay) return wait('WaitingForScaling', `${progress}: waiting for the scale-down`);
  const unknown = outdated.filter((p) => revisionOf(p) === undefined);
  if (unknown.length > 0)
    return wait(
      'RevisionUnknown',
      `${progress}: pod ${unknown.map((p) => p.name).join(', ')} has no ${revisionLabel} label yet`,
    );
  const down = pods.filter((p) => !p.ready || p.deleting);
  const present = pods.filter((p) => !p.deleting).length;
  if (down.length > 0 || present !== replicas || pods.length !== replicas)
    return wait(
      'WaitingForPods',
      `${progress}: waiting until all ${replicas} pods are ready${down.length > 0 ? ` (not ready: ${down.map((p) => p.name).join(', ')})` : ` (${present} present)`}`,
    );
  const replica = outdated.filter((p) => p.name !== leader).at(-1);
  if (replica !== undefined) {
    const from = revisionOf(replica)!;
    return {
      kind: 'delete-pod',
      reason: 'RollingUpdate',
      message: `${progress}: deleting pod ${replica.name} (revision ${from} → ${to})`,
      pod: replica,
      from,
      to,
    };
  }
  // Only the primary is outdated.
  const primary = outdated[0]!;
  const candidates = pods.filter((p) => p.name !== leader && p.ready && !p.deleting && revisionOf(p) === to);
  if (candidates.length === 0)
    return wait(
      'NoUpdatedReplica',
      `${progress}: the primary ${leader} is the only outdated pod and no ready replica runs revision ${to} to switch over to` +
        (pods.length === 1 ? ` (a single member: delete pod ${leader} by hand to update it)` : ''),
    );
  return {
    kind: 'switchover',
    reason: 'SwitchoverRequested',
    message: `${progress}: switchover requested from the primary ${leader} to ${candidates[0]!.name} (revision ${revisionOf(primary)} → ${to})`,
    from: leader,
    candidates: candidates.map((p) => p.name),
    to,
  };
}
