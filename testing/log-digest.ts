// What a failed test prints about a cluster it ran: the agents' and controllers'
// warnings, errors and role decisions from their JSON log files (logs/ under a
// state directory), in time order, so a CI failure says what moved the primary.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The log lines of `logDir` worth reading after a failure, oldest first, at most `limit`. */
export function logDigest(logDir: string, limit = 60): string {
  let files: string[];
  try {
    files = readdirSync(logDir).filter((f) => f.endsWith('.log'));
  } catch {
    return `(no logs in ${logDir})`;
  }
  const rows: Array<{ time: string; line: string }> = [];
  for (const file of files) {
    let text = '';
    try {
      text = readFileSync(join(logDir, file), 'utf8');
    } catch {
      continue;
    }
    for (const raw of text.split('\n')) {
      if (!raw.startsWith('{')) continue;
      let entry: { time?: string; level?: string; msg?: string; decision?: string; reason?: string; term?: number };
      try {
        entry = JSON.parse(raw);
      } catch {
        continue;
      }
      const notable =
        entry.level === 'warn' ||
        entry.level === 'error' ||
        (entry.decision !== undefined && entry.decision !== 'none') ||
        /promot|fence|releas|target|failover|switchover|rewind|base backup|clone/i.test(entry.msg ?? '');
      if (!notable || entry.time === undefined) continue;
      const what =
        entry.decision !== undefined
          ? `decision ${entry.decision}${entry.term === undefined ? '' : ` (term ${entry.term})`}${entry.reason ? `: ${entry.reason}` : ''}`
          : entry.msg;
      rows.push({
        time: entry.time,
        line: `${entry.time} ${file.replace(/\.log$/, '')}: ${(what ?? '').split('\n')[0]!.slice(0, 240)}`,
      });
    }
  }
  rows.sort((a, b) => a.time.localeCompare(b.time));
  return rows
    .slice(-limit)
    .map((r) => r.line)
    .join('\n');
}
