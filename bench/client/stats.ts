// Measurements of one pool, time slice by time slice, and the paired bootstrap that
// says how far the comparison between two pools can be trusted.
//
// Slices of the pools alternate, so slice i of every pool ran at nearly the same time:
// resampling whole rounds (the same round indices for every pool) keeps that pairing,
// and the spread of the resampled statistics is the method's own uncertainty (the
// drift of a shared VM, GC pauses, scheduling), stated as a 95 % interval.

/** Latency histogram buckets: 1 % wide, from 5 µs to about 5 s. */
const bucketCount = 1400;
const bucketBaseMillis = 0.005;
const bucketGrowth = 1.01;
const logGrowth = Math.log(bucketGrowth);

function bucketOf(millis: number): number {
  if (millis <= bucketBaseMillis) return 0;
  const index = Math.floor(Math.log(millis / bucketBaseMillis) / logGrowth);
  return index >= bucketCount ? bucketCount - 1 : index;
}

function bucketMillis(index: number): number {
  return bucketBaseMillis * bucketGrowth ** (index + 0.5);
}

/** What one pool did in one time slice. */
interface Round {
  ops: number;
  elapsedMillis: number;
  cpuMicros: number;
  readonly histogram: Uint32Array;
}

/** Summary statistics of one pool over all its slices. */
export interface Stats {
  readonly ops: number;
  /** This process's CPU time (user + system) per operation: the client's own cost, steadier than wall time. */
  readonly cpuMicrosPerOp: number;
  readonly opsPerSecond: number;
  readonly p50Millis: number;
  readonly p90Millis: number;
  readonly p99Millis: number;
  readonly p999Millis: number;
}

/** One pool's latencies (exact, for the percentiles) and per-slice counts (for the bootstrap). */
export class Series {
  private latencies = new Float64Array(1 << 18);
  private count = 0;
  readonly rounds: Round[] = [];
  private current: Round | null = null;

  /** Starts a slice (a round); `record` adds to it until `end`. */
  begin(): void {
    this.current = { ops: 0, elapsedMillis: 0, cpuMicros: 0, histogram: new Uint32Array(bucketCount) };
  }

  record(millis: number): void {
    if (this.count === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.count++] = millis;
    const round = this.current!;
    round.ops += 1;
    round.histogram[bucketOf(millis)]! += 1;
  }

  end(elapsedMillis: number, cpuMicros: number): void {
    const round = this.current!;
    round.elapsedMillis = elapsedMillis;
    round.cpuMicros = cpuMicros;
    this.rounds.push(round);
    this.current = null;
  }

  summary(): Stats {
    const sorted = this.latencies.slice(0, this.count).sort();
    const at = (p: number) =>
      sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
    let elapsed = 0;
    let cpu = 0;
    for (const round of this.rounds) {
      elapsed += round.elapsedMillis;
      cpu += round.cpuMicros;
    }
    return {
      ops: this.count,
      cpuMicrosPerOp: cpu / this.count,
      opsPerSecond: (this.count / elapsed) * 1000,
      p50Millis: at(50),
      p90Millis: at(90),
      p99Millis: at(99),
      p999Millis: at(99.9),
    };
  }
}

/** A 95 % interval. */
export type Interval = readonly [low: number, high: number];

/** The bootstrap intervals of `other` against `base`: throughput ratio and p99 difference in %. */
export interface Comparison {
  readonly ratio: Interval;
  readonly p99DeltaPercent: Interval;
}

/** A small seeded generator (mulberry32), so a rerun of the analysis gives the same intervals. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function percentileOf(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.floor(p * sorted.length)))]!;
}

/**
 * Paired bootstrap over rounds: `resamples` times, draws as many round indices as
 * there are rounds (with replacement), and computes for each of `others` its
 * throughput ratio and p99 difference against `base` over those rounds (p99 from the
 * merged 1 % histograms). Returns the 2.5th and 97.5th percentiles of each.
 */
export function compare(base: Series, others: readonly Series[], resamples = 400, seed = 1): Comparison[] {
  const rounds = Math.min(base.rounds.length, ...others.map((s) => s.rounds.length));
  const random = generator(seed);
  const all = [base, ...others];
  const ratios: number[][] = others.map(() => []);
  const deltas: number[][] = others.map(() => []);
  const merged = all.map(() => new Float64Array(bucketCount));
  const picks = new Uint32Array(rounds);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < rounds; i++) picks[i] = Math.floor(random() * rounds);
    const rate: number[] = [];
    const p99: number[] = [];
    all.forEach((series, s) => {
      const histogram = merged[s]!;
      histogram.fill(0);
      let ops = 0;
      let elapsed = 0;
      for (const pick of picks) {
        const round = series.rounds[pick]!;
        ops += round.ops;
        elapsed += round.elapsedMillis;
        const source = round.histogram;
        for (let b = 0; b < bucketCount; b++) histogram[b]! += source[b]!;
      }
      rate.push(ops / elapsed);
      const rank = Math.floor(0.99 * ops);
      let seen = 0;
      let bucket = 0;
      while (bucket < bucketCount - 1 && seen + histogram[bucket]! <= rank) seen += histogram[bucket++]!;
      p99.push(bucketMillis(bucket));
    });
    others.forEach((_, o) => {
      ratios[o]!.push(rate[o + 1]! / rate[0]!);
      deltas[o]!.push((p99[o + 1]! / p99[0]! - 1) * 100);
    });
  }
  return others.map((_, o) => {
    const r = ratios[o]!.sort((x, y) => x - y);
    const d = deltas[o]!.sort((x, y) => x - y);
    return {
      ratio: [percentileOf(r, 0.025), percentileOf(r, 0.975)],
      p99DeltaPercent: [percentileOf(d, 0.025), percentileOf(d, 0.975)],
    };
  });
}
