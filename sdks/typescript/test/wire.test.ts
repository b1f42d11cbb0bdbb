import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as protoLoader from '@grpc/proto-loader';

import {
  decodePayload,
  decodeStruct,
  DEFAULT_PROTOS,
  durationMs,
  encodeOutput,
  encodeStruct,
  errorInfo,
  InputDecodingError,
  OutputEncodingError,
  toDuration,
  type StructValue,
} from '../src/wire.js';

interface MethodCodec {
  requestSerialize(value: unknown): Buffer;
  requestDeserialize(bytes: Buffer): unknown;
}

const json = (text: string, contentType = 'application/json') => ({ data: Buffer.from(text), content_type: contentType });

test('Duration: int64 seconds arrive as strings; milliseconds both ways', () => {
  assert.equal(durationMs({ seconds: '2', nanos: 500_000_000 }), 2500);
  assert.equal(durationMs(null), undefined);
  assert.deepEqual(toDuration(1500), { seconds: '1', nanos: 500_000_000 });
});

test('payloads: JSON (empty is null, any JSON media type), raw bytes otherwise, invalid JSON refused', () => {
  assert.deepEqual(decodePayload(json('{"a": [1, 2.5]}')), { a: [1, 2.5] });
  assert.equal(decodePayload(json('')), null);
  assert.equal(decodePayload(json('3', '')), 3);
  assert.equal(decodePayload(json('"x"', 'application/json; charset=utf-8')), 'x');
  assert.deepEqual(decodePayload(json('raw', 'text/plain')), Buffer.from('raw'));
  assert.equal(decodePayload(null), null);
  assert.throws(() => decodePayload(json('{')), InputDecodingError);
});

test('outputs: JSON, undefined as null, bytes with their media type, what JSON cannot encode refused', () => {
  const encoded = encodeOutput({ n: 1.0, s: 'é' });
  assert.equal(Buffer.from(encoded.data).toString(), '{"n":1,"s":"é"}');
  assert.equal(encoded.content_type, 'application/json');
  assert.equal(Buffer.from(encodeOutput(undefined).data).toString(), 'null');
  assert.deepEqual(encodeOutput({ data: Buffer.from('<p/>'), contentType: 'text/html' }), {
    data: Buffer.from('<p/>'),
    content_type: 'text/html',
  });
  assert.equal(encodeOutput(new Uint8Array([1])).content_type, 'application/octet-stream');
  assert.throws(() => encodeOutput({ big: 1n }), OutputEncodingError);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.throws(() => encodeOutput(cycle), OutputEncodingError);
});

test('error type: the JS error name; retryable unless the error says otherwise', () => {
  class QuotaError extends Error {
    override name = 'QuotaError';
    retryable = false;
  }
  assert.deepEqual(
    { ...errorInfo(new TypeError('bad')), traceback: '' },
    { type: 'TypeError', message: 'bad', retryable: true, traceback: '' },
  );
  const quota = errorInfo(new QuotaError('over'));
  assert.equal(quota.type, 'QuotaError');
  assert.equal(quota.retryable, false);
  assert.match(quota.traceback, /QuotaError: over/);
  assert.equal(errorInfo('a string').type, 'Error');
});

test('Struct: camelCase Value fields, which the loaded google.protobuf.Struct encodes and decodes', () => {
  const details = { n: 1, s: 'x', ok: true, none: null, list: [1, 'a'], nested: { deep: [{ k: 2 }] }, skipped: undefined };
  const struct = encodeStruct(details);
  assert.deepEqual(struct.fields.n, { numberValue: 1 });
  assert.deepEqual(struct.fields.none, { nullValue: 0 });
  assert.equal('skipped' in struct.fields, false);
  const definition = protoLoader.loadSync('taskwire/v1/worker_service.proto', {
    includeDirs: [DEFAULT_PROTOS],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const connect = (definition['taskwire.v1.WorkerService'] as unknown as Record<string, MethodCodec>).Connect as MethodCodec;
  const roundTrip = (details: unknown): unknown => {
    const request = { messages: [{ progress: { ref: { task_run_id: 'r', attempt: 1 }, fraction: 0.5, message: '', details } }] };
    const decoded = connect.requestDeserialize(connect.requestSerialize(request)) as {
      messages: { progress: { details: StructValue } }[];
    };
    return decoded.messages[0]?.progress.details;
  };
  const { none: _none, skipped: _skipped, ...rest } = details;
  assert.deepEqual(decodeStruct(roundTrip(struct) as StructValue), { ...rest, none: null });
  // The trap: snake_case Value fields (as keepCase suggests) are silently dropped by the encoder.
  assert.deepEqual(roundTrip({ fields: { n: { number_value: 1 } } }), { fields: { n: {} } });
});

test('errorInfo never throws, whatever was thrown', () => {
  const numeric = new Error('x');
  (numeric as unknown as { message: unknown }).message = 42;
  const symbolName = new Error('y');
  (symbolName as unknown as { name: unknown }).name = Symbol('s');
  const getter = new Error('z');
  Object.defineProperty(getter, 'message', {
    get() {
      throw new Error('no');
    },
  });
  const cases: [unknown, string, string][] = [
    [Object.create(null), 'Error', '<unprintable>'],
    [Symbol('odd'), 'Error', 'Symbol(odd)'],
    [{ toString: () => { throw new Error('no'); } }, 'Error', '<unprintable>'],
    [numeric, 'Error', '42'],
    [symbolName, 'Symbol(s)', 'y'],
    [getter, 'Error', ''],
    [undefined, 'Error', 'undefined'],
  ];
  for (const [thrown, type, message] of cases) {
    const info = errorInfo(thrown);
    assert.deepEqual([info.type, info.message, typeof info.traceback, info.retryable], [type, message, 'string', true]);
  }
});
