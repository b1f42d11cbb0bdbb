/** What a handler sees: its input, its abort signal, and the ways to report progress and logs. */

import type { LogLevel } from './wire.js';

/**
 * Why a handler is asked to stop, as `ctx.signal.reason.reason`:
 * - `CANCELLED`: a client cancelled (Cancel REQUESTED or UNSPECIFIED, or a reason this worker does not know);
 * - `TIMED_OUT`: the task run's timeout passed (the server's timer, or this worker's local copy of it);
 * - `EXECUTION_TIMED_OUT`: the execution's deadline passed;
 * - `UPSTREAM_FAILED`: the execution ended for another reason (a sibling task failed);
 * - `LEASE_LOST`: the server no longer considers this attempt current; nobody reads its result;
 * - `SHUTDOWN`: the worker is shutting down.
 */
export type AbortReason =
  | 'CANCELLED'
  | 'TIMED_OUT'
  | 'EXECUTION_TIMED_OUT'
  | 'UPSTREAM_FAILED'
  | 'LEASE_LOST'
  | 'SHUTDOWN';

/** The reason an attempt's AbortSignal carries; thrown by `ctx.signal.throwIfAborted()`. */
export class AttemptAborted extends Error {
  override name = 'AbortError';

  constructor(
    readonly reason: AbortReason,
    readonly detail = '',
  ) {
    super(`aborted: ${reason}${detail ? ` (${detail})` : ''}`);
  }
}

/** Maps a Cancel's reason (its enum name) to the abort reason the handler sees. */
export function abortReasonOf(cancelReason: string): AbortReason {
  switch (cancelReason) {
    case 'CANCEL_REASON_TIMED_OUT':
      return 'TIMED_OUT';
    case 'CANCEL_REASON_EXECUTION_TIMED_OUT':
      return 'EXECUTION_TIMED_OUT';
    case 'CANCEL_REASON_UPSTREAM_FAILED':
      return 'UPSTREAM_FAILED';
    case 'CANCEL_REASON_LEASE_LOST':
      return 'LEASE_LOST';
    default:
      return 'CANCELLED';
  }
}

export type Level = 'debug' | 'info' | 'warning' | 'error';

export const LOG_LEVELS: Record<Level, LogLevel> = {
  debug: 'LOG_LEVEL_DEBUG',
  info: 'LOG_LEVEL_INFO',
  warning: 'LOG_LEVEL_WARNING',
  error: 'LOG_LEVEL_ERROR',
};

export interface TaskContext {
  /** The input, decoded from JSON (null when none), with every {"$from": ...} reference replaced. */
  readonly input: unknown;
  /** The input as submitted, references included. */
  readonly rawInput: unknown;
  /** The outputs of the tasks this one depends on, decoded, by task id. */
  readonly upstream: ReadonlyMap<string, unknown>;
  /** Fires when the handler should stop; `signal.reason` is an AttemptAborted naming why. */
  readonly signal: AbortSignal;
  readonly executionId: string;
  readonly taskId: string;
  readonly taskRunId: string;
  readonly attempt: number;
  readonly handler: string;
  /** Invocation.dispatch: this stream's dispatch counter (a decimal string: it is a uint64). */
  readonly dispatch: string;
  /** The submitter's W3C trace context (traceparent, tracestate), empty when none. */
  readonly traceContext: Readonly<Record<string, string>>;
  /** Report progress: `fraction` in [0, 1], a short message, optional JSON details. */
  progress(fraction: number, message?: string, details?: Record<string, unknown>): void;
  /** Write one log line for this attempt. */
  log(text: string, level?: Level): void;
}

export type Handler = (ctx: TaskContext) => unknown;

/** What a handlers module exports: `handlers` (or the default export) as a name → function record. */
export type Registrations = Record<string, Handler>;
