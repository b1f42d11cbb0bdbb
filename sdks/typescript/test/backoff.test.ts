import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffCeiling, backoffDelay, DEFAULT_BOUNDS } from '../src/backoff.js';

test('the ceiling doubles from 0.5 s up to 30 s', () => {
  assert.deepEqual(
    [0, 1, 2, 3, 6, 7, 100].map((n) => backoffCeiling(n, DEFAULT_BOUNDS)),
    [0.5, 1, 2, 4, 30, 30, 30],
  );
});

test('a third of the lease and reconnect_within bound it', () => {
  assert.equal(backoffCeiling(10, { ...DEFAULT_BOUNDS, leaseS: 6 }), 2);
  assert.equal(backoffCeiling(10, { ...DEFAULT_BOUNDS, leaseS: 30, reconnectWithinS: 0.5 }), 0.5);
  assert.equal(backoffCeiling(0, { ...DEFAULT_BOUNDS, leaseS: 30 }), 0.5);
});

test('full jitter: a wait anywhere in [0, ceiling]', () => {
  assert.equal(backoffDelay(3, DEFAULT_BOUNDS, () => 0), 0);
  assert.equal(backoffDelay(3, DEFAULT_BOUNDS, () => 0.5), 2);
  for (let i = 0; i < 100; i++) {
    const delay = backoffDelay(4, { ...DEFAULT_BOUNDS, leaseS: 3 });
    assert.ok(delay >= 0 && delay <= 1, String(delay));
  }
});
