import { defineConfig } from 'vitest/config';

// Six projects in two groups, the groups one after the other.
//
// Group 0 runs two files at a time: pure unit tests next to the code, the
// benchmarks' own pure tests, the Kubernetes test API server's and simulated
// cluster's tests (the real kubectl against it; pods as processes), and the end to
// end tests on the simulated cluster (kube-sim.test.ts, minutes; it asserts
// behaviour and reports times, nothing it asserts depends on how loaded the
// machine is).
//
// Also in group 0: integration tests that start real processes but inject no fault
// and assert no time bound (bounded waits only), so another file beside them cannot
// change their outcome.
//
// Group 1 runs one file at a time: the integration tests that inject faults (the
// machine has two cores, each test runs a whole cluster, and several assert bounds
// on fencing and failover times).
const pairwise = { sequence: { groupOrder: 0 }, maxWorkers: 2 } as const;
const integrationBesideOthers = [
  'packages/client/test/typings.test.ts',
  'packages/client/test/orm.test.ts',
  'packages/client/test/example.test.ts',
  'packages/controller/test/app-role.test.ts',
  'packages/controller/test/up-cli.test.ts',
  'packages/controller/test/health-api.test.ts',
  'packages/controller/test/cluster-config.test.ts',
];

export default defineConfig({
  test: {
    reporters: ['default', './testing/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
          ...pairwise,
        },
      },
      {
        // The Kubernetes test API server, driven by the real kubectl (seconds), and
        // the simulated cluster's parts.
        test: {
          name: 'kubernetes',
          include: ['testing/**/*.test.ts'],
          testTimeout: 30_000,
          ...pairwise,
        },
      },
      {
        test: {
          name: 'bench',
          include: ['bench/**/*.test.ts'],
          ...pairwise,
        },
      },
      {
        // pgha end to end on the simulated Kubernetes cluster (testing/kube-sim).
        test: {
          name: 'kube-sim',
          include: ['packages/controller/test/kube-sim.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          ...pairwise,
        },
      },
      {
        test: {
          name: 'integration-pairwise',
          include: integrationBesideOthers,
          testTimeout: 120_000,
          hookTimeout: 120_000,
          ...pairwise,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['packages/*/test/**/*.test.ts'],
          exclude: ['packages/controller/test/kube-sim.test.ts', ...integrationBesideOthers],
          fileParallelism: false,
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
