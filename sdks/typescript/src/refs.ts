/**
 * References to upstream outputs inside a task's input (see docs/workflows.md).
 *
 * Anywhere in a task's JSON input, an object whose only keys are "$from" and optionally "path"
 * stands for the output of the task it names:
 *
 *     {"$from": "fetch"}                          the whole output of task "fetch"
 *     {"$from": "fetch", "path": "images.0.url"}  a part of it: object keys and list indices, by dots
 *
 * The worker replaces every reference before the handler runs, from Invocation.upstream_outputs.
 * A reference to a part that is not there fails the attempt with InputReferenceError (not retried).
 */

const FROM = '$from';
const PATH = 'path';

/** A reference that cannot be resolved: an unknown task, or a path that is not there. Not retried. */
export class InputReferenceError extends Error {
  override name = 'InputReferenceError';
  readonly retryable = false;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** [task id, path] when `value` is a reference, else undefined. */
function reference(value: unknown): [string, string] | undefined {
  if (!isObject(value) || !Object.hasOwn(value, FROM)) return undefined;
  if (!Object.keys(value).every((key) => key === FROM || key === PATH)) return undefined;
  const taskId = value[FROM];
  const path = Object.hasOwn(value, PATH) ? value[PATH] : '';
  if (typeof taskId !== 'string' || typeof path !== 'string') {
    throw new InputReferenceError(`a reference needs "${FROM}" (a task id) and an optional "${PATH}", both strings`);
  }
  return [taskId, path];
}

/** `value` with every reference replaced by the (part of the) output it names. */
export function resolveReferences(value: unknown, outputs: ReadonlyMap<string, unknown>): unknown {
  const found = reference(value);
  if (found !== undefined) {
    const [taskId, path] = found;
    if (!outputs.has(taskId)) {
      throw new InputReferenceError(`the input refers to task '${taskId}', whose output was not received`);
    }
    return walk(outputs.get(taskId), path, taskId);
  }
  if (Array.isArray(value)) return value.map((item) => resolveReferences(item, outputs));
  if (isObject(value)) {
    const resolved: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) resolved[key] = resolveReferences(item, outputs);
    return resolved;
  }
  return value;
}

function walk(value: unknown, path: string, taskId: string): unknown {
  for (const step of path.split('.').filter(Boolean)) {
    if (isObject(value) && Object.hasOwn(value, step)) {
      value = value[step];
    } else if (Array.isArray(value) && /^\d+$/.test(step) && Number(step) < value.length) {
      value = value[Number(step)];
    } else {
      throw new InputReferenceError(`the output of task '${taskId}' has nothing at '${path}' (at '${step}')`);
    }
  }
  return value;
}
