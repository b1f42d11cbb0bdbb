/**
 * The handlers the conformance kit invokes (docs/conformance.md), for this worker:
 *
 *     taskwire-conformance --worker-cmd 'node sdks/typescript/dist/src/cli.js --server {address} \
 *         --slots {slots} --handlers sdks/typescript/dist/src/conformance.js'
 */

import { Worker as Thread } from 'node:worker_threads';

import type { Registrations, TaskContext } from './context.js';

/** What `conformance.fail` throws; `retryable` as its input says. */
export class ConformanceError extends Error {
  override name = 'ConformanceError';

  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

function params(ctx: TaskContext): Record<string, unknown> {
  return typeof ctx.input === 'object' && ctx.input !== null ? (ctx.input as Record<string, unknown>) : {};
}

// Blocks a thread for workerData seconds without yielding (Atomics.wait sleeps the thread itself).
const BLOCKING_THREAD = `
const { workerData } = require('node:worker_threads');
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData * 1000);
`;

export const handlers: Registrations = {
  'conformance.echo': (ctx) => ctx.input,
  'conformance.sleep': async (ctx) => {
    const seconds = Number(params(ctx).seconds);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, seconds * 1000);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
    return { slept_s: seconds };
  },
  'conformance.fail': (ctx) => {
    const input = params(ctx);
    throw new ConformanceError(String(input.message ?? 'failed'), input.retryable === undefined ? true : Boolean(input.retryable));
  },
  'conformance.progress': (ctx) => {
    ctx.progress(0.5, 'half way');
    ctx.log('hello from the handler');
    return { ok: true };
  },
  // JavaScript runs handlers on the worker's one event loop: blocking it would stop the heartbeats too.
  // Blocking work belongs on another thread, as here; the handler awaits it.
  'conformance.block': async (ctx) => {
    const seconds = Number(params(ctx).seconds);
    await new Promise<void>((resolve, reject) => {
      const thread = new Thread(BLOCKING_THREAD, { eval: true, workerData: seconds });
      thread.once('error', reject);
      thread.once('exit', () => resolve());
    });
    return { blocked_s: seconds };
  },
};
