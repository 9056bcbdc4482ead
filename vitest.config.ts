import { defineConfig } from 'vitest/config';

// Four projects: pure unit tests next to the code (fast, parallel), the
// benchmarks' own pure unit tests (statistics, reports), the Kubernetes test API
// server's tests (the real kubectl against it, seconds), and integration tests that
// start real etcd and PostgreSQL processes (serial: the machine has two cores and
// each test runs a whole cluster).
export default defineConfig({
  test: {
    reporters: ['default', './testing/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
        },
      },
      {
        // The Kubernetes test API server, driven by the real kubectl (seconds).
        test: {
          name: 'kubernetes',
          include: ['testing/**/*.test.ts'],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'bench',
          include: ['bench/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['packages/*/test/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
