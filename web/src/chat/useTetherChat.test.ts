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
    .json('GET', /^\/agents\/helper\/sessions/, { sessions: [], next_before: null })
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
      .json('GET', '/agents/helper/sessions?limit=2', { sessions: [summary('s3', 'Three'), summary('s2')], next_before: 'cur2' })
      .json('GET', '/agents/helper/sessions?limit=2&before=cur2', { sessions: [summary('s1', 'One')], next_before: null })
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
