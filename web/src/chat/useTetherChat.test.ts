import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { effectScope } from 'vue'
import { ev, FakeServer } from '../testing/fakeServer'
import type { RunView } from './transcript'
import { memoryStorage, STORAGE_KEYS, useTetherChat, type KeyValueStorage } from './useTetherChat'
import { outcomeInWords } from './words'

const RUNS = 'POST /agents/helper/runs'

let server: FakeServer
let local: KeyValueStorage
let perTab: KeyValueStorage
let scope: ReturnType<typeof effectScope>
let ids = 0

beforeEach(() => {
  server = new FakeServer()
    .json('GET', '/config', { auth_required: false })
    .json('GET', '/agents', [{ name: 'helper', description: 'Helps.' }])
    .json('GET', /^\/sessions(\?|$)/, { sessions: [], next_before: null })
    .streams('POST', '/agents/helper/runs')
  local = memoryStorage()
  perTab = memoryStorage()
  scope = effectScope()
  ids = 0
})

afterEach(() => scope.stop())
function makeChat() {
  const chat = scope.run(() =>
    useTetherChat({
      fetch: server.fetch,
      localStorage: local,
      sessionStorage: perTab,
      newId: () => `crid${++ids}`,
      pageSize: 2,
    }),
  )!
  return chat
}

async function ready() {
  const chat = makeChat()
  await chat.init()
  expect(chat.agent.value).toBe('helper')
  return chat
}

function text(view: RunView | null | undefined): string {
  return (view?.parts ?? []).map((p) => (p.kind === 'text' ? p.text : `[${p.call.tool}]`)).join('')
}

function runStream() {
  const [method, path] = RUNS.split(' ') as [string, string]
  return server.stream(method, path)
}

describe('sending', () => {
  it('streams deltas into the assistant message and completes', async () => {
    const chat = await ready()
    expect(chat.send('  hi there ')).toBe(true)
    const stream = await runStream()
    expect(stream.request.body).toEqual({ message: 'hi there', client_request_id: 'crid1', on_disconnect: 'continue' })
    expect(stream.request.headers.accept).toBe('text/event-stream')
    expect(chat.isStreaming.value).toBe(true)

    stream.push(ev.started('r1', 0), ev.text('r1', 1, '**Hel'), ev.text('r1', 2, 'lo**'))
    await vi.waitFor(() => expect(text(chat.currentRun.value)).toBe('**Hello**'))
    expect(chat.currentRunId.value).toBe('r1')
    expect(chat.sessionId.value).toBe('s1')
    expect(chat.sessions.value.map((s) => s.session_id)).toEqual(['s1'])
    expect(JSON.parse(perTab.getItem(STORAGE_KEYS.run)!)).toMatchObject({ run_id: 'r1', session_id: 's1', last_seq: 2 })

    stream.push(ev.finished('r1', 3))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(chat.currentRun.value!.status).toBe('complete')
    expect(chat.transcript.value.items.map((i) => i.kind)).toEqual(['user', 'run'])
    expect(perTab.getItem(STORAGE_KEYS.run)).toBeNull()
    expect(JSON.parse(perTab.getItem(STORAGE_KEYS.view)!)).toEqual({ agent: 'helper', session_id: 's1' })
  })

  it('sends the session id for a follow-up and refuses to send while a run streams', async () => {
    const chat = await ready()
    chat.send('one')
    const first = await runStream()
    first.push(ev.started('r1', 0, 's7'))
    await vi.waitFor(() => expect(chat.sessionId.value).toBe('s7'))
    expect(chat.send('too soon')).toBe(false)
    first.push(ev.finished('r1', 1))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))

    chat.send('two')
    const second = await runStream()
    expect(second.request.body).toMatchObject({ message: 'two', session_id: 's7' })
  })

  it('shows tool calls as cards and follows a sub-run nested under its call', async () => {
    server.streams('GET', '/runs/r2/events?after=-1')
    const chat = await ready()
    chat.send('research this')
    const parent = await runStream()
    parent.push(
      ev.started('r1', 0),
      ev.toolStarted('r1', 1, 'c1', 'delegate', { task: 'dig' }),
      ev.childStarted('r1', 2, 'r2', 'c1'),
    )
    const child = await server.stream('GET', '/runs/r2/events?after=-1')
    child.push(ev.started('r2', 0, 's1', 'r1'), ev.text('r2', 1, 'dug up'))
    await vi.waitFor(() => expect(text(chat.transcript.value.runs.r2)).toBe('dug up'))
    const card = chat.currentRun.value!.parts[0]!
    expect(card).toMatchObject({ kind: 'tool', call: { status: 'running', child_run_ids: ['r2'] } })

    // The parent's report may overtake the child's own stream: the child's last delta still lands.
    parent.push(ev.childFinished('r1', 3, 'r2'), ev.toolFinished('r1', 4, 'c1', 'ok', 'dug up'))
    await vi.waitFor(() => expect(card).toMatchObject({ call: { status: 'ok' } }))
    child.push(ev.text('r2', 2, '!'), ev.finished('r2', 3))
    parent.push(ev.text('r1', 5, 'Done.'), ev.finished('r1', 6))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(chat.transcript.value.runs.r2).toMatchObject({ status: 'complete' })
    expect(text(chat.transcript.value.runs.r2)).toBe('dug up!')
    expect(text(chat.currentRun.value)).toBe('[delegate]Done.')
  })

  it("marks a refused run as failed and shows the server's words, without a pointless retry", async () => {
    server.problem('POST', '/agents/helper/runs', 409, 'Conflict', 'session s1 already has a running run')
    const chat = await ready()
    chat.send('hello')
    await vi.waitFor(() => expect(chat.banner.value).not.toBeNull())
    expect(chat.banner.value!.message).toContain('session s1 already has a running run')
    expect(chat.banner.value!.retry).toBeNull()
    expect(chat.isStreaming.value).toBe(false)
    expect(chat.currentRun.value!.status).toBe('error')
  })
})

