/**
 * The wire: the .proto files loaded at run time with @grpc/proto-loader, the shapes its messages take
 * in JavaScript, and the conversions between them and plain values.
 *
 * Loader options, and the traps they avoid (see "Per-language notes" in docs/worker-protocol.md):
 * - keepCase: field names as in the .proto (task_run_id). The well-known types come from
 *   protobufjs's own bundled copies, whose fields are camelCase whatever keepCase says: a Struct's
 *   Value is {numberValue}, {stringValue}, {structValue}, ... never {number_value}.
 * - longs: String: int64/uint64 (Invocation.dispatch, Duration.seconds, Welcome.max_payload_bytes)
 *   arrive as decimal strings, so no precision is lost; we send them as strings too.
 * - enums: String: CancelReason arrives as its name ("CANCEL_REASON_LEASE_LOST").
 * - defaults: true, oneofs: true: unset scalars read as their defaults, unset messages as null, and a
 *   oneof's `kind` names the field that is set.
 */

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface AttemptRef {
  task_run_id: string;
  attempt: number;
}

/** google.protobuf.Duration as decoded (seconds is an int64: a string). */
export interface Duration {
  seconds: string | number;
  nanos: number;
}

export interface Payload {
  data: Uint8Array;
  content_type: string;
}

export interface Welcome {
  session_id: string;
  heartbeat_interval: Duration | null;
  lease_timeout: Duration | null;
  adopted_attempts: AttemptRef[];
  rejected_attempts: AttemptRef[];
  max_payload_bytes: string;
  max_message_bytes: string;
}

export interface Invocation {
  ref: AttemptRef;
  execution_id: string;
  task_id: string;
  handler: string;
  input: Payload | null;
  timeout: Duration | null;
  dispatch: string;
  trace_context: Record<string, string>;
  upstream_outputs: Record<string, Payload>;
}

export interface Cancel {
  ref: AttemptRef;
  reason: string;
  message: string;
}

export interface Drain {
  grace: Duration | null;
  reason: string;
}

export interface GoingAway {
  reconnect_within: Duration | null;
  reason: string;
}

export interface ServerMessage {
  kind: 'welcome' | 'invocation' | 'cancel' | 'drain' | 'going_away';
  welcome?: Welcome;
  invocation?: Invocation;
  cancel?: Cancel;
  drain?: Drain;
  going_away?: GoingAway;
}

export interface ErrorInfo {
  type: string;
  message: string;
  retryable: boolean;
  traceback: string;
}

/** One WorkerMessage, as we write it (exactly one field set). */
export type WorkerMessage =
  | { hello: Record<string, unknown> }
  | { started: { ref: AttemptRef } }
  | { progress: { ref: AttemptRef; fraction: number; message: string; details?: StructValue } }
  | { log: { ref: AttemptRef; level: LogLevel; text: string } }
  | { completed: { ref: AttemptRef; output: Payload } }
  | { failed: { ref: AttemptRef; error: ErrorInfo; timed_out: boolean } }
  | { cancel_acknowledged: { ref: AttemptRef } }
  | { heartbeat: { running_attempts: AttemptRef[]; invocations_received: string } }
  | { draining: { reason: string } };

export type LogLevel = 'LOG_LEVEL_DEBUG' | 'LOG_LEVEL_INFO' | 'LOG_LEVEL_WARNING' | 'LOG_LEVEL_ERROR';

export const JSON_CONTENT_TYPE = 'application/json';

/** The repository's protos/ directory, relative to this file (dist/src/wire.js or src/wire.ts). */
export const DEFAULT_PROTOS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'protos');

export type ConnectCall = grpc.ClientDuplexStream<{ messages: WorkerMessage[] }, { messages: ServerMessage[] }>;

export interface WorkerServiceClient extends grpc.Client {
  Connect(options?: grpc.CallOptions): ConnectCall;
}

/** The WorkerService client class, from the .proto files under `protosDir`. */
export function loadWorkerService(protosDir: string): new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => WorkerServiceClient {
  const definition = protoLoader.loadSync('taskwire/v1/worker_service.proto', {
    includeDirs: [protosDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    taskwire: { v1: { WorkerService: new (...args: never[]) => WorkerServiceClient } };
  };
  return loaded.taskwire.v1.WorkerService as never;
}

/** A Duration in milliseconds; undefined when unset. */
export function durationMs(duration: Duration | null | undefined): number | undefined {
  if (!duration) return undefined;
  return Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}

/** A Duration (seconds as a string, the int64 convention) from milliseconds. */
export function toDuration(ms: number): Duration {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** google.protobuf.Value in protobufjs's camelCase form. */
export type ValueMessage =
  | { nullValue: 0 }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: StructValue }
  | { listValue: { values: ValueMessage[] } };

export interface StructValue {
  fields: Record<string, ValueMessage>;
}

function toValue(value: unknown): ValueMessage {
  if (value === null) return { nullValue: 0 };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: toStruct(value as Record<string, unknown>) };
}

function toStruct(object: Record<string, unknown>): StructValue {
  const fields: Record<string, ValueMessage> = {};
  for (const [key, item] of Object.entries(object)) fields[key] = toValue(item);
  return { fields };
}

/**
 * A plain object as a google.protobuf.Struct message. The value goes through JSON first, so it holds
 * only what JSON can (undefined dropped, toJSON applied); throws TypeError for what JSON cannot encode.
 */
export function encodeStruct(object: Record<string, unknown>): StructValue {
  const plain: unknown = JSON.parse(JSON.stringify(object) ?? 'null');
  if (typeof plain !== 'object' || plain === null || Array.isArray(plain)) {
    throw new TypeError('progress details must be a JSON object');
  }
  return toStruct(plain as Record<string, unknown>);
}

/** The Struct message back as a plain object (the inverse of encodeStruct). */
export function decodeStruct(struct: StructValue): Record<string, unknown> {
  const object: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(struct.fields)) object[key] = fromValue(item);
  return object;
}

