/**
 * @pgha/core: the protocol shared by the pgha agent, controller and client —
 * etcd key layout, versioned records with parsers, terms, LSN arithmetic, events
 * and errors. It performs no I/O and may import nothing but zod.
 */
export { errorCodes, PghaError, ProtocolError, isPghaError } from './errors.js';
export type { ErrorCode, PghaErrorOptions } from './errors.js';
export { clusterKeys, defaultKeyRoot, keyKinds } from './keys.js';
export type { ClusterKeys, KeyKind, ParsedKey } from './keys.js';
export { assertValidName, isValidName, memberName, slotNameFor } from './names.js';
export { compareLsn, formatLsn, isLsn, lsnLagBytes, maxLsn, parseLsn } from './lsn.js';
export type { LsnText } from './lsn.js';
export { initialTerm, isCurrentTerm, newestTerm, nextTerm } from './terms.js';
export type { Term } from './terms.js';
export {
  ConfigRecord,
  HistoryRecord,
  InitializeRecord,
  LeaderRecord,
  MemberRecord,
  SwitchoverRecord,
  TargetRecord,
  TermRecord,
  defaultConfig,
  maxRecordBytes,
  memberRoles,
  memberStates,
  recordVersion,
  synchronousModes,
} from './records.js';
export type { MemberRole, MemberState, MemberTags, RecordCodec, SynchronousMode } from './records.js';
export { clusterEventTypes, describeEvent, primaryChangeReasons } from './events.js';
export type { ClusterEvent, PrimaryChangeReason, PrimaryEndpoint } from './events.js';
