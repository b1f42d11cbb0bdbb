/**
 * The worker: one Connect stream at a time, per docs/worker-protocol.md. It says hello with what it
 * holds, runs invocations within its slots, heartbeats, answers cancels, reconnects with backoff when
 * the stream breaks (keeping its reports queued), and drains on request.
 */

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import * as grpc from '@grpc/grpc-js';

import { Attempt, failed, type Stop } from './attempt.js';
import { backoffDelay, DEFAULT_BOUNDS } from './backoff.js';
import { abortReasonOf, type Handler } from './context.js';
import { Outbox } from './outbox.js';
import { clampInterval } from './timers.js';
import type { AttemptRef, Cancel, ConnectCall, GoingAway, Invocation, ServerMessage, Welcome, WorkerMessage, WorkerServiceClient } from './wire.js';
import { DEFAULT_PROTOS, durationMs, loadWorkerService, refKey, safeString } from './wire.js';

export const VERSION = '0.1.0';
const FRAME_MESSAGES = 256;
const DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024;

export interface WorkerOptions {
  /** host:port of the taskwire server. */
  server: string;
  /** Attempts run at once (at least 1). */
  slots?: number;
  /** Shown to operators; default hostname/pid. */
  name?: string;
  labels?: Record<string, string>;
  /** Where taskwire/v1/*.proto are; default the repository's protos/. */
  protosDir?: string;
  credentials?: grpc.ChannelCredentials;
  /** Grace of a shutdown the worker starts itself (and of a Drain without one), ms. Default 30 s. */
  drainTimeoutMs?: number;
  /** How long a handler may take to stop once aborted before the worker stops waiting for it, ms. Default 2 s. */
  stopGraceMs?: number;
  /** Give up on a stream whose Welcome does not come within this, ms. Default 30 s. */
  welcomeTimeoutMs?: number;
  /** Where the worker says what it does; default stderr. */
  log?: (line: string) => void;
}

export class Worker {
  readonly instanceId = randomUUID();
  readonly name: string;
  readonly slots: number;
  private readonly handlers = new Map<string, Handler>();
  private readonly attempts = new Map<string, Attempt>();
  /** Fenced attempts still stopping: a new copy of the same attempt waits for them. */
  private readonly fenced = new Map<string, { taskRunId: string; stopped: Promise<void> }>();
  private readonly outbox = new Outbox();
  private client: WorkerServiceClient | undefined;
  private call: ConnectCall | undefined;
  private welcomed = false;
  /** This worker half-closed the stream (GoingAway, shutdown): nothing more may be written to it. */
  private halfClosed = false;
  private hello: AttemptRef[] = [];
  private invocationsReceived = 0n;
  private heartbeatDue = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  private heartbeatMs = 5000;
  private leaseMs: number | undefined;
  private reconnectWithinMs: number | undefined;
  private maxMessageBytes = DEFAULT_MESSAGE_BYTES;
  maxPayloadBytes = 0;
  private draining = false;
  private drainReason = '';
  private shutdownAt = Infinity;
  private closed = false;
  /** Who to wake: the reconnect backoff (only a shutdown may cut it short), and a shutdown's waits. */
  private readonly wakes: { backoff?: (() => void) | undefined; drain?: (() => void) | undefined } = {};
  private readonly options: Required<Pick<WorkerOptions, 'drainTimeoutMs' | 'stopGraceMs' | 'welcomeTimeoutMs'>> & WorkerOptions;

  constructor(options: WorkerOptions) {
    this.options = { drainTimeoutMs: 30_000, stopGraceMs: 2000, welcomeTimeoutMs: 30_000, ...options };
    this.name = options.name ?? `${hostname()}/${process.pid}`;
    this.slots = options.slots ?? 1;
    if (!Number.isInteger(this.slots) || this.slots < 1) throw new RangeError('slots must be an integer >= 1');
  }

  /** Serve `name` with `handler`. */
  handle(name: string, handler: Handler): this {
    if (!name) throw new RangeError('a handler needs a name');
    this.handlers.set(name, handler);
    return this;
  }

  private say(line: string): void {
    (this.options.log ?? ((text: string) => process.stderr.write(`${text}\n`)))(`taskwire-worker-ts ${this.name}: ${line}`);
  }

