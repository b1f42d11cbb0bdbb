// The mixed fleet's handlers for the TypeScript worker (taskwire-worker-ts --handlers this file): the same
// names and behaviour as tests.faults.journal (journal.work) and tests.integration.polyglot.fleet_handlers.
import { appendFileSync, openSync, closeSync } from 'node:fs';

function append(entry) {
  // One short appended line per event: lines from several processes never interleave.
  appendFileSync(process.env.TASKWIRE_JOURNAL, JSON.stringify(entry) + '\n');
}

function sleep(seconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

class FlakyError extends Error {
  name = 'FlakyError';
}

export const handlers = {
  // Input {"seconds": s}: records its start, waits s seconds (stopping at once on abort), records its end.
  'journal.work': async (ctx) => {
    const seconds = Number(ctx.input?.seconds ?? 0);
    const key = { e: ctx.executionId, t: ctx.taskRunId, a: ctx.attempt, d: ctx.dispatch, w: String(process.pid) };
    append({ ...key, ev: 'start', at: Date.now() / 1000 });
    let result = 'error';
    try {
      if (seconds) {
        try {
          await sleep(seconds, ctx.signal);
        } catch (error) {
          result = 'aborted';
          throw error;
        }
      }
      result = 'ok';
      return { task_run: ctx.taskRunId, attempt: ctx.attempt };
    } finally {
      append({ ...key, ev: 'end', at: Date.now() / 1000, result, reason: ctx.signal.aborted ? ctx.signal.reason.reason : '' });
    }
  },
  // Fails its first run (the marker file does not exist yet), succeeds after.
  'fleet.flaky': async (ctx) => {
    try {
      closeSync(openSync(ctx.input.marker, 'wx'));
    } catch {
      return { attempt: ctx.attempt, runtime: 'typescript' };
    }
    throw new FlakyError('the first run fails (typescript)');
  },
  // Returns its input ({"$from": ...} references replaced) with the upstream outputs it received.
  'fleet.echo': async (ctx) => {
    ctx.progress(0.5, 'echoing', { keys: Object.keys(ctx.input ?? {}) });
    ctx.log('echo from typescript');
    return { input: ctx.input, runtime: 'typescript' };
  },
};
