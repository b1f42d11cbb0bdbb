import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { Attempt } from '../src/attempt.js';
import { AttemptAborted, type TaskContext } from '../src/context.js';
import { Worker } from '../src/worker.js';
import { toDuration } from '../src/wire.js';
import { FakeServer, type Message } from './fake-server.js';

const ref = (id: string, attempt = 1) => ({ task_run_id: id, attempt });
const json = (payload: Message) => JSON.parse(Buffer.from(payload.data as Uint8Array).toString()) as unknown;
const sameRef = (message: Message | undefined, id: string) => message?.ref?.task_run_id === id;

/** A promise the test resolves by hand. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

const seen: Record<string, string> = {};
let gates = new Map<string, ReturnType<typeof gate>>();

function gateFor(id: string): ReturnType<typeof gate> {
  if (!gates.has(id)) gates.set(id, gate());
  return gates.get(id) as ReturnType<typeof gate>;
}

async function setup(slots = 2): Promise<{ server: FakeServer; worker: Worker; done: Promise<void> }> {
  gates = new Map();
  const server = await new FakeServer().start();
  const worker = new Worker({ server: server.address, slots, name: 'test', stopGraceMs: 300, log: () => undefined });
  worker
    .handle('echo', (ctx: TaskContext) => {
      ctx.progress(0.5, 'half', { k: 1 });
      ctx.log('a line', 'warning');
      return { input: ctx.input };
    })
    .handle('boom', () => {
      throw new TypeError('bad input');
    })
    .handle('wait', async (ctx: TaskContext) => {
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
      const reason = ctx.signal.reason as AttemptAborted;
      seen[ctx.taskRunId] = `${reason.reason}:${reason.detail}`;
      return 'returned anyway';
    })
    .handle('gate', async (ctx: TaskContext) => {
      ctx.progress(0.1, 'waiting');
      await gateFor(ctx.taskRunId).promise;
      ctx.progress(0.9, 'let through');
      return 'done';
    });
  const done = worker.run();
  cleanup.push(async () => {
    await worker.shutdown(0);
    await done;
    server.stop();
  });
  return { server, worker, done };
}

test('hello, welcome, results and failures, heartbeats with the running attempts and invocations received', async () => {
  const { server, worker } = await setup();
  const s0 = await server.stream(0);
  const hello = await s0.next('hello');
  assert.deepEqual([hello.name, hello.slots, hello.handlers, hello.running_attempts], ['test', 2, ['echo', 'boom', 'wait', 'gate'], []]);
  assert.equal(hello.instance_id, worker.instanceId);
  assert.match(hello.agent_version as string, /^taskwire-worker-ts\/\S+ node\//);

  s0.welcome();
  s0.invoke(ref('r1'), 'echo', { a: [1, 'x'] }, { dispatch: 1 });
  const completed = await s0.next('completed');
  assert.deepEqual(json(completed.output), { input: { a: [1, 'x'] } });
  assert.deepEqual(s0.kinds(), ['hello', 'started', 'progress', 'log', 'completed']);
  const progress = await s0.next('progress');
  assert.equal(progress.fraction, 0.5);
  assert.deepEqual(progress.details, { fields: { k: { numberValue: 1, kind: 'numberValue' } } });
  assert.equal((await s0.next('log')).level, 'LOG_LEVEL_WARNING');

  s0.invoke(ref('r2'), 'boom', null, { dispatch: 2 });
  const failed = await s0.next('failed');
  assert.deepEqual([failed.error.type, failed.error.message, failed.error.retryable, failed.timed_out], ['TypeError', 'bad input', true, false]);

  s0.invoke(ref('r3'), 'wait', null, { dispatch: 3 });
  await s0.until(
    () => s0.received.find((m) => m.kind === 'heartbeat' && m.heartbeat.invocations_received === '3' && m.heartbeat.running_attempts[0]?.task_run_id === 'r3'),
    'a heartbeat listing r3 with invocations_received 3',
  ).catch((error: Error) => {
    throw new Error(`${error.message}\n${JSON.stringify(s0.received.filter((m) => m.kind === 'heartbeat').slice(-2))}`);
  });
});

test('cancel: the AbortSignal carries the reason, then CancelAcknowledged; unknown attempts at once; LEASE_LOST silences', async () => {
  const { server } = await setup(2);
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'wait', null, { dispatch: 1 });
  s0.invoke(ref('r2'), 'wait', null, { dispatch: 2 });
  s0.invoke(ref('r1'), 'wait', null, { dispatch: 3 }); // the same attempt again while it runs: ignored
  s0.invoke(ref('r3'), 'wait', null, { dispatch: 4 }); // over the slots
  s0.invoke(ref('r4'), 'nope', null, { dispatch: 5 });
  const refused = await s0.until(() => {
    const failures = s0.received.filter((m) => m.kind === 'failed').map((m) => `${m.failed.ref.task_run_id}:${m.failed.error.type}:${m.failed.error.retryable}`);
    return failures.length === 2 ? failures : undefined;
  }, 'two refusals');
  assert.deepEqual(refused, ['r3:SlotsExhausted:true', 'r4:HandlerNotFound:true']);
  assert.deepEqual(s0.received.filter((m) => m.kind === 'started').map((m) => m.started.ref.task_run_id), ['r1', 'r2']);

  s0.send({ cancel: { ref: ref('r1'), reason: 'CANCEL_REASON_REQUESTED', message: 'bye' } });
  assert.ok(sameRef(await s0.next('cancel_acknowledged'), 'r1'));
  assert.equal(seen.r1, 'CANCELLED:bye');
  s0.send({ cancel: { ref: ref('r9'), reason: 'CANCEL_REASON_UPSTREAM_FAILED', message: '' } });
  assert.ok(sameRef(await s0.next('cancel_acknowledged', 1), 'r9'));

  s0.send({ cancel: { ref: ref('r2'), reason: 'CANCEL_REASON_LEASE_LOST', message: 'gone' } });
  await s0.until(() => (seen.r2 === 'LEASE_LOST:gone' ? true : undefined), 'r2 aborted with LEASE_LOST');
  const count = s0.received.length;
  await s0.until(() => (s0.received.slice(count).filter((m) => m.kind === 'heartbeat').length >= 2 ? true : undefined), 'two more heartbeats');
  const later = s0.received.slice(count);
  assert.ok(later.every((m) => m.kind === 'heartbeat' && m.heartbeat.running_attempts.length === 0), JSON.stringify(later));
});

test('local timeout, counted from receipt: AttemptFailed(timed_out, TimeoutError)', async () => {
  const { server } = await setup();
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'wait', null, { timeout: toDuration(200) });
  const failed = await s0.next('failed');
  assert.deepEqual([failed.timed_out, failed.error.type, failed.error.retryable], [true, 'TimeoutError', true]);
  assert.equal(seen.r1, 'TIMED_OUT:');
});

test('reconnect: re-hello with running and unreported attempts, queued reports after the Welcome in order, rejected ones silenced', async () => {
  const { server, worker } = await setup();
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'gate', null, { dispatch: 1 });
  s0.invoke(ref('r2'), 'wait', null, { dispatch: 2 });
  await s0.next('progress');
  await s0.next('started', 1);
  s0.call.end(); // the stream breaks

  const s1 = await server.stream(1);
  gateFor('r1').open(); // r1 ends while no Welcome has come: its reports wait
  await new Promise((resolve) => setTimeout(resolve, 100));
  const hello = await s1.next('hello');
  assert.equal(hello.instance_id, worker.instanceId);
  assert.deepEqual(hello.running_attempts.map((r: Message) => r.task_run_id).sort(), ['r1', 'r2']);
  assert.deepEqual(s1.kinds(), ['hello']);

  s1.welcome({ adopted_attempts: [ref('r1')], rejected_attempts: [ref('r2')] });
  await s1.next('completed');
  assert.deepEqual(s1.kinds(), ['hello', 'progress', 'completed']);
  assert.equal((await s1.next('progress')).message, 'let through');
  await s1.until(() => (seen.r2 === 'LEASE_LOST:rejected at reconnect' ? true : undefined), 'r2 aborted');
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(s1.kinds(), ['hello', 'progress', 'completed']);
});

test('drain: Draining, new work refused, running work finishes, then the worker hangs up', async () => {
  const { server, done } = await setup();
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'gate', null, { dispatch: 1 });
  await s0.next('started');
  s0.send({ drain: { grace: toDuration(5000), reason: 'maintenance' } });
  assert.equal((await s0.next('draining')).reason, 'maintenance');
  s0.invoke(ref('r2'), 'echo', null, { dispatch: 2 });
  assert.equal((await s0.next('failed')).error.type, 'WorkerDraining');
  gateFor('r1').open();
  await s0.next('completed');
  await s0.until(() => (s0.ended ? true : undefined), 'the half-close');
  await done;
});

test('GoingAway: the work goes on, the worker half-closes and brings it to the next server', async () => {
  const { server } = await setup();
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'gate', null, { dispatch: 1 });
  await s0.next('started');
  s0.send({ going_away: { reconnect_within: toDuration(100), reason: 'restart' } });
  await s0.until(() => (s0.ended ? true : undefined), 'the half-close');
  const s1 = await server.stream(1);
  assert.deepEqual((await s1.next('hello')).running_attempts, [ref('r1')]);
  s1.welcome({ adopted_attempts: [ref('r1')] });
  gateFor('r1').open();
  assert.equal(json((await s1.next('completed')).output), 'done');
  assert.deepEqual(s0.kinds().includes('failed'), false);
});

test('the same attempt sent again behind a fenced copy is new work: it runs once the fenced copy has stopped', async () => {
  const { server } = await setup();
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'gate', null, { dispatch: 1 }); // ignores its signal: stopped by force after the grace
  await s0.next('started');
  const fencedAt = Date.now();
  s0.send({ cancel: { ref: ref('r1'), reason: 'CANCEL_REASON_LEASE_LOST', message: '' } });
  s0.invoke(ref('r1'), 'gate', null, { dispatch: 2 });
  await s0.until(
    () => s0.received.find((m) => m.kind === 'heartbeat' && m.heartbeat.invocations_received === '2' && m.heartbeat.running_attempts.length === 1),
    'a heartbeat listing the waiting copy',
  );
  await s0.next('started', 1);
  assert.ok(Date.now() - fencedAt >= 250, 'the new copy started before the fenced one stopped');
  gateFor('r1').open();
  await s0.next('completed');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(s0.kinds(), ['hello', 'started', 'progress', 'started', 'progress', 'progress', 'completed']);
});

test('odd thrown values and odd progress arguments: every attempt is reported and frees its slot', async () => {
  const { server, worker } = await setup(1);
  worker
    .handle('null-proto', () => {
      throw Object.create(null);
    })
    .handle('symbol', () => {
      throw Symbol('odd');
    })
    .handle('numeric-message', () => {
      const error = new Error('x');
      (error as unknown as { message: unknown }).message = 42;
      throw error;
    })
    .handle('odd-progress', (ctx: TaskContext) => {
      (ctx.progress as (fraction: unknown, message?: unknown, details?: unknown) => void)(0.5, 42, { big: 1n });
      ctx.log(Object.create(null) as string);
      return 'fine';
    });
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'null-proto', null, { dispatch: 1 });
  assert.ok(sameRef(await s0.next('failed'), 'r1'));
  s0.invoke(ref('r2'), 'symbol', null, { dispatch: 2 });
  assert.equal((await s0.next('failed', 1)).error.message, 'Symbol(odd)');
  s0.invoke(ref('r3'), 'numeric-message', null, { dispatch: 3 });
  assert.equal((await s0.next('failed', 2)).error.message, '42');
  s0.invoke(ref('r4'), 'odd-progress', null, { dispatch: 4 });
  assert.equal(json((await s0.next('completed')).output), 'fine');
  assert.equal((await s0.next('progress')).message, '42');
  assert.deepEqual(s0.received.filter((m) => m.kind === 'failed').map((m) => m.failed.error.type), ['Error', 'Error', 'Error']);
  const count = s0.received.length;
  await s0.until(() => s0.received.slice(count).find((m) => m.kind === 'heartbeat'), 'a heartbeat');
  assert.deepEqual(s0.received.slice(count).find((m) => m.kind === 'heartbeat')?.heartbeat.running_attempts, []);
});

test('an internal error while reporting: the attempt is forgotten and reported failed', async () => {
  const original = Attempt.prototype.report;
  Attempt.prototype.report = () => {
    throw new Error('report broke');
  };
  cleanup.push(async () => {
    Attempt.prototype.report = original;
  });
  const { server } = await setup(1);
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'echo', null, { dispatch: 1 });
  const failed = await s0.next('failed');
  assert.ok(sameRef(failed, 'r1'));
  assert.match(failed.error.message, /report broke/);
  Attempt.prototype.report = original;
  s0.invoke(ref('r2'), 'echo', null, { dispatch: 2 });
  assert.ok(sameRef(await s0.next('completed'), 'r2'));
});

test('another attempt of a task run whose fenced copy is still stopping is refused with AttemptAlreadyRunning', async () => {
  const { server } = await setup(2);
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1', 1), 'gate', null, { dispatch: 1 }); // ignores its signal: stopped by force after the grace
  await s0.next('started');
  s0.send({ cancel: { ref: ref('r1', 1), reason: 'CANCEL_REASON_LEASE_LOST', message: '' } });
  s0.invoke(ref('r1', 2), 'gate', null, { dispatch: 2 });
  const refused = await s0.next('failed');
  assert.deepEqual([refused.ref, refused.error.type], [ref('r1', 2), 'AttemptAlreadyRunning']);
  assert.equal(s0.received.filter((m) => m.kind === 'started').length, 1);
  await new Promise((resolve) => setTimeout(resolve, 500)); // the fenced copy is given up on after 300 ms
  s0.invoke(ref('r1', 2), 'gate', null, { dispatch: 3 });
  assert.deepEqual((await s0.next('started', 1)).ref, ref('r1', 2));
  gateFor('r1').open();
  assert.ok(sameRef(await s0.next('completed'), 'r1'));
});

test('GoingAway: a report that ends after the half-close is not written to the ended stream; the next stream gets it', async () => {
  const { server } = await setup();
  server.endDelayMs = 300; // the server ends the stream a while after the worker's half-close
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('r1'), 'gate', null, { dispatch: 1 });
  await s0.next('started');
  s0.send({ going_away: { reconnect_within: toDuration(100), reason: 'restart' } });
  await s0.until(() => (s0.ended ? true : undefined), 'the half-close');
  gateFor('r1').open(); // r1 ends while the half-closed stream is still open
  const s1 = await server.stream(1);
  assert.deepEqual((await s1.next('hello')).running_attempts, [ref('r1')]);
  s1.welcome({ adopted_attempts: [ref('r1')] });
  assert.equal(json((await s1.next('completed')).output), 'done');
  assert.equal(s0.kinds().includes('completed'), false);
});

test('durations over 2^31-1 ms from the server (timeout, heartbeat interval) do not fire at once', async () => {
  const { server } = await setup();
  const s0 = await server.stream(0);
  const days30 = 30 * 24 * 3600 * 1000;
  s0.welcome({ heartbeat_interval: toDuration(days30) });
  s0.invoke(ref('long1'), 'wait', null, { dispatch: 1, timeout: toDuration(days30) });
  await s0.next('started');
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(s0.kinds(), ['hello', 'started']);
  assert.equal(s0.received.filter((m) => m.kind === 'heartbeat').length, 0);
  assert.equal(seen.long1, undefined);
});

test('the reconnect backoff is not cut short by attempts ending (only a shutdown may)', async () => {
  const random = Math.random;
  Math.random = () => 0.99; // the backoff waits its whole ceiling: 0.5 s for the first retry
  cleanup.push(async () => {
    Math.random = random;
  });
  const { server } = await setup();
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke(ref('bk1'), 'gate', null, { dispatch: 1 });
  await s0.next('started');
  const brokenAt = Date.now();
  s0.call.end(); // the stream breaks: the worker backs off, then reconnects
  await new Promise((resolve) => setTimeout(resolve, 100));
  gateFor('bk1').open(); // the attempt ends during the backoff
  const s1 = await server.stream(1);
  Math.random = random;
  const waited = Date.now() - brokenAt;
  assert.ok(waited >= 400, `reconnected after ${waited} ms, before the backoff's 495 ms`);
  assert.deepEqual((await s1.next('hello')).running_attempts, [ref('bk1')]);
});