  /** Connect, serve, reconnect, until a shutdown has finished. */
  async run(): Promise<void> {
    if (this.handlers.size === 0) throw new Error('no handlers registered');
    const WorkerService = loadWorkerService(this.options.protosDir ?? DEFAULT_PROTOS);
    this.client = new WorkerService(this.options.server, this.options.credentials ?? grpc.credentials.createInsecure(), {
      'grpc.keepalive_time_ms': 5000,
      'grpc.keepalive_timeout_ms': 5000,
      'grpc.http2.max_pings_without_data': 0,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    });
    let failures = 0;
    try {
      while (!this.closed) {
        const started = Date.now();
        const welcomed = await this.session();
        if (this.closed) break;
        if (welcomed && Date.now() - started >= 1000) failures = 0;
        const delay = backoffDelay(failures++, {
          ...DEFAULT_BOUNDS,
          leaseS: this.leaseMs === undefined ? undefined : this.leaseMs / 1000,
          reconnectWithinS: this.reconnectWithinMs === undefined ? undefined : this.reconnectWithinMs / 1000,
        });
        await this.sleep(delay * 1000, 'backoff');
      }
    } finally {
      this.client.close();
    }
  }

  /**
   * Sleep up to `ms`, unless woken through `slot`: the reconnect backoff is cut short only by a shutdown
   * (closing), a shutdown's waits whenever an attempt ends or the outbox is written.
   */
  private sleep(ms: number, slot: 'backoff' | 'drain'): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        if (this.wakes[slot] === wake) this.wakes[slot] = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakes[slot] = wake;
    });
  }

  /** Attempts the server must consider held: running (also stopping, or waiting behind a fenced copy), and ended unreported. */
  private held(): AttemptRef[] {
    const refs = [...this.attempts.values()].map((attempt) => attempt.ref);
    const seen = new Set(refs.map(refKey));
    for (const ref of this.outbox.pendingTerminals()) {
      if (!seen.has(refKey(ref))) refs.push(ref);
    }
    return refs;
  }

  /** One stream, from hello to its end. Resolves with whether a Welcome arrived. */
  private session(): Promise<boolean> {
    const call = (this.client as WorkerServiceClient).Connect();
    this.call = call;
    this.welcomed = false;
    this.halfClosed = false;
    this.invocationsReceived = 0n;
    this.hello = this.held();
    call.write({
      messages: [
        {
          hello: {
            name: this.name,
            instance_id: this.instanceId,
            handlers: [...this.handlers.keys()],
            slots: this.slots,
            labels: this.options.labels ?? {},
            agent_version: `taskwire-worker-ts/${VERSION} node/${process.versions.node}`,
            running_attempts: this.hello,
          },
        },
      ],
    });
    const welcomeTimer = setTimeout(() => {
      this.say('no Welcome in time; reconnecting');
      call.cancel();
    }, this.options.welcomeTimeoutMs);
    return new Promise((resolve) => {
      let ended = false;
      const end = (why: string): void => {
        if (ended) return;
        ended = true;
        clearTimeout(welcomeTimer);
        clearInterval(this.heartbeatTimer);
        const welcomed = this.welcomed;
        this.call = undefined;
        this.welcomed = false;
        this.halfClosed = false;
        this.outbox.dropStreamBound();
        if (!this.closed) this.say(`stream ended (${why}); ${this.attempts.size} attempt(s) keep running`);
        resolve(welcomed);
      };
      call.on('data', (frame: { messages: ServerMessage[] }) => {
        for (const message of frame.messages) {
          if (message.kind === 'welcome' && !this.welcomed) {
            clearTimeout(welcomeTimer);
            this.onWelcome(message.welcome as Welcome);
          } else if (this.welcomed) {
            this.onMessage(message);
          }
        }
        this.scheduleFlush();
      });
      call.on('error', (error: grpc.ServiceError) => end(`${grpc.status[error.code] ?? error.code}: ${error.details}`));
      call.on('status', (status: grpc.StatusObject) => end(grpc.status[status.code] ?? String(status.code)));
      call.on('end', () => end('closed by the server'));
    });
  }

  private onWelcome(welcome: Welcome): void {
    this.welcomed = true;
    this.heartbeatMs = durationMs(welcome.heartbeat_interval) || 5000;
    this.leaseMs = durationMs(welcome.lease_timeout) || undefined;
    this.maxPayloadBytes = Number(welcome.max_payload_bytes) || 0;
    this.maxMessageBytes = Number(welcome.max_message_bytes) || DEFAULT_MESSAGE_BYTES;
    const adopted = new Set(welcome.adopted_attempts.map(refKey));
    const rejected = welcome.rejected_attempts.map(refKey);
    for (const ref of this.hello) {
      const key = refKey(ref);
      if (!adopted.has(key) && !rejected.includes(key)) {
        this.say(`the Welcome neither adopted nor rejected ${key}: treating it as rejected`);
        rejected.push(key);
      }
    }
    for (const key of rejected) this.fence(key, 'rejected at reconnect');
    this.say(`connected (session ${welcome.session_id}; adopted ${adopted.size}, rejected ${rejected.length})`);
    if (this.draining) this.outbox.putFirst({ draining: { reason: this.drainReason } });
    this.heartbeatTimer = setInterval(() => {
      this.heartbeatDue = true;
      this.scheduleFlush();
    }, clampInterval(this.heartbeatMs));
    this.scheduleFlush();
  }

  private onMessage(message: ServerMessage): void {
    switch (message.kind) {
      case 'invocation':
        this.onInvocation(message.invocation as Invocation);
        break;
      case 'cancel':
        this.onCancel(message.cancel as Cancel);
        break;
      case 'drain': {
        const drain = message.drain;
        this.say(`the server asked this worker to drain (${drain?.reason || 'no reason given'})`);
        void this.shutdown(durationMs(drain?.grace) ?? this.options.drainTimeoutMs, drain?.reason || 'the server asked this worker to drain');
        break;
      }
      case 'going_away':
        this.onGoingAway(message.going_away as GoingAway);
        break;
      default:
        this.say(`ignoring a server message this worker does not understand (${String(message.kind)})`);
    }
  }

  private onInvocation(invocation: Invocation): void {
    const ref = invocation.ref;
    const key = refKey(ref);
    const refuse = (type: string, message: string): void => {
      this.outbox.put(failed(ref, { type, message, retryable: true, traceback: '' }), ref, true);
    };
    const handler = this.handlers.get(invocation.handler);
    const running = this.attempts.get(key);
    const busy = this.attempts.size + [...this.fenced.keys()].filter((fencedKey) => fencedKey !== key && !this.attempts.has(fencedKey)).length;
    if (running && !running.fenced) {
      // The same attempt again while it runs: the running copy reports.
    } else if (this.draining) {
      refuse('WorkerDraining', 'the worker is shutting down and takes no new work');
    } else if (!handler) {
      refuse('HandlerNotFound', `this worker has no handler '${invocation.handler}'`);
    } else if (
      [...this.attempts.values()].some((other) => other.ref.task_run_id === ref.task_run_id) ||
      [...this.fenced].some(([fencedKey, copy]) => fencedKey !== key && copy.taskRunId === ref.task_run_id)
    ) {
      // Another attempt of the task run runs here, or is still stopping after it was fenced: never two at once.
      refuse('AttemptAlreadyRunning', `another attempt of task run ${ref.task_run_id} is still running here`);
    } else if (busy >= this.slots) {
      refuse('SlotsExhausted', `all ${this.slots} slot(s) are busy`);
    } else {
      this.start(invocation, handler);
    }
    const dispatch = BigInt(invocation.dispatch || '0');
    if (dispatch > this.invocationsReceived) this.invocationsReceived = dispatch;
  }

  private start(invocation: Invocation, handler: Handler): void {
    const attempt = new Attempt(invocation, this, this.options.stopGraceMs);
    this.attempts.set(attempt.key, attempt);
    const timeoutMs = durationMs(invocation.timeout);
    if (timeoutMs !== undefined && timeoutMs > 0) attempt.limit(timeoutMs);
    attempt.done = attempt.run(handler, this.fenced.get(attempt.key)?.stopped).then(
      (report) => {
        if (this.attempts.get(attempt.key) === attempt) this.attempts.delete(attempt.key);
        if (report && !attempt.fenced) this.outbox.put(report, attempt.ref, true);
        this.scheduleFlush();
        this.wakes.drain?.();
      },
      (error: unknown) => {
        // Never leave the attempt holding its slot: forget it and report it failed.
        attempt.clearTimers();
        this.say(`internal error running ${attempt.key}: ${safeString(error)}`);
        if (this.attempts.get(attempt.key) === attempt) this.attempts.delete(attempt.key);
        if (!attempt.fenced) {
          const message = `the worker could not report the attempt: ${safeString(error)}`;
          this.outbox.put(failed(attempt.ref, { type: 'InternalError', message, retryable: true, traceback: '' }), attempt.ref, true);
        }
        this.scheduleFlush();
        this.wakes.drain?.();
      },
    );
  }

  /** AttemptHost: queue a message about a running attempt. */
  send(attempt: Attempt, message: WorkerMessage): void {
    if (attempt.fenced) return;
    this.outbox.put(message, attempt.ref);
    this.scheduleFlush();
  }

  private onCancel(cancel: Cancel): void {
    const key = refKey(cancel.ref);
    const reason = abortReasonOf(cancel.reason);
    if (reason === 'LEASE_LOST') {
      this.fence(key, cancel.message || 'lease lost');
      return;
    }
    const attempt = this.attempts.get(key);
    if (attempt) {
      attempt.requestStop({ kind: 'cancel', reason, detail: cancel.message });
    } else if (!this.outbox.mentions(key) && !this.fenced.has(key)) {
      // Unknown here (already reported, or never received): it is certainly not running.
      this.outbox.put({ cancel_acknowledged: { ref: cancel.ref } });
    }
  }

  /** The server no longer considers the attempt current: abort it, and say nothing more about it. */
  private fence(key: string, detail: string): void {
    this.outbox.dropAttempt(key);
    const attempt = this.attempts.get(key);
    if (!attempt) return;
    attempt.fenced = true;
    this.attempts.delete(key);
    const stopped = attempt.done.then(() => {
      if (this.fenced.get(key)?.stopped === stopped) this.fenced.delete(key);
    });
    this.fenced.set(key, { taskRunId: attempt.ref.task_run_id, stopped });
    attempt.requestStop({ kind: 'lease', detail });
  }

  private onGoingAway(goingAway: GoingAway): void {
    this.reconnectWithinMs = durationMs(goingAway.reconnect_within) || undefined;
    this.say(`the server is going away (${goingAway.reason || 'no reason given'}); ${this.attempts.size} attempt(s) keep running`);
    this.flush();
    this.halfClose();
  }

  /** End this side of the stream; what ends later waits in the outbox for the next stream. */
  private halfClose(): void {
    if (!this.call || this.halfClosed) return;
    this.halfClosed = true;
    this.call.end();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Write whatever is ready, a heartbeat first when one is due (made now, so its list is exact). */
  private flush(): void {
    const call = this.call;
    if (!call || !this.welcomed || this.halfClosed) return;
    while (this.heartbeatDue || this.outbox.size > 0) {
      const messages: WorkerMessage[] = [];
      if (this.heartbeatDue) {
        this.heartbeatDue = false;
        messages.push({ heartbeat: { running_attempts: this.held(), invocations_received: this.invocationsReceived.toString() } });
      }
      const batch = this.outbox.take(FRAME_MESSAGES - messages.length, this.maxMessageBytes / 2);
      messages.push(...batch.messages);
      const failedWrite = (error: unknown): void => {
        // Written nowhere: the messages go back, and the stream is given up on (its successor gets them).
        this.outbox.requeue(batch);
        if (this.call === call) {
          this.say(`a write failed (${safeString(error)}); reconnecting`);
          call.cancel();
        }
      };
      try {
        call.write({ messages }, (error?: Error | null) => (error ? failedWrite(error) : this.outbox.written(batch)));
      } catch (error) {
        failedWrite(error);
        break;
      }
    }
    this.wakes.drain?.();
  }

  /** Whether nothing runs and nothing waits to be written. */
  private get idle(): boolean {
    return this.attempts.size === 0 && this.outbox.size === 0 && this.outbox.unconfirmed === 0;
  }

  /**
   * Stop: take no new work, let running attempts finish within `graceMs`, abort the rest (SHUTDOWN), flush,
   * hang up. A shutdown under way can only be shortened.
   */
  async shutdown(graceMs = this.options.drainTimeoutMs, reason = 'the worker is shutting down'): Promise<void> {
    const deadline = Date.now() + graceMs;
    if (deadline >= this.shutdownAt) return;
    const first = !this.draining;
    this.shutdownAt = deadline;
    this.draining = true;
    this.drainReason = reason;
    if (first) {
      this.say(`draining: ${reason}`);
      if (this.welcomed) this.outbox.putFirst({ draining: { reason } });
      this.scheduleFlush();
    }
    // Abort early enough for the handlers to stop and their reports to reach the server before the grace ends.
    const abortAt = deadline - Math.min(graceMs / 2, this.options.stopGraceMs + 1000);
    while (this.attempts.size > 0 && Date.now() < abortAt && deadline === this.shutdownAt) {
      await this.sleep(Math.min(200, Math.max(1, abortAt - Date.now())), 'drain');
    }
    if (deadline !== this.shutdownAt) return; // a shorter shutdown took over
    const stop: Stop = { kind: 'shutdown' };
    for (const attempt of this.attempts.values()) attempt.requestStop(stop);
    await Promise.all([...this.attempts.values()].map((attempt) => attempt.done));
    while (!this.idle && Date.now() < deadline && deadline === this.shutdownAt) {
      this.flush();
      if (this.outbox.size === 0 && this.outbox.unconfirmed === 0) break;
      await this.sleep(Math.min(200, Math.max(1, deadline - Date.now())), 'drain');
    }
    if (deadline !== this.shutdownAt) return;
    this.flush(); // whatever is ready goes before the half-close, even when the grace is over
    this.closed = true;
    clearInterval(this.heartbeatTimer);
    const call = this.call;
    this.wakes.drain?.();
    this.wakes.backoff?.();
    if (call && !this.welcomed) {
      call.cancel();
    } else if (call) {
      this.halfClose();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5000).unref();
        call.on('status', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.say('stopped');
  }
}
