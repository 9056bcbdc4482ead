/**
 * The operator's decision for one PgHaCluster: from the cluster, what the shell
 * observed in the Kubernetes API and the leader record in etcd, the list of actions
 * that moves the objects toward what the cluster asks for. Pure: no clock, no I/O.
 *
 * Safety rules, each tested in decide-reconcile.test.ts:
 * - Nothing but pods is ever deleted: the only delete action is `delete-pod`, for a
 *   rolling update. PVCs, Secrets and the objects a PgHaCluster owns are never deleted
 *   by the operator (they go with the cluster through owner references; PVCs are
 *   retained even then). (`unmark-removed` deletes the operator's own etcd mark.)
 * - Removal marks (`removed/<name>` in etcd) name only members a scale-down removes
 *   (ordinals from the new StatefulSet size up to the old one) and are written before
 *   the StatefulSet shrinks; a mark on an ordinal below the StatefulSet's size is taken
 *   off before it grows. Marks are neither read nor written while etcd is unreadable.
 * - Rolling updates (the StatefulSet is `OnDelete`: a pod gets a new template only
 *   when deleted) take one pod down at a time: a pod is deleted only when the
 *   StatefulSet controller has observed the current generation and published its
 *   `updateRevision`, the leader record is readable and names a member, the term is
 *   the one the previous round saw (a failover just happened: look again first),
 *   every member pod exists, is ready and is not being deleted, and no other
 *   switchover or scaling is under way. Then it deletes ONE outdated replica (never
 *   the member the leader record names), the highest ordinal first. When only the
 *   primary is outdated it requests a switchover to a ready, updated replica; the old
 *   primary's pod is deleted in a later round, once the leader record names someone
 *   else and it is an outdated replica like any other.
 * - Bad input (invalid spec, unknown API or PostgreSQL version, a missing credentials
 *   Secret that the spec names, a Secret lacking a password) produces a condition
 *   and an event, never a change to running objects;
 *   only the role labels go on following the leader record (the failover controller
 *   keeps running, and `-rw` must follow its failovers).
 * - A credentials Secret is generated only when the spec names none and the default
 *   `<name>-credentials` does not exist; an existing Secret is never changed, and a
 *   Secret the spec names is never invented. The generated one has no owner
 *   reference (it must outlive the cluster as long as retained PVCs may).
 * - `-rw` never selects two pods: the `primary` role label is removed from the old
 *   primary first; the new primary gets it in a later round, after the removal is
 *   observed. A round that still sees two labelled pods only removes labels.
 * - Scaling down never removes the primary: a StatefulSet removes its highest
 *   ordinals, so while the primary's ordinal is at or above the new size the
 *   StatefulSet keeps `primary ordinal + 1` replicas and a switchover to a member
 *   that stays is requested; with no known primary, replicas never go down.
 * - Immutable StatefulSet fields (storage, service name) are not "updated" into a
 *   request the API server would reject: the change is reported in a condition.
 * - The cluster's `config` record (etcd) is written only for `spec.synchronous`
 *   (decide-synchronous.ts): its synchronous fields alone, with a valid spec and a
 *   readable etcd, create-if-absent or guarded by the mod revision read, never over
 *   a record that does not parse.
 * - When etcd cannot be read (`leaderReadError`), the leader is unknown, not absent:
 *   role labels stay as they are (taking them off would empty `-rw` because of the
 *   operator's own trouble), the last known primary stays in the status, and the
 *   status still reports it (Ready False, and the failover controller's condition).
 */

