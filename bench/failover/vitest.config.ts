import { defineConfig } from 'vitest/config';

// The benchmark's pure parts (statistics, report). Also run by the root `pnpm test`
// (its `bench` project); alone: `npx vitest run --config bench/failover/vitest.config.ts`.
export default defineConfig({
  test: { root: import.meta.dirname, include: ['lib/**/*.test.ts'] },
});
