/**
 * Issue #18 in the chat state: a failed send keeps the message, a stale tab follows its session,
 * regenerate / edit-and-resend, the context form, and the sidebar across agents.
 */

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { effectScope } from 'vue'
import { TetherClient } from '../api/client'
import type { AgentInfo, SessionDetail, StoredMessage } from '../api/types'
import { ev, FakeServer } from '../testing/fakeServer'
import { contextFields, contextFromInputs } from './agentContext'
import { followSessionFeed } from './sessionFeed'
import type { RunView } from './transcript'
import { useChat } from './useChat'
import { memoryStorage, type KeyValueStorage } from './useTetherChat'

const RUNS = 'POST /agents/helper/runs'
const BUSY = 'This chat is still answering. Stop it or wait for it to finish.'

let server: FakeServer
let local: KeyValueStorage
let scope: ReturnType<typeof effectScope>
let ids = 0

const helper: AgentInfo = { name: 'helper', description: 'Helps.' }

beforeEach(() => {
  server = new FakeServer()
    .json('GET', '/config', { auth_required: false })
    .json('GET', '/agents', [helper])
    .json('GET', /^\/sessions(\?|$)/, { sessions: [], next_before: null })
    .streams('POST', '/agents/helper/runs')
    .streams('GET', '/sessions/s1/events')
  local = memoryStorage()
  scope = effectScope()
  ids = 0
})

afterEach(() => scope.stop())

async function ready(agents: AgentInfo[] = [helper]) {
  server.json('GET', '/agents', agents)
  const chat = scope.run(() =>
    useChat({
      fetch: server.fetch,
      localStorage: local,
      sessionStorage: memoryStorage(),
      newId: () => `crid${++ids}`,
      feedRetryDelaysMs: [0],
    }),
  )!
  await chat.init()
  return chat
}

function runStream() {
  const [method, path] = RUNS.split(' ') as [string, string]
  return server.stream(method, path)
}

function text(view: RunView | null | undefined): string {
  return (view?.parts ?? []).map((p) => (p.kind === 'text' ? p.text : `[${p.call.tool}]`)).join('')
}

function message(run_id: string, role: 'user' | 'assistant', content: string): StoredMessage {
  return { message_id: `${run_id}-${role}`, run_id, role, content, status: 'complete', created_at: '', tool_calls: [] }
}

/** Session s1 with one finished turn per [run id, question, answer]. */
function session(turns: [string, string, string][], active_run_id: string | null = null): SessionDetail {
  return {
    session_id: 's1',
    agent: 'helper',
    title: 'Chat',
    messages: turns.flatMap(([run, q, a]) => [message(run, 'user', q), message(run, 'assistant', a)]),
    runs: turns.map(([run]) => ({
      run_id: run,
      status: run === active_run_id ? 'running' : 'completed',
      reason: null,
      parent_run_id: null,
    })),
    active_run_id,
  }
}

function problem(status: number, title: string, detail: string, extra: object = {}): Response {
  const body = { type: 'about:blank', title, status, detail, ...extra }
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/problem+json' } })
}

describe('a send that fails keeps the message', () => {
  it('puts the message back in the composer when the server is down; Retry sends it', async () => {
    const chat = await ready()
    server.on('POST', '/agents/helper/runs', () => Promise.reject(new TypeError('Failed to fetch')))
    chat.draft.value = 'hello there'
    expect(chat.sendDraft()).toBe(true)
    expect(chat.draft.value).toBe('')
    await vi.waitFor(() => expect(chat.banner.value).not.toBeNull())
    expect(chat.banner.value!.message).toBe("Not sent: can't reach the server. Your message is back in the message box.")
    expect(chat.draft.value).toBe('hello there')
    expect(chat.isStreaming.value).toBe(false)
    expect(chat.transcript.value.items[0]).toMatchObject({ kind: 'user', content: 'hello there', unsent: "can't reach the server" })

    server.streams('POST', '/agents/helper/runs')
    const retried = chat.retry()
    const stream = await runStream()
    await retried
    expect(stream.request.body).toMatchObject({ message: 'hello there' })
    expect(chat.draft.value).toBe('')
    // The unsent turn made way for the one being sent.
    expect(chat.transcript.value.items.map((i) => i.kind)).toEqual(['user', 'run'])
    expect(chat.transcript.value.items[0]).not.toHaveProperty('unsent')
    stream.push(ev.started('r1', 0), ev.text('r1', 1, 'Hi!'), ev.finished('r1', 2))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(text(chat.currentRun.value)).toBe('Hi!')
  })

  it('says the server had a problem on a 5xx and keeps what was typed meanwhile', async () => {
    const chat = await ready()
    server.on('POST', '/agents/helper/runs', () => problem(503, 'Service Unavailable', 'overloaded'))
    chat.send('first thought')
    chat.draft.value = 'second thought'
    await vi.waitFor(() => expect(chat.banner.value).not.toBeNull())
    expect(chat.banner.value!.message).toContain('Not sent: the server had a problem (503 Service Unavailable)')
    expect(chat.banner.value!.retry).not.toBeNull()
    expect(chat.draft.value).toBe('first thought\n\nsecond thought')
  })

  it("shows a busy session's own words, keeps the draft, and shows the run that keeps it busy", async () => {
    server
      .json('GET', '/sessions/s1', session([['r1', 'hi', 'hello']]))
      .on('POST', '/agents/helper/runs', () => problem(409, 'Conflict', BUSY, { active_run_id: 'r2' }))
    const chat = await ready()
    await chat.openSession('s1')
    server
      .json('GET', '/sessions/s1', session([['r1', 'hi', 'hello'], ['r2', 'from the other tab', '']], 'r2'))
      .streams('GET', '/runs/r2/events?after=-1')
    chat.draft.value = 'are you there?'
    chat.sendDraft()
    await vi.waitFor(() => expect(chat.currentRunId.value).toBe('r2'))
    await vi.waitFor(() => expect(chat.banner.value).not.toBeNull())
    expect(chat.banner.value).toMatchObject({ message: `Not sent: ${BUSY} Your message is back in the message box.`, retry: null })
    expect(chat.draft.value).toBe('are you there?')
    const other = await server.stream('GET', '/runs/r2/events?after=-1')
    other.push(ev.started('r2', 0), ev.text('r2', 1, 'Busy answering.'))
    await vi.waitFor(() => expect(text(chat.currentRun.value)).toBe('Busy answering.'))
    expect(chat.isStreaming.value).toBe(true)
  })
})

