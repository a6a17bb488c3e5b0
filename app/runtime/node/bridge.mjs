// The Stepwise Node bridge: runs JavaScript and TypeScript steps for the Python runtime.
//
//   node bridge.mjs configs FILE...   prints the `config` of every step file as one JSON line
//   node bridge.mjs serve FILE...     speaks the JSON-lines protocol of docs/polyglot.md on stdio
//
// stdout carries the protocol only: anything else written to it (console.log, a library) goes to
// stderr, or becomes a log record of the invocation that wrote it.
import { AsyncLocalStorage } from 'node:async_hooks';
import { register } from 'node:module';
import { relative } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { format } from 'node:util';

const protocolWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

register('./hooks.mjs', import.meta.url);

const [mode, ...files] = process.argv.slice(2);
const modules = new Map(); // file -> Promise<{config, handler}>

function send(message) {
  protocolWrite(`${JSON.stringify(message)}\n`);
}

function loadStep(file) {
  let loading = modules.get(file);
  if (!loading) {
    loading = import(pathToFileURL(file).href).then((mod) => ({
      config: mod.config ?? mod.default?.config,
      handler: mod.handler ?? mod.default?.handler,
    }));
    modules.set(file, loading);
  }
  return loading;
}

// -- errors -----------------------------------------------------------------------------------

function shortPath(path) {
  const rel = relative(process.cwd(), path);
  return rel.startsWith('..') ? path : rel;
}

// The first frame of a stack that is the step's code, not this bridge or Node itself.
function whereThrown(stack) {
  for (const line of String(stack ?? '').split('\n').slice(1)) {
    const match = line.match(/^\s*at (?:.*\()?((?:file:\/\/)?\/[^():]+):(\d+):(\d+)\)?$/);
    if (!match || match[1].includes('/app/runtime/node/')) continue;
    const path = match[1].startsWith('file://') ? fileURLToPath(match[1]) : match[1];
    return `${shortPath(path)}:${match[2]}:${match[3]}`;
  }
  return undefined;
}

function describeError(err) {
  if (!(err instanceof Error)) {
    return { name: 'Error', message: typeof err === 'string' ? err : format('%o', err) };
  }
  const out = { name: err.name, message: err.message };
  const where = whereThrown(err.stack);
  if (where) out.where = where;
  // An error carrying an HTTP status and a code is answered with the error envelope.
  if (typeof err.status === 'number') out.status = err.status;
  if (typeof err.code === 'string') out.code = err.code;
  if (Array.isArray(err.details)) out.details = err.details;
  return out;
}

// -- configs ----------------------------------------------------------------------------------

function unsupported(value) {
  if (typeof value === 'function') return `a function (${value.name || 'anonymous'})`;
  if (typeof value === 'bigint') return 'a BigInt';
  if (typeof value === 'symbol') return 'a Symbol';
  if (value instanceof RegExp) return `a RegExp (${value})`;
  if (value && typeof value === 'object' && '_def' in value && typeof value.safeParse === 'function') {
    return 'a zod schema (give a JSON Schema object instead)';
  }
  return undefined;
}

// The config as JSON; values JSON cannot carry are marked, so Python can name them.
function configJson(config) {
  return JSON.parse(
    JSON.stringify(config, (key, value) => {
      const what = unsupported(value);
      return what ? { $unsupported: what } : value;
    }),
  );
}

async function readConfigs() {
  const steps = {};
  for (const file of files) {
    try {
      const step = await loadStep(file);
      steps[file] = {
        config: step.config === undefined ? null : configJson(step.config),
        handler: typeof step.handler,
      };
    } catch (err) {
      const { name, message, where } = describeError(err);
      steps[file] = { error: `${name}: ${message}${where ? ` (at ${where})` : ''}` };
    }
  }
  send({ type: 'configs', node: process.version, steps });
}

// -- serving ----------------------------------------------------------------------------------

const running = new Map(); // invocation id -> invocation
const calls = new Map(); // ctx call id -> {resolve, reject}
const owners = new WeakMap(); // promise handed to a handler -> its invocation
const current = new AsyncLocalStorage(); // the invocation whose code is running
let nextCall = 1;