import {
  type FailoverControllerState,
  failoverControllerCondition,
  failoverControllerConditionType,
} from './decide-failover-controller.js';
import { decideRollingUpdate, updatedConditionType } from './decide-rolling-update.js';
import {
  type ConfigWrite,
  decideSynchronousCondition,
  decideSynchronousConfig,
  defaultApplyGraceMillis,
  type SynchronousObservation,
  synchronousConditionType,
} from './decide-synchronous.js';
import {
  desiredHashAnnotation,
  desiredPodDisruptionBudget,
  desiredServiceAccount,
  desiredServices,
  desiredStatefulSet,
  generatedCredentialsSecret,
  immutableHashAnnotation,
  immutableStatefulSetFields,
  type KubeObject,
  ordinalOf,
  roleLabel,
  selectorString,
} from './desired-objects.js';
import {
  type Condition,
  type PgHaClusterObject,
  type PgHaClusterSpec,
  type PgHaClusterStatus,
  type Phase,
  parsePgHaCluster,
} from './pgha-cluster.js';

/** A pod as the operator sees it. */
export interface ObservedPod {
  readonly name: string;
  /** The pod's uid: a `delete-pod` is conditional on it, so a re-created pod of the same name is never deleted by mistake. */
  readonly uid?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ready: boolean;
  readonly deleting: boolean;
}

/** Everything one reconcile round reads, as plain data. */
export interface ReconcileSnapshot {
  readonly cluster: PgHaClusterObject;
  /** Objects of the cluster that exist, by kind and name (StatefulSet, Service, PodDisruptionBudget, ServiceAccount). */
  readonly objects: readonly KubeObject[];
  /** The credentials Secret's keys, or null when the Secret does not exist. */
  readonly credentialsSecretKeys: readonly string[] | null;
  readonly pods: readonly ObservedPod[];
  /** The writable leader record from etcd, or null (no primary, failover in progress, or etcd unreadable). */
  readonly leader: { readonly member: string; readonly term: number } | null;
  /** Why the leader record could not be read (etcd unreachable); absent when it was read. */
  readonly leaderReadError?: string;
  /**
   * The cluster's failover controller run by the operator (null: none runs yet);
   * absent when the operator runs none, and then no condition reports it.
   */
  readonly failoverController?: FailoverControllerState | null;
  /**
   * The members marked `removed/<name>` in etcd (scaled away on purpose: the primary
   * drops their replication slots once they are gone); null when they could not be
   * read; absent when the operator keeps no marks (then none are written).
   */
  readonly removedMembers?: readonly string[] | null;
  /**
   * Synchronous replication as read from the cluster's etcd (its `config` and `sync`
   * records, which members stream); null when it could not be read; absent when the
   * operator does not manage it (then no `Synchronous` condition and no config writes).
   */
  readonly synchronous?: SynchronousObservation | null;
  /** How long a change of the synchronous settings may go unanswered by the primary's claim before it counts as degraded (default 5000 ms). */
  readonly synchronousGraceMillis?: number;
  /** ISO time, for condition transition times. */
  readonly now: string;
  /** The random source for generated passwords (crypto.randomBytes in the shell). */
  readonly randomBytes: (size: number) => Uint8Array;
}

export type ReconcileAction =
  | { readonly type: 'create'; readonly object: KubeObject }
  /** Create the generated credentials Secret (the shell must not log its data). */
  | { readonly type: 'create-secret'; readonly object: KubeObject }
  /** Replace the object's spec with the desired one; `object` carries the observed resourceVersion (a 409 means re-read). */
  | { readonly type: 'update'; readonly object: KubeObject }
  | { readonly type: 'label-pod'; readonly pod: string; readonly role: 'primary' | 'replica' }
  /**
   * Delete one pod so its StatefulSet re-creates it from the current template (a
   * rolling update; the StatefulSet is `OnDelete`). Conditional on `uid` when known.
   */
  | { readonly type: 'delete-pod'; readonly pod: string; readonly uid?: string; readonly reason: string }
  /** Ask the pgha controller (through etcd) for a switchover away from `from` to one of `candidates`. */
  | {
      readonly type: 'request-switchover';
      readonly from: string;
      readonly candidates: readonly string[];
      readonly reason: string;
    }
  /** Mark a member scaled away on purpose (`removed/<name>` in etcd): its slot may go once it is gone. */
  | { readonly type: 'mark-removed'; readonly member: string; readonly reason: string }
  /** Take the mark off a member that is wanted again (before the StatefulSet grows). */
  | { readonly type: 'unmark-removed'; readonly member: string }
  /**
   * Write the cluster's `config` record in etcd (its synchronous fields follow
   * `spec.synchronous`), create-if-absent or guarded by the mod revision read: a
   * failed guard fails the round, which reads again.
   */
  | { readonly type: 'write-config'; readonly write: ConfigWrite }
  /** Reconcile this cluster again after this long (a state that changes with time alone). */
  | { readonly type: 'recheck'; readonly afterMillis: number; readonly reason: string }
  | { readonly type: 'update-status'; readonly status: PgHaClusterStatus }
  | {
      readonly type: 'event';
      readonly eventType: 'Normal' | 'Warning';
      readonly reason: string;
      readonly message: string;
    };

