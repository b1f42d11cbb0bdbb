export { Worker, VERSION, type WorkerOptions } from './worker.js';
export { AttemptAborted, type AbortReason, type Handler, type Level, type Registrations, type TaskContext } from './context.js';
export { InputReferenceError, resolveReferences } from './refs.js';
export { InputDecodingError, OutputEncodingError, type RawOutput } from './wire.js';
