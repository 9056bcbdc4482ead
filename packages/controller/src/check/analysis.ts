/**
 * The consistency checker's verdict (`pgha check`), a pure function of what the run
 * recorded: every acknowledged write, the faults injected, the term changes seen, the
 * history records and the rows found on the final primary. No I/O, no clock.
 *
 * All times are milliseconds on ONE monotonic clock: the checker's process measures
 * sends, acknowledgements, faults and term changes alike, so ordering two events
 * needs no clock agreement between machines or processes.
 */
import type { SynchronousMode } from '@pgha/core';

/** Which writer path produced an acknowledgement. */
export type WriteSource = 'pool' | 'direct';

/** One acknowledged write. */
export interface AckEntry {
  /** The writer (`pool-0`, `direct-check-1`). With `seq`, the row's identity. */
  readonly writer: string;
  readonly seq: number;
  readonly source: WriteSource;
  /** The member that acknowledged it (its cluster_name, from the RETURNING). */
  readonly member: string;
  /** The leader term the writer believed when it sent the write. */
  readonly term: number;
  /**
   * The timeline the acknowledging server wrote on (from the RETURNING). Every
   * promotion starts a new, higher timeline, so it tells the reigns apart.
   */
  readonly timeline: number;
  readonly sentAt: number;
  readonly ackAt: number;
}

/** One fault as injected. */
export interface FaultEntry {
  readonly index: number;
  readonly kind: string;
  /** The member (or etcd member) it hit. */
  readonly target: string;
  /** The target's role when it was hit: `primary`, `replica`, `etcd`. */
  readonly role: string;
  readonly injectedAt: number;
  /** When the cluster was healthy again; null when it did not recover within its deadline. */
  readonly recoveredAt: number | null;
}

/** A leader of a newer term, as the checker saw it (polling etcd). */
export interface TermChange {
  readonly term: number;
  readonly member: string;
  readonly at: number;
}

/** What the analysis reads from `history/<term>`. */
export interface HistoryEntry {
  readonly term: number;
  readonly newPrimary: string;
  readonly oldPrimary: string | null;
  readonly reason: string;
  /** WAL bytes the old primary was known to have beyond the new one (null: unknown). */
  readonly lostBytes: number | null;
}

/** Everything the analysis needs. */
export interface AnalysisInput {
  readonly mode: SynchronousMode;
  readonly acks: readonly AckEntry[];
  readonly faults: readonly FaultEntry[];
  /** The primary when the run began (before any fault) and its term (the baseline for term changes). */
  readonly initial: { readonly member: string; readonly term: number };
  /** Every newer leader seen, in the order seen. */
  readonly termChanges: readonly TermChange[];
  readonly history: readonly HistoryEntry[];
  /** `writer:seq` of every row on the final primary. */
  readonly present: ReadonlySet<string>;
  /**
   * A term change is explained by a fault when it comes between the fault's injection
   * and this long after the cluster recovered from it (or, unrecovered, the next
   * fault); otherwise it is a false failover.
   */
  readonly falseFailoverGraceMillis: number;
  /** When the workload stopped (the end of the last fault's window). */
  readonly endedAt: number;
}

/** An acknowledgement by a member after another primary had already acknowledged a write. */
export interface SupersededAck {
  readonly writer: string;
  readonly seq: number;
  readonly member: string;
  /** The server that had taken over (on a higher timeline), and when its first acknowledgement arrived. */
  readonly supersededBy: string;
  readonly supersededAt: number;
  readonly sentAt: number;
  readonly ackAt: number;
}

/** The figures of one fault's window (from its injection to the next fault's). */
export interface FaultFigures {
  readonly index: number;
  readonly kind: string;
  readonly target: string;
  readonly role: string;
  readonly recovered: boolean;
  /** Injection to healthy again; null when it did not recover. */
  readonly recoveryMillis: number | null;
  /** Longest gap without a successful Pool write around the fault. */
  readonly unavailableMillis: number;
  readonly termBefore: number;
  readonly termAfter: number;
  /** Primaries that took over in this window. */
  readonly newPrimaries: readonly string[];
  readonly lostAcked: number;
  /** Sum of the history records' lostBytes of the terms begun in this window (null: none known). */
  readonly lostBytes: number | null;
  readonly supersededAcks: number;
  readonly acked: number;
}

/** A term change no fault explains. */
export interface FalseFailover {
  readonly term: number;
  readonly member: string;
  readonly at: number;
}

/** A broken promise of the mode's contract. */
export interface Violation {
  readonly kind: 'lost-acked-write' | 'superseded-ack';
  readonly fault: number | null;
  readonly detail: string;
}

/** The analysis's result. */
export interface Analysis {
  readonly acked: number;
  readonly lostAcked: ReadonlyArray<Pick<AckEntry, 'writer' | 'seq' | 'member' | 'ackAt'>>;
  readonly supersededAcks: readonly SupersededAck[];
  readonly falseFailovers: readonly FalseFailover[];
  readonly faults: readonly FaultFigures[];
  readonly violations: readonly Violation[];
  /** Faults after which the cluster was not healthy again within the deadline. */
  readonly unrecovered: readonly number[];
  /** No violation and every fault recovered. */
  readonly passed: boolean;
}

/** The row identity used in `present`. */
export const rowKey = (writer: string, seq: number): string => `${writer}:${seq}`;

/**
 * For each timeline acknowledged on, when the first acknowledgement on a HIGHER
 * timeline arrived (and from whom): from then on, a server still writing on the lower
 * one was superseded. Timelines only grow with promotions, so no member or term
 * inference is needed.
 */