export const requiredSecretKeys = ['superuser-password', 'replication-password'] as const;

export function decideReconcile(s: ReconcileSnapshot): ReconcileAction[] {
  const { cluster } = s;
  const name = cluster.metadata.name;
  const generation = cluster.metadata.generation;
  const conditions: Condition[] = [];
  const events: ReconcileAction[] = [];
  const condition = (type: string, ok: boolean, reason: string, message: string, warn = true) => {
    const previous = cluster.status?.conditions?.find((c) => c.type === type);
    const status = ok ? 'True' : 'False';
    conditions.push({
      type,
      status,
      reason,
      message,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
      lastTransitionTime: previous && previous.status === status ? previous.lastTransitionTime : s.now,
    });
    if (warn && !ok && (previous?.status !== 'False' || previous.reason !== reason))
      events.push({ type: 'event', eventType: 'Warning', reason, message });
  };
  const statusAction = (phase: Phase, extra: Partial<PgHaClusterStatus>): ReconcileAction[] => {
    const status: PgHaClusterStatus = {
      phase,
      ...extra,
      selector: selectorString(name),
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
      conditions,
    };
    return sameStatus(cluster.status, status) ? [] : [{ type: 'update-status', status }];
  };

  // A cluster being deleted is left to the garbage collector.
  if (cluster.metadata.deletionTimestamp) return [];

  // Bad input freezes the objects, not the role labels: the failover controller keeps
  // running (decide-failover-controller.ts), and after a failover `-rw` must still
  // follow the leader record. Labels read only the pods and the leader, never the spec.
  const roleLabels = () => (s.leaderReadError === undefined ? decideRoleLabels(s.pods, s.leader?.member ?? null) : []);
  /** The primary for the status: the leader's; the last known one while etcd cannot be read. */
  const primaryStatus = (): Partial<PgHaClusterStatus> => {
    if (s.leaderReadError === undefined) return s.leader ? { primary: s.leader.member, term: s.leader.term } : {};
    const { primary, term } = cluster.status ?? {};
    return { ...(primary !== undefined ? { primary } : {}), ...(term !== undefined ? { term } : {}) };
  };
  // The primary's story as events, once per new term of the leader record (the status
  // carries the term the last round saw): who was elected, or where the primary moved.
  if (s.leaderReadError === undefined && s.leader !== null && cluster.status?.term !== s.leader.term) {
    const before = cluster.status?.primary;
    const { member, term } = s.leader;
    events.push({
      type: 'event',
      eventType: 'Normal',
      reason: before === undefined ? 'PrimaryElected' : before === member ? 'PrimaryKept' : 'PrimaryChanged',
      message:
        before === undefined || before === member
          ? `${member} is the primary (term ${term})`
          : `the primary moved from ${before} to ${member} (term ${term})`,
    });
  } else if (s.leaderReadError === undefined && s.leader === null && cluster.status?.primary !== undefined) {
    events.push({
      type: 'event',
      eventType: 'Warning',
      reason: 'PrimaryLost',
      message: `no writable primary: ${cluster.status.primary} (term ${cluster.status.term ?? '?'}) no longer leads; a failover or switchover is under way`,
    });
  }
  const failoverControllerReady = () => {
    if (!s.failoverController) return;
    const c = failoverControllerCondition(s.failoverController);
    condition(failoverControllerConditionType, c.ok, c.reason, c.message, c.warn);
  };

  const parsed = parsePgHaCluster(cluster);
  const keepPrevious = (type: string) => {
    const previous = cluster.status?.conditions?.find((c) => c.type === type);
    if (previous !== undefined) conditions.push(previous);
  };
  if (!parsed.ok) {
    condition('SpecValid', false, 'InvalidSpec', parsed.problems.join('; '));
    failoverControllerReady();
    keepPrevious(synchronousConditionType); // bad input changes nothing, the config record included
    return [...roleLabels(), ...statusAction('Failed', primaryStatus()), ...events];
  }
  const spec = parsed.spec;
  condition('SpecValid', true, 'Valid', 'the spec is valid');
  failoverControllerReady();
  // Applied after the Kubernetes objects, before the status: an etcd write that fails
  // must not hold back the objects (the round fails there and is retried).
  const syncActions = synchronousReplication(s, spec, conditions, events);

  const actions: ReconcileAction[] = [];
  const missing =
    s.credentialsSecretKeys === null
      ? [...requiredSecretKeys]
      : requiredSecretKeys.filter((k) => !s.credentialsSecretKeys!.includes(k));
  if (s.credentialsSecretKeys === null && spec.credentialsSecretGenerated) {
    // Created before the StatefulSet (actions apply in order), so pods find it.
    actions.push({ type: 'create-secret', object: generatedCredentialsSecret(cluster, spec, s.randomBytes) });
    condition(
      'CredentialsReady',
      true,
      'SecretGenerated',
      `Secret ${spec.credentialsSecret} generated with random passwords (not owned by the cluster: it outlives it)`,
    );
    events.push({
      type: 'event',
      eventType: 'Normal',
      reason: 'SecretGenerated',
      message: `generated Secret ${spec.credentialsSecret} with random passwords`,
    });
  } else if (missing.length > 0) {
    condition(
      'CredentialsReady',
      false,
      s.credentialsSecretKeys === null ? 'SecretMissing' : 'SecretKeysMissing',
      s.credentialsSecretKeys === null
        ? `Secret ${spec.credentialsSecret} (named in spec.credentialsSecret) does not exist: create it with keys ${requiredSecretKeys.join(' and ')}, or remove spec.credentialsSecret to have ${name}-credentials generated`
        : `Secret ${spec.credentialsSecret} lacks ${missing.join(', ')}`,
    );
    return [
      ...roleLabels(),
      ...syncActions,
      ...statusAction('Pending', { ...statusCounts(s, spec), ...primaryStatus() }),
      ...events,
    ];
  } else condition('CredentialsReady', true, 'SecretFound', `Secret ${spec.credentialsSecret} has the passwords`);

  const find = (kind: string, objectName: string) =>
    s.objects.find((o) => o.kind === kind && o.metadata.name === objectName);

  // Replicas: never below the primary's ordinal + 1 (see the header).
  const observedSts = find('StatefulSet', name);
  const currentReplicas = (observedSts?.spec as { replicas?: number } | undefined)?.replicas;
  let replicas = spec.instances;
  const primaryOrdinal = s.leader ? ordinalOf(s.leader.member, name) : undefined;
  if (currentReplicas !== undefined && spec.instances < currentReplicas) {
    if (!s.leader || primaryOrdinal === undefined) {
      replicas = currentReplicas;
      condition(
        'ScaledDown',
        false,
        'WaitingForPrimary',
        `scaling to ${spec.instances} waits until a primary is known`,
      );
    } else if (primaryOrdinal !== undefined && primaryOrdinal >= spec.instances) {
      replicas = Math.min(currentReplicas, primaryOrdinal + 1);
      const candidates = s.pods
        .filter((p) => (ordinalOf(p.name, name) ?? Number.POSITIVE_INFINITY) < spec.instances && p.ready && !p.deleting)
        .map((p) => p.name);
      condition(
        'ScaledDown',
        false,
        'WaitingForSwitchover',
        `the primary ${s.leader.member} would be removed by scaling to ${spec.instances}: switching over first`,
      );
      actions.push({
        type: 'request-switchover',
        from: s.leader.member,
        candidates,
        reason: `scale down to ${spec.instances} instances`,
      });
    }
  }

  // Removal marks, before the StatefulSet changes size: a member about to come back is
  // unmarked first (else a brief restart of it would cost its slot at once), and the
  // members a shrink removes are marked (the primary waits until a marked member has
  // no record and its slot is inactive, i.e. its pod is gone, before dropping it).
  if (s.removedMembers !== undefined && s.removedMembers !== null && s.leaderReadError === undefined) {
    const marked = new Set(s.removedMembers);
    for (const member of [...marked].sort()) {
      const ordinal = ordinalOf(member, name);
      if (ordinal !== undefined && ordinal < replicas) actions.push({ type: 'unmark-removed', member });
    }
    if (currentReplicas !== undefined)
      for (let ordinal = replicas; ordinal < currentReplicas; ordinal++)
        if (!marked.has(`${name}-${ordinal}`))
          actions.push({
            type: 'mark-removed',
            member: `${name}-${ordinal}`,
            reason: `scaled down from ${currentReplicas} to ${replicas} instances`,
          });
  }

  const desired: KubeObject[] = [
    desiredServiceAccount(cluster),
    ...desiredServices(cluster),
    desiredPodDisruptionBudget(cluster),
    desiredStatefulSet(cluster, spec, replicas),
  ];
  for (const want of desired) {
    const have = find(want.kind, want.metadata.name);
    if (!have) {
      actions.push({ type: 'create', object: want });
      continue;
    }
    if (have.metadata.annotations?.[desiredHashAnnotation] === want.metadata.annotations?.[desiredHashAnnotation])
      continue;
    if (want.kind === 'StatefulSet') {
      const haveImmutable = have.metadata.annotations?.[immutableHashAnnotation];
      const wantImmutable = want.metadata.annotations?.[immutableHashAnnotation];
      if (haveImmutable !== undefined && haveImmutable !== wantImmutable) {
        condition(
          'SpecApplied',
          false,
          'ImmutableFieldChanged',
          `the StatefulSet's ${immutableStatefulSetFields.join(', ')} cannot change in place (storage is fixed at creation); the rest is applied`,
        );
        // Apply the mutable rest once, keeping the observed immutable fields and their
        // hash: the condition stays until the spec goes back, with no update loop.
        const keptHash = `kept-${want.metadata.annotations?.[desiredHashAnnotation]}`;
        if (have.metadata.annotations?.[desiredHashAnnotation] === keptHash) continue;
        const haveSpec = (have.spec ?? {}) as Record<string, unknown>;
        const spec2: Record<string, unknown> = { ...(want.spec as Record<string, unknown>) };
        for (const k of immutableStatefulSetFields) spec2[k] = haveSpec[k];
        const annotations = { [desiredHashAnnotation]: keptHash, [immutableHashAnnotation]: haveImmutable };
        actions.push({
          type: 'update',
          object: {
            ...want,
            spec: spec2,
            metadata: { ...want.metadata, annotations, resourceVersion: have.metadata.resourceVersion },
          },
        });
        continue;
      }
    }
    let object: KubeObject = {
      ...want,
      metadata: { ...want.metadata, resourceVersion: have.metadata.resourceVersion },
    };
    if (want.kind === 'Service') {
      // clusterIP is the server's and immutable: keep what it assigned.
      const haveSpec = have.spec as { clusterIP?: string; clusterIPs?: string[] };
      object = {
        ...object,
        spec: {
          ...(want.spec as object),
          ...(haveSpec.clusterIP !== undefined ? { clusterIP: haveSpec.clusterIP } : {}),
          ...(haveSpec.clusterIPs !== undefined ? { clusterIPs: haveSpec.clusterIPs } : {}),
        },
      };
    }
    actions.push({ type: 'update', object });
  }
  if (!conditions.some((c) => c.type === 'SpecApplied'))
    condition('SpecApplied', true, 'Applied', 'every object matches the spec');

  actions.push(...roleLabels());

  if (s.leaderReadError === undefined && observedSts) {
    const step = decideRollingUpdate({
      cluster: name,
      statefulSet: observedSts,
      statefulSetChanging: actions.some(
        (a) => (a.type === 'update' || a.type === 'create') && a.object.kind === 'StatefulSet',
      ),
      switchoverUnderWay: actions.some((a) => a.type === 'request-switchover'),
      pods: s.pods,
      leader: s.leader,
      previousTerm: cluster.status?.term,
    });
    if (step.kind !== 'unknown') {
      const previous = cluster.status?.conditions?.find((c) => c.type === updatedConditionType);
      condition(updatedConditionType, step.kind === 'up-to-date', step.reason, step.message, false);
      if (step.kind === 'delete-pod') {
        actions.push({
          type: 'delete-pod',
          pod: step.pod.name,
          ...(step.pod.uid !== undefined ? { uid: step.pod.uid } : {}),
          reason: `rolling update to revision ${step.to}`,
        });
        events.push({
          type: 'event',
          eventType: 'Normal',
          reason: 'RollingUpdate',
          message: `deleting pod ${step.pod.name} (revision ${step.from} → ${step.to})`,
        });
      } else if (step.kind === 'switchover') {
        actions.push({
          type: 'request-switchover',
          from: step.from,
          candidates: step.candidates,
          reason: `rolling update of the primary to revision ${step.to}`,
        });
        // The request is repeated each round until the leader moves (the shell writes it
        // create-if-absent, so that is idempotent); the event only when it starts.
        if (previous?.reason !== step.reason || previous.message !== step.message)
          events.push({
            type: 'event',
            eventType: 'Normal',
            reason: 'SwitchoverRequested',
            message: `Switchover requested to ${step.candidates[0]} to update the primary`,
          });
      } else if (step.kind === 'up-to-date' && previous !== undefined && previous.status !== 'True')
        events.push({ type: 'event', eventType: 'Normal', reason: 'RollingUpdateDone', message: step.message });
    }
  }

  const counts = statusCounts(s, spec);
  if (s.leaderReadError !== undefined) {
    condition(
      'Ready',
      false,
      'LeaderUnknown',
      // Not the error itself: its wording changes from one try to the next, and each change would rewrite the status.
      `${counts.ready} members ready; the leader record cannot be read from etcd at ${spec.etcd.endpoints.join(',')}`,
      false, // the failover controller's condition warns about etcd
    );
    return [
      ...actions,
      ...syncActions,
      ...statusAction(observedSts ? 'Degraded' : 'Creating', { ...counts, ...primaryStatus() }),
      ...events,
    ];
  }
  const primaryReady = s.leader !== null && s.pods.some((p) => p.name === s.leader!.member && p.ready);
  const phase: Phase =
    !observedSts || (s.leader === null && cluster.status?.primary === undefined)
      ? 'Creating'
      : primaryReady && counts.readyInstances === spec.instances
        ? 'Healthy'
        : 'Degraded';
  condition(
    'Ready',
    phase === 'Healthy',
    phase === 'Healthy' ? 'AllMembersReady' : s.leader === null ? 'NoPrimary' : 'MembersNotReady',
    `${counts.ready} members ready${s.leader ? `, primary ${s.leader.member} (term ${s.leader.term})` : ', no primary'}`,
    false, // a state, not a problem: no event
  );
  return [...actions, ...syncActions, ...statusAction(phase, { ...counts, ...primaryStatus() }), ...events];
}

