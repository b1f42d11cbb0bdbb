#!/usr/bin/env node
// @ts-check
/**
 * A taskwire client in plain Node.js: @grpc/grpc-js with the .proto files loaded at run time
 * (no generated code). It runs three small scenarios against a server with the demo handlers:
 *
 *   1. submit an `echo` task, watch it until it ends, print its result;
 *   2. submit a `sleep` task and print its progress events as they arrive;
 *   3. submit a second `sleep`, cancel it once it runs, and show it ends CANCELLED with the reason.
 *
 * Usage: node client.js [--server HOST:PORT] [--seconds S] [--timeout S] [--protos DIR]
 *                       [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
 * Exits 0 when every scenario went as expected, 1 when one did not (one line on stderr says why),
 * 2 on a usage error.
 */

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const USAGE = `usage: node client.js [--server HOST:PORT] [--seconds S] [--timeout S] [--protos DIR]
                      [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]

  --server    the taskwire server (default: $TASKWIRE_SERVER or 127.0.0.1:50051)
  --seconds   how long the watched sleep task runs (default: 2)
  --timeout   give up after this many seconds in all (default: 60)
  --protos    the directory holding taskwire/v1/*.proto (default: ../../protos from this file)
  --tls-ca    connect over TLS, trusting this CA certificate (default: $TASKWIRE_TLS_CA)
  --tls-cert  client certificate, for a server that requires mutual TLS (default: $TASKWIRE_TLS_CERT)
  --tls-key   the client certificate's key (default: $TASKWIRE_TLS_KEY)`;

const CANCEL_REASON = 'cancelled by the node example';

/** A failure the client explains in one line (exit code 1). */
class ClientError extends Error {}