describe('stopping', () => {
  it('calls the cancel route, shows stopping until run_finished, then interrupted with the reason', async () => {
    server.json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'running', reason: 'user' })
    const chat = await ready()
    chat.send('long task')
    const stream = await runStream()
    stream.push(ev.started('r1', 0), ev.text('r1', 1, 'Working'))
    await vi.waitFor(() => expect(chat.currentRunId.value).toBe('r1'))

    await chat.stop()
    expect(server.calls('POST', '/runs/r1/cancel').map((r) => r.body)).toEqual([{ reason: 'user', mode: 'now' }])
    // Stop goes through the server: the stream is still open, and the turn says "stopping".
    expect(stream.request.signal!.aborted).toBe(false)
    expect(chat.isStopping.value).toBe(true)
    expect(chat.isStreaming.value).toBe(true)

    await chat.stop() // pressing again does not send a second stop
    expect(server.calls('POST', '/runs/r1/cancel')).toHaveLength(1)

    stream.push(ev.stopRequested('r1', 2), ev.finished('r1', 3, 'cancelled', 'user'))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(chat.isStopping.value).toBe(false)
    expect(chat.currentRun.value).toMatchObject({ status: 'interrupted', reason: 'user' })
    expect(outcomeInWords(chat.currentRun.value!)).toBe('Stopped by you')
    expect(text(chat.currentRun.value)).toBe('Working')
  })

  it('uses the session cancel route with the client_request_id while the run id is unknown', async () => {
    server
      .json('GET', '/sessions/s1', { session_id: 's1', agent: 'helper', title: 'Chat', messages: [], runs: [], active_run_id: null })
      .json('POST', '/sessions/s1/cancel', { run_id: 'r1', accepted: true, status: 'running', reason: 'user' })
    const chat = await ready()
    await chat.openSession('s1')
    chat.send('hello')
    const stream = await runStream()
    await chat.stop()
    expect(server.calls('POST', '/sessions/s1/cancel').map((r) => r.body)).toEqual([{ client_request_id: 'crid1' }])
    expect(chat.isStopping.value).toBe(true)

    stream.push(ev.started('r1', 0), ev.stopRequested('r1', 1), ev.finished('r1', 2, 'cancelled', 'user'))
    await vi.waitFor(() => expect(chat.currentRun.value!.status).toBe('interrupted'))
    expect(server.calls('POST', '/runs/r1/cancel')).toHaveLength(0)
  })

  it("stops a new session's first run by id as soon as run_started names it", async () => {
    server.json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'running', reason: 'user' })
    const chat = await ready()
    chat.send('hello')
    const stream = await runStream()
    await chat.stop()
    expect(chat.isStopping.value).toBe(true)
    expect(server.requests.filter((r) => r.path.includes('cancel'))).toHaveLength(0)

    stream.push(ev.started('r1', 0))
    await vi.waitFor(() => expect(server.calls('POST', '/runs/r1/cancel')).toHaveLength(1))
    expect(chat.isStopping.value).toBe(true)
    stream.push(ev.finished('r1', 1, 'cancelled', 'user'))
    await vi.waitFor(() => expect(chat.currentRun.value!.status).toBe('interrupted'))
  })

  it('shows a stop the server made (a timeout) in words', async () => {
    const chat = await ready()
    chat.send('slow')
    const stream = await runStream()
    stream.push(ev.started('r1', 0), ev.stopRequested('r1', 1, 'timeout'))
    await vi.waitFor(() => expect(chat.isStopping.value).toBe(true))
    stream.push(ev.finished('r1', 2, 'interrupted', 'timeout'))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(outcomeInWords(chat.currentRun.value!)).toBe('Stopped: the run hit its time limit')
  })

  it('raises a banner whose Retry stops again when the cancel request fails', async () => {
    server.problem('POST', '/runs/r1/cancel', 503, 'Service Unavailable', 'bus down')
    const chat = await ready()
    chat.send('x')
    const stream = await runStream()
    stream.push(ev.started('r1', 0))
    await vi.waitFor(() => expect(chat.currentRunId.value).toBe('r1'))
    await chat.stop()
    expect(chat.banner.value!.message).toMatch(/Couldn't stop the run.*bus down/)
    expect(chat.isStopping.value).toBe(false)

    server.json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'running', reason: 'user' })
    await chat.retry()
    expect(server.calls('POST', '/runs/r1/cancel')).toHaveLength(2)
    expect(chat.isStopping.value).toBe(true)
  })
})

