// Test support for issue 15's audit: passwords must never be in logs, `pgha status`
// output, etcd, or any process's command line. Collects every place a password could
// leak to and reports each place that holds one (naming the place and the password's
// name, never the password itself, so a failing test does not print it either).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';

/** One place the audit read, and what it holds. */
export interface AuditedText {
  /** Where it came from: a file path, `etcd <key>`, `cmdline <pid>`, a command. */
  readonly place: string;
  readonly text: string;
}

/** A place that holds a password. */
export interface Leak {
  readonly place: string;
  /** The name of the password (`superuser`, `replication`, ...), not its value. */
  readonly password: string;
}

/** Every `*.log` file under `dir` (recursively), as text. */
export function logFiles(dir: string): AuditedText[] {
  const out: AuditedText[] = [];
  const walk = (at: string) => {
    let entries: string[];
    try {
      entries = readdirSync(at);
    } catch {
      return; // a directory only postgres's OS user reads is not readable as... anyone else
    }
    for (const entry of entries) {
      const path = join(at, entry);
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(path);
      } catch {
        continue; // gone while we looked
      }
      if (st.isDirectory()) walk(path);
      else if (st.isFile() && /\.log(\.\d+)?$/.test(entry)) out.push({ place: path, text: readFileSync(path, 'utf8') });
    }
  };
  walk(dir);
  return out;
}

/** Every key and value in etcd (the whole keyspace), one entry per key. */
export async function etcdContents(etcd: Etcd3): Promise<AuditedText[]> {
  const all = await etcd.getAll().prefix('').strings();
  return Object.entries(all).map(([key, value]) => ({ place: `etcd ${key}`, text: `${key}\n${value}` }));
}

/** The command line of every process on this host (`/proc/<pid>/cmdline`, NULs as spaces). */
export function commandLines(): AuditedText[] {
  const out: AuditedText[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      out.push({ place: `cmdline of pid ${entry}: ${text.slice(0, 120)}`, text });
    } catch {
      /* the process ended while we looked */
    }
  }
  return out;
}

/**
 * The places among `texts` that hold one of `passwords` (by name), verbatim or
 * percent-encoded (as in a URL).
 */
export function findLeaks(
  texts: readonly AuditedText[],
  passwords: Readonly<Record<string, string | null | undefined>>,
): Leak[] {
  const leaks: Leak[] = [];
  for (const [name, value] of Object.entries(passwords)) {
    if (value == null || value === '') continue;
    const forms = [...new Set([value, encodeURIComponent(value)])];
    for (const t of texts) if (forms.some((f) => t.text.includes(f))) leaks.push({ place: t.place, password: name });
  }
  return leaks;
}
