/**
 * @pgha/core: the protocol shared by the pgha agent, controller and client —
 * etcd key layout, versioned records with parsers, terms, LSN arithmetic, events
 * and errors. It performs no I/O and may import nothing but zod.
 */

export type { ErrorCode, PghaErrorOptions } from './errors.js';
export { errorCodes, isPghaError, PghaError, ProtocolError } from './errors.js';
export type { ClusterEvent, PrimaryChangeReason, PrimaryEndpoint } from './events.js';
export { clusterEventTypes, describeEvent, primaryChangeReasons } from './events.js';
export type { ClusterKeys, KeyKind, ParsedKey } from './keys.js';
export { clusterKeys, defaultKeyRoot, keyKinds } from './keys.js';
export type { LsnText } from './lsn.js';
export { compareLsn, formatLsn, isLsn, lsnLagBytes, maxLsn, parseLsn } from './lsn.js';
export { assertValidName, isValidName, memberName, slotNameFor } from './names.js';
export type { MemberRole, MemberState, MemberTags, RecordCodec, SynchronousMode, TargetReason } from './records.js';
export {
  ConfigRecord,
  ControllerRecord,
  defaultConfig,
  FailsafeRecord,
  HistoryRecord,
  InitializeRecord,
  LastPrimaryRecord,
  LeaderRecord,
  MemberRecord,
  maxRecordBytes,
  memberRoles,
  memberStates,
  RemovedMemberRecord,
  recordVersion,
  SwitchoverRecord,
  SyncRecord,
  synchronousModes,
  TargetRecord,
  TermRecord,
  targetReasons,
} from './records.js';
export type { Term } from './terms.js';
export { initialTerm, isCurrentTerm, newestTerm, nextTerm } from './terms.js';
