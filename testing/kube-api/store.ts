/**
 * The test API server's storage: objects by resource type, namespace and name, one
 * global resourceVersion counter, a bounded event history for watches (older
 * versions answer 410 Gone), and the garbage collector's semantics (owner-reference
 * cascading deletion, foreground and orphan deletion, finalizers) applied
 * synchronously after every write.
 */
import { randomUUID } from 'node:crypto';
import type { ResourceType } from './resources.js';
import type { KubeObject, Selector } from './selectors.js';
import { gone } from './status.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  rv: number;
  type: WatchEventType;
  key: string; // group/plural
  namespace: string;
  object: KubeObject;
  previous?: KubeObject;
}

export interface Watcher {
  key: string;
  namespace?: string;
  selects: Selector;
  send(type: WatchEventType, object: KubeObject): void;
}

export const typeKey = (type: Pick<ResourceType, 'group' | 'plural'>) => `${type.group}/${type.plural}`;

const clone = <T>(v: T): T => structuredClone(v);

export class ObjectStore {
  /** typeKey → "namespace/name" → object */
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  private readonly history: StoredEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private rv = 1;
  /** The oldest resourceVersion a watch may still start from. */
  private oldest = 1;
  /** Called when an object is removed, so the server can unregister a CRD's type. */
  onRemoved: (key: string, object: KubeObject) => void = () => undefined;
  /**
   * Seconds a deleted object without finalizers stays, marked, before it goes (0: at
   * once), given the grace period the request asked for: the server's graceful pod
   * deletion, which the garbage collector's deletions go through too.
   */
  gracePeriodOf: (key: string, object: KubeObject, requestedSeconds: number | undefined) => number = () => 0;

  constructor(private readonly historyLimit: number) {}

  get resourceVersion(): number {
    return this.rv;
  }

  private bucket(key: string): Map<string, KubeObject> {
    let b = this.objects.get(key);
    if (!b) {
      b = new Map();
      this.objects.set(key, b);
    }
    return b;
  }

  get(key: string, namespace: string, name: string): KubeObject | undefined {
    const o = this.objects.get(key)?.get(`${namespace}/${name}`);
    return o && clone(o);
  }

