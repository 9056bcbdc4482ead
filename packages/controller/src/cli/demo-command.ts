import { type Command, Option } from 'commander';
import { formatDemoResult, runDemo } from '../demo/run-demo.js';

interface DemoFlags {
  members: number;
  warmup: number;
  failoverTimeout: number;
  keep: boolean;
}

/** Registers `pgha demo`: a narrated failover on a throw-away local cluster (README, "Demo"). */
export function registerDemo(program: Command, integer: (min: number, max: number) => (v: string) => number): void {
  program
    .command('demo')
    .description(
      "a narrated failover: start a throw-away local cluster, write through @pgha/client's Pool, kill the primary's host, and show the timeline, the app's view and a summary",
    )
    .addOption(new Option('--members <n>', 'number of members').argParser(integer(2, 9)).default(3))
    .addOption(
      new Option('--warmup <ms>', 'how long the app writes before the fault')
        .argParser(integer(0, 600_000))
        .default(3000),
    )
    .addOption(
      new Option('--failover-timeout <ms>', 'fail when no new primary is writable this long after the fault')
        .argParser(integer(1000, 600_000))
        .default(60_000),
    )
    .option('--keep', 'leave the cluster running after the summary (prints how to connect) until Ctrl-C', false)
    .action(async (opts: DemoFlags) => {
      const out = (text: string) => process.stdout.write(text);
      const abort = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        if (abort.signal.aborted) return;
        process.stderr.write(`\n${signal}: stopping the demo and everything it started...\n`);
        abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let run: Awaited<ReturnType<typeof runDemo>>;
      try {
        run = await runDemo({
          members: opts.members,
          warmupMillis: opts.warmup,
          failoverTimeoutMillis: opts.failoverTimeout,
          out,
          signal: abort.signal,
        });
      } catch (error) {
        if (abort.signal.aborted) process.exit(130);
        throw error;
      }
      out(formatDemoResult(run));
      const { problems } = run.summary;
      out(
        problems.length === 0
          ? 'PASSED: the primary failed over with no acknowledged write lost and none on a wrong node.\n'
          : `FAILED: ${problems.join('; ')}.\n`,
      );
      if (opts.keep && !abort.signal.aborted) {
        const c = run.cluster;
        out(
          `\nThe cluster is left running (Ctrl-C stops it; state in ${run.stateDir}):\n` +
            `  psql '${c.connectionString(run.finalPrimary)}'\n` +
            `  pnpm pgha status --etcd ${c.etcdEndpoint} --cluster ${c.cluster}\n`,
        );
        await new Promise<void>((resolve) => abort.signal.addEventListener('abort', () => resolve(), { once: true }));
      }
      const keepState = opts.keep || problems.length > 0;
      await run.close(!keepState);
      if (keepState) out(`state and logs kept in ${run.stateDir}\n`);
      else out('Stopped every process the demo started and removed its state directory.\n');
      if (abort.signal.aborted && !opts.keep) process.exit(130);
      process.exit(problems.length === 0 ? 0 : 1);
    });
}