describe('the session feed', () => {
  async function openS1(chat: Awaited<ReturnType<typeof ready>>) {
    server.json('GET', '/sessions/s1', session([['r1', 'hi', 'hello']]))
    await chat.openSession('s1')
    return server.stream('GET', '/sessions/s1/events')
  }

  it('follows a run started in another tab: its message shows and its answer streams', async () => {
    const chat = await ready()
    const feed = await openS1(chat)
    server
      .json('GET', '/sessions/s1', session([['r1', 'hi', 'hello'], ['r2', 'from elsewhere', '']], 'r2'))
      .streams('GET', '/runs/r2/events?after=-1')
    feed.feed('run_started', { run_id: 'r2', agent: 'helper' })
    const run = await server.stream('GET', '/runs/r2/events?after=-1')
    run.push(ev.started('r2', 0), ev.text('r2', 1, 'Answer'), ev.finished('r2', 2))
    await vi.waitFor(() => expect(text(chat.transcript.value.runs.r2)).toBe('Answer'))
    expect(chat.transcript.value.items.filter((i) => i.kind === 'user').map((i) => i.kind === 'user' && i.content)).toEqual([
      'hi',
      'from elsewhere',
    ])
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    // The feed stays open across the reload.
    expect(feed.closed).toBe(false)
  })

  it("ignores this tab's own run and shows a new title", async () => {
    const chat = await ready()
    const feed = await openS1(chat)
    chat.send('again')
    const stream = await runStream()
    feed.feed('run_started', { run_id: 'r2', agent: 'helper' })
    feed.feed('session_updated', { session_id: 's1', agent: 'helper', title: 'Greetings', created_at: '2026-01-01T00:00:00Z', updated_at: '2026-01-02T00:00:00Z' })
    await vi.waitFor(() => expect(chat.sessionTitle.value).toBe('Greetings'))
    stream.push(ev.started('r2', 0), ev.text('r2', 1, 'ok'), ev.finished('r2', 2))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(server.calls('GET', '/sessions/s1')).toHaveLength(1)
    expect(chat.sessions.value[0]).toMatchObject({ session_id: 's1', title: 'Greetings' })
  })

  it('reloads the session after the feed broke, since it may have missed a run', async () => {
    const chat = await ready()
    const feed = await openS1(chat)
    feed.fail()
    await server.stream('GET', '/sessions/s1/events')
    await vi.waitFor(() => expect(server.calls('GET', '/sessions/s1')).toHaveLength(2))
  })

  it('does not ask a server without the feed again', async () => {
    server.problem('GET', '/sessions/s1/events', 404, 'Not Found', 'no such route')
    const handlers = { onEvent: () => undefined, onResync: () => undefined }
    const feed = followSessionFeed(new TetherClient({ fetch: server.fetch }), 's1', handlers, [0])
    await feed.ended
    expect(server.calls('GET', '/sessions/s1/events')).toHaveLength(1)
  })
})

