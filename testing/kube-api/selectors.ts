/**
 * Label and field selectors as the Kubernetes API parses them (the subset kubectl and
 * operators send): `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a` for
 * labels; `path=value`, `path==value`, `path!=value` for fields, where path is any
 * dotted path into the object (`metadata.name`, `status.phase`, `spec.nodeName`).
 */
import { badRequest } from './status.js';

export type Selector = (object: KubeObject) => boolean;
export type KubeObject = Record<string, unknown> & {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
};
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: { uid: string; kind: string; name: string; apiVersion: string }[];
  deletionTimestamp?: string;
  creationTimestamp?: string;
  generateName?: string;
  [key: string]: unknown;
}

/** Splits on commas outside parentheses. */
function splitTerms(text: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      terms.push(current.trim());
      current = '';
    } else current += ch;
  }
  if (current.trim() !== '') terms.push(current.trim());
  return terms;
}

export function parseLabelSelector(text: string | null): Selector {
  if (text === null || text.trim() === '') return () => true;
  const tests = splitTerms(text).map((term): ((labels: Record<string, string>) => boolean) => {
    let m = /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (m) {
      const [, key, op, list] = m as unknown as [string, string, string, string];
      const values = list
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      return op === 'in'
        ? (l) => key in l && values.includes(l[key]!)
        : (l) => !(key in l) || !values.includes(l[key]!);
    }
    m = /^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$/.exec(term);
    if (m) {
      const [, key, op, value] = m as unknown as [string, string, string, string];
      return op === '!=' ? (l) => l[key] !== value : (l) => l[key] === value;
    }
    m = /^(!?)([\w./-]+)$/.exec(term);
    if (m) {
      const [, not, key] = m as unknown as [string, string, string];
      return not === '!' ? (l) => !(key in l) : (l) => key in l;
    }
    throw badRequest(`unable to parse requirement: ${JSON.stringify(term)}`);
  });
  return (object) => {
    const labels = object.metadata.labels ?? {};
    return tests.every((t) => t(labels));
  };
}

function fieldValue(object: unknown, path: string): string {
  let value: unknown = object;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return '';
    value = (value as Record<string, unknown>)[part];
  }
  return value === undefined || value === null ? '' : String(value);
}

export function parseFieldSelector(text: string | null): Selector {
  if (text === null || text.trim() === '') return () => true;
  const tests = splitTerms(text).map((term): Selector => {
    const m = /^([\w.]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw badRequest(`invalid field selector: ${JSON.stringify(term)}`);
    const [, path, op, value] = m as unknown as [string, string, string, string];
    return op === '!=' ? (o) => fieldValue(o, path) !== value : (o) => fieldValue(o, path) === value;
  });
  return (object) => tests.every((t) => t(object));
}

/** Whether a LabelSelector object ({matchLabels, matchExpressions}) selects these labels. */
export function matchesLabelSelector(
  selector: {
    matchLabels?: Record<string, string>;
    matchExpressions?: { key: string; operator: string; values?: string[] }[];
  },
  labels: Record<string, string>,
): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = e.key in labels;
    const inValues = has && (e.values ?? []).includes(labels[e.key]!);
    if (e.operator === 'In' && !inValues) return false;
    if (e.operator === 'NotIn' && inValues) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}
