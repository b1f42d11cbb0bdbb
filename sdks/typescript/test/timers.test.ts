import assert from 'node:assert/strict';
import { test } from 'node:test';

import { clampInterval, MAX_TIMER_MS, setLongTimeout } from '../src/timers.js';

test('setLongTimeout re-arms in steps and fires once the whole delay has passed', async () => {
  const started = Date.now();
  let firedAt = 0;
  setLongTimeout(() => (firedAt = Date.now()), 120, 25);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(firedAt, 0);
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.ok(firedAt - started >= 115, `fired after ${firedAt - started} ms`);
  let cleared = false;
  setLongTimeout(() => (cleared = true), 50, 20).clear();
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(cleared, false);
});

test('clampInterval keeps server durations within what Node timers keep', () => {
  assert.deepEqual([clampInterval(2 ** 40), clampInterval(0), clampInterval(5000), clampInterval(Infinity)], [MAX_TIMER_MS, 1, 5000, MAX_TIMER_MS]);
});