describe('resuming', () => {
  it('after a reload, replays the active run from the start without duplicating stored text, and Stop works', async () => {
    perTab.setItem(STORAGE_KEYS.view, JSON.stringify({ agent: 'helper', session_id: 's1' }))
    perTab.setItem(STORAGE_KEYS.run, JSON.stringify({ session_id: 's1', run_id: 'r1', client_request_id: 'x', last_seq: 2 }))
    server
      .json('GET', '/sessions/s1', {
        session_id: 's1',
        agent: 'helper',
        title: 'Chat',
        active_run_id: 'r1',
        runs: [{ run_id: 'r1', status: 'running', reason: null, parent_run_id: null }],
        messages: [
          { message_id: 'm1', run_id: 'r1', role: 'user', content: 'hi', status: 'complete', created_at: '', tool_calls: [] },
          { message_id: 'm2', run_id: 'r1', role: 'assistant', content: 'Hel', status: 'streaming', created_at: '', tool_calls: [] },
        ],
      })
      .streams('GET', '/runs/r1/events?after=-1')
      .json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'running', reason: 'user' })
    const chat = makeChat()
    await chat.init()
    expect(chat.sessionId.value).toBe('s1')
    expect(chat.isStreaming.value).toBe(true)
    const stream = await server.stream('GET', '/runs/r1/events?after=-1')
    stream.push(ev.started('r1', 0), ev.text('r1', 1, 'Hel'), ev.text('r1', 2, 'lo'))
    await vi.waitFor(() => expect(text(chat.currentRun.value)).toBe('Hello'))
    expect(chat.transcript.value.items).toMatchObject([{ kind: 'user', content: 'hi' }, { kind: 'run', run_id: 'r1' }])

    await chat.stop()
    expect(server.calls('POST', '/runs/r1/cancel')).toHaveLength(1)
    stream.push(ev.finished('r1', 3, 'cancelled', 'user'))
    await vi.waitFor(() => expect(chat.currentRun.value!.status).toBe('interrupted'))
  })

  it('banners a dropped stream; Retry resumes after the last seq and ignores replayed events', async () => {
    server.streams('GET', '/runs/r1/events?after=2')
    const chat = await ready()
    chat.send('hi')
    const stream = await runStream()
    stream.push(ev.started('r1', 0), ev.text('r1', 1, 'a'), ev.text('r1', 2, 'b'))
    await vi.waitFor(() => expect(text(chat.currentRun.value)).toBe('ab'))
    stream.fail()
    await vi.waitFor(() => expect(chat.banner.value?.retry).toBeTruthy())
    expect(chat.banner.value!.message).toMatch(/connection/i)
    expect(chat.isStreaming.value).toBe(true) // not frozen: the banner says what happened

    const retried = chat.retry()
    const resumed = await server.stream('GET', '/runs/r1/events?after=2')
    await retried
    expect(chat.banner.value).toBeNull()
    resumed.push(ev.text('r1', 2, 'b'), ev.text('r1', 3, 'c'), ev.finished('r1', 4))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(text(chat.currentRun.value)).toBe('abc')
  })

  it('treats a stream that ends without run_finished as a disconnect', async () => {
    const chat = await ready()
    chat.send('hi')
    const stream = await runStream()
    stream.push(ev.started('r1', 0))
    stream.close()
    await vi.waitFor(() => expect(chat.banner.value?.retry).toBeTruthy())
  })

  it('leaves a session\'s stream when another session is opened', async () => {
    server.json('GET', '/sessions/s2', { session_id: 's2', agent: 'helper', title: null, messages: [], runs: [], active_run_id: null })
    const chat = await ready()
    chat.send('hi')
    const stream = await runStream()
    stream.push(ev.started('r1', 0))
    await vi.waitFor(() => expect(chat.currentRunId.value).toBe('r1'))
    await chat.openSession('s2')
    expect(stream.request.signal!.aborted).toBe(true)
    expect(chat.transcript.value.items).toEqual([])
    expect(chat.banner.value).toBeNull()
    expect(chat.isStreaming.value).toBe(false)
  })
})

