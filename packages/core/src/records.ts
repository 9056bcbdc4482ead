import { z } from 'zod';
import { ProtocolError } from './errors.js';
import { isLsn } from './lsn.js';
import { isValidName } from './names.js';

/**
 * Versioned records stored in etcd. Each record type has a same-named companion
 * with `parse(unknown)` (validate a decoded value), `decode(text)` (validate etcd
 * bytes) and `encode(record)` (serialize, validating first). All of them throw
 * {@link ProtocolError} on bad input; nothing unvalidated crosses this boundary.
 *
 * Every record carries `v`, its schema version. Readers accept only versions they
 * understand and say so otherwise, so a newer writer never gets half-understood.
 */
export const recordVersion = 1 as const;

/** Records larger than this are rejected before parsing (hostile or corrupt). */
export const maxRecordBytes = 64 * 1024;

const name = z
  .string()
  .refine(isValidName, 'must be a DNS-1123 label (lower-case letters, digits, dashes; at most 63)');
const host = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[A-Za-z0-9.:\-_[\]%]+$/, 'must be a host name or IP address');
const port = z.number().int().min(1).max(65535);
const term = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const lsn = z.string().refine(isLsn, 'must be a WAL position like 0/3000060');
const timestamp = z.iso.datetime({ offset: true });
const shortText = z.string().max(1024);
const nonNegative = z.number().min(0).max(Number.MAX_SAFE_INTEGER);

/** The roles a member reports. `unknown` while postgres is not answering. */
export const memberRoles = ['primary', 'replica', 'unknown'] as const;
export type MemberRole = (typeof memberRoles)[number];

/**
 * What a member's agent is doing. `initializing` (initdb), `cloning` (base backup),
 * `starting`, `running`, `stopping`, `stopped`, `failed` (needs a hand: see `problem`).
 */
export const memberStates = [
  'initializing',
  'cloning',
  'starting',
  'running',
  'stopping',
  'stopped',
  'failed',
] as const;
export type MemberState = (typeof memberStates)[number];

/** Tags an operator sets on a member. */
const tagsSchema = z
  .object({
    /** Never choose this member as a new primary. */
    noFailover: z.boolean().optional(),
  })
  .strict();