  list(key: string, namespace: string | undefined, selects: Selector): KubeObject[] {
    return [...(this.objects.get(key)?.values() ?? [])]
      .filter((o) => namespace === undefined || (o.metadata.namespace ?? '') === namespace)
      .filter(selects)
      .sort((a, b) =>
        `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(
          `${b.metadata.namespace ?? ''}/${b.metadata.name}`,
        ),
      )
      .map(clone);
  }

  /** Every stored object of every type (for the garbage collector and namespace deletion). */
  private *all(): Generator<[string, KubeObject]> {
    for (const [key, bucket] of this.objects) for (const o of bucket.values()) yield [key, o];
  }

  private record(type: WatchEventType, key: string, object: KubeObject, previous?: KubeObject): void {
    const event: StoredEvent = { rv: this.rv, type, key, namespace: object.metadata.namespace ?? '', object, previous };
    this.history.push(event);
    while (this.history.length > this.historyLimit) {
      const dropped = this.history.shift()!;
      this.oldest = dropped.rv;
    }
    for (const w of this.watchers) deliver(w, event);
  }

  /** Stores a new object (metadata already validated); assigns uid, resourceVersion, generation. */
  insert(key: string, object: KubeObject): KubeObject {
    const stored = clone(object);
    stored.metadata.uid = randomUUID();
    stored.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    stored.metadata.generation = 1;
    stored.metadata.resourceVersion = String(++this.rv);
    delete stored.metadata.deletionTimestamp;
    this.bucket(key).set(`${stored.metadata.namespace ?? ''}/${stored.metadata.name}`, stored);
    this.record('ADDED', key, clone(stored));
    this.collectGarbage();
    return clone(stored);
  }

  /**
   * Replaces a stored object. Generation grows only when something outside metadata
   * and status changed (`bumpGeneration` lets a caller say so for deletion marks).
   * An object being deleted whose last finalizer is removed is removed here.
   */
  replace(key: string, next: KubeObject, statusIsSubresource: boolean): KubeObject {
    const id = `${next.metadata.namespace ?? ''}/${next.metadata.name}`;
    const current = this.bucket(key).get(id);
    if (!current) throw new Error(`replace of a missing object ${key} ${id}`);
    const stored = clone(next);
    stored.metadata.uid = current.metadata.uid;
    stored.metadata.creationTimestamp = current.metadata.creationTimestamp;
    stored.metadata.generation = current.metadata.generation;
    if (current.metadata.deletionTimestamp) {
      stored.metadata.deletionTimestamp = current.metadata.deletionTimestamp;
      stored.metadata.deletionGracePeriodSeconds = current.metadata.deletionGracePeriodSeconds;
    }
    if (specOf(current, statusIsSubresource) !== specOf(stored, statusIsSubresource)) stored.metadata.generation! += 1;
    stored.metadata.resourceVersion = current.metadata.resourceVersion;
    if (JSON.stringify(stored) === JSON.stringify(current)) return clone(current); // a no-op write changes nothing
    stored.metadata.resourceVersion = String(++this.rv);
    // An object in graceful deletion (a pod its kubelet is stopping) stays until deleted again with no grace.
    if (
      stored.metadata.deletionTimestamp &&
      (stored.metadata.finalizers ?? []).length === 0 &&
      !(Number(stored.metadata.deletionGracePeriodSeconds ?? 0) > 0)
    ) {
      this.bucket(key).delete(id);
      this.record('DELETED', key, clone(stored), current);
      this.onRemoved(key, stored);
    } else {
      this.bucket(key).set(id, stored);
      this.record('MODIFIED', key, clone(stored), current);
    }
    this.collectGarbage();
    return clone(stored);
  }

  /**
   * Deletes: with finalizers (or foreground propagation) the object is only marked
   * (deletionTimestamp, generation+1); otherwise it is removed. Dependents follow
   * through the garbage collector.
   */
  delete(
    key: string,
    namespace: string,
    name: string,
    propagation: 'Background' | 'Foreground' | 'Orphan',
    requestedGraceSeconds?: number,
  ): KubeObject {
    const id = `${namespace}/${name}`;
    const current = this.bucket(key).get(id)!;
    const finalizers = [...(current.metadata.finalizers ?? [])];
    if (propagation === 'Foreground' && !finalizers.includes('foregroundDeletion'))
      finalizers.push('foregroundDeletion');
    if (propagation === 'Orphan' && !finalizers.includes('orphan')) finalizers.push('orphan');
    // Graceful deletion: a grace period can only shorten once deletion started.
    const previousGrace = current.metadata.deletionTimestamp
      ? Number(current.metadata.deletionGracePeriodSeconds ?? 0)
      : undefined;
    const grace = Math.min(this.gracePeriodOf(key, current, requestedGraceSeconds), previousGrace ?? Infinity);
    if (finalizers.length > 0 || grace > 0) {
      if (
        current.metadata.deletionTimestamp &&
        finalizers.length === (current.metadata.finalizers ?? []).length &&
        grace === previousGrace
      )
        return clone(current); // already being deleted
      const marked = clone(current);
      if (finalizers.length > 0) marked.metadata.finalizers = finalizers;
      marked.metadata.deletionTimestamp ??= new Date(Date.now() + grace * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      marked.metadata.deletionGracePeriodSeconds = grace;
      marked.metadata.generation = (marked.metadata.generation ?? 1) + 1;
      marked.metadata.resourceVersion = String(++this.rv);
      this.bucket(key).set(id, marked);
      this.record('MODIFIED', key, clone(marked), current);
      this.collectGarbage();
      return clone(marked);
    }
    this.bucket(key).delete(id);
    const removed = clone(current);
    removed.metadata.resourceVersion = String(++this.rv);
    this.record('DELETED', key, clone(removed), current);
    this.onRemoved(key, removed);
    this.collectGarbage();
    return removed;
  }

  /** Removes every object of a type (a CRD was deleted). */
  dropType(key: string): void {
    for (const o of [...(this.objects.get(key)?.values() ?? [])]) {
      this.bucket(key).delete(`${o.metadata.namespace ?? ''}/${o.metadata.name}`);
      this.rv++;
      this.record('DELETED', key, clone(o));
    }
  }

  /** Deletes every object in a namespace (the namespace was deleted). */
  dropNamespace(namespace: string): void {
    for (const [key, o] of [...this.all()])
      if (o.metadata.namespace === namespace) this.delete(key, namespace, o.metadata.name, 'Background');
  }

  /**
   * The garbage collector, synchronously: dependents whose owners are all gone are
   * deleted; an owner under foreground deletion has its dependents deleted and loses
   * its `foregroundDeletion` finalizer once none is left; under orphan deletion its
   * dependents lose their owner reference to it.
   */
  private collecting = false;
  private collectGarbage(): void {
    if (this.collecting) return;
    this.collecting = true;
    try {
      for (let changed = true; changed; ) {
        changed = false;
        const uids = new Map<string, [string, KubeObject]>();
        for (const [key, o] of this.all()) uids.set(o.metadata.uid!, [key, o]);
        for (const [key, o] of [...this.all()]) {
          const refs = o.metadata.ownerReferences ?? [];
          if (refs.length > 0 && refs.every((r) => !uids.has(r.uid)) && !o.metadata.deletionTimestamp) {
            this.delete(key, o.metadata.namespace ?? '', o.metadata.name, 'Background');
            changed = true;
          }
        }
        for (const [key, owner] of [...this.all()]) {
          if (!owner.metadata.deletionTimestamp) continue;
          const finalizers = owner.metadata.finalizers ?? [];
          const dependents = [...this.all()].filter(([, d]) =>
            (d.metadata.ownerReferences ?? []).some((r) => r.uid === owner.metadata.uid),
          );
          if (finalizers.includes('orphan')) {
            for (const [dkey, d] of dependents) {
              const next = clone(d);
              next.metadata.ownerReferences = (d.metadata.ownerReferences ?? []).filter(
                (r) => r.uid !== owner.metadata.uid,
              );
              if (next.metadata.ownerReferences.length === 0) delete next.metadata.ownerReferences;
              this.replace(dkey, next, false);
            }
            this.dropFinalizer(key, owner, 'orphan');
            changed = true;
          } else if (finalizers.includes('foregroundDeletion')) {
            const live = dependents.filter(([, d]) => !d.metadata.deletionTimestamp);
            for (const [dkey, d] of live) this.delete(dkey, d.metadata.namespace ?? '', d.metadata.name, 'Foreground');
            if (dependents.length === 0) {
              this.dropFinalizer(key, owner, 'foregroundDeletion');
              changed = true;
            } else if (live.length > 0) changed = true;
          }
        }
      }
    } finally {
      this.collecting = false;
    }
  }

  private dropFinalizer(key: string, owner: KubeObject, finalizer: string): void {
    const next = clone(this.bucket(key).get(`${owner.metadata.namespace ?? ''}/${owner.metadata.name}`)!);
    next.metadata.finalizers = (next.metadata.finalizers ?? []).filter((f) => f !== finalizer);
    this.replace(key, next, false);
  }

  /**
   * Starts a watch. `from` is the resourceVersion to replay after (undefined: send
   * the current objects as ADDED first). Throws 410 Gone for a version older than
   * the history kept.
   */
  watch(watcher: Watcher, from: number | undefined): () => void {
    if (from === undefined) {
      for (const o of this.list(watcher.key, watcher.namespace, watcher.selects)) watcher.send('ADDED', o);
    } else {
      if (from < this.oldest) throw gone(`too old resource version: ${from} (${this.oldest})`);
      for (const event of this.history) if (event.rv > from) deliver(watcher, event);
    }
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  /** Forgets the event history: every watch from an older resourceVersion gets 410. */
  compact(): void {
    this.history.length = 0;
    this.oldest = this.rv;
  }

  newUid(): string {
    return randomUUID();
  }
}

function specOf(object: KubeObject, statusIsSubresource: boolean): string {
  const { metadata: _m, status, ...rest } = object as KubeObject & { status?: unknown };
  return JSON.stringify(statusIsSubresource ? rest : { ...rest, status });
}

/** Sends one event to one watcher, translated for its selectors (an object leaving the selection is DELETED). */
function deliver(w: Watcher, event: StoredEvent): void {
  if (event.key !== w.key) return;
  if (w.namespace !== undefined && event.namespace !== w.namespace) return;
  const now = w.selects(event.object);
  const before = event.previous ? w.selects(event.previous) : false;
  if (event.type === 'MODIFIED') {
    if (now && before) w.send('MODIFIED', event.object);
    else if (now) w.send('ADDED', event.object);
    else if (before) w.send('DELETED', event.object);
  } else if (now || (event.type === 'DELETED' && before)) w.send(event.type, event.object);
}
