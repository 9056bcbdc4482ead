// The order test files start in: within each group (vitest.config.ts), the files
// that take minutes start first, so the group ends soon after its longest file
// instead of one worker starting that file last and the other waiting idle.
//
// vitest's own order puts each project's files together, projects by name (and, with
// a cache from an earlier run, longer files first within a project). CI runs on a
// fresh checkout, without that cache: without this sequencer the simulated
// Kubernetes cluster's end-to-end file (minutes) would start only after every
// `bench` and `integration-pairwise` file had been handed to a worker.
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The files that take longest, started in this order (measured on the shared 2-core
 * machine under load: kube-sim 370 s and cluster-restart 179 s alone, up-cli 336 s
 * beside another file; no other file took over 130 s). A file not listed here keeps vitest's order,
 * after these. README.md (Development) says how the suite is scheduled.
 */
export const longFiles: readonly string[] = [
  'packages/controller/test/kube-sim.test.ts',
  'packages/controller/test/cluster-restart.test.ts',
  'packages/controller/test/up-cli.test.ts',
];

function rank(spec: TestSpecification): number {
  const index = longFiles.findIndex((file) => spec.moduleId.endsWith(`/${file}`));
  return index < 0 ? longFiles.length : index;
}

/** vitest's sequencer, with {@link longFiles} moved to the front of their group. */
export default class LongFilesFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const position = new Map(sorted.map((spec, i) => [spec, i]));
    return [...sorted].sort(
      (a, b) =>
        a.project.config.sequence.groupOrder - b.project.config.sequence.groupOrder ||
        rank(a) - rank(b) ||
        position.get(a)! - position.get(b)!,
    );
  }
}
