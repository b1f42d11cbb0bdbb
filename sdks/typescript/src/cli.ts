#!/usr/bin/env node
/**
 * taskwire-worker-ts --server ADDR --handlers ./handlers.js [--slots N] [--name NAME] [--protos DIR]
 *
 * The handlers module exports its registrations: `export const handlers = { name: async (ctx) => ... }`
 * (or the same record as its default export). The first SIGTERM drains (grace --drain-timeout seconds);
 * a second SIGTERM, or SIGINT, stops at once (running attempts are aborted and reported WorkerShutdown).
 * The process exits once the worker has stopped, even while a handler that ignores its signal still runs;
 * a signal after an immediate stop was asked for exits at once (code 1).
 * Exit codes: 0 after a shutdown, 1 on an error (or a forced exit), 2 on a usage error.
 */

import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import type { Registrations } from './context.js';
import { Worker } from './worker.js';

const USAGE = `usage: taskwire-worker-ts --server HOST:PORT --handlers MODULE [--slots N] [--name NAME]
                          [--protos DIR] [--drain-timeout S]`;

class UsageError extends Error {}

async function loadHandlers(module: string): Promise<Registrations> {
  const loaded = (await import(pathToFileURL(resolve(module)).href)) as { handlers?: Registrations; default?: Registrations };
  const handlers = loaded.handlers ?? loaded.default;
  if (!handlers || typeof handlers !== 'object' || Object.keys(handlers).length === 0) {
    throw new UsageError(`${module} exports no handlers (export const handlers = { name: async (ctx) => ... })`);
  }
  for (const [name, handler] of Object.entries(handlers)) {
    if (typeof handler !== 'function') throw new UsageError(`${module}: handler '${name}' is not a function`);
  }
  return handlers;
}

async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        server: { type: 'string', default: process.env.TASKWIRE_SERVER ?? '127.0.0.1:50051' },
        handlers: { type: 'string' },
        slots: { type: 'string', default: '4' },
        name: { type: 'string' },
        protos: { type: 'string' },
        'drain-timeout': { type: 'string', default: '30' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`taskwire-worker-ts: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const slots = Number(values.slots);
  const drainS = Number(values['drain-timeout']);
  if (!values.handlers || !Number.isInteger(slots) || slots < 1 || !(drainS >= 0)) {
    process.stderr.write(`taskwire-worker-ts: --handlers is required, --slots must be an integer >= 1\n${USAGE}\n`);
    return 2;
  }
  let handlers: Registrations;
  try {
    handlers = await loadHandlers(values.handlers);
  } catch (error) {
    process.stderr.write(`taskwire-worker-ts: ${(error as Error).message}\n`);
    return 2;
  }
  const worker = new Worker({
    server: values.server,
    slots,
    name: values.name,
    protosDir: values.protos,
    drainTimeoutMs: drainS * 1000,
  });
  for (const [name, handler] of Object.entries(handlers)) worker.handle(name, handler);
  let terms = 0;
  let stoppingNow = false;
  const stopNow = (signal: string): void => {
    if (stoppingNow) {
      // Asked again while stopping at once: stop waiting for handlers that ignore their signal.
      process.stderr.write(`taskwire-worker-ts: ${signal} again; exiting at once\n`);
      process.exit(1);
    }
    stoppingNow = true;
    void worker.shutdown(0, signal);
  };
  process.on('SIGTERM', () => {
    terms += 1;
    if (terms === 1 && !stoppingNow) void worker.shutdown(drainS * 1000, 'SIGTERM');
    else stopNow('SIGTERM');
  });
  process.on('SIGINT', () => stopNow('SIGINT'));
  await worker.run();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    // Exit now: a handler that ignored its abort signal may keep timers (and so the process) alive.
    process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(`taskwire-worker-ts: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