class InvocationOver extends Error {
  name = 'InvocationOver';
}

function ctxCall(inv, method, args) {
  if (inv.over) {
    return Promise.reject(
      new InvocationOver(`step invocation ${inv.id} is over (${inv.over}); ctx can no longer be used`),
    );
  }
  const id = nextCall++;
  let line;
  try {
    line = JSON.stringify({ type: 'call', id, invoke: inv.id, method, args });
  } catch (err) {
    return Promise.reject(err);
  }
  const raw = new Promise((resolve, reject) => calls.set(id, { resolve, reject, inv }));
  inv.callIds.add(id);
  inv.pending.add(raw);
  raw.then(
    () => inv.pending.delete(raw),
    () => {
      inv.pending.delete(raw);
      inv.failedCalls += 1;
    },
  );
  protocolWrite(`${line}\n`);
  // The handler gets a promise of its own: if it neither awaits nor catches it and the call
  // fails, `unhandledRejection` names the invocation, which then fails (see settle()).
  const handed = raw.then((value) => value);
  owners.set(handed, inv);
  return handed;
}

process.on('unhandledRejection', (reason, promise) => {
  const inv = owners.get(promise);
  if (inv) {
    inv.unhandled ??= reason;
  } else {
    process.stderr.write(`unhandled promise rejection in a step: ${format('%o', reason)}\n`);
  }
});

function makeContext(inv, meta) {
  const call = (method, ...args) => ctxCall(inv, method, args);
  const state = {
    get: (group, key) => call('state.get', group, key),
    set: (group, key, value) => call('state.set', group, key, value ?? null),
    delete: (group, key) => call('state.delete', group, key),
    getGroup: (group) => call('state.getGroup', group),
    clear: (group) => call('state.clear', group),
    increment: (group, key, by = 1) => call('state.increment', group, key, by),
    merge: (group, key, patch) => call('state.merge', group, key, patch),
    compareAndSet: (group, key, expected, value) =>
      call('state.compareAndSet', group, key, expected ?? null, value ?? null),
    // Compare-and-set in a loop: the first compare locks the value until the step ends, so a
    // second round always succeeds; no update is ever lost.
    async update(group, key, fn) {
      for (let round = 0; round < 10; round += 1) {
        const seen = await state.get(group, key);
        const expected = structuredClone(seen ?? null); // `fn` may change `seen` in place
        const next = await fn(seen);
        const swap = await call('state.compareAndSet', group, key, expected, next ?? null);
        if (swap.ok) return swap.value;
      }
      throw new Error(`state.update(${group}, ${key}): the value kept changing`);
    },
  };
  state.get_group = state.getGroup;
  const stream = (name) => ({
    get: (groupId, id) => call('streams.get', name, groupId, id),
    set: (groupId, id, data) => call('streams.set', name, groupId, id, data ?? null),
    delete: (groupId, id) => call('streams.delete', name, groupId, id),
    getGroup: (groupId) => call('streams.getGroup', name, groupId),
    send: (groupId, event) => call('streams.send', name, groupId, event ?? null),
  });
  const streams = new Proxy(
    {},
    { get: (_target, name) => (typeof name === 'string' && name !== 'then' ? stream(name) : undefined) },
  );
  const logger = {};
  for (const level of ['debug', 'info', 'warn', 'error']) {
    logger[level] = (message, fields) => log(inv, level, message, fields);
  }
  return {
    emit: (event, data) =>
      call('emit', typeof event === 'string' ? { topic: event, data: data ?? null } : event),
    state,
    streams,
    logger,
    t: (key, params) => call('t', key, params ?? {}),
    traceId: meta.traceId,
    attempt: meta.attempt,
    step: meta.step,
    locale: meta.locale,
    user: meta.user,
    signal: inv.controller.signal,
  };
}

function plainFields(fields) {
  if (fields === undefined || fields === null) return {};
  if (fields instanceof Error) return { error: describeError(fields) };
  if (typeof fields !== 'object' || Array.isArray(fields)) return { value: fields };
  return fields;
}

