/**
 * Reconnect backoff: exponential with full jitter, bounded so the worker is back before the server
 * gives its attempts up (docs/worker-protocol.md, "Reconnecting and adoption").
 */

export interface BackoffBounds {
  /** The first ceiling, in seconds (0.5). */
  readonly baseS: number;
  /** The largest ceiling whatever else is known, in seconds (30). */
  readonly maxS: number;
  /** The last Welcome's lease_timeout in seconds, when one was announced: the ceiling is at most a third. */
  readonly leaseS?: number | undefined;
  /** The last GoingAway's reconnect_within in seconds, when one was sent. */
  readonly reconnectWithinS?: number | undefined;
}

export const DEFAULT_BOUNDS: BackoffBounds = { baseS: 0.5, maxS: 30 };

/** The ceiling of the wait before reconnection attempt `failures` (0 for the first retry). */
export function backoffCeiling(failures: number, bounds: BackoffBounds): number {
  let ceiling = Math.min(bounds.baseS * 2 ** Math.min(failures, 30), bounds.maxS);
  if (bounds.leaseS !== undefined && bounds.leaseS > 0) ceiling = Math.min(ceiling, bounds.leaseS / 3);
  if (bounds.reconnectWithinS !== undefined && bounds.reconnectWithinS > 0) {
    ceiling = Math.min(ceiling, bounds.reconnectWithinS);
  }
  return ceiling;
}

/** A random wait in [0, ceiling] seconds (full jitter); `random` returns a number in [0, 1). */
export function backoffDelay(failures: number, bounds: BackoffBounds, random: () => number = Math.random): number {
  return random() * backoffCeiling(failures, bounds);
}
