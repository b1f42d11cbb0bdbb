/** Timers for durations the server chooses: Node fires any delay over 2^31-1 ms at once, so these re-arm in steps. */

/** The longest delay Node's timers keep (about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

/** Call `fn` once `ms` have passed, however long that is; unref'd, like the worker's other timers. */
export function setLongTimeout(fn: () => void, ms: number, step = MAX_TIMER_MS): LongTimer {
  let timer: NodeJS.Timeout | undefined;
  let remaining = Number.isFinite(ms) ? Math.max(0, ms) : Infinity;
  const arm = (): void => {
    const now = Math.min(remaining, step);
    remaining -= now;
    timer = setTimeout(() => (remaining > 0 ? arm() : fn()), now).unref();
  };
  arm();
  return { clear: () => clearTimeout(timer) };
}

/** A delay for setInterval: at least 1 ms, at most what Node keeps. */
export function clampInterval(ms: number): number {
  return Math.min(MAX_TIMER_MS, Math.max(1, Number.isFinite(ms) ? ms : MAX_TIMER_MS));
}
