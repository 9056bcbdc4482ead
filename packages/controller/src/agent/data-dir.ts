import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { OsUser } from '../adapters/os-user.js';
import { controlData, writeOwnedFile } from '../adapters/postgres-server.js';
import type { PostgresBinaries } from '../adapters/prerequisites.js';
import type { DataDirKind } from '../decide/startup.js';

/** The file that marks a data directory as one member's of one cluster. */
export const markerFile = 'pgha-member.json';

/** What is in a data directory, for {@link decideStartup}. */
export interface DataDirInspection {
  readonly kind: DataDirKind;
  readonly foreignReason: string | null;
}

/**
 * Classifies `dataDir` without changing it: empty (absent or no entries), ours (a
 * PostgreSQL data directory with our marker for this cluster and member) or foreign.
 */
export function inspectDataDir(dataDir: string, cluster: string, member: string): DataDirInspection {
  if (!existsSync(dataDir) || readdirSync(dataDir).length === 0) return { kind: 'empty', foreignReason: null };
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    return {
      kind: 'foreign',
      foreignReason: `${dataDir} is not empty and is not a PostgreSQL data directory; pgha will not touch it: move it away or choose another directory`,
    };
  }
  let marker: { cluster?: unknown; member?: unknown };
  try {
    marker = JSON.parse(readFileSync(join(dataDir, markerFile), 'utf8'));
  } catch {
    return {
      kind: 'foreign',
      foreignReason: `${dataDir} is a PostgreSQL data directory that pgha did not create (no ${markerFile}); pgha will not adopt it: move it away or choose another directory`,
    };
  }
  if (marker.cluster !== cluster || marker.member !== member) {
    return {
      kind: 'foreign',
      foreignReason: `${dataDir} belongs to member "${String(marker.member)}" of cluster "${String(marker.cluster)}", not "${member}" of "${cluster}"; move it away or choose another directory`,
    };
  }
  return { kind: 'ours', foreignReason: null };
}

/** Marks a (staged) data directory as this member's. */
export function writeMarker(dataDir: string, cluster: string, member: string, user: OsUser | null): void {
  writeOwnedFile(join(dataDir, markerFile), `${JSON.stringify({ cluster, member })}\n`, user, 0o600);
}

/** The database system identifier in the control file (pg_controldata). */
export async function readSystemId(
  bins: PostgresBinaries,
  dataDir: string,
  user: OsUser | null,
): Promise<string | null> {
  const stdout = await controlData(bins, dataDir, user);
  const match = /Database system identifier:\s+(\d+)/.exec(stdout);
  return match?.[1] ?? null;
}
