/** One attempt on this worker: its handler's run, the first reason it was asked to stop, its report. */

import { AttemptAborted, LOG_LEVELS, type AbortReason, type Handler, type Level, type TaskContext } from './context.js';
import { resolveReferences } from './refs.js';
import { setLongTimeout, type LongTimer } from './timers.js';
import type { AttemptRef, ErrorInfo, Invocation, Payload, WorkerMessage } from './wire.js';
import { decodePayload, encodeOutput, encodeStruct, errorInfo, refKey, safeString } from './wire.js';

/** Why the worker stopped an attempt; the first one decides the report (LEASE_LOST always wins). */
export type Stop =
  | { kind: 'cancel'; reason: AbortReason; detail: string }
  | { kind: 'lease'; detail: string }
  | { kind: 'timeout'; timeoutMs: number }
  | { kind: 'shutdown' };

/** How a run ended: a value, or an error. */
export type Ended = { value: unknown } | { error: unknown };

const TEXT_LIMIT = 64 * 1024;

export function trim(text: unknown, limit = TEXT_LIMIT): string {
  const string = safeString(text);
  return string.length <= limit ? string : `${string.slice(0, limit)}… [cut at ${limit} characters]`;
}

export interface AttemptHost {
  /** Queue a message about this attempt (dropped once it is fenced). */
  send(attempt: Attempt, message: WorkerMessage): void;
  /** The largest output the server stores; 0: no check. */
  readonly maxPayloadBytes: number;
}

export class Attempt {
  readonly ref: AttemptRef;
  readonly key: string;
  readonly controller = new AbortController();
  stop: Stop | undefined;
  /** Fenced (LEASE_LOST, rejected): it reports nothing any more. */
  fenced = false;
  /** Set when the handler stopped (or the worker stopped waiting for it). */
  done: Promise<void> = Promise.resolve();
  private forced: (() => void) | undefined;
  private readonly timers: LongTimer[] = [];

  constructor(
    readonly invocation: Invocation,
    private readonly host: AttemptHost,
    private readonly stopGraceMs: number,
  ) {
    this.ref = { task_run_id: invocation.ref.task_run_id, attempt: invocation.ref.attempt };
    this.key = refKey(this.ref);
  }

  /** Ask the handler to stop. The first reason counts, except that LEASE_LOST overrides any. */
  requestStop(stop: Stop): void {
    if (this.stop !== undefined && stop.kind !== 'lease') return;
    const first = this.stop === undefined;
    this.stop = stop;
    if (!first) return;
    const reason: AbortReason =
      stop.kind === 'cancel' ? stop.reason : stop.kind === 'lease' ? 'LEASE_LOST' : stop.kind === 'timeout' ? 'TIMED_OUT' : 'SHUTDOWN';
    const detail = stop.kind === 'cancel' || stop.kind === 'lease' ? stop.detail : '';
    this.controller.abort(new AttemptAborted(reason, detail));
    // A promise cannot be stopped from outside: after the grace the worker stops waiting for it.
    this.timers.push(setLongTimeout(() => this.forced?.(), this.stopGraceMs));
  }

  /** Stop the handler if it runs past `ms` (counted from now: the receipt). */
  limit(ms: number): void {
    this.timers.push(setLongTimeout(() => this.requestStop({ kind: 'timeout', timeoutMs: ms }), ms));
  }

  clearTimers(): void {
    for (const timer of this.timers) timer.clear();
  }

  /** Run the handler (after `behind`, a fenced copy of the same attempt, has stopped) and return its report. */
  async run(handler: Handler, behind: Promise<void> | undefined): Promise<WorkerMessage | undefined> {
    if (behind) await behind;
    let ended: Ended;
    if (this.stop === undefined) {
      this.host.send(this, { started: { ref: this.ref } });
      const forced = new Promise<Ended>((resolve) => {
        this.forced = () => resolve({ error: this.controller.signal.reason });
      });
      ended = await Promise.race([this.call(handler), forced]);
    } else {
      ended = { error: this.controller.signal.reason };
    }
    this.clearTimers();
    return this.fenced ? undefined : this.report(ended);
  }

  private async call(handler: Handler): Promise<Ended> {
    try {
      return { value: await handler(this.context()) };
    } catch (error) {
      return { error };
    }
  }

  private context(): TaskContext {
    const invocation = this.invocation;
    const rawInput = decodePayload(invocation.input);
    const upstream = new Map<string, unknown>();
    for (const [taskId, output] of Object.entries(invocation.upstream_outputs ?? {})) {
      upstream.set(taskId, decodePayload(output));
    }
    const input = upstream.size > 0 ? resolveReferences(rawInput, upstream) : rawInput;
    const send = (message: WorkerMessage): void => {
      if (this.stop?.kind !== 'lease') this.host.send(this, message);
    };
    return {
      input,
      rawInput,
      upstream,
      signal: this.controller.signal,
      executionId: invocation.execution_id,
      taskId: invocation.task_id,
      taskRunId: this.ref.task_run_id,
      attempt: this.ref.attempt,
      handler: invocation.handler,
      dispatch: String(invocation.dispatch),
      traceContext: invocation.trace_context ?? {},
      progress: (fraction, message = '', details) => {
        const clamped = Math.min(1, Math.max(0, typeof fraction === 'number' && Number.isFinite(fraction) ? fraction : 0));
        const progress: Extract<WorkerMessage, { progress: unknown }>['progress'] = {
          ref: this.ref,
          fraction: clamped,
          message: trim(message, 1024),
        };
        if (details !== undefined) {
          try {
            const struct = encodeStruct(details);
            if ((JSON.stringify(details) ?? '').length <= TEXT_LIMIT) progress.details = struct;
          } catch {
            // Details that cannot be encoded are left out: progress never fails the handler.
          }
        }
        send({ progress });
      },
      log: (text, level: Level = 'info') => {
        send({ log: { ref: this.ref, level: LOG_LEVELS[level] ?? 'LOG_LEVEL_INFO', text: trim(text) } });
      },
    };
  }

  /** The terminal report: the reason for stopping decides it, not what the handler did next. */
  report(ended: Ended): WorkerMessage {
    const ref = this.ref;
    const stop = this.stop;
    if (stop?.kind === 'cancel') return { cancel_acknowledged: { ref } };
    if (stop?.kind === 'timeout') {
      return failed(ref, { type: 'TimeoutError', message: `the handler ran past its timeout of ${stop.timeoutMs / 1000}s`, retryable: true, traceback: '' }, true);
    }
    if (stop?.kind === 'shutdown') {
      return failed(ref, { type: 'WorkerShutdown', message: 'the worker shut down while the handler ran', retryable: true, traceback: '' });
    }
    if ('error' in ended) {
      const info = errorInfo(ended.error);
      return failed(ref, { ...info, message: trim(info.message), traceback: trim(info.traceback) });
    }
    let output: Payload;
    try {
      output = encodeOutput(ended.value);
    } catch (error) {
      return failed(ref, errorInfo(error));
    }
    const limit = this.host.maxPayloadBytes;
    if (limit > 0 && output.data.length > limit) {
      const message = `the output is ${output.data.length} bytes, more than the server stores (${limit} bytes)`;
      return failed(ref, { type: 'OutputTooLarge', message, retryable: false, traceback: '' });
    }
    return { completed: { ref, output } };
  }
}

export function failed(ref: AttemptRef, error: ErrorInfo, timedOut = false): WorkerMessage {
  return { failed: { ref, error, timed_out: timedOut } };
}
