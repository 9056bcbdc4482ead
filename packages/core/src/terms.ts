/**
 * Terms number leaderships. Every installation of a `leader` record increments the
 * cluster-wide term in the same etcd transaction, so a term names at most one
 * writer, and anything stamped with an older term than the newest one seen is stale.
 */
export type Term = number;

/** The term before any leader was installed. */
export const initialTerm: Term = 0;

/** The term a new leadership installs after `current`. */
export function nextTerm(current: Term): Term {
  return current + 1;
}

/**
 * Whether a record stamped `incoming` may be acted on by someone whose newest seen
 * term is `newestSeen`: equal or newer terms are current, older ones are ignored.
 */
export function isCurrentTerm(incoming: Term, newestSeen: Term): boolean {
  return incoming >= newestSeen;
}

/** The newest of the terms given (the initial term when none). */
export function newestTerm(...terms: ReadonlyArray<Term | null | undefined>): Term {
  let newest = initialTerm;
  for (const t of terms) if (t !== null && t !== undefined && t > newest) newest = t;
  return newest;
}
