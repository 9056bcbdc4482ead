/**
 * What the API server does with a custom resource and its CRD's structural schema:
 * prune unknown fields, apply defaults, validate (type, required, enum, bounds,
 * pattern, lengths, items). A subset of OpenAPI v3 as CRDs use it; CEL rules
 * (`x-kubernetes-validations`) are not evaluated.
 */

export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  nullable?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-embedded-resource'?: boolean;
}

export interface Cause {
  field: string;
  message: string;
}

const join = (path: string, key: string) => (path === '' ? key : `${path}.${key}`);
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Prunes and defaults in place (returns the value to store), collecting violations. */
export function applySchema(
  value: unknown,
  schema: Schema,
  path: string,
  causes: Cause[],
  root = false,
  pruned: string[] = [],
): unknown {
  if (value === null && schema.nullable) return value;
  if (schema['x-kubernetes-int-or-string']) {
    if (typeof value !== 'string' && !Number.isInteger(value))
      causes.push({ field: path, message: `Invalid value: ${JSON.stringify(value)}: must be an integer or a string` });
    return value;
  }
  switch (schema.type) {
    case 'object': {
      if (!isObject(value)) {
        causes.push({
          field: path,
          message: `Invalid value: "${typeName(value)}": ${path} in body must be of type object`,
        });
        return value;
      }
      const out: Record<string, unknown> = {};
      const props = schema.properties ?? {};
      for (const [k, v] of Object.entries(value)) {
        if (root && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) {
          out[k] = v;
          continue;
        }
        const sub = props[k];
        if (sub) out[k] = applySchema(v, sub, join(path, k), causes, false, pruned);
        else if (isObject(schema.additionalProperties))
          out[k] = applySchema(v, schema.additionalProperties, join(path, k), causes, false, pruned);
        else if (schema['x-kubernetes-preserve-unknown-fields'] || schema.additionalProperties === true) out[k] = v;
        else pruned.push(join(path, k)); // pruned, as the API server does
      }
      for (const [k, sub] of Object.entries(props)) {
        if (out[k] === undefined && sub.default !== undefined)
          out[k] = applySchema(structuredClone(sub.default), sub, join(path, k), causes);
      }
      for (const k of schema.required ?? [])
        if (out[k] === undefined) causes.push({ field: join(path, k), message: 'Required value' });
      return out;
    }
    case 'array': {
      if (!Array.isArray(value)) {
        causes.push({
          field: path,
          message: `Invalid value: "${typeName(value)}": ${path} in body must be of type array`,
        });
        return value;
      }
      if (schema.minItems !== undefined && value.length < schema.minItems)
        causes.push({
          field: path,
          message: `Invalid value: ${value.length}: must have at least ${schema.minItems} items`,
        });
      if (schema.maxItems !== undefined && value.length > schema.maxItems)
        causes.push({ field: path, message: `Too many: ${value.length}: must have at most ${schema.maxItems} items` });
      return schema.items
        ? value.map((v, i) => applySchema(v, schema.items!, `${path}[${i}]`, causes, false, pruned))
        : value;
    }
    case 'integer':
    case 'number': {
      if (typeof value !== 'number' || (schema.type === 'integer' && !Number.isInteger(value))) {
        causes.push({
          field: path,
          message: `Invalid value: "${typeName(value)}": ${path} in body must be of type ${schema.type}`,
        });
        return value;
      }
      if (schema.minimum !== undefined && value < schema.minimum)
        causes.push({
          field: path,
          message: `Invalid value: ${value}: ${path} in body should be greater than or equal to ${schema.minimum}`,
        });
      if (schema.maximum !== undefined && value > schema.maximum)
        causes.push({
          field: path,
          message: `Invalid value: ${value}: ${path} in body should be less than or equal to ${schema.maximum}`,
        });
      break;
    }
    case 'string': {
      if (typeof value !== 'string') {
        causes.push({
          field: path,
          message: `Invalid value: "${typeName(value)}": ${path} in body must be of type string`,
        });
        return value;
      }
      if (schema.minLength !== undefined && value.length < schema.minLength)
        causes.push({
          field: path,
          message: `Invalid value: ${JSON.stringify(value)}: should be at least ${schema.minLength} chars long`,
        });
      if (schema.maxLength !== undefined && value.length > schema.maxLength)
        causes.push({ field: path, message: `Too long: may not be more than ${schema.maxLength} bytes` });
      if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value))
        causes.push({
          field: path,
          message: `Invalid value: ${JSON.stringify(value)}: should match '${schema.pattern}'`,
        });
      break;
    }
    case 'boolean':
      if (typeof value !== 'boolean')
        causes.push({
          field: path,
          message: `Invalid value: "${typeName(value)}": ${path} in body must be of type boolean`,
        });
      break;
  }
  if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value)))
    causes.push({
      field: path,
      message: `Unsupported value: ${JSON.stringify(value)}: supported values: ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}`,
    });
  return value;
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

/**
 * Why a CRD version schema is not structural (empty when it is): every node that
 * is not int-or-string or preserve-unknown-fields has a type, and no property
 * schema is missing one. A subset of the API server's structural-schema checks.
 */
export function structuralViolations(schema: Schema, path = 'openAPIV3Schema'): string[] {
  const out: string[] = [];
  const walk = (s: Schema, p: string, nested: boolean) => {
    if (
      !s['x-kubernetes-int-or-string'] &&
      s.type === undefined &&
      !(nested && s['x-kubernetes-preserve-unknown-fields'])
    )
      out.push(`${p}.type: Required value: must not be empty for specified object fields`);
    if (s.type === 'object' && s.properties && isObject(s.additionalProperties))
      out.push(`${p}: properties and additionalProperties are mutually exclusive`);
    for (const [k, v] of Object.entries(s.properties ?? {})) walk(v, `${p}.properties[${k}]`, true);
    if (isObject(s.additionalProperties)) walk(s.additionalProperties as Schema, `${p}.additionalProperties`, true);
    if (s.items) walk(s.items, `${p}.items`, true);
    if (s.type === 'array' && !s.items) out.push(`${p}.items: Required value: must be specified`);
  };
  walk(schema, path, false);
  return out;
}
