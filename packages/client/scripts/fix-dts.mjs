// After tsup: the emitted declarations import pg's types as a namespace.
//
// The source needs `import pg from 'pg'` (pg is CommonJS; its named exports are not
// visible to ESM), and tsup copies that into index.d.ts and index.d.cts. But
// @types/pg's CommonJS entry (index.d.ts, used by `require` and by moduleResolution
// node10) has no default export: without esModuleInterop, `pg` then resolves to
// nothing and Pool loses query, totalCount... and stops being assignable to pg.Pool.
// `import * as pg` works in every mode: the ESM entry (index.d.mts) re-exports the
// same names next to its default.
import { readFileSync, writeFileSync } from 'node:fs';

for (const file of ['dist/index.d.ts', 'dist/index.d.cts']) {
  const text = readFileSync(file, 'utf8');
  const fixed = text.replace(/^import pg from 'pg';$/m, "import * as pg from 'pg';");
  if (fixed === text && !text.includes("import * as pg from 'pg';")) {
    throw new Error(`${file}: expected "import pg from 'pg';" to rewrite; update scripts/fix-dts.mjs`);
  }
  writeFileSync(file, fixed);
}
