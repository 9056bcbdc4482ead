import { defineConfig } from 'vitest/config';

// The benchmark's pure parts (pgbench output parsing, statistics, report). Also run
// by the root `pnpm test` (its `bench` project); alone:
// `npx vitest run --config bench/sync-cost/vitest.config.ts`.
export default defineConfig({
  test: { root: import.meta.dirname, include: ['lib/**/*.test.ts'] },
});
