import { defineConfig } from 'vitest/config';
import LongFilesFirstSequencer from './testing/long-files-first-sequencer.js';

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
// beyond their own processes and connections and assert no time bound (bounded waits
// only), so another file beside them cannot change their outcome. The sequencer
// starts the files that take minutes first (testing/long-files-first-sequencer.ts).
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
  // Planned operations (Ctrl-C of `pgha up`, member restarts, switchovers the test
  // asks for or plays), no time bound: minutes the serial group no longer spends
  // (cluster-restart was its longest file).
  'packages/controller/test/cluster-restart.test.ts',
  'packages/controller/test/standby-parameter-floor.test.ts',
  'packages/client/test/pool-options.test.ts',
  'packages/client/test/harness.test.ts',
  // Faults on the test's own processes and connections only (a controller it
  // started, killed; sessions it terminates or cuts), each awaited as a condition
  // with a deadline far above the time it needs: nothing beside them changes that.
  'packages/controller/test/controller-writes.test.ts',
  'packages/client/test/failure-classification.test.ts',
  // Member stops and starts the test asks for, synchronous settings it writes; every
  // wait a condition with a deadline.
  'packages/controller/test/synchronous.test.ts',
  // pgha check's short run: its verdict (nothing lost or superseded in quorum mode,
  // every fault recovered within 90 s) held over 320 faults at load average 15-18.
  'packages/controller/test/check.test.ts',
  // pgha demo: one host loss on its own cluster; its only bound (a writable new
  // primary within 60 s) is far above the 2-4 s it takes at load average 36.
  'packages/controller/test/demo.test.ts',
  // The config CLI against a real etcd (no cluster).
  'packages/controller/test/cluster-config.test.ts',
  // Bad CLI input (each run bounded by a 20 s deadline, far above what it needs), the
  // pool conformance cases (children bounded by 20 s), ReplicaPool routing on member
  // records the test writes itself, and the stale-knowledge policies behind the
  // test's own black-holing proxy (windows of 0.7 s measured on the client's clock
  // against a proxy it controls): no fault on a cluster, no bound another file
  // beside them could break.
  'packages/controller/test/cli-errors.test.ts',
  'packages/client/test/pool-conformance.test.ts',
  'packages/client/test/replica-pool.test.ts',
  'packages/client/test/stale.test.ts',
  // Hostile leader and member records the test writes into its own etcd (no cluster,
  // no fault, no time bound): the watcher's property test and allowedHosts.
  'packages/client/test/hostile-records.test.ts',
  // The built CLI's --help against docs/reference.md (no cluster).
  'packages/controller/test/documented-options.test.ts',
  // A two-member `pgha up --secure` cluster (etcd TLS + client-certificate auth): its
  // only fault is a kill -9 of its own primary agent, and every wait is a condition
  // with a deadline far above what it needs.
  'packages/controller/test/secure-cluster.test.ts',
  // A one-member bootstrap with its own etcd frozen during a slow initdb: the fault
  // is on the test's own etcd, and nothing it asserts is a time bound.
  'packages/controller/test/bootstrap-faults.test.ts',
  // A member ahead of the elected timeline, made for real on the test's own cluster
  // and etcd (a member it stops, its own primary's agent killed): every wait a
  // condition with a deadline of 30-120 s, no time bound asserted. And the operator's
  // leader watches behind the test's own cuttable proxy to its own etcd (waits of
  // 10 s for events that take milliseconds). 35 s and a few seconds the serial group
  // no longer spends.
  'packages/controller/test/diverged-member.test.ts',
  'packages/controller/test/leader-watches.test.ts',
  // An agent's leadership against leader records the test writes into its own etcd
  // (no cluster, no postgres started, no fault, no time bound).
  'packages/controller/test/unreadable-leader.test.ts',
];

export default defineConfig({
  test: {
    sequence: { sequencer: LongFilesFirstSequencer },
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
