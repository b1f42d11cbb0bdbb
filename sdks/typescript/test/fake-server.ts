/** A scripted WorkerService for the worker's tests: each Connect stream is handed to the test to drive. */

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { DEFAULT_PROTOS, toDuration, type AttemptRef } from '../src/wire.js';

// Messages as the server reads them: loose records keyed by field name.
export type Message = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** One Connect stream seen from the server: what the worker sent, and a way to answer. */
export class Stream {
  readonly received: Message[] = [];
  ended = false;
  private waiters: (() => void)[] = [];

  constructor(
    readonly call: grpc.ServerDuplexStream<Message, Message>,
    endDelayMs = 0,
  ) {
    call.on('data', (frame: Message) => {
      for (const message of frame.messages as Message[]) this.received.push(message);
      this.notify();
    });
    call.on('end', () => {
      // The worker half-closed: the server ends the stream, as taskwire's does.
      this.ended = true;
      if (endDelayMs > 0) setTimeout(() => call.end(), endDelayMs);
      else call.end();
      this.notify();
    });
    call.on('error', () => undefined);
  }

  private notify(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  send(...messages: Message[]): void {
    this.call.write({ messages });
  }

  /** Wait until `predicate` holds on what was received (or the worker half-closed, for `halfClosed`). */
  async until<T>(predicate: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = predicate();
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; received ${JSON.stringify(this.kinds())}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  /** The index-th message (from 0) of `kind` the worker sent on this stream. */
  next(kind: string, index = 0): Promise<Message> {
    return this.until(() => this.received.filter((m) => m.kind === kind)[index]?.[kind] as Message | undefined, `${kind} #${index}`);
  }

  /** Every message except heartbeats, as kind names. */
  kinds(): string[] {
    return this.received.map((m) => m.kind as string).filter((kind) => kind !== 'heartbeat');
  }

  welcome(fields: Message = {}): void {
    this.send({
      welcome: {
        session_id: 's',
        heartbeat_interval: toDuration(100),
        lease_timeout: toDuration(3000),
        ...fields,
      },
    });
  }

  invoke(ref: AttemptRef, handler: string, input: unknown, extra: Message = {}): void {
    this.send({
      invocation: {
        ref,
        execution_id: 'e',
        task_id: 't',
        handler,
        input: { data: Buffer.from(JSON.stringify(input)), content_type: 'application/json' },
        dispatch: String(extra.dispatch ?? 1),
        ...extra,
      },
    });
  }
}

export class FakeServer {
  private readonly server = new grpc.Server();
  private readonly streams: Stream[] = [];
  private waiters: (() => void)[] = [];
  address = '';
  /** How long the server keeps a stream open after the worker half-closed it. */
  endDelayMs = 0;

  async start(): Promise<this> {
    const definition = protoLoader.loadSync('taskwire/v1/worker_service.proto', {
      includeDirs: [DEFAULT_PROTOS],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      taskwire: { v1: { WorkerService: { service: grpc.ServiceDefinition } } };
    };
    this.server.addService(loaded.taskwire.v1.WorkerService.service, {
      Connect: (call: grpc.ServerDuplexStream<Message, Message>) => {
        this.streams.push(new Stream(call, this.endDelayMs));
        for (const waiter of this.waiters.splice(0)) waiter();
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  /** The index-th stream (from 0), once its hello arrived. */
  async stream(index: number): Promise<Stream> {
    const deadline = Date.now() + 10_000;
    while (this.streams.length <= index) {
      if (Date.now() > deadline) throw new Error(`no stream #${index}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    const stream = this.streams[index] as Stream;
    await stream.next('hello');
    return stream;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}
