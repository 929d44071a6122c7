// @ag-ui/client's HttpAgent against tether's AG-UI route (#17): run, abortRun(), server stop.
// Started by tests/http/test_clients_node.py with TETHER_URL (agents "hello", "park" and "clerk",
// whose send_email call needs approval). Resume: an interrupt answered through RunAgentInput.resume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HttpAgent, buildResumeArray } from '@ag-ui/client';

const BASE = process.env.TETHER_URL;

function agentFor(name) {
  const threadId = `agui-${crypto.randomUUID()}`;
  const agent = new HttpAgent({ url: `${BASE}/agents/${name}/agui`, threadId });
  agent.addMessage({ id: crypto.randomUUID(), role: 'user', content: 'hi' });
  return { agent, threadId };
}

async function lastRun(threadId) {
  for (;;) {
    const session = await (await fetch(`${BASE}/sessions/${threadId}`)).json();
    const run = session.runs.at(-1);
    if (!['pending', 'running'].includes(run.status)) return { run, session };
    await new Promise((r) => setTimeout(r, 20));
  }
}

function assistantTexts(session) {
  return session.messages.filter((m) => m.role === 'assistant').map((m) => m.content);
}

test('a run streams the answer and finishes with success', async () => {
  const { agent, threadId } = agentFor('hello');
  const events = [];
  await agent.runAgent({ runId: 'r1' }, { onEvent: ({ event }) => events.push(event) });
  assert.equal(events[0].type, 'RUN_STARTED');
  assert.equal(events.at(-1).type, 'RUN_FINISHED');
  assert.equal(events.at(-1).outcome.type, 'success');
  assert.ok(events.every((e) => e.runId === undefined || e.runId === 'r1'));
  const { run, session } = await lastRun(threadId);
  assert.equal(run.status, 'completed');
  assert.deepEqual(assistantTexts(session), ['Hello world']);
  assert.equal(agent.messages.at(-1).content, 'Hello world'); // stored == streamed
});

test('abortRun() cancels the run (disconnect) and tether keeps the partial text', async () => {
  const { agent, threadId } = agentFor('park');
  await agent.runAgent({ runId: 'r2' }, {
    onTextMessageContentEvent: () => agent.abortRun(),
  }).catch((error) => assert.equal(error.name, 'AbortError'));
  const { run, session } = await lastRun(threadId);
  assert.equal(run.status, 'cancelled');
  assert.equal(run.reason, 'disconnect');
  assert.deepEqual(assistantTexts(session), ['Hello ']);
});

test('a server-side stop closes the message and ends with outcome cancelled', async () => {
  const { agent, threadId } = agentFor('park');
  const events = [];
  await agent.runAgent({ runId: 'r3' }, {
    onEvent: ({ event }) => events.push(event),
    onTextMessageContentEvent: async () => {
      const session = await (await fetch(`${BASE}/sessions/${threadId}`)).json();
      const stop = await fetch(`${BASE}/runs/${session.runs.at(-1).run_id}/cancel`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
      });
      assert.equal((await stop.json()).accepted, true);
    },
  });
  assert.deepEqual(events.slice(-2).map((e) => e.type), ['TEXT_MESSAGE_END', 'RUN_FINISHED']);
  assert.equal(events.at(-1).outcome.type, 'cancelled');
  const { run, session } = await lastRun(threadId);
  assert.equal(run.status, 'cancelled');
  assert.equal(run.reason, 'user');
  assert.deepEqual(assistantTexts(session), ['Hello ']);
});

async function interrupted() {
  const { agent, threadId } = agentFor('clerk');
  const events = [];
  await agent.runAgent({ runId: 'r4' }, { onEvent: ({ event }) => events.push(event) });
  assert.equal(events.at(-1).outcome.type, 'interrupt');
  assert.equal(agent.pendingInterrupts.length, 1);
  assert.match(agent.pendingInterrupts[0].toolCallId, /^call-/);
  assert.equal((await (await fetch(`${BASE}/sessions/${threadId}`)).json()).runs.at(-1).status, 'paused');
  return { agent, threadId };
}

async function resume(agent, response) {
  const [interrupt] = agent.pendingInterrupts;
  const events = [];
  await agent.runAgent(
    { runId: 'r5', resume: buildResumeArray(agent.pendingInterrupts, { [interrupt.id]: response }) },
    { onEvent: ({ event }) => events.push(event) },
  );
  return events;
}

test('resolving the interrupt resumes the paused run, which calls the tool and succeeds', async () => {
  const { agent, threadId } = await interrupted();
  const events = await resume(agent, { status: 'resolved' });
  assert.equal(events.at(-1).outcome.type, 'success');
  assert.deepEqual(agent.pendingInterrupts, []);
  const { run, session } = await lastRun(threadId);
  assert.equal(run.status, 'completed');
  assert.equal(assistantTexts(session).at(-1), 'The tool said: sent to ann@example.com');
  assert.equal(agent.messages.at(-1).content, assistantTexts(session).at(-1)); // stored == streamed
});

test('cancelling the interrupt denies the call: the run goes on without it', async () => {
  const { agent, threadId } = await interrupted();
  const events = await resume(agent, { status: 'cancelled' });
  assert.equal(events.at(-1).outcome.type, 'success');
  const { run, session } = await lastRun(threadId);
  assert.equal(run.status, 'completed');
  assert.match(assistantTexts(session).at(-1), /^The tool said: /);
  assert.doesNotMatch(assistantTexts(session).at(-1), /sent to/);
});