/**
 * The config record's synchronous fields and the `Synchronous` condition
 * (decide-synchronous.ts): pushes the condition and its event, returns the config
 * write and the recheck. Nothing is written while etcd could not be read.
 */
function synchronousReplication(
  s: ReconcileSnapshot,
  spec: PgHaClusterSpec,
  conditions: Condition[],
  events: ReconcileAction[],
): ReconcileAction[] {
  if (s.synchronous === undefined) return [];
  const observed = s.leaderReadError === undefined ? s.synchronous : null;
  const config = observed === null ? null : decideSynchronousConfig({ spec, config: observed.config, now: s.now });
  const writing = config?.type === 'write' ? config.write : null;
  const previous = s.cluster.status?.conditions?.find((c) => c.type === synchronousConditionType);
  const decision = decideSynchronousCondition({
    spec: spec.synchronous,
    leader: s.leaderReadError === undefined ? s.leader : null,
    observed,
    writing,
    blocked: config?.type === 'blocked' ? config.problem : null,
    previous,
    nowMillis: Date.parse(s.now),
    graceMillis: s.synchronousGraceMillis ?? defaultApplyGraceMillis,
  });
  if (decision.condition === 'keep') {
    if (previous !== undefined) conditions.push(previous);
  } else {
    const generation = s.cluster.metadata.generation;
    const { status, reason, message } = decision.condition;
    conditions.push({
      type: synchronousConditionType,
      status,
      reason,
      message,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
      lastTransitionTime: previous && previous.status === status ? previous.lastTransitionTime : s.now,
    });
  }
  if (decision.event !== null) events.push({ type: 'event', ...decision.event });
  const actions: ReconcileAction[] = [];
  if (writing !== null) actions.push({ type: 'write-config', write: writing });
  if (decision.recheckAfterMillis !== null)
    actions.push({
      type: 'recheck',
      afterMillis: decision.recheckAfterMillis,
      reason: 'the primary is applying new synchronous settings',
    });
  return actions;
}