const memberSchema = z.object({
  v: z.literal(recordVersion),
  name,
  role: z.enum(memberRoles),
  state: z.enum(memberStates),
  host,
  port,
  /** The newest term this member has seen. */
  term,
  timeline: z.number().int().min(1).max(0xffffffff).nullable(),
  /** Primary: its current WAL insert position. Replica: last WAL received. */
  receivedLsn: lsn.nullable(),
  /** Primary: same as receivedLsn. Replica: last WAL replayed. */
  replayedLsn: lsn.nullable(),
  /** Bytes behind the primary's last published position (0 on the primary). */
  lagBytes: nonNegative.nullable(),
  /** Seconds since the last replayed transaction when replay is behind (0 when caught up). */
  lagSeconds: nonNegative.nullable(),
  /** Replica: whether its WAL receiver is streaming from the primary. */
  streaming: z.boolean(),
  postgresVersion: z.string().max(64).nullable(),
  /** PostgreSQL's database system identifier (decimal text); equal across one cluster's members. */
  systemId: z
    .string()
    .regex(/^\d{1,20}$/)
    .nullable(),
  healthy: z.boolean(),
  /** What is wrong, when not healthy or when failed. */
  problem: shortText.nullable(),
  tags: tagsSchema,
  updatedAt: timestamp,
  /**
   * When postgres was last queried for the positions in this record (wall clock), null
   * when it did not answer. A synchronous-mode election counts a standby's position
   * only when it was observed after the leader record vanished. Optional: records of
   * older agents parse.
   */
  observedAt: timestamp.nullable().optional(),
  /**
   * The agent's health API (`http://host:port`: /primary, /replica, /readiness…),
   * absent when it runs none. Optional so records of older agents still parse (and
   * older readers, which strip unknown fields, accept newer records).
   */
  api: z
    .string()
    .max(300)
    .regex(/^https?:\/\/[^\s/?#]+$/, 'must be http://host:port')
    .optional(),
  /**
   * PostgreSQL parameters whose new value (the `config` record's `postgresParameters`)
   * is in pgha.conf but waits for a restart of postgres (`pg_settings.pending_restart`).
   * Absent when none (and in records of older agents).
   */
  pendingRestart: z.array(z.string().max(63)).max(64).optional(),
});

const leaderSchema = z.object({
  v: z.literal(recordVersion),
  term: term.min(1),
  member: name,
  host,
  port,
  timeline: z.number().int().min(1).max(0xffffffff),
  /** When this leadership began. */
  since: timestamp,
  /** False between installing the record and postgres accepting writes. */
  writable: z.boolean(),
  /**
   * The WAL position this member had received when it took the record (the end of
   * what it promotes), when known: history measures what a failover lost from it.
   * Absent in records of earlier versions and when installing on a fresh bootstrap.
   */
  fromLsn: lsn.nullable().optional(),
});

const lastPrimarySchema = z.object({
  v: z.literal(recordVersion),
  /** The term of the leadership this position belongs to. */
  term: term.min(1),
  member: name,
  timeline: z.number().int().min(1).max(0xffffffff),
  /**
   * The primary's WAL position: its current write position while it runs (published
   * with its reports, so up to one report interval old), or the location of its
   * shutdown checkpoint when `clean`.
   */
  lsn,
  /**
   * True when written after postgres shut down cleanly (a stop, a step-down or a
   * release): `lsn` is then exact and nothing after it was ever acknowledged.
   */
  clean: z.boolean(),
  at: timestamp,
});

const termSchema = z.object({ v: z.literal(recordVersion), term });

const initializeSchema = z.object({
  v: z.literal(recordVersion),
  member: name,
  systemId: z.string().regex(/^\d{1,20}$/),
  at: timestamp,
});

/**
 * Synchronous replication modes (the `config` record's `synchronousMode`): `off`
 * (asynchronous), `quorum` (`ANY n` of the replicas; see the `sync` record).
 */
export const synchronousModes = ['off', 'quorum'] as const;
export type SynchronousMode = (typeof synchronousModes)[number];

/** A PostgreSQL parameter name (lower-case GUC name, optionally `class.name`). */
const parameterName = z
  .string()
  .regex(/^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/, 'must be a PostgreSQL parameter name like work_mem')
  .max(63);

const configSchema = z
  .object({
    v: z.literal(recordVersion),
    /** Incremented by every change (`pgha config set`): 1 for the first record. */
    version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    /** Lease timing; agents apply it when they start (a running agent keeps its lease). */
    leaseTtlMillis: z.number().int().min(1000).max(600_000),
    keepaliveIntervalMillis: z.number().int().min(50).max(60_000),
    fencingMarginMillis: z.number().int().min(0).max(60_000),
    /** An asynchronous failover never promotes a member further behind than this. */
    maximumLagOnFailoverBytes: nonNegative,
    synchronousMode: z.enum(synchronousModes),
    /** `quorum`: the `n` of `ANY n (…)`, how many replicas confirm each commit. */
    synchronousCount: z.number().int().min(1).max(64),
    /**
     * `quorum`: block commits while fewer than `synchronousCount` replicas can confirm
     * them, instead of degrading to asynchronous (and saying so).
     */
    synchronousStrict: z.boolean(),
    /**
     * PostgreSQL parameters that must agree across members (written into every
     * member's pgha.conf; reloaded, or applied at the next restart when postgres needs
     * one). Values are PostgreSQL's text form.
     */
    postgresParameters: z.record(parameterName, z.string().max(1024)),
    /**
     * Failsafe mode (issue 14): during an etcd outage the primary stays writable while
     * every member of the `failsafe` record promises not to take over. Absent (records
     * of older versions): off.
     */
    failsafeMode: z.boolean().optional(),
    /** When this version was written, and by whom (`pgha config set`, `pgha up`). */
    updatedAt: timestamp,
    updatedBy: shortText,
  })
  .superRefine((config, context) => {
    if (config.keepaliveIntervalMillis * 2 > config.leaseTtlMillis)
      context.addIssue({
        code: 'custom',
        path: ['keepaliveIntervalMillis'],
        message: `must be at most half of leaseTtlMillis (${config.leaseTtlMillis})`,
      });
    if (config.fencingMarginMillis + config.keepaliveIntervalMillis >= config.leaseTtlMillis)
      context.addIssue({
        code: 'custom',
        path: ['fencingMarginMillis'],
        message: `fencingMarginMillis + keepaliveIntervalMillis must be below leaseTtlMillis (${config.leaseTtlMillis})`,
      });
    if (config.fencingMarginMillis < config.keepaliveIntervalMillis)
      context.addIssue({
        code: 'custom',
        path: ['fencingMarginMillis'],
        message: `must be at least keepaliveIntervalMillis (${config.keepaliveIntervalMillis})`,
      });
  });

/**
 * The primary's published synchronous replication claim (`sync`): every commit the
 * primary of `term` acknowledged (since this claim was written, and every earlier
 * commit of the term too) is flushed on at least `quorum` members of `standbys`.
 * `quorum: 0` claims nothing (asynchronous). Written only by the agent holding the
 * leader record of `term` (with the install, then guarded by holding it).
 */
const syncSchema = z
  .object({
    v: z.literal(recordVersion),
    term: term.min(1),
    /** The primary that makes the claim. */
    member: name,
    standbys: z.array(name).max(64),
    quorum: z.number().int().min(0).max(64),
    /** `quorum` and `synchronousStrict` was on when written: commits block rather than degrade. */
    strict: z.boolean(),
    at: timestamp,
  })
  .superRefine((sync, context) => {
    if (sync.quorum > sync.standbys.length)
      context.addIssue({ code: 'custom', path: ['quorum'], message: 'must not exceed the number of standbys' });
    if (new Set(sync.standbys).size !== sync.standbys.length)
      context.addIssue({ code: 'custom', path: ['standbys'], message: 'must not repeat a member' });
    if (sync.standbys.includes(sync.member))
      context.addIssue({ code: 'custom', path: ['standbys'], message: 'must not include the primary itself' });
  });

/** Why a target was written. */
export const targetReasons = ['failover', 'switchover', 'manual-failover', 'bootstrap'] as const;
export type TargetReason = (typeof targetReasons)[number];

const targetSchema = z.object({
  v: z.literal(recordVersion),
  term: term.min(1),
  member: name,
  reason: z.enum(targetReasons),
  /** The primary being replaced, when there was one. */
  from: name.nullable().optional(),
  decidedAt: timestamp,
  /**
   * When the controller saw what this target answers (on its clock, like
   * `decidedAt`): the leader record gone for a failover, the request for a switchover
   * or manual failover. History takes its `detectedAt` from here. Absent in records
   * of earlier versions.
   */
  detectedAt: timestamp.optional(),
});

const switchoverSchema = z.object({
  v: z.literal(recordVersion),
  from: name.nullable(),
  to: name.nullable(),
  at: timestamp.nullable(),
  requestedAt: timestamp,
  /**
   * Manual failover only: promote `to` even when it does not hold everything the
   * last primary is known to have written (acknowledged writes may be lost).
   */
  acceptDataLoss: z.boolean().optional(),
  /** Set by the controller when it cannot carry the request out, and why. */
  rejected: shortText.nullable().optional(),
});

const historySchema = z.object({
  v: z.literal(recordVersion),
  term: term.min(1),
  oldPrimary: name.nullable(),
  newPrimary: name,
  timeline: z.number().int().min(1).max(0xffffffff),
  reason: shortText,
  /**
   * When the controller saw the cause (its clock): the request of a switchover or
   * manual failover, the leader record gone for a failover (a lease expiry is seen
   * when it happens, up to one TTL after the fault), the first pass without a leader
   * for a restart; null for a bootstrap.
   */
  detectedAt: timestamp.nullable(),
  /** When the new primary's agent installed the leader record (the agent's clock). */
  promotedAt: timestamp,
  /** The last LSN known for each member when the decision was made. */
  lastKnownLsn: z.record(name, lsn.nullable()),
  /** When the controller wrote the target. */
  decidedAt: timestamp.nullable().optional(),
  /**
   * When the controller saw the new leader writable (on its clock, like `detectedAt`
   * and `decidedAt`): the end of the outage or handover. Absent in records of earlier
   * versions.
   */
  writableAt: timestamp.nullable().optional(),
  /**
   * Bytes of WAL the old primary was known to have beyond the new primary's position
   * at the decision (the visible data-loss window of an asynchronous failover); null
   * when unknown.
   */
  lostBytes: nonNegative.nullable().optional(),
});

const controllerSchema = z.object({
  v: z.literal(recordVersion),
  /** Unique per controller process. */
  id: z.string().min(1).max(128),
  pid: z.number().int().min(0).max(0x7fffffff),
  since: timestamp,
  /**
   * What the election is waiting for (a wait or no-candidate decision), since when;
   * null or absent while the controller has nothing to wait for. Updated when it changes.
   */
  waiting: z.object({ reason: shortText, since: timestamp }).strict().nullable().optional(),
});

/**
 * The members a primary in failsafe mode must all reach during an etcd outage, and
 * the only members that may install a leader record while failsafe mode is on.
 */
const failsafeSchema = z
  .object({
    v: z.literal(recordVersion),
    /** The term of the leader that wrote it. */
    term: term.min(1),
    leader: name,
    members: z
      .array(
        z
          .object({
            name,
            /** The member's agent API (`http://host:port`), where `/failsafe` is asked. */
            api: z
              .string()
              .max(300)
              .regex(/^https?:\/\/[^\s/?#]+$/, 'must be http://host:port'),
            /** When the leader last saw the member's record (refreshed coarsely, not every report). */
            lastSeen: timestamp,
          })
          .strict(),
      )
      .min(1)
      .max(64),
  })
  .superRefine((record, context) => {
    if (new Set(record.members.map((m) => m.name)).size !== record.members.length)
      context.addIssue({ code: 'custom', path: ['members'], message: 'must not repeat a member' });
  });

const removedMemberSchema = z.object({
  v: z.literal(recordVersion),
  /** The member removed (the key's name). */
  member: name,
  /** Why, for people reading etcd (`scaled down to 3 instances`). */
  reason: shortText,
  at: timestamp,
});

export type MemberRecord = z.infer<typeof memberSchema>;
export type LeaderRecord = z.infer<typeof leaderSchema>;
export type LastPrimaryRecord = z.infer<typeof lastPrimarySchema>;
export type TermRecord = z.infer<typeof termSchema>;
export type InitializeRecord = z.infer<typeof initializeSchema>;
export type ConfigRecord = z.infer<typeof configSchema>;
export type SyncRecord = z.infer<typeof syncSchema>;
export type TargetRecord = z.infer<typeof targetSchema>;
export type SwitchoverRecord = z.infer<typeof switchoverSchema>;
export type HistoryRecord = z.infer<typeof historySchema>;
export type ControllerRecord = z.infer<typeof controllerSchema>;
export type MemberTags = z.infer<typeof tagsSchema>;
export type RemovedMemberRecord = z.infer<typeof removedMemberSchema>;
export type FailsafeRecord = z.infer<typeof failsafeSchema>;

/** The companion object every record type has. */
export interface RecordCodec<T> {
  /** The record kind, used in error messages. */
  readonly kind: string;
  /** Validates an already-decoded value. @throws ProtocolError */
  parse(input: unknown): T;
  /** Validates etcd bytes or text (JSON). @throws ProtocolError */
  decode(input: string | Uint8Array): T;
  /** Serializes a record after validating it. @throws ProtocolError */
  encode(record: T): string;
}

function describeIssues(error: z.ZodError): string {
  // Paths may hold symbols (a hostile object passed to parse); String() them so
  // describing the failure cannot itself throw a TypeError.
  return error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length > 0 ? issue.path.map(String).join('.') : '(record)'} ${issue.message}`)
    .join('; ');
}

function codec<T>(kind: string, schema: z.ZodType<T>): RecordCodec<T> {
  const parse = (input: unknown): T => {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      throw new ProtocolError(
        kind,
        `expected a JSON object, got ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}`,
      );
    }
    const version = (input as { v?: unknown }).v;
    if (version !== recordVersion) {
      throw new ProtocolError(
        kind,
        typeof version === 'number'
          ? `record version ${version} is not understood by this pgha (it reads version ${recordVersion}); upgrade pgha on this host`
          : `record has no valid version field "v" (expected ${recordVersion})`,
      );
    }
    const result = schema.safeParse(input);
    if (!result.success)
      throw new ProtocolError(kind, `malformed record: ${describeIssues(result.error)}`, { cause: result.error });
    return result.data;
  };
  return {
    kind,
    parse,
    decode(input: string | Uint8Array): T {
      const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
      if (size > maxRecordBytes)
        throw new ProtocolError(kind, `record of ${size} bytes exceeds the ${maxRecordBytes}-byte limit`);
      const text = typeof input === 'string' ? input : new TextDecoder().decode(input);
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (cause) {
        throw new ProtocolError(kind, `not valid JSON: ${text.slice(0, 60)}`, { cause });
      }
      return parse(value);
    },
    encode(record: T): string {
      return JSON.stringify(parse(record));
    },
  };
}

/** A member's self-report, written by its agent under the agent's lease. */
export const MemberRecord: RecordCodec<MemberRecord> = codec('member record', memberSchema);
/** The current primary, written by the primary's agent under its lease; what clients follow. */
export const LeaderRecord: RecordCodec<LeaderRecord> = codec('leader record', leaderSchema);
/**
 * The newest primary's last known WAL position, kept without a lease so that it
 * outlives every process (a whole-cluster restart): written by the primary's agent
 * only while it holds the leader record, with its reports and, exactly, after a clean
 * shutdown.
 */
export const LastPrimaryRecord: RecordCodec<LastPrimaryRecord> = codec('last-primary record', lastPrimarySchema);
/** The newest term, written with every leader installation. */
export const TermRecord: RecordCodec<TermRecord> = codec('term record', termSchema);
/** Written once by the member that ran initdb; pins the cluster's system identifier. */
export const InitializeRecord: RecordCodec<InitializeRecord> = codec('initialize record', initializeSchema);
/**
 * Cluster-wide settings (`config`), written by `pgha config set` and `pgha up` with a
 * transaction guarded by the previous version's mod revision; read by agents and
 * controllers, whose flags supply the values while there is no record.
 */
export const ConfigRecord: RecordCodec<ConfigRecord> = codec('config record', configSchema);
/** The primary's synchronous replication claim (`sync`); see docs/architecture.md. */
export const SyncRecord: RecordCodec<SyncRecord> = codec('sync record', syncSchema);
/** The controller's decision of which member leads the next term. */
export const TargetRecord: RecordCodec<TargetRecord> = codec('target record', targetSchema);
/** A request for a planned switchover, consumed by the controller. */
export const SwitchoverRecord: RecordCodec<SwitchoverRecord> = codec('switchover record', switchoverSchema);
/** One record per promotion. */
export const HistoryRecord: RecordCodec<HistoryRecord> = codec('history record', historySchema);
/** The active controller, under its lease. */
export const ControllerRecord: RecordCodec<ControllerRecord> = codec('controller record', controllerSchema);

/**
 * A member removed on purpose (`removed/<name>`), written by the Kubernetes operator
 * when it scales the StatefulSet below the member's ordinal and deleted when it scales
 * back up: the primary then drops that member's replication slot as soon as it has no
 * member record and the slot is inactive, instead of after the member slots TTL.
 */
export const RemovedMemberRecord: RecordCodec<RemovedMemberRecord> = codec(
  'removed-member record',
  removedMemberSchema,
);

/**
 * The failsafe members (`failsafe`): written by the leader (guarded by its leader
 * record's lease), no lease of its own; see docs/architecture.md, "Failsafe mode".
 */
export const FailsafeRecord: RecordCodec<FailsafeRecord> = codec('failsafe record', failsafeSchema);

/** The defaults of {@link ConfigRecord}; see docs/architecture.md for the timing budget. */
export const defaultConfig: ConfigRecord = {
  v: recordVersion,
  version: 1,
  leaseTtlMillis: 2_000,
  keepaliveIntervalMillis: 250,
  fencingMarginMillis: 500,
  maximumLagOnFailoverBytes: 16 * 1024 * 1024,
  synchronousMode: 'off',
  synchronousCount: 1,
  synchronousStrict: false,
  postgresParameters: {},
  updatedAt: '1970-01-01T00:00:00.000Z',
  updatedBy: 'defaults',
};