function fromValue(value: ValueMessage): unknown {
  if ('numberValue' in value) return value.numberValue;
  if ('stringValue' in value) return value.stringValue;
  if ('boolValue' in value) return value.boolValue;
  if ('structValue' in value) return decodeStruct(value.structValue);
  if ('listValue' in value) return value.listValue.values.map(fromValue);
  return null;
}

/** Not valid JSON: not retryable, the input will not change. */
export class InputDecodingError extends Error {
  override name = 'InputDecodingError';
  readonly retryable = false;
}

/** The handler returned something JSON cannot encode: not retryable. */
export class OutputEncodingError extends Error {
  override name = 'OutputEncodingError';
  readonly retryable = false;
}

function isJson(contentType: string): boolean {
  const media = contentType.split(';', 1)[0]?.trim().toLowerCase() ?? '';
  return media === '' || media === JSON_CONTENT_TYPE;
}

/** A payload as the handler sees it: decoded JSON (empty: null), or the raw bytes for another media type. */
export function decodePayload(payload: Payload | null | undefined): unknown {
  if (!payload) return null;
  const data = Buffer.from(payload.data);
  if (!isJson(payload.content_type)) return data;
  if (data.length === 0) return null;
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (error) {
    throw new InputDecodingError(`input is not valid JSON: ${(error as Error).message}`);
  }
}

/** Raw bytes with a media type, for a handler that returns something other than JSON. */
export interface RawOutput {
  readonly data: Uint8Array;
  readonly contentType: string;
}

/** A handler's return value as a Payload: JSON (undefined becomes null), or RawOutput / bytes as they are. */
export function encodeOutput(value: unknown): Payload {
  if (value instanceof Uint8Array) return { data: value, content_type: 'application/octet-stream' };
  if (
    typeof value === 'object' &&
    value !== null &&
    (value as RawOutput).data instanceof Uint8Array &&
    typeof (value as RawOutput).contentType === 'string' &&
    Object.keys(value).length === 2
  ) {
    const raw = value as RawOutput;
    return { data: raw.data, content_type: raw.contentType || JSON_CONTENT_TYPE };
  }
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new OutputEncodingError(`handler returned a value that cannot be encoded as JSON: ${(error as Error).message}`);
  }
  return { data: Buffer.from(text ?? 'null', 'utf8'), content_type: JSON_CONTENT_TYPE };
}

/** `String(value)`, or a placeholder when even that throws (an object without a prototype, a throwing toString). */
export function safeString(value: unknown, fallback = '<unprintable>'): string {
  if (typeof value === 'string') return value;
  try {
    const text = String(value);
    return typeof text === 'string' ? text : fallback;
  } catch {
    return fallback;
  }
}

/** A property of a thrown value, or undefined when reading it throws (a getter, a Proxy). */
function field(value: object, name: string): unknown {
  try {
    return (value as Record<string, unknown>)[name];
  } catch {
    return undefined;
  }
}

/**
 * The error `type` convention: the JS error's `name` ("Error", "TypeError", a subclass's own name).
 * Never throws, whatever a handler threw (null-prototype objects, symbols, non-string fields, throwing getters).
 */
export function errorInfo(error: unknown, retryableDefault = true): ErrorInfo {
  let isError = false;
  try {
    isError = error instanceof Error;
  } catch {
    isError = false;
  }
  if (isError) {
    const err = error as object;
    const flagged = field(err, 'retryable');
    const name = field(err, 'name');
    const message = field(err, 'message');
    const stack = field(err, 'stack');
    return {
      type: (typeof name === 'string' ? name : safeString(name, '')) || 'Error',
      message: typeof message === 'string' ? message : message === undefined ? '' : safeString(message),
      retryable: typeof flagged === 'boolean' ? flagged : retryableDefault,
      traceback: typeof stack === 'string' ? stack : '',
    };
  }
  return { type: 'Error', message: safeString(error), retryable: retryableDefault, traceback: '' };
}

export function refKey(ref: AttemptRef): string {
  return `${ref.task_run_id}#${ref.attempt}`;
}
