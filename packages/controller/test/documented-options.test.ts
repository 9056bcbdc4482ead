// Every documented option exists, and every option in code is documented: the
// built CLI's own --help of every command against docs/reference.md, the cluster
// settings (the config record's keys) and @pgha/client's Pool options against the
// same page. A flag added without a line in the reference, or a line left behind
// after a flag was removed, fails here with the names.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { defaultConfig } from '@pgha/core';
import { describe, expect, test } from 'vitest';
import { configSettingKeys, postgresParameterPrefix } from '../src/decide/config-change.js';

const root = join(import.meta.dirname, '..', '..', '..');
const cli = join(root, 'packages', 'controller', 'dist', 'cli.js');
const reference = readFileSync(join(root, 'docs', 'reference.md'), 'utf8');
const run = promisify(execFile);

/** The `### \`title\`` sections of the reference, each with its body. */
function sections(): Map<string, string> {
  const result = new Map<string, string>();
  const parts = reference.split(/^#{2,3} /m).slice(1);
  for (const part of parts) {
    const newline = part.indexOf('\n');
    result.set(part.slice(0, newline).trim(), part.slice(newline + 1));
  }
  return result;
}

/** The first-column names of a section's table rows: `--flag …` or `name`. */
function documentedNames(body: string): string[] {
  const names: string[] = [];
  for (const line of body.split('\n')) {
    const match = /^\|\s*`([^`]+)`/.exec(line);
    if (match === null) continue;
    const name = match[1]!.split(/[ =<[]/)[0]!;
    names.push(name);
  }
  return names;
}

/** Every visible command and its long flags, from the built CLI itself (`pgha options`, hidden). */
async function commandsInCode(): Promise<Array<{ command: string; options: string[] }>> {
  const { stdout } = await run(process.execPath, [cli, 'options'], { timeout: 30_000 });
  return JSON.parse(stdout);
}

const sorted = (values: Iterable<string>) => [...new Set(values)].sort();

describe('docs/reference.md against the code', () => {
  test('every command has a section, and each lists exactly the flags its --help shows', async () => {
    const docs = sections();
    const commands = await commandsInCode();
    expect(commands.length).toBeGreaterThan(8);
    const problems: string[] = [];
    for (const { command, options } of commands) {
      const title = `\`pgha ${command}\``;
      const body = docs.get(title);
      if (body === undefined) {
        problems.push(`no section ${title}`);
        continue;
      }
      const inCode = sorted(options);
      const inDocs = sorted(documentedNames(body).filter((n) => n.startsWith('--')));
      const undocumented = inCode.filter((f) => !inDocs.includes(f));
      const stale = inDocs.filter((f) => !inCode.includes(f));
      if (undocumented.length > 0) problems.push(`${title}: not documented: ${undocumented.join(', ')}`);
      if (stale.length > 0) problems.push(`${title}: documented but not an option: ${stale.join(', ')}`);
    }
    // A section for a command that does not exist (renamed, removed) is stale too.
    for (const title of docs.keys())
      if (title.startsWith('`pgha ') && !commands.some((c) => `\`pgha ${c.command}\`` === title))
        problems.push(`${title}: documented but not a command`);
    expect(problems).toEqual([]);
  });

  test('every cluster setting (the config record) is documented, and nothing else is', () => {
    const body = sections().get('Cluster settings (`pgha config set`)');
    expect(body, 'a "## Cluster settings (`pgha config set`)" section').toBeDefined();
    const bookkeeping = new Set(['v', 'version', 'updatedAt', 'updatedBy']);
    // The record's keys (optional ones included: what `pgha config set` accepts).
    const inCode = sorted([
      ...Object.keys(defaultConfig).filter((k) => !bookkeeping.has(k)),
      ...configSettingKeys,
      postgresParameterPrefix.replace(/\.$/, ''),
    ]);
    expect(sorted(documentedNames(body!))).toEqual(inCode);
  });

  test("every @pgha/client Pool and ReplicaPool option (besides pg.Pool's) is documented, and nothing else is", () => {
    const body = sections().get('`@pgha/client` options');
    expect(body, 'a "## `@pgha/client` options" section').toBeDefined();
    const source = readFileSync(join(root, 'packages', 'client', 'src', 'pool-options.ts'), 'utf8');
    const list = /const pghaOptionNames = \[([\s\S]*?)\] as const/.exec(source);
    expect(list, 'pghaOptionNames in packages/client/src/pool-options.ts').not.toBeNull();
    const inCode = sorted([...list![1]!.matchAll(/'([A-Za-z]+)'/g)].map((m) => m[1]!));
    expect(inCode.length).toBeGreaterThan(5);
    expect(sorted(documentedNames(body!))).toEqual(inCode);
  });
});
