/**
 * The client's optional host allowlist (`allowedHosts`): which servers a leader or
 * member record may send connections to. Whoever can write the `leader` record in
 * etcd chooses where every application's writes go; with an allowlist, a record
 * naming any other host is ignored (and reported) instead of followed.
 */
import { BlockList, isIP } from 'node:net';
import { PghaError } from '@pgha/core';

/** A parsed `allowedHosts`: exact host names, and IP addresses and subnets. */
export interface HostAllowlist {
  /** The entries as given, for messages. */
  readonly entries: readonly string[];
  /** Lower-cased host names, matched exactly (no wildcards, no DNS lookups). */
  readonly names: ReadonlySet<string>;
  /** IP addresses and CIDR subnets (IPv4 and IPv6). */
  readonly addresses: BlockList;
}

const hostNamePattern = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$/;

function invalid(message: string): PghaError {
  return new PghaError('invalid-option', message);
}

/** `[::1]` → `::1`: records and options may bracket IPv6 addresses. */
function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/**
 * Parses the `allowedHosts` option: an array of exact host names (`db-1.internal`),
 * IP addresses (`10.0.0.5`, `::1`) and CIDR subnets (`10.0.0.0/24`, `fd00::/8`).
 * `undefined` means no allowlist (every host allowed).
 *
 * @throws PghaError `invalid-option` for an empty list or an entry that is none of these.
 */
export function parseHostAllowlist(allowedHosts: unknown): HostAllowlist | null {
  if (allowedHosts === undefined) return null;
  if (!Array.isArray(allowedHosts) || allowedHosts.length === 0) {
    throw invalid(
      `allowedHosts must be a non-empty array of host names, IP addresses or CIDR subnets like ["10.0.0.0/24", "db-1.internal"] (omit it to allow every host), got ${JSON.stringify(allowedHosts)?.slice(0, 80)}`,
    );
  }
  const names = new Set<string>();
  const addresses = new BlockList();
  const entries: string[] = [];
  for (const raw of allowedHosts) {
    if (typeof raw !== 'string' || raw.trim() === '' || raw.length > 300) {
      throw invalid(
        `allowedHosts entry ${JSON.stringify(raw)?.slice(0, 80)} must be a host name, IP address or CIDR subnet`,
      );
    }
    const entry = raw.trim();
    if (entry.includes('://')) {
      throw invalid(`allowedHosts entry "${entry}" is a URL: give the host only, like db-1.internal or 10.0.0.5`);
    }
    entries.push(entry);
    const slash = entry.indexOf('/');
    if (slash >= 0) {
      const network = unbracket(entry.slice(0, slash));
      const prefixText = entry.slice(slash + 1);
      const family = isIP(network);
      const prefix = Number(prefixText);
      const maxPrefix = family === 6 ? 128 : 32;
      if (family === 0 || !/^\d{1,3}$/.test(prefixText) || prefix > maxPrefix) {
        throw invalid(
          `allowedHosts entry "${entry}" is not a CIDR subnet: use an address and a prefix length, like 10.0.0.0/24 or fd00::/8`,
        );
      }
      addresses.addSubnet(network, prefix, family === 6 ? 'ipv6' : 'ipv4');
      continue;
    }
    const address = unbracket(entry);
    const family = isIP(address);
    if (family !== 0) {
      addresses.addAddress(address, family === 6 ? 'ipv6' : 'ipv4');
      continue;
    }
    const name = entry.toLowerCase();
    if (name.length > 253 || !hostNamePattern.test(name)) {
      throw invalid(
        `allowedHosts entry "${entry}" is not a host name, IP address or CIDR subnet (wildcards are not supported: list each host, or use a subnet)`,
      );
    }
    names.add(name.endsWith('.') ? name.slice(0, -1) : name);
  }
  return { entries, names, addresses };
}

/** Whether `host` (a record's `host` field) is allowed; always true without an allowlist. */
export function isHostAllowed(allowlist: HostAllowlist | null, host: string): boolean {
  if (allowlist === null) return true;
  const address = unbracket(host);
  const family = isIP(address);
  if (family !== 0) {
    try {
      return allowlist.addresses.check(address, family === 6 ? 'ipv6' : 'ipv4');
    } catch {
      return false;
    }
  }
  const name = host.toLowerCase();
  return allowlist.names.has(name.endsWith('.') ? name.slice(0, -1) : name);
}

/**
 * Why a record naming `host` is refused (the `discovery-error` message), or null when
 * it is allowed. `what` names the record, like `leader record of term 7 (member pg-2)`.
 */
export function hostRejection(allowlist: HostAllowlist | null, what: string, host: string): string | null {
  if (isHostAllowed(allowlist, host)) return null;
  const shown = JSON.stringify(host.slice(0, 253));
  return `${what} names host ${shown}, which is not in allowedHosts (${allowlist!.entries.join(', ')}); ignored it and kept the last good state. If ${shown} is really a server of this cluster, add it (or its subnet, like 10.0.0.0/24) to allowedHosts; otherwise someone wrote to the cluster's etcd keys who should not`;
}
