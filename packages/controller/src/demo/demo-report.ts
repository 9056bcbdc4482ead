/**
 * `pgha demo`'s verdict and summary, a pure function of what the run observed: the
 * milestones of the failover (seen in etcd and in the app's Pool), every write the
 * app had acknowledged, and the rows found on the final primary. No I/O, no clock.
 *
 * All times are milliseconds on the demo process's monotonic clock.
 */
import { longestGap, rowKey } from '../check/analysis.js';

/** One write the app had acknowledged (a row it inserted). */
export interface DemoAck {
  /** The caller (one of the app's concurrent loops) and its sequence number: the row's identity. */
  readonly caller: number;
  readonly seq: number;
  /** `inet_server_port()` of the server that acknowledged it. */
  readonly port: number;
  /** The leader term the Pool believed when the INSERT was sent. */
  readonly term: number;
  readonly sentAt: number;
  readonly ackAt: number;
}

/** A milestone: when it was seen, and the member it names. */
export interface Milestone {
  readonly at: number;
  readonly member: string;
}

/** Everything the run observed. */
export interface DemoObservations {
  /** The primary whose host was killed, its postgres port and its term. */
  readonly oldPrimary: { readonly member: string; readonly port: number; readonly term: number };
  readonly faultAt: number;
  /** The old primary's leader record deleted (its lease expired). */
  readonly leaderGone: Milestone | null;
  /** The controller's target record for the next term. */
  readonly elected: Milestone | null;
  /** The new leader record, not yet writable (promotion under way). */
  readonly promoting: Milestone | null;
  /** The new leader record, writable. */
  readonly writable: Milestone | null;
  /** The app's Pool emitted `primary-changed` for the new primary. */
  readonly rerouted: Milestone | null;
  /** The app's first acknowledgement from the new primary. */
  readonly firstWrite: Milestone | null;
  /** The old primary reported as a replica streaming on the new timeline. */
  readonly rejoined: Milestone | null;
  readonly acks: readonly DemoAck[];
  /** Failed writes by error class name. */
  readonly errors: Readonly<Record<string, number>>;
  /** The primary of each term the run saw (term → postgres port). */
  readonly termPorts: ReadonlyMap<number, number>;
  /** `caller:seq` of every row on the final primary. */
  readonly present: ReadonlySet<string>;
  /** When the app stopped writing. */
  readonly endedAt: number;
}

/** The figures of a run and whether it passed. */
export interface DemoSummary {
  readonly acked: number;
  readonly writePauseMillis: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly lost: readonly DemoAck[];
  readonly wrongNode: readonly DemoAck[];
  /** Why the run failed; empty when it passed. */
  readonly problems: readonly string[];
}

/**
 * A write went to a wrong node when the server that acknowledged it was not the
 * primary of the term the Pool believed, or when it was the old primary and it was
 * sent after the new primary had already acknowledged a write (two writable
 * primaries at once).
 */
function wrongNode(o: DemoObservations, a: DemoAck): boolean {
  if (o.termPorts.get(a.term) !== a.port) return true;
  return a.port === o.oldPrimary.port && o.firstWrite !== null && a.sentAt > o.firstWrite.at;
}

/** Computes the run's figures and verdict. */
export function summarizeDemo(o: DemoObservations): DemoSummary {
  const sorted = [...o.acks].sort((a, b) => a.ackAt - b.ackAt);
  const times = sorted.map((a) => a.ackAt);
  const first = times[0];
  const writePauseMillis = first === undefined ? 0 : longestGap(times, first, o.endedAt);
  const lost = sorted.filter((a) => !o.present.has(rowKey(String(a.caller), a.seq)));
  const wrong = sorted.filter((a) => wrongNode(o, a));
  const problems: string[] = [];
  if (o.writable === null) problems.push('no new primary became writable');
  else if (o.firstWrite === null) problems.push(`the app never wrote on the new primary ${o.writable.member}`);
  if (o.rerouted === null) problems.push("the app's Pool never reported the new primary");
  if (o.rejoined === null) problems.push(`${o.oldPrimary.member} did not come back as a streaming replica`);
  if (lost.length > 0) problems.push(`${lost.length} acknowledged writes are missing on the final primary`);
  if (wrong.length > 0) problems.push(`${wrong.length} writes were acknowledged by a server that was not the primary`);
  if (sorted.length === 0) problems.push('the app acknowledged no write at all');
  return { acked: sorted.length, writePauseMillis, errors: o.errors, lost, wrongNode: wrong, problems };
}

/** `+1.23 s` relative to the fault. */
export function sinceFault(o: Pick<DemoObservations, 'faultAt'>, at: number): string {
  const s = (at - o.faultAt) / 1000;
  return `${s < 0 ? '-' : '+'}${Math.abs(s).toFixed(2)} s`;
}

function errorsText(errors: Readonly<Record<string, number>>): string {
  const entries = Object.entries(errors).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? 'none' : entries.map(([k, n]) => `${k} ${n}`).join(', ');
}

/** The summary table printed at the end: one row per figure, times relative to the fault. */
export function formatDemoSummary(o: DemoObservations, s: DemoSummary): string {
  const at = (m: Milestone | null, what: string, after?: Milestone | null, afterWhat?: string) =>
    m === null
      ? `never (${what})`
      : `${sinceFault(o, m.at)}  ${what}${after !== undefined && after !== null ? ` (${((m.at - after.at) / 1000).toFixed(2)} s after ${afterWhat})` : ''}`;
  const rows: Array<[string, string]> = [
    ['fault', `+0.00 s  kill -9 of ${o.oldPrimary.member}'s agent, watchdog and postgres (host loss)`],
    ['detection', at(o.leaderGone, `lease expired, leader record of ${o.oldPrimary.member} gone`)],
    ['election', at(o.elected, `controller chose ${o.elected?.member ?? '-'}`, o.leaderGone, 'detection')],
    ['promotion', at(o.writable, `${o.writable?.member ?? '-'} writable`, o.elected, 'election')],
    ['client reroute', at(o.rerouted, `Pool on ${o.rerouted?.member ?? '-'}`)],
    ['first write', at(o.firstWrite, `acknowledged by ${o.firstWrite?.member ?? '-'}`)],
    ['write pause', `${(s.writePauseMillis / 1000).toFixed(2)} s  longest gap between acknowledgements`],
    ['errors', errorsText(s.errors)],
    ['lost acknowledged writes', `lost ${s.lost.length} of ${s.acked}`],
    ['wrong-node writes', `wrong node ${s.wrongNode.length}`],
    ['rejoin', at(o.rejoined, `${o.oldPrimary.member} streaming as a replica`)],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  const line = `  ${'-'.repeat(width)}  ${'-'.repeat(60)}\n`;
  return `${line}${rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}\n`).join('')}${line}`;
}