function log(inv, level, message, fields) {
  if (inv.over) return;
  const record = { type: 'log', invoke: inv.id, level, message: String(message) };
  try {
    protocolWrite(`${JSON.stringify({ ...record, fields: plainFields(fields) })}\n`);
  } catch {
    protocolWrite(`${JSON.stringify({ ...record, fields: { value: format('%o', fields) } })}\n`);
  }
}

// console.* inside a handler becomes a log record of its invocation; elsewhere, stderr.
for (const [method, level] of [
  ['log', 'info'],
  ['info', 'info'],
  ['debug', 'debug'],
  ['warn', 'warn'],
  ['error', 'error'],
]) {
  const fallback = console[method].bind(console);
  console[method] = (...args) => {
    const inv = current.getStore();
    if (inv && !inv.over) log(inv, level, format(...args));
    else fallback(...args);
  };
}

// Wait for ctx calls the handler did not await; one that failed unobserved fails the step.
async function settle(inv) {
  if (inv.pending.size === 0 && inv.failedCalls === 0) return;
  while (inv.pending.size > 0) await Promise.allSettled([...inv.pending]);
  await new Promise((resolve) => setImmediate(resolve)); // let unhandledRejection run
  if (inv.unhandled !== undefined) throw inv.unhandled;
}

async function invoke(message) {
  const inv = {
    id: message.id,
    controller: new AbortController(),
    pending: new Set(),
    callIds: new Set(),
    failedCalls: 0,
    unhandled: undefined,
    over: false,
  };
  running.set(inv.id, inv);
  let reply;
  try {
    const step = await loadStep(message.file);
    if (typeof step.handler !== 'function') throw new TypeError(`${message.file} exports no handler`);
    const ctx = makeContext(inv, message.ctx ?? {});
    const value = await current.run(inv, () => step.handler(message.input ?? null, ctx));
    await settle(inv);
    reply = JSON.stringify({ type: 'result', id: inv.id, value: value ?? null });
  } catch (err) {
    reply = JSON.stringify({ type: 'error', id: inv.id, error: describeError(err) });
  } finally {
    running.delete(inv.id);
  }
  if (!inv.over) {
    inv.over = 'finished';
    protocolWrite(`${reply}\n`);
  }
}

function cancel(message) {
  const inv = running.get(message.id);
  if (inv) {
    inv.over = 'cancelled';
    running.delete(inv.id);
    const reason = new InvocationOver(`step invocation ${inv.id} was cancelled (timeout)`);
    // Calls still waiting for Python will get no answer: they fail now.
    for (const id of inv.callIds) {
      calls.get(id)?.reject(reason);
      calls.delete(id);
    }
    inv.controller.abort(reason);
  }
  send({ type: 'cancelled', id: message.id });
}

function reply(message) {
  const waiting = calls.get(message.id);
  if (!waiting) return;
  calls.delete(message.id);
  waiting.inv.callIds.delete(message.id);
  if (message.ok) {
    waiting.resolve(message.value);
  } else {
    const err = new Error(message.error?.message ?? 'ctx call failed');
    err.name = message.error?.name ?? 'Error';
    waiting.reject(err);
  }
}

async function serve() {
  // Load every step up front, so that the first call pays no import; a step that fails to
  // load fails its own invocations, not the process.
  await Promise.allSettled(files.map(loadStep));
  const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  input.on('line', (line) => {
    if (!line) return;
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      process.stderr.write(`bridge: not a JSON line: ${line.slice(0, 200)}\n`);
      return;
    }
    switch (message.type) {
      case 'reply':
        reply(message);
        break;
      case 'invoke':
        invoke(message);
        break;
      case 'cancel':
        cancel(message);
        break;
      default:
        process.stderr.write(`bridge: unknown message type ${message.type}\n`);
    }
  });
  // The runtime closed our stdin: it is stopping (or gone). Nothing is left to answer.
  input.on('close', () => process.exit(0));
  send({ type: 'ready', pid: process.pid, node: process.version });
}

if (mode === 'configs') {
  await readConfigs();
  process.exit(0);
} else if (mode === 'serve') {
  await serve();
} else {
  process.stderr.write('usage: node bridge.mjs configs|serve FILE...\n');
  process.exit(2);
}