function takeovers(sorted: readonly AckEntry[]): Map<number, AckEntry> {
  const timelines = [...new Set(sorted.map((a) => a.timeline))];
  const out = new Map<number, AckEntry>();
  for (const t of timelines) {
    const first = sorted.find((a) => a.timeline > t);
    if (first !== undefined) out.set(t, first);
  }
  return out;
}

/** Index of the fault whose window contains `at` (-1: before the first fault). */
function windowOf(faults: readonly FaultEntry[], at: number): number {
  let found = -1;
  for (let i = 0; i < faults.length; i++) if (faults[i]!.injectedAt <= at) found = i;
  return found;
}

/**
 * Longest stretch of [from, to) without an acknowledgement in `times` (sorted): from
 * `from` to the first one after it, between successive ones, and from the last one to
 * `to`. A window without any counts whole.
 */
export function longestGap(times: readonly number[], from: number, to: number): number {
  let longest = 0;
  let previous = from;
  for (const t of times) {
    if (t <= from) continue;
    if (t >= to) break;
    longest = Math.max(longest, t - previous);
    previous = t;
  }
  return Math.max(longest, to - previous);
}

/** Computes the run's figures and its verdict; see docs/check.md for the contract per mode. */
export function analyzeRun(input: AnalysisInput): Analysis {
  const sorted = [...input.acks].sort((a, b) => a.ackAt - b.ackAt);
  const takeover = takeovers(sorted);

  // Superseded: sent after a server on a higher timeline had acknowledged a write.
  const superseded: SupersededAck[] = [];
  for (const a of sorted) {
    const next = takeover.get(a.timeline);
    if (next === undefined || next.ackAt >= a.sentAt) continue;
    superseded.push({
      writer: a.writer,
      seq: a.seq,
      member: a.member,
      supersededBy: next.member,
      supersededAt: next.ackAt,
      sentAt: a.sentAt,
      ackAt: a.ackAt,
    });
  }

  // Lost: acknowledged, missing on the final primary. Attributed to the fault in whose
  // window the acknowledging server's timeline was taken over (the hand-over that
  // dropped it), else to the window of the acknowledgement.
  const lost = sorted.filter((a) => !input.present.has(rowKey(a.writer, a.seq)));
  const lostWindow = (a: AckEntry): number => windowOf(input.faults, takeover.get(a.timeline)?.ackAt ?? a.ackAt);

  const poolTimes = sorted.filter((a) => a.source === 'pool').map((a) => a.ackAt);
  const termAt = (at: number): number => {
    let term = input.initial.term;
    for (const t of input.termChanges) if (t.at <= at && t.term > term) term = t.term;
    return term;
  };

  const figures: FaultFigures[] = input.faults.map((f, i) => {
    const end = input.faults[i + 1]?.injectedAt ?? input.endedAt;
    const changes = input.termChanges.filter((t) => t.at >= f.injectedAt && t.at < end);
    const bytes = changes
      .map((t) => input.history.find((h) => h.term === t.term)?.lostBytes)
      .filter((b): b is number => typeof b === 'number');
    return {
      index: f.index,
      kind: f.kind,
      target: f.target,
      role: f.role,
      recovered: f.recoveredAt !== null,
      recoveryMillis: f.recoveredAt === null ? null : f.recoveredAt - f.injectedAt,
      unavailableMillis: longestGap(poolTimes, f.injectedAt, end),
      termBefore: termAt(f.injectedAt),
      termAfter: termAt(end),
      newPrimaries: changes.map((t) => t.member),
      lostAcked: lost.filter((a) => lostWindow(a) === i).length,
      lostBytes: bytes.length === 0 ? null : bytes.reduce((x, y) => x + y, 0),
      supersededAcks: superseded.filter((s) => windowOf(input.faults, s.ackAt) === i).length,
      acked: sorted.filter((a) => a.ackAt >= f.injectedAt && a.ackAt < end).length,
    };
  });

  const explained = (at: number) =>
    input.faults.some((f, i) => {
      const end = f.recoveredAt ?? input.faults[i + 1]?.injectedAt ?? input.endedAt;
      return f.injectedAt <= at && at <= end + input.falseFailoverGraceMillis;
    });
  const falseFailovers = input.termChanges
    .filter((t) => t.term > input.initial.term && !explained(t.at))
    .map((t) => ({ term: t.term, member: t.member, at: t.at }));

  const violations: Violation[] = [];
  for (const s of superseded) {
    violations.push({
      kind: 'superseded-ack',
      fault: windowOf(input.faults, s.ackAt),
      detail: `${s.member} acknowledged ${rowKey(s.writer, s.seq)} on its old timeline, sent ${Math.round(s.sentAt - s.supersededAt)} ms after ${s.supersededBy} had acknowledged a write on a newer one`,
    });
  }
  if (input.mode === 'quorum') {
    for (const a of lost) {
      violations.push({
        kind: 'lost-acked-write',
        fault: lostWindow(a),
        detail: `${rowKey(a.writer, a.seq)}, acknowledged by ${a.member}, is missing on the final primary`,
      });
    }
  }
  const unrecovered = figures.filter((f) => !f.recovered).map((f) => f.index);
  return {
    acked: sorted.length,
    lostAcked: lost.map((a) => ({ writer: a.writer, seq: a.seq, member: a.member, ackAt: a.ackAt })),
    supersededAcks: superseded,
    falseFailovers,
    faults: figures,
    violations,
    unrecovered,
    passed: violations.length === 0 && unrecovered.length === 0,
  };
}