/** @param {string[]} argv */
function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      server: { type: 'string', default: process.env.TASKWIRE_SERVER || '127.0.0.1:50051' },
      seconds: { type: 'string', default: '2' },
      timeout: { type: 'string', default: '60' },
      protos: { type: 'string', default: fileURLToPath(new URL('../../protos', import.meta.url)) },
      'tls-ca': { type: 'string', default: process.env.TASKWIRE_TLS_CA || '' },
      'tls-cert': { type: 'string', default: process.env.TASKWIRE_TLS_CERT || '' },
      'tls-key': { type: 'string', default: process.env.TASKWIRE_TLS_KEY || '' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  const seconds = Number(values.seconds);
  const timeout = Number(values.timeout);
  if (!(seconds >= 0) || !(timeout > 0)) {
    throw Object.assign(new Error('--seconds must be a number >= 0 and --timeout a number > 0'), {
      code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE',
    });
  }
  const tls = { ca: String(values['tls-ca']), cert: String(values['tls-cert']), key: String(values['tls-key']) };
  if (Boolean(tls.cert) !== Boolean(tls.key)) {
    throw Object.assign(new Error('--tls-cert and --tls-key go together'), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' });
  }
  return { server: String(values.server), seconds, timeout, protos: String(values.protos), tls, help: values.help };
}

/**
 * Load the TaskService client class from the .proto files.
 * keepCase keeps the proto field names (execution_id, task_runs); enums arrive as their names;
 * int64 fields (event sequences) arrive as strings so no precision is lost.
 * @param {string} protosDir
 */
function loadTaskService(protosDir) {
  const definition = protoLoader.loadSync('taskwire/v1/task_service.proto', {
    includeDirs: [protosDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = /** @type {any} */ (grpc.loadPackageDefinition(definition));
  return loaded.taskwire.v1.TaskService;
}

/** A Payload carrying JSON, as the demo handlers expect. @param {unknown} value */
function jsonPayload(value) {
  return { data: Buffer.from(JSON.stringify(value), 'utf8'), content_type: 'application/json' };
}

/** The value of a JSON Payload. @param {{data: Buffer, content_type: string} | null | undefined} payload */
function fromPayload(payload) {
  if (!payload || payload.data.length === 0) return null;
  const type = payload.content_type || 'application/json';
  if (type !== 'application/json') return `<${payload.data.length} bytes of ${type}>`;
  return JSON.parse(payload.data.toString('utf8'));
}

/** "EXECUTION_STATE_CANCELLED" -> "CANCELLED". @param {string} name @param {string} prefix */
function short(name, prefix) {
  return name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

/** The name of a gRPC status code. @param {number} code */
function statusName(code) {
  return Object.entries(grpc.status).find(([, value]) => value === code)?.[0] ?? String(code);
}

/** @param {any} error */
function describeRpcError(error) {
  if (error && typeof error.code === 'number') return `${statusName(error.code)}: ${error.details || error.message}`;
  return String(error && error.message ? error.message : error);
}

/**
 * Plaintext, or TLS when a CA (or a client certificate) is given: mutual TLS with a certificate and key.
 * @param {{ca: string, cert: string, key: string}} tls
 */
function channelCredentials(tls) {
  if (!tls.ca && !tls.cert) return grpc.credentials.createInsecure();
  /** @param {string} path */
  const read = (path) => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new ClientError(`cannot read ${path}: ${error instanceof Error ? error.message : error}`);
    }
  };
  return grpc.credentials.createSsl(
    tls.ca ? read(tls.ca) : null,
    tls.key ? read(tls.key) : null,
    tls.cert ? read(tls.cert) : null,
  );
}

class Taskwire {
  /**
   * @param {any} TaskService the client class from loadTaskService
   * @param {string} address
   * @param {number} deadlineMs the moment (Date.now() scale) after which every call gives up
   * @param {any} credentials from channelCredentials
   */
  constructor(TaskService, address, deadlineMs, credentials) {
    this.address = address;
    this.deadlineMs = deadlineMs;
    this.stub = new TaskService(address, credentials);
  }

  /** Wait until the channel is connected, or fail with a clear message. */
  connect() {
    const deadline = new Date(Math.min(this.deadlineMs, Date.now() + 10_000));
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(deadline, (/** @type {Error | undefined} */ error) => {
        if (error) reject(new ClientError(`cannot reach the taskwire server at ${this.address}: ${error.message}`));
        else resolve(undefined);
      });
    });
  }

  /**
   * One unary call, with a deadline.
   * @param {string} method
   * @param {object} request
   * @returns {Promise<any>}
   */
  call(method, request) {
    const deadline = new Date(Math.min(this.deadlineMs, Date.now() + 15_000));
    return new Promise((resolve, reject) => {
      this.stub[method](request, { deadline }, (/** @type {any} */ error, /** @type {any} */ response) => {
        if (error) reject(new ClientError(`${method} failed: ${describeRpcError(error)}`));
        else resolve(response);
      });
    });
  }

  /**
   * Submit one single-task execution.
   * @param {string} handler
   * @param {unknown} input
   * @returns {Promise<any>} the stored Execution
   */
  async submit(handler, input) {
    const response = await this.call('SubmitExecution', {
      execution: { name: `node-example-${handler}`, tasks: [{ handler, input: jsonPayload(input) }] },
      admission: 'ADMISSION_MODE_WAIT_FOR_ROOM',
    });
    return response.execution;
  }

  /** @param {string} executionId @returns {Promise<any>} the Execution with its task runs and attempts */
  async get(executionId) {
    return (await this.call('GetExecution', { execution_id: executionId })).execution;
  }

  /** @param {string} executionId @param {string} reason */
  async cancel(executionId, reason) {
    return this.call('CancelExecution', { execution_id: executionId, reason });
  }

  /**
   * Follow an execution's events until the server ends the stream (right after the event that
   * makes the execution terminal). `onEvent` sees every ExecutionEvent in sequence order.
   * @param {string} executionId
   * @param {(event: any) => void | Promise<void>} onEvent
   * @returns {Promise<void>}
   */
  watch(executionId, onEvent) {
    return new Promise((resolve, reject) => {
      const stream = this.stub.WatchExecution(
        { execution_id: executionId, after_sequence: 0 },
        { deadline: new Date(this.deadlineMs) },
      );
      let failed = false;
      /** @type {Promise<void>[]} what onEvent is still doing */
      const pending = [];
      /** @param {unknown} error */
      const fail = (error) => {
        if (failed) return;
        failed = true;
        stream.cancel();
        reject(error);
      };
      stream.on('data', (/** @type {any} */ message) => {
        pending.push(Promise.resolve().then(() => onEvent(message.event)));
        pending[pending.length - 1].catch(fail);
      });
      stream.on('error', (/** @type {any} */ error) =>
        fail(new ClientError(`WatchExecution failed: ${describeRpcError(error)}`)),
      );
      stream.on('end', () => {
        Promise.all(pending).then(() => {
          if (!failed) resolve();
        }, fail);
      });
    });
  }

  close() {
    this.stub.close();
  }
}

/** One line for an ExecutionEvent, or null for events this example does not print. @param {any} event */
function describeEvent(event) {
  if (event.progress) {
    const { fraction, message } = event.progress;
    return `progress ${String(Math.round(fraction * 100)).padStart(3)}% ${message}`;
  }
  if (event.execution_transition) {
    const t = event.execution_transition;
    const reason = t.reason_code === 'REASON_CODE_UNSPECIFIED' ? '' : ` (${short(t.reason_code, 'REASON_CODE_')})`;
    const from = short(t.from_state, 'EXECUTION_STATE_');
    const to = short(t.to_state, 'EXECUTION_STATE_');
    // A cancel of a running execution is recorded at once; the state follows when the workers stop.
    return from === to ? `state ${to}${reason}` : `state ${from} -> ${to}${reason}`;
  }
  return null;
}

/** The output of the last attempt of the first task run. @param {any} execution */
function resultOf(execution) {
  const attempts = execution.task_runs[0]?.attempts ?? [];
  return fromPayload(attempts[attempts.length - 1]?.output);
}

/** @param {any} execution @param {string} expected @param {string} label */
function expectState(execution, expected, label) {
  const state = short(execution.state, 'EXECUTION_STATE_');
  if (state !== expected) {
    const reason = `${short(execution.reason_code, 'REASON_CODE_')}: ${execution.reason_message}`;
    throw new ClientError(`${label}: expected ${expected}, got ${state} (${reason})`);
  }
}

/** 1. echo: submit, watch until SUCCESS, print the result. @param {Taskwire} tw */
async function echoScenario(tw) {
  const input = { message: 'hello from node', numbers: [1, 2, 3] };
  const submitted = await tw.submit('echo', input);
  console.log(`echo: submitted ${submitted.id}`);
  await tw.watch(submitted.id, () => {});
  const execution = await tw.get(submitted.id);
  expectState(execution, 'SUCCESS', 'echo');
  const result = resultOf(execution);
  console.log(`echo: SUCCESS result ${JSON.stringify(result)}`);
  if (JSON.stringify(result) !== JSON.stringify(input)) {
    throw new ClientError(`echo: the result ${JSON.stringify(result)} is not the input ${JSON.stringify(input)}`);
  }
}

/** 2. sleep: submit, print progress events as they come, expect SUCCESS. @param {Taskwire} tw @param {number} seconds */
async function sleepScenario(tw, seconds) {
  const submitted = await tw.submit('sleep', { seconds });
  console.log(`sleep: submitted ${submitted.id} (${seconds}s)`);
  let progressEvents = 0;
  await tw.watch(submitted.id, (event) => {
    const line = describeEvent(event);
    if (line) console.log(`sleep: ${line}`);
    if (event.progress) progressEvents += 1;
  });
  const execution = await tw.get(submitted.id);
  expectState(execution, 'SUCCESS', 'sleep');
  if (progressEvents === 0) throw new ClientError('sleep: finished without a single progress event');
  console.log(`sleep: SUCCESS after ${progressEvents} progress events, result ${JSON.stringify(resultOf(execution))}`);
}

/** 3. sleep, then cancel it once it runs; expect CANCELLED with our reason. @param {Taskwire} tw */
async function cancelScenario(tw) {
  const submitted = await tw.submit('sleep', { seconds: 300 });
  console.log(`cancel: submitted ${submitted.id} (300s)`);
  let cancelSent = false;
  await tw.watch(submitted.id, async (event) => {
    const line = describeEvent(event);
    if (line) console.log(`cancel: ${line}`);
    const running = event.execution_transition?.to_state === 'EXECUTION_STATE_RUNNING';
    if (running && !cancelSent) {
      cancelSent = true;
      console.log(`cancel: cancelling ${submitted.id}`);
      await tw.cancel(submitted.id, CANCEL_REASON);
    }
  });
  const execution = await tw.get(submitted.id);
  expectState(execution, 'CANCELLED', 'cancel');
  const code = short(execution.reason_code, 'REASON_CODE_');
  console.log(`cancel: CANCELLED reason ${code}: ${execution.reason_message}`);
  if (code !== 'CANCEL_REQUESTED' || execution.reason_message !== CANCEL_REASON) {
    throw new ClientError(`cancel: unexpected reason ${code}: ${execution.reason_message}`);
  }
}

async function main() {
  const options = parseOptions(process.argv.slice(2));
  if (options.help) {
    console.log(USAGE);
    return;
  }
  const TaskService = loadTaskService(options.protos);
  const credentials = channelCredentials(options.tls);
  const tw = new Taskwire(TaskService, options.server, Date.now() + options.timeout * 1000, credentials);
  try {
    await tw.connect();
    console.log(`connected to ${options.server}`);
    await echoScenario(tw);
    await sleepScenario(tw, options.seconds);
    await cancelScenario(tw);
    console.log('all scenarios passed');
  } finally {
    tw.close();
  }
}

main().catch((error) => {
  if (error instanceof ClientError) {
    console.error(`client.js: ${error.message}`);
    process.exitCode = 1;
  } else if (String(error?.code).startsWith('ERR_PARSE_ARGS')) {
    console.error(`client.js: ${error.message}\n${USAGE}`);
    process.exitCode = 2;
  } else {
    console.error(`client.js: unexpected error: ${error?.stack ?? error}`);
    process.exitCode = 1;
  }
});
