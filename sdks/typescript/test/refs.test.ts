import assert from 'node:assert/strict';
import { test } from 'node:test';

import { InputReferenceError, resolveReferences } from '../src/refs.js';

const outputs = new Map<string, unknown>([
  ['fetch', { images: [{ url: 'a.png' }, { url: 'b.png' }], count: 2 }],
  ['plain', 7],
]);

test('a whole output, a part by keys and indices, anywhere in the input', () => {
  const input = { all: { $from: 'fetch' }, second: [{ $from: 'fetch', path: 'images.1.url' }], n: { $from: 'plain' }, keep: 1 };
  assert.deepEqual(resolveReferences(input, outputs), {
    all: { images: [{ url: 'a.png' }, { url: 'b.png' }], count: 2 },
    second: ['b.png'],
    n: 7,
    keep: 1,
  });
});

test('an object with other keys is not a reference', () => {
  const input = { $from: 'fetch', other: true };
  assert.deepEqual(resolveReferences(input, outputs), input);
});

test('a missing part, index or task fails with InputReferenceError, not retryable', () => {
  for (const reference of [
    { $from: 'fetch', path: 'images.5.url' },
    { $from: 'fetch', path: 'nothing' },
    { $from: 'fetch', path: 'images.x' },
    { $from: 'unknown' },
    { $from: 3 },
  ]) {
    assert.throws(
      () => resolveReferences({ at: reference }, outputs),
      (error: unknown) => error instanceof InputReferenceError && error.name === 'InputReferenceError' && !error.retryable,
    );
  }
});

test('inherited keys are not a path', () => {
  assert.throws(() => resolveReferences({ $from: 'fetch', path: 'toString' }, outputs), InputReferenceError);
});
