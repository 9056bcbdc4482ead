// Type-level contract: the typed on() overloads and the pg.Pool surface. Checked by
// `tsc --noEmit` (pnpm typecheck): `usage` compiles only if the types hold.
import type { PrimaryEndpoint } from '@pgha/core';
import type pg from 'pg';
import { describe, expectTypeOf, it } from 'vitest';
import type { ClusterWatcher } from './discovery.js';
import type { Pool } from './pool.js';

function usage(pool: Pool, watcher: ClusterWatcher): void {
  pool.on('primary-changed', (e) => {
    expectTypeOf(e.current).toEqualTypeOf<PrimaryEndpoint>();
    expectTypeOf(e.previous).toEqualTypeOf<PrimaryEndpoint | null>();
    expectTypeOf(e.term).toEqualTypeOf<number>();
  });
  pool.once('no-primary', (e) => expectTypeOf(e.previous).toEqualTypeOf<PrimaryEndpoint | null>());
  pool.on('discovery-stale', (e) => expectTypeOf(e.sinceMillis).toEqualTypeOf<number>());
  pool.on('discovery-error', (e) => expectTypeOf(e.error).toEqualTypeOf<Error>());
  // pg's own events keep their signatures and argument order.
  pool.on('release', (err, client) => {
    expectTypeOf(err).toEqualTypeOf<Error>();
    expectTypeOf(client).toEqualTypeOf<pg.PoolClient>();
  });
  pool.on('connect', (client) => expectTypeOf(client).toEqualTypeOf<pg.PoolClient>());
  watcher.on('primary-changed', (e) => expectTypeOf(e.reason).toEqualTypeOf<PrimaryChangedReasonOf<typeof e>>());
  watcher.on('members-changed', (members) => expectTypeOf(members.size).toEqualTypeOf<number>());
  // @ts-expect-error an unknown pgha event name is not accepted with a typed listener
  watcher.on('primary-chnaged', () => undefined);
}

type PrimaryChangedReasonOf<E> = E extends { reason: infer R } ? R : never;

describe('types', () => {
  it('types the new events and keeps the pg.Pool surface (checked by tsc)', () => {
    expectTypeOf(usage).toBeFunction();
    expectTypeOf<Pool>().toMatchTypeOf<pg.Pool>();
  });
});
