// A small parser of the Prometheus text exposition format (version 0.0.4), for tests
// that scrape pgha's /metrics: enough to read every sample with its labels and each
// metric family's TYPE, and to fail loudly on a line it does not understand.
import { httpGet } from './http-get.js';

/** One sample: `name{labels} value`. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A parsed exposition: the samples in order and each family's declared type. */
export interface Exposition {
  readonly samples: readonly Sample[];
  readonly types: Readonly<Record<string, string>>;
  /** The value of the one sample named `name` whose labels include `labels`; throws unless exactly one matches. */
  value(name: string, labels?: Readonly<Record<string, string>>): number;
  /** Every sample named `name` whose labels include `labels`. */
  find(name: string, labels?: Readonly<Record<string, string>>): readonly Sample[];
}

const sampleLine = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const labelPair = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  labelPair.lastIndex = 0;
  while (labelPair.lastIndex < text.length) {
    const start = labelPair.lastIndex;
    const m = labelPair.exec(text);
    if (m === null) throw new Error(`bad labels at ${start} in ${JSON.stringify(line)}`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

function parseValue(text: string, line: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  if (text.toLowerCase() === 'nan') return Number.NaN; // prom-client writes Nan
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw new Error(`bad value in ${JSON.stringify(line)}`);
  return value;
}

/** Parses a scrape. @throws Error naming the first line it cannot read. */
export function parsePrometheusText(text: string): Exposition {
  const samples: Sample[] = [];
  const types: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (type !== null) types[type[1]!] = type[2]!;
      else if (!/^# (HELP \S+ .*|HELP \S+)$/.test(line) && !line.startsWith('# ')) {
        throw new Error(`bad comment line ${JSON.stringify(line)}`);
      }
      continue;
    }
    const m = sampleLine.exec(line);
    if (m === null) throw new Error(`bad sample line ${JSON.stringify(line)}`);
    samples.push({
      name: m[1]!,
      labels: m[2] === undefined ? {} : parseLabels(m[2], line),
      value: parseValue(m[3]!, line),
    });
  }
  const find = (name: string, labels: Readonly<Record<string, string>> = {}) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return {
    samples,
    types,
    find,
    value(name, labels = {}) {
      const found = find(name, labels);
      if (found.length !== 1) {
        throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${found.length}`);
      }
      return found[0]!.value;
    },
  };
}

/** GETs `url` (a /metrics endpoint), checks the status and content type, and parses it. */
export function scrape(url: string): Promise<Exposition> {
  return scrapeWithCa(url, undefined);
}

/** {@link scrape} of an `https://` endpoint whose certificate must chain to `ca` (PEM). */
export async function scrapeWithCa(url: string, ca: string | undefined): Promise<Exposition> {
  const res = await httpGet(url, { ca });
  if (res.status !== 200) throw new Error(`GET ${url} answered ${res.status}`);
  const type = String(res.headers['content-type'] ?? '');
  if (!type.startsWith('text/plain') || !type.includes('version=0.0.4')) {
    throw new Error(`GET ${url}: content type ${type} is not the Prometheus text format`);
  }
  return parsePrometheusText(res.text);
}