describe('regenerate and edit', () => {
  async function withTwoTurns() {
    server
      .json('GET', '/sessions/s1', session([['r1', 'first', 'one'], ['r2', 'second', 'two']]))
      .json('POST', '/sessions/s1/rollback', { run_id: 'r2', message: 'second' })
    const chat = await ready()
    await chat.openSession('s1')
    return chat
  }

  it('regenerate takes the last turn back and asks the same again', async () => {
    const chat = await withTwoTurns()
    expect(chat.lastTurn.value).toEqual({ run_id: 'r2', message: 'second' })
    const done = chat.regenerate()
    const stream = await runStream()
    expect(await done).toBe(true)
    expect(server.calls('POST', '/sessions/s1/rollback')[0]!.body).toEqual({ run_id: 'r2' })
    expect(stream.request.body).toMatchObject({ message: 'second', session_id: 's1' })
    expect(chat.transcript.value.runs.r2).toBeUndefined()
    expect(chat.lastTurn.value).toBeNull() // not while the new answer streams
    stream.push(ev.started('r3', 0), ev.text('r3', 1, 'two again'), ev.finished('r3', 2))
    await vi.waitFor(() => expect(chat.lastTurn.value).toEqual({ run_id: 'r3', message: 'second' }))
    expect(chat.transcript.value.items.map((i) => i.run_id)).toEqual(['r1', 'r1', 'r3', 'r3'])
  })

  it('edit sends the edited message in place of the last one', async () => {
    const chat = await withTwoTurns()
    const done = chat.editAndResend('second, edited')
    const stream = await runStream()
    expect(await done).toBe(true)
    expect(stream.request.body).toMatchObject({ message: 'second, edited', session_id: 's1' })
  })

  it('keeps the turn and says why when the server refuses the rollback', async () => {
    const chat = await withTwoTurns()
    server.problem('POST', '/sessions/s1/rollback', 409, 'Conflict', 'run r2 is not the last turn')
    expect(await chat.regenerate()).toBe(false)
    expect(chat.banner.value).toMatchObject({ retry: null })
    expect(chat.banner.value!.message).toContain('run r2 is not the last turn')
    expect(chat.transcript.value.runs.r2).toBeDefined()
    expect(server.calls('POST', '/agents/helper/runs')).toHaveLength(0)
  })
})

describe('agent context', () => {
  const planner: AgentInfo = {
    name: 'helper',
    description: null,
    context_schema: {
      type: 'object',
      properties: {
        user_name: { type: 'string', title: 'User Name' },
        max_items: { type: 'integer', default: 3 },
        verbose: { type: 'boolean' },
        tone: { anyOf: [{ enum: ['dry', 'warm'] }, { type: 'null' }], default: null },
      },
      required: ['user_name'],
    },
  }

  it('makes a form from the schema and checks its inputs', () => {
    const fields = contextFields(planner.context_schema!)
    expect(fields.map((f) => [f.name, f.kind, f.required, f.initial])).toEqual([
      ['user_name', 'text', true, ''],
      ['max_items', 'integer', false, '3'],
      ['verbose', 'boolean', false, false],
      ['tone', 'choice', false, ''],
    ])
    expect(fields[3]!.choices).toEqual(['dry', 'warm'])
    expect(contextFromInputs(fields, { max_items: '2.5' })).toEqual({
      errors: { user_name: 'Required.', max_items: 'Not a whole number.' },
    })
    expect(contextFromInputs(fields, { user_name: ' Ada ', verbose: true, tone: 'warm' })).toEqual({
      context: { user_name: 'Ada', max_items: 3, verbose: true, tone: 'warm' },
    })
  })

  it('asks once per session and sends the context with every run of it', async () => {
    const chat = await ready([planner])
    expect(chat.needsContext.value).toBe(true)
    chat.setContext({ user_name: 'Ada' })
    expect(chat.needsContext.value).toBe(false)
    chat.send('hi')
    const first = await runStream()
    expect(first.request.body).toMatchObject({ message: 'hi', context: { user_name: 'Ada' } })
    first.push(ev.started('r1', 0, 's1'), ev.finished('r1', 1))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    chat.send('again')
    expect((await runStream()).request.body).toMatchObject({ session_id: 's1', context: { user_name: 'Ada' } })

    // Another session asks again, prefilled with the last answer; s1 still has its own.
    server.json('GET', /^\/sessions\/s[12]$/, { ...session([]), session_id: 's2' })
    chat.newChat()
    await vi.waitFor(() => expect(chat.needsContext.value).toBe(true))
    expect(chat.contextFields.value[0]!.initial).toBe('Ada')
    await chat.openSession('s1')
    await vi.waitFor(() => expect(chat.needsContext.value).toBe(false))
  })
})

describe('the sidebar', () => {
  it("lists every agent's sessions; opening one switches to its agent", async () => {
    const other: AgentInfo = { name: 'writer', description: null }
    const summary = (id: string, agent: string) => ({ session_id: id, agent, title: id, created_at: '', updated_at: '' })
    server
      .json('GET', '/sessions?limit=30', { sessions: [summary('s2', 'writer'), summary('s1', 'helper')], next_before: null })
      .json('GET', '/sessions/s2', { ...session([]), session_id: 's2', agent: 'writer' })
      .streams('GET', '/sessions/s2/events')
    const chat = await ready([helper, other])
    await vi.waitFor(() => expect(chat.sessions.value.map((s) => [s.session_id, s.agent])).toEqual([['s2', 'writer'], ['s1', 'helper']]))
    await chat.openSession('s2')
    expect(chat.agent.value).toBe('writer')
    expect(local.getItem('tether.agent')).toBe('writer')
  })
})
