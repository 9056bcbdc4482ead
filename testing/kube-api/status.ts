/** Kubernetes `Status` error bodies (metav1.Status) and the error that carries one. */

export type StatusReason =
  | 'NotFound'
  | 'AlreadyExists'
  | 'Conflict'
  | 'Invalid'
  | 'BadRequest'
  | 'Gone'
  | 'Expired'
  | 'MethodNotAllowed'
  | 'UnsupportedMediaType';

export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: StatusReason;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    causes?: { field: string; message: string; reason: string }[];
  };
  code: number;
}

/** An API error: an HTTP code with a Status body. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: StatusReason,
    message: string,
    readonly details?: StatusBody['details'],
  ) {
    super(message);
  }
  body(): StatusBody {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

export const badRequest = (message: string) => new ApiError(400, 'BadRequest', message);
export const notFound = (resource: string, group: string, name: string) =>
  new ApiError(404, 'NotFound', `${resource}${group ? `.${group}` : ''} "${name}" not found`, {
    name,
    group,
    kind: resource,
  });
export const alreadyExists = (resource: string, group: string, name: string) =>
  new ApiError(409, 'AlreadyExists', `${resource}${group ? `.${group}` : ''} "${name}" already exists`, {
    name,
    group,
    kind: resource,
  });
export const conflict = (resource: string, group: string, name: string, why: string) =>
  new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${resource}${group ? `.${group}` : ''} "${name}": ${why}`,
    { name, group, kind: resource },
  );
export const invalid = (kind: string, group: string, name: string, causes: { field: string; message: string }[]) =>
  new ApiError(
    422,
    'Invalid',
    `${kind}${group ? `.${group}` : ''} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`,
    { name, group, kind, causes: causes.map((c) => ({ ...c, reason: 'FieldValueInvalid' })) },
  );
export const gone = (message: string) => new ApiError(410, 'Expired', message);