/**
 * Role labels. At most one pod may carry `primary` at any observed moment, so the
 * round that sees the label on any pod other than the leader only takes it away
 * (and labels nothing primary); the leader is labelled in a later round. Pods being
 * deleted are left alone.
 */
export function decideRoleLabels(pods: readonly ObservedPod[], leader: string | null): ReconcileAction[] {
  const live = pods.filter((p) => !p.deleting);
  const wrongPrimaries = live.filter((p) => p.labels[roleLabel] === 'primary' && p.name !== leader);
  const actions: ReconcileAction[] = wrongPrimaries.map((p) => ({ type: 'label-pod', pod: p.name, role: 'replica' }));
  for (const p of live) {
    if (p.name === leader) {
      if (wrongPrimaries.length === 0 && p.labels[roleLabel] !== 'primary')
        actions.push({ type: 'label-pod', pod: p.name, role: 'primary' });
    } else if (p.labels[roleLabel] === undefined) actions.push({ type: 'label-pod', pod: p.name, role: 'replica' });
  }
  return actions;
}

function statusCounts(s: ReconcileSnapshot, spec: PgHaClusterSpec) {
  const readyInstances = s.pods.filter((p) => p.ready && !p.deleting).length;
  return { instances: spec.instances, readyInstances, ready: `${readyInstances}/${spec.instances}` };
}

function sameStatus(a: PgHaClusterStatus | undefined, b: PgHaClusterStatus): boolean {
  return JSON.stringify(normalize(a ?? {})) === JSON.stringify(normalize(b));
}

function normalize(status: PgHaClusterStatus): unknown {
  const sorted = (o: object): unknown =>
    Array.isArray(o)
      ? o.map((x) => (x && typeof x === 'object' ? sorted(x) : x))
      : Object.fromEntries(
          Object.entries(o)
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([k, v]) => [k, v && typeof v === 'object' ? sorted(v) : v]),
        );
  return sorted(status);
}
