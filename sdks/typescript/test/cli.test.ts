import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { FakeServer } from './fake-server.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli.js');

/** A handlers module whose handler ignores its abort signal and keeps a timer alive. */
function stubbornHandlers(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'taskwire-cli-')), 'handlers.mjs');
  writeFileSync(path, "export const handlers = { stubborn: () => new Promise(() => { setInterval(() => undefined, 1000); }) };\n");
  return path;
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

async function started(server: FakeServer, child: ChildProcess): Promise<void> {
  const s0 = await server.stream(0);
  s0.welcome();
  s0.invoke({ task_run_id: 'c1', attempt: 1 }, 'stubborn', null);
  await s0.next('started');
  void child;
}

test('the CLI exits once the worker has stopped, though a handler ignoring its signal keeps timers alive', async () => {
  const server = await new FakeServer().start();
  const child = spawn(process.execPath, [CLI, '--server', server.address, '--handlers', stubbornHandlers(), '--slots', '1'], { stdio: 'ignore' });
  try {
    const exit = exited(child);
    await started(server, child);
    const t0 = Date.now();
    child.kill('SIGINT');
    const code = await Promise.race([exit, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 8000))]);
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 >= 1500, 'it waited the stop grace for the handler');
  } finally {
    child.kill('SIGKILL');
    server.stop();
  }
});

test('the CLI: a signal after an immediate stop was asked for exits at once', async () => {
  const server = await new FakeServer().start();
  const child = spawn(process.execPath, [CLI, '--server', server.address, '--handlers', stubbornHandlers(), '--slots', '1'], { stdio: 'ignore' });
  try {
    const exit = exited(child);
    await started(server, child);
    const t0 = Date.now();
    child.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 200));
    child.kill('SIGTERM');
    const code = await Promise.race([exit, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 8000))]);
    assert.equal(code, 1);
    assert.ok(Date.now() - t0 < 1500, `exited after ${Date.now() - t0} ms, not at once`);
  } finally {
    child.kill('SIGKILL');
    server.stop();
  }
});
