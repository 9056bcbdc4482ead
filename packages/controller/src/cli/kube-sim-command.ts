/**
 * `pgha kube-sim`: starts the simulated Kubernetes cluster of the repository's
 * testing/kube-sim (a development tool: it is not part of the published package).
 * From a clone it runs testing/kube-sim/main.ts with tsx, passing the arguments on;
 * anywhere else it says where to get it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PghaError } from '@pgha/core';
import type { Command } from 'commander';

/** The repository root when this CLI runs from a clone (packages/controller/dist/cli.js), else null. */
function repositoryRoot(): string | null {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  return existsSync(join(root, 'testing', 'kube-sim', 'main.ts')) ? root : null;
}

export function registerKubeSim(program: Command): void {
  program
    .command('kube-sim')
    .description(
      'start a simulated Kubernetes cluster with etcd and the pgha operator (development tool; needs a clone of the repository and root)',
    )
    .requiredOption('--kubeconfig <file>', 'where to write the kubeconfig for kubectl')
    .option(
      '--state-dir <dir>',
      'keep volumes, logs and the kubeconfigs here (default: a temporary directory, removed on exit)',
    )
    .option('-v, --verbose', 'print every step of every part (pods, probes, services)', false)
    .action(async (opts: { kubeconfig: string; stateDir?: string; verbose: boolean }) => {
      const root = repositoryRoot();
      if (root === null)
        throw new PghaError(
          'missing-prerequisite',
          'kube-sim is a development tool that runs from a clone of the pgha repository: clone it, run `bash scripts/setup.sh`, then `pnpm pgha kube-sim --kubeconfig FILE`',
        );
      const args = ['--import', 'tsx', join(root, 'testing', 'kube-sim', 'main.ts'), '--kubeconfig', opts.kubeconfig];
      if (opts.stateDir !== undefined) args.push('--state-dir', opts.stateDir);
      if (opts.verbose) args.push('--verbose');
      const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' });
      // Ctrl-C reaches the child through the terminal's process group; a SIGTERM sent
      // to us alone is passed on, and we exit as it does.
      process.on('SIGTERM', () => child.kill('SIGTERM'));
      process.on('SIGINT', () => undefined);
      const code = await new Promise<number>((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));
      process.exit(code);
    });
}
