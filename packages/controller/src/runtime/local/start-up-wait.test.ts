import type { LeaderRecord, MemberRecord } from '@pgha/core';
import { describe, expect, it } from 'vitest';
import { decideEtcdSilence, describeStartUp } from './start-up-wait.js';

// Only the fields the wait reads.
const member = (name: string, role: string, state: string, streaming = false) =>
  [name, { name, role, state, streaming } as unknown as MemberRecord] as const;
const leader = (name: string, writable: boolean) => ({ member: name, writable }) as unknown as LeaderRecord;
const names = ['a', 'b', 'c'];

describe('describeStartUp', () => {
  it('is up only with a writable leader whose member runs as primary and every other member streaming', () => {
    const all = new Map([
      member('a', 'primary', 'running'),
      member('b', 'replica', 'running', true),
      member('c', 'replica', 'running', true),
    ]);
    expect(describeStartUp(names, leader('a', true), all).primary).toBe('a');
    expect(describeStartUp(names, leader('a', false), all).primary).toBeNull();
    expect(describeStartUp(names, null, all).primary).toBeNull();
    expect(describeStartUp(names, leader('b', true), all).primary).toBeNull();
    const notStreaming = new Map([...all, member('c', 'replica', 'running', false)]);
    expect(describeStartUp(names, leader('a', true), notStreaming).primary).toBeNull();
    const missing = new Map([...all].filter(([n]) => n !== 'b'));
    expect(describeStartUp(names, leader('a', true), missing).primary).toBeNull();
  });

  it('says what each member is doing', () => {
    const { lines } = describeStartUp(
      names,
      null,
      new Map([member('a', 'unknown', 'initializing'), member('b', 'replica', 'cloning')]),
    );
    expect([...lines]).toEqual([
      ['a', 'initializing'],
      ['b', 'cloning as replica, not streaming yet'],
      ['c', 'waiting for its agent'],
    ]);
  });
});

describe('decideEtcdSilence', () => {
  it('gives up at once on a refusal, announces a silence as it begins, and waits it out for the patience', () => {
    expect(decideEtcdSilence('invalid-option', null, 0, 30_000)).toBe('give-up');
    expect(decideEtcdSilence('etcd-unavailable', null, 1_000, 30_000)).toBe('announce');
    expect(decideEtcdSilence('etcd-unavailable', 1_000, 31_000, 30_000)).toBe('wait');
    expect(decideEtcdSilence('etcd-unavailable', 1_000, 31_001, 30_000)).toBe('give-up');
  });
});
