// The AI SDK's own chat (AbstractChat, what useChat wraps) answering a tool approval (#17).
// Started by tests/http/test_clients_node.py with TETHER_URL; agent "clerk" calls send_email,
// which needs approval, then says what the tool answered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
} from 'ai';

const BASE = process.env.TETHER_URL;

// The smallest ChatState: useChat keeps the same in React state.
class MemoryChat extends AbstractChat {
  constructor(options) {
    const state = {
      status: 'ready',
      error: undefined,
      messages: [],
      pushMessage: (m) => { state.messages = [...state.messages, m]; },
      popMessage: () => { state.messages = state.messages.slice(0, -1); },
      replaceMessage: (i, m) => { state.messages = state.messages.map((x, j) => (j === i ? m : x)); },
      snapshot: (thing) => structuredClone(thing),
    };
    super({ ...options, state });
  }
}

// A chat whose every request resolves the promise nextFinish() returned before it.
function clerkChat(chatId) {
  const waiting = [];
  const chat = new MemoryChat({
    id: chatId,
    transport: new DefaultChatTransport({ api: `${BASE}/agents/clerk/chat` }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    onFinish: (result) => waiting.shift()?.(result),
  });
  const nextFinish = () => new Promise((resolve) => waiting.push(resolve));
  return { chat, nextFinish };
}

function toolPart(message) {
  return message.parts.find((p) => p.type === 'tool-send_email');
}

function textOf(message) {
  return message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
}

async function run(runId) {
  return (await fetch(`${BASE}/runs/${runId}`)).json();
}

async function pausedChat() {
  const chatId = `approve-${crypto.randomUUID()}`;
  const { chat, nextFinish } = clerkChat(chatId);
  const paused = nextFinish();
  await chat.sendMessage({ text: 'mail ann' });
  const first = await paused;
  assert.equal(first.finishReason, 'tool-calls');
  const part = toolPart(chat.lastMessage);
  assert.equal(part.state, 'approval-requested');
  assert.equal((await run(chat.lastMessage.id)).status, 'paused');
  return { chat, nextFinish, chatId, part };
}

test('approving in the chat resumes the paused run, which sends and finishes', async () => {
  const { chat, nextFinish, chatId, part } = await pausedChat();
  const resumed = nextFinish();
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: true });
  const { message, isAbort, isError } = await resumed;
  assert.ok(!isAbort && !isError);
  assert.equal(chat.messages.length, 2, 'the answer continues the same assistant message');
  assert.equal(toolPart(message).state, 'output-available');
  assert.equal(toolPart(message).output, 'sent to ann@example.com');
  assert.equal(textOf(message), 'The tool said: sent to ann@example.com');
  const stored = await run(message.id);
  assert.equal(stored.status, 'completed');
  const session = await (await fetch(`${BASE}/sessions/${chatId}`)).json();
  const answers = session.messages.filter((m) => m.role === 'assistant').map((m) => m.content);
  assert.ok(answers.includes(textOf(message)), 'stored == streamed');
});

test('denying in the chat resumes the run with the denial, and the call is not made', async () => {
  const { chat, nextFinish, part } = await pausedChat();
  const resumed = nextFinish();
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: false, reason: 'not now' });
  const { message } = await resumed;
  assert.equal(toolPart(message).state, 'output-denied');
  assert.match(textOf(message), /^The tool said: .*not now/);
  const stored = await run(message.id);
  assert.equal(stored.status, 'completed');
});