describe('auth', () => {
  it('sends the stored key, and on 401 says the key is invalid and asks again', async () => {
    local.setItem(STORAGE_KEYS.apiKey, 'wrong')
    server.json('GET', '/config', { auth_required: true })
    server.on('GET', '/agents', (request) =>
      request.headers.authorization === 'Bearer right'
        ? new Response(JSON.stringify([{ name: 'helper', description: '' }]))
        : new Response(JSON.stringify({ type: 'about:blank', title: 'Unauthorized', status: 401, detail: 'bad key' }), {
            status: 401,
          }),
    )
    const chat = makeChat()
    await chat.init()
    expect(server.calls('GET', '/agents')[0]!.headers.authorization).toBe('Bearer wrong')
    expect(chat.needsKey.value).toBe(true)
    expect(chat.authError.value).toMatch(/invalid API key/i)
    expect(local.getItem(STORAGE_KEYS.apiKey)).toBeNull()

    await chat.setApiKey(' right ')
    expect(chat.needsKey.value).toBe(false)
    expect(chat.agent.value).toBe('helper')
    expect(local.getItem(STORAGE_KEYS.apiKey)).toBe('right')
  })

  it('asks for a key up front when the server requires one', async () => {
    server.json('GET', '/config', { auth_required: true })
    const chat = makeChat()
    await chat.init()
    expect(chat.needsKey.value).toBe(true)
    expect(chat.authError.value).toBeNull()
    expect(server.calls('GET', '/agents')).toHaveLength(0)
  })

  it('needs no key in local mode and sends no Authorization header', async () => {
    const chat = await ready()
    expect(chat.needsKey.value).toBe(false)
    expect(server.requests.every((r) => !r.headers.authorization)).toBe(true)
  })

  it('banners an unreachable server with a Retry that starts over', async () => {
    let down = true
    server.on('GET', '/config', () => (down ? Promise.reject(new TypeError('Failed to fetch')) : Response.json({ auth_required: false })))
    const chat = makeChat()
    await chat.init()
    expect(chat.banner.value!.message).toMatch(/can't reach the server/)
    down = false
    await chat.retry()
    expect(chat.agent.value).toBe('helper')
  })
})

describe('sessions', () => {
  const summary = (id: string, title: string | null = null) => ({
    session_id: id,
    agent: 'helper',
    title,
    created_at: '2025-01-01T00:00:00Z',
    updated_at: '2025-01-01T00:00:00Z',
  })

  it('lists newest first, pages back, renames and deletes', async () => {
    server
      .json('GET', '/sessions?limit=2', { sessions: [summary('s3', 'Three'), summary('s2')], next_before: 'cur2' })
      .json('GET', '/sessions?limit=2&before=cur2', { sessions: [summary('s1', 'One')], next_before: null })
      .json('PATCH', '/sessions/s2', summary('s2', 'Two'))
      .json('DELETE', '/sessions/s3', null, 204)
      .json('GET', '/sessions/s3', { session_id: 's3', agent: 'helper', title: 'Three', messages: [], runs: [], active_run_id: null })
    const chat = await ready()
    await vi.waitFor(() => expect(chat.sessions.value.map((s) => s.session_id)).toEqual(['s3', 's2']))
    expect(chat.nextBefore.value).toBe('cur2')
    await chat.loadMoreSessions()
    expect(chat.sessions.value.map((s) => s.session_id)).toEqual(['s3', 's2', 's1'])
    expect(chat.nextBefore.value).toBeNull()

    expect(await chat.renameSession('s2', '  Two ')).toBe(true)
    expect(server.calls('PATCH', '/sessions/s2')[0]!.body).toEqual({ title: 'Two' })
    expect(chat.sessions.value[1]!.title).toBe('Two')

    await chat.openSession('s3')
    expect(chat.sessionTitle.value).toBe('Three')
    expect(await chat.deleteSession('s3')).toBe(true)
    expect(chat.sessions.value.map((s) => s.session_id)).toEqual(['s2', 's1'])
    expect(chat.sessionId.value).toBeNull()
  })

  it('says so when an opened session no longer exists', async () => {
    server.problem('GET', '/sessions/gone', 404, 'Not Found', 'no session gone')
    const chat = await ready()
    await chat.openSession('gone')
    expect(chat.sessionId.value).toBeNull()
    expect(chat.banner.value).toMatchObject({ message: 'That session no longer exists.', retry: null })
  })
})

describe('approvals', () => {
  const ARGS = { record_id: 'R-7' }

  /** Send a message and let the run pause on one call (or on `calls`). */
  async function pausedChat(calls = [{ call_id: 'c1', args: ARGS }]) {
    const chat = await ready()
    chat.send('delete R-7')
    const stream = await runStream()
    stream.push(ev.started('r1', 0), ev.text('r1', 1, 'I will delete record R-7.'))
    calls.forEach((c, i) => stream.push(ev.toolStarted('r1', 2 + i, c.call_id, 'delete_record', c.args)))
    stream.push(ev.paused('r1', 2 + calls.length, calls, '2030-01-01T00:00:00Z'))
    stream.close()
    await vi.waitFor(() => expect(chat.isAwaitingApproval.value).toBe(true))
    return { chat, stream, pausedSeq: 2 + calls.length }
  }

  function card(chat: Awaited<ReturnType<typeof ready>>, callId: string) {
    const part = chat.currentRun.value!.parts.find((p) => p.kind === 'tool' && p.call.call_id === callId)
    return part?.kind === 'tool' ? part.call : undefined
  }

  it('waits for a decision without a banner, then streams the continuation into the same turn', async () => {
    server.streams('POST', '/runs/r1/resume')
    const { chat } = await pausedChat()
    // The stream ended at run_paused, as it should: no "connection lost", the run is not over.
    expect(chat.banner.value).toBeNull()
    expect(chat.isStreaming.value).toBe(true)
    expect(chat.send('something else')).toBe(false)
    expect(card(chat, 'c1')).toMatchObject({ status: 'awaiting_approval', args: ARGS })
    expect(JSON.parse(perTab.getItem(STORAGE_KEYS.run)!)).toMatchObject({ run_id: 'r1', last_seq: 3 })

    expect(chat.decide('c1', { approved: true, args: null, message: null })).toBe(true)
    const resumed = await server.stream('POST', '/runs/r1/resume')
    expect(resumed.request.body).toEqual({
      decisions: [{ call_id: 'c1', approved: true, args: null, message: null }],
      on_disconnect: 'continue',
    })
    expect(chat.isAwaitingApproval.value).toBe(false)
    expect(chat.decide('c1', { approved: false, args: null, message: null })).toBe(false)

    resumed.push(
      ev.resumed('r1', 4, [{ call_id: 'c1', approved: true, args: null, message: null }]),
      ev.toolFinished('r1', 5, 'c1', 'ok', 'record R-7 deleted'),
      ev.text('r1', 6, 'The tool answered: record R-7 deleted'),
      ev.finished('r1', 7),
    )
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(chat.transcript.value.items.map((i) => i.kind)).toEqual(['user', 'run'])
    expect(chat.currentRun.value).toMatchObject({ run_id: 'r1', status: 'complete', paused: null })
    expect(card(chat, 'c1')).toMatchObject({ status: 'ok', result: 'record R-7 deleted' })
    expect(text(chat.currentRun.value)).toBe('I will delete record R-7.[delete_record]The tool answered: record R-7 deleted')
    expect(perTab.getItem(STORAGE_KEYS.run)).toBeNull()
  })

  it('sends nothing until every waiting call is decided, and lets a decision be changed until then', async () => {
    server.streams('POST', '/runs/r1/resume')
    const { chat } = await pausedChat([
      { call_id: 'c1', args: { record_id: 'R-1' } },
      { call_id: 'c2', args: { record_id: 'R-2' } },
    ])
    expect(chat.decide('c1', { approved: true, args: null, message: null })).toBe(true)
    expect(chat.undoDecision('c1')).toBe(true)
    expect(chat.decide('c1', { approved: false, args: null, message: 'keep R-1' })).toBe(true)
    expect(server.calls('POST', '/runs/r1/resume')).toHaveLength(0)
    expect(chat.decide('nope', { approved: true, args: null, message: null })).toBe(false)

    chat.decide('c2', { approved: true, args: { record_id: 'R-3' }, message: null })
    const resumed = await server.stream('POST', '/runs/r1/resume')
    expect(resumed.request.body).toMatchObject({
      decisions: [
        { call_id: 'c1', approved: false, args: null, message: 'keep R-1' },
        { call_id: 'c2', approved: true, args: { record_id: 'R-3' }, message: null },
      ],
    })
    expect(chat.undoDecision('c2')).toBe(false)
  })

  it('stops a paused run through the server and follows its events to the end; the next message works', async () => {
    server
      .json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'cancelled', reason: 'user' })
      .streams('GET', '/runs/r1/events?after=3')
    const { chat } = await pausedChat()
    await chat.stop()
    expect(server.calls('POST', '/runs/r1/cancel').map((r) => r.body)).toEqual([{ reason: 'user', mode: 'now' }])
    expect(chat.isStopping.value).toBe(true)
    expect(chat.isAwaitingApproval.value).toBe(false)
    expect(chat.decide('c1', { approved: true, args: null, message: null })).toBe(false)

    const end = await server.stream('GET', '/runs/r1/events?after=3')
    end.push(ev.stopRequested('r1', 4), ev.toolFinished('r1', 5, 'c1', 'cancelled', null), ev.finished('r1', 6, 'cancelled', 'user'))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(chat.currentRun.value).toMatchObject({ status: 'interrupted', reason: 'user', paused: null })
    expect(card(chat, 'c1')!.status).toBe('cancelled')
    expect(outcomeInWords(chat.currentRun.value!)).toBe('Stopped by you')
    expect(server.calls('POST', '/runs/r1/resume')).toHaveLength(0)

    expect(chat.send('next')).toBe(true)
    const next = await runStream()
    expect(next.request.body).toMatchObject({ message: 'next', session_id: 's1' })
  })

  it('follows the end of a run whose stop crossed its pause', async () => {
    server
      .json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'running', reason: 'user' })
      .streams('GET', '/runs/r1/events?after=3')
    const chat = await ready()
    chat.send('delete R-7')
    const stream = await runStream()
    stream.push(ev.started('r1', 0), ev.text('r1', 1, 'I will'), ev.toolStarted('r1', 2, 'c1', 'delete_record', ARGS))
    await vi.waitFor(() => expect(chat.currentRunId.value).toBe('r1'))
    await chat.stop()
    // The run paused before the stop reached it: the stop ends it in the store, not on this stream.
    stream.push(ev.paused('r1', 3, [{ call_id: 'c1', args: ARGS }]))
    stream.close()
    const end = await server.stream('GET', '/runs/r1/events?after=3')
    end.push(ev.stopRequested('r1', 4), ev.finished('r1', 5, 'cancelled', 'user'))
    await vi.waitFor(() => expect(chat.currentRun.value!.status).toBe('interrupted'))
    expect(chat.banner.value).toBeNull()
  })

  it('does not spin when a stopped paused run shows no end yet, and offers to look again', async () => {
    server
      .json('POST', '/runs/r1/cancel', { run_id: 'r1', accepted: true, status: 'cancelled', reason: 'user' })
      .json('GET', '/runs/r1/events?after=3', null, 204)
    const { chat } = await pausedChat()
    await chat.stop()
    await vi.waitFor(() => expect(chat.banner.value?.message).toBe('The run was stopped, but its end has not arrived yet.'))
    expect(server.calls('GET', '/runs/r1/events?after=3')).toHaveLength(1)
    expect(chat.isStopping.value).toBe(true)

    server.streams('GET', '/runs/r1/events?after=3')
    const retried = chat.retry()
    const end = await server.stream('GET', '/runs/r1/events?after=3')
    end.push(ev.finished('r1', 4, 'cancelled', 'user'))
    await retried
    await vi.waitFor(() => expect(chat.currentRun.value!.status).toBe('interrupted'))
  })

  it('says so when the run stopped waiting (409), and shows how it ended', async () => {
    server
      .problem('POST', '/runs/r1/resume', 409, 'Conflict', 'run r1 is cancelled')
      .streams('GET', '/runs/r1/events?after=3')
    const { chat } = await pausedChat()
    chat.decide('c1', { approved: true, args: null, message: null })
    await vi.waitFor(() => expect(chat.banner.value).not.toBeNull())
    expect(chat.banner.value).toMatchObject({
      message: 'Your decision was not applied: the run is no longer waiting for approval (run r1 is cancelled).',
      retry: null,
    })
    expect(card(chat, 'c1')!.decision).toBeNull()

    const end = await server.stream('GET', '/runs/r1/events?after=3')
    end.push(
      ev.stopRequested('r1', 4, 'timeout'),
      ev.toolFinished('r1', 5, 'c1', 'cancelled', null),
      ev.finished('r1', 6, 'cancelled', 'timeout'),
    )
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(outcomeInWords(chat.currentRun.value!)).toBe('Stopped: nobody answered the approval request in time')
    expect(chat.banner.value?.message).toMatch(/no longer waiting for approval/)
  })

  it('lets the person decide again when the server refuses the decisions (422)', async () => {
    server.problem('POST', '/runs/r1/resume', 422, 'Invalid request', 'no decision for call c1')
    const { chat } = await pausedChat()
    chat.decide('c1', { approved: true, args: null, message: null })
    await vi.waitFor(() => expect(chat.banner.value?.message).toBe('The server refused the decisions: no decision for call c1'))
    expect(chat.isAwaitingApproval.value).toBe(true)
    expect(chat.currentRun.value!.paused!.submitting).toBe(false)
    expect(card(chat, 'c1')!.decision).toBeNull()
  })

  it('offers to send the decisions again when the request fails on the way', async () => {
    server.on('POST', '/runs/r1/resume', () => Promise.reject(new TypeError('Failed to fetch')))
    const { chat } = await pausedChat()
    chat.decide('c1', { approved: false, args: null, message: 'no' })
    await vi.waitFor(() => expect(chat.banner.value?.retry).toBeTruthy())
    expect(chat.banner.value!.message).toMatch(/Couldn't send your decision: can't reach the server/)
    expect(card(chat, 'c1')!.decision).toEqual({ approved: false, args: null, message: 'no' })

    server.streams('POST', '/runs/r1/resume') // later routes win: the server is back
    const retried = chat.retry()
    const resumed = await server.stream('POST', '/runs/r1/resume')
    expect(resumed.request.body).toMatchObject({ decisions: [{ call_id: 'c1', approved: false, message: 'no' }] })
    resumed.push(
      ev.resumed('r1', 4, [{ call_id: 'c1', approved: false, args: null, message: 'no' }]),
      ev.toolFinished('r1', 5, 'c1', 'denied', 'no'),
      ev.text('r1', 6, 'The tool answered: no'),
      ev.finished('r1', 7),
    )
    await retried
    expect(card(chat, 'c1')).toMatchObject({ status: 'denied', result: 'no' })
    expect(chat.currentRun.value!.status).toBe('complete')
  })

  it('after a reload, shows the pending approval again from the replay, and approving works', async () => {
    perTab.setItem(STORAGE_KEYS.view, JSON.stringify({ agent: 'helper', session_id: 's1' }))
    perTab.setItem(STORAGE_KEYS.run, JSON.stringify({ session_id: 's1', run_id: 'r1', client_request_id: 'x', last_seq: 3 }))
    server
      .json('GET', '/sessions/s1', {
        session_id: 's1',
        agent: 'helper',
        title: null,
        active_run_id: 'r1',
        runs: [{ run_id: 'r1', status: 'paused', reason: null, parent_run_id: null }],
        messages: [
          { message_id: 'm1', run_id: 'r1', role: 'user', content: 'delete R-7', status: 'complete', created_at: '', tool_calls: [] },
          {
            message_id: 'm2',
            run_id: 'r1',
            role: 'assistant',
            content: 'I will delete record R-7.',
            status: 'complete',
            created_at: '',
            tool_calls: [{ call_id: 'c1', tool: 'delete_record', args: ARGS, status: 'awaiting_approval', result: null, error: null }],
          },
        ],
      })
      .streams('GET', '/runs/r1/events?after=-1')
      .streams('POST', '/runs/r1/resume')
    const chat = makeChat()
    await chat.init()
    const replay = await server.stream('GET', '/runs/r1/events?after=-1')
    replay.push(
      ev.started('r1', 0),
      ev.text('r1', 1, 'I will delete record R-7.'),
      ev.toolStarted('r1', 2, 'c1', 'delete_record', ARGS),
      ev.paused('r1', 3, [{ call_id: 'c1', args: ARGS }]),
    )
    replay.close()
    await vi.waitFor(() => expect(chat.isAwaitingApproval.value).toBe(true))
    expect(chat.banner.value).toBeNull()
    expect(text(chat.currentRun.value)).toBe('I will delete record R-7.[delete_record]')

    chat.decide('c1', { approved: true, args: null, message: null })
    const resumed = await server.stream('POST', '/runs/r1/resume')
    resumed.push(ev.resumed('r1', 4, [{ call_id: 'c1', approved: true, args: null, message: null }]), ev.finished('r1', 5))
    await vi.waitFor(() => expect(chat.isStreaming.value).toBe(false))
    expect(chat.currentRun.value!.status).toBe('complete')
  })
})
