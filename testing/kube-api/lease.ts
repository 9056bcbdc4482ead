/**
 * What the API server checks on a `coordination.k8s.io/v1` Lease beyond the
 * generic object rules (k8s.io/kubernetes pkg/apis/coordination/validation and the
 * MicroTime JSON decoding): `acquireTime`/`renewTime` must be RFC 3339 with exactly
 * six fractional digits (Go parses them with `2006-01-02T15:04:05.000000Z07:00`;
 * a JavaScript `toISOString()` with three digits is refused with 400), durations
 * must be positive and transitions non-negative. Optimistic concurrency (409 on a
 * stale resourceVersion) is the server's generic update rule and applies to Leases
 * as to every kind.
 */
import type { Cause } from './crd-schema.js';
import type { KubeObject } from './selectors.js';
import { badRequest } from './status.js';

const microTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

/** Throws 400 for an undecodable body; adds 422 causes for invalid values. */
export function validateLease(o: KubeObject, causes: Cause[]): void {
  const spec = (o as { spec?: Record<string, unknown> }).spec;
  if (spec === undefined) return;
  if (spec === null || typeof spec !== 'object') throw badRequest('json: cannot unmarshal spec into LeaseSpec');
  for (const field of ['acquireTime', 'renewTime'] as const) {
    const v = spec[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string' || !microTime.test(v) || Number.isNaN(Date.parse(v)))
      throw badRequest(
        `Lease in version "v1" cannot be handled as a Lease: parsing time ${JSON.stringify(v)} as "2006-01-02T15:04:05.000000Z07:00": cannot parse`,
      );
  }
  if (spec.holderIdentity !== undefined && typeof spec.holderIdentity !== 'string')
    throw badRequest('json: cannot unmarshal spec.holderIdentity into a string');
  for (const field of ['leaseDurationSeconds', 'leaseTransitions'] as const) {
    const v = spec[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw badRequest(`json: cannot unmarshal spec.${field} into an int32`);
    if (field === 'leaseDurationSeconds' && v <= 0)
      causes.push({ field: `spec.${field}`, message: `Invalid value: ${v}: must be greater than 0` });
    if (field === 'leaseTransitions' && v < 0)
      causes.push({ field: `spec.${field}`, message: `Invalid value: ${v}: must be greater than or equal to 0` });
  }
}
