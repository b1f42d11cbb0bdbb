/**
 * The outbox: every message waiting for the stream, in order. Messages about attempts survive a broken
 * stream and are sent after the next Welcome; stream-bound ones (Draining) are dropped with their stream.
 * Heartbeats are never queued: the writer makes one when it writes it (see Worker.flush).
 */

import type { AttemptRef, WorkerMessage } from './wire.js';
import { refKey } from './wire.js';

interface Entry {
  readonly message: WorkerMessage;
  /** The attempt the message is about, if any. */
  readonly key?: string | undefined;
  readonly ref?: AttemptRef | undefined;
  /** A terminal report: its attempt is held (listed in heartbeats and hellos) until it is written. */
  readonly terminal: boolean;
}

/** A rough upper bound of a message's encoded size, for splitting frames below the server's limit. */
function estimate(message: WorkerMessage): number {
  let binary = 0;
  const text = JSON.stringify(message, function (this: Record<string, unknown>, key: string, value: unknown) {
    const original = this[key];
    if (original instanceof Uint8Array) {
      binary += original.length;
      return 0;
    }
    return value;
  });
  return text.length + binary;
}

export class Outbox {
  private entries: Entry[] = [];

  get size(): number {
    return this.entries.length;
  }

  put(message: WorkerMessage, ref?: AttemptRef, terminal = false): void {
    this.entries.push({ message, ref, key: ref ? refKey(ref) : undefined, terminal });
  }

  /** Put a stream-bound message first (Draining after a reconnect). */
  putFirst(message: WorkerMessage): void {
    this.entries.unshift({ message, terminal: false });
  }

  /** The attempts whose terminal report is queued, in order. */
  pendingTerminals(): AttemptRef[] {
    return this.entries.filter((entry) => entry.terminal && entry.ref).map((entry) => entry.ref as AttemptRef);
  }

  /** Whether anything about the attempt is queued. */
  mentions(key: string): boolean {
    return this.entries.some((entry) => entry.key === key);
  }

  /** Forget everything about an attempt the server fenced. */
  dropAttempt(key: string): void {
    this.entries = this.entries.filter((entry) => entry.key !== key);
  }

  /** A stream ended: what belonged to it goes. */
  dropStreamBound(): void {
    this.entries = this.entries.filter((entry) => entry.key !== undefined);
  }

  /** Take the next frame's messages: at most `maxCount`, and below `maxBytes` unless a single one is larger. */
  take(maxCount: number, maxBytes: number): WorkerMessage[] {
    let bytes = 0;
    let count = 0;
    for (const entry of this.entries) {
      const size = estimate(entry.message) + 16;
      if (count >= maxCount || (count > 0 && bytes + size > maxBytes)) break;
      bytes += size;
      count += 1;
    }
    return this.entries.splice(0, count).map((entry) => entry.message);
  }
}
