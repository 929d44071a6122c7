// The AI SDK's own client (DefaultChatTransport + readUIMessageStream) against tether (#17).
// Started by tests/http/test_clients_node.py with TETHER_URL; agents: "hello" answers
// "Hello world", "park" says "Hello " and then waits until it is stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const BASE = process.env.TETHER_URL;

function transport(agent, body = {}) {
  return new DefaultChatTransport({ api: `${BASE}/agents/${agent}/chat`, body });
}

function userMessage(text) {
  return { id: crypto.randomUUID(), role: 'user', parts: [{ type: 'text', text }] };
}

function textOf(message) {
  return message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
}

async function session(chatId) {
  return (await fetch(`${BASE}/sessions/${chatId}`)).json();
}

async function runOf(runId) {
  for (;;) {
    const run = await (await fetch(`${BASE}/runs/${runId}`)).json();
    if (!['pending', 'running'].includes(run.status)) return run;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function lastMessage(stream, until = () => false) {
  let last;
  for await (const message of readUIMessageStream({ stream })) {
    last = message;
    if (until(message)) break;
  }
  return last;
}

test('a turn streams the answer, and tether stores what was streamed', async () => {
  const chatId = `turn-${crypto.randomUUID()}`;
  const stream = await transport('hello').sendMessages({
    chatId, messages: [userMessage('hi')], trigger: 'submit-message', abortSignal: undefined,
  });
  const message = await lastMessage(stream);
  assert.equal(textOf(message), 'Hello world');
  const stored = await session(chatId);
  const run = await runOf(message.id);
  assert.equal(run.status, 'completed');
  assert.deepEqual(stored.messages.filter((m) => m.role === 'assistant').map((m) => m.content), ['Hello world']);
});

test('aborting the request cancels the run (disconnect) and keeps the partial text', async () => {
  const chatId = `abort-${crypto.randomUUID()}`;
  const controller = new AbortController();
  const stream = await transport('park').sendMessages({
    chatId, messages: [userMessage('hi')], trigger: 'submit-message', abortSignal: controller.signal,
  });
  let message;
  try {
    for await (const m of readUIMessageStream({ stream })) {
      message = m;
      if (textOf(m) === 'Hello ') controller.abort();
    }
  } catch (error) {
    assert.equal(error.name, 'AbortError'); // the SDK may end quietly or with an AbortError
  }
  assert.equal(textOf(message), 'Hello ');
  const run = await runOf(message.id);
  assert.equal(run.status, 'cancelled');
  assert.equal(run.reason, 'disconnect');
  const stored = await session(chatId);
  assert.deepEqual(stored.messages.filter((m) => m.role === 'assistant').map((m) => m.content), ['Hello ']);
});

test('a server-side stop ends the stream with an abort, and a resumable chat resumes first', async () => {
  const chatId = `stop-${crypto.randomUUID()}`;
  const t = transport('park', { resumable: true });
  const controller = new AbortController();
  const stream = await t.sendMessages({
    chatId, messages: [userMessage('hi')], trigger: 'submit-message', abortSignal: controller.signal,
  });
  const first = await lastMessage(stream, (m) => textOf(m) === 'Hello ');
  controller.abort(); // the page goes away: a resumable chat's run goes on
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await (await fetch(`${BASE}/runs/${first.id}`)).json()).status, 'running');
  const resumed = await t.reconnectToStream({ chatId });
  assert.ok(resumed, 'the active run streams');
  const chunks = [];
  const reader = resumed.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (value.type === 'text-delta') {
      const stop = await fetch(`${BASE}/agents/park/chat/${chatId}/stop`, { method: 'POST' });
      assert.equal((await stop.json()).accepted, true);
    }
  }
  const types = chunks.map((c) => c.type);
  assert.deepEqual(types.slice(-2), ['text-end', 'abort']);
  assert.ok(!types.includes('finish'));
  assert.equal(chunks.at(-1).reason, 'user');
  const run = await runOf(first.id);
  assert.equal(run.status, 'cancelled');
  assert.equal(run.reason, 'user');
  assert.equal(await t.reconnectToStream({ chatId }), null); // 204: nothing streams
});
