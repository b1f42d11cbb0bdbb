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

/** Messages taken for one frame: they stay the outbox's until the write succeeds (`written`) or fails (`requeue`). */
export interface Batch {
  readonly messages: WorkerMessage[];
  entries: Entry[];
}

export class Outbox {
  private entries: Entry[] = [];
  /** Taken, written to the stream, not yet confirmed written. */
  private readonly inflight = new Set<Batch>();

  /** Messages waiting to be taken. */
  get size(): number {
    return this.entries.length;
  }

  /** Messages taken and not yet confirmed written. */
  get unconfirmed(): number {
    let count = 0;
    for (const batch of this.inflight) count += batch.entries.length;
    return count;
  }

  private all(): Entry[] {
    return [...[...this.inflight].flatMap((batch) => batch.entries), ...this.entries];
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
    return this.all().filter((entry) => entry.terminal && entry.ref).map((entry) => entry.ref as AttemptRef);
  }

  /** Whether anything about the attempt is queued. */
  mentions(key: string): boolean {
    return this.all().some((entry) => entry.key === key);
  }

  /** Forget everything about an attempt the server fenced. */
  dropAttempt(key: string): void {
    this.entries = this.entries.filter((entry) => entry.key !== key);
    for (const batch of this.inflight) batch.entries = batch.entries.filter((entry) => entry.key !== key);
  }

  /** A stream ended: what was not confirmed written is queued again, and what belonged to the stream goes. */
  dropStreamBound(): void {
    for (const batch of [...this.inflight].reverse()) this.requeue(batch);
    this.entries = this.entries.filter((entry) => entry.key !== undefined);
  }

  /** Take the next frame's messages: at most `maxCount`, and below `maxBytes` unless a single one is larger. */
  take(maxCount: number, maxBytes: number): Batch {
    let bytes = 0;
    let count = 0;
    for (const entry of this.entries) {
      const size = estimate(entry.message) + 16;
      if (count >= maxCount || (count > 0 && bytes + size > maxBytes)) break;
      bytes += size;
      count += 1;
    }
    const entries = this.entries.splice(0, count);
    const batch: Batch = { messages: entries.map((entry) => entry.message), entries };
    this.inflight.add(batch);
    return batch;
  }

  /** The batch's write succeeded: its messages are gone. */
  written(batch: Batch): void {
    this.inflight.delete(batch);
  }

  /** The batch's write failed: its messages go back to the front, to be written again (on the next stream). */
  requeue(batch: Batch): void {
    if (!this.inflight.delete(batch)) return;
    this.entries.unshift(...batch.entries);
  }
}
