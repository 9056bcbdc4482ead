import { defineConfig } from 'vitest/config';

// The benchmark's pure parts (statistics, report). Not in the root `pnpm test`:
// run with `npx vitest run --config bench/failover/vitest.config.ts`.
export default defineConfig({
  test: { root: import.meta.dirname, include: ['lib/**/*.test.ts'] },
});
