import { describe, expect, it } from 'vitest'
import { ev, FakeServer } from '../testing/fakeServer'
import { ApiError, AuthError, TetherClient } from './client'

describe('TetherClient', () => {
  it('turns problem+json into an ApiError with the title and detail', async () => {
    const server = new FakeServer().problem('GET', '/sessions/x', 404, 'Not Found', 'no session x')
    const error = await new TetherClient({ fetch: server.fetch }).session('x').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 404, message: 'Not Found: no session x', problem: { detail: 'no session x' } })
  })

  it('turns a 401 into an AuthError', async () => {
    const server = new FakeServer().problem('GET', '/agents', 401, 'Unauthorized', 'missing key')
    await expect(new TetherClient({ fetch: server.fetch }).agents()).rejects.toBeInstanceOf(AuthError)
  })

  it('copes with an error body that is not JSON, and with a validation error list', async () => {
    const server = new FakeServer()
      .on('GET', '/agents', () => new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }))
      .json('PATCH', '/sessions/s1', { detail: [{ loc: ['body', 'title'], msg: 'too long' }] }, 422)
    const client = new TetherClient({ fetch: server.fetch })
    await expect(client.agents()).rejects.toMatchObject({ status: 502, message: 'Bad Gateway' })
    await expect(client.renameSession('s1', 'x')).rejects.toMatchObject({ status: 422, message: /too long/ })
  })

  it('sends the current key, encodes path segments and the resume position', async () => {
    let key = 'k1'
    const server = new FakeServer()
      .json('GET', '/sessions/a%2Fb', {})
      .on('GET', '/runs/r%201/events?after=-1', () => new Response('', { headers: { 'Content-Type': 'text/event-stream' } }))
    const client = new TetherClient({ fetch: server.fetch, apiKey: () => key })
    await client.session('a/b')
    key = 'k2'
    for await (const event of client.runEvents('r 1', -1)) expect(event).toBeUndefined()
    expect(server.requests.map((r) => r.headers.authorization)).toEqual(['Bearer k1', 'Bearer k2'])
  })

  it('posts decisions to resume a paused run and yields the continuation', async () => {
    const server = new FakeServer().streams('POST', '/runs/r1/resume')
    const client = new TetherClient({ fetch: server.fetch })
    const body = { decisions: [{ call_id: 'c1', approved: true, args: { id: 2 }, message: null }], on_disconnect: 'continue' as const }
    const events = (async () => {
      const seen = []
      for await (const event of client.resumeRun('r1', body)) seen.push(event.kind)
      return seen
    })()
    const stream = await server.stream('POST', '/runs/r1/resume')
    expect(stream.request.body).toEqual(body)
    expect(stream.request.headers.accept).toBe('text/event-stream')
    stream.push(ev.resumed('r1', 4, body.decisions), ev.finished('r1', 5))
    stream.close()
    expect(await events).toEqual(['run_resumed', 'run_finished'])
  })

  it('skips frames that are not run events', async () => {
    const server = new FakeServer().on(
      'GET',
      '/runs/r1/events?after=3',
      () =>
        new Response(': ping\n\ndata: not json\n\ndata: {"hello":1}\n\nid: 4\nevent: text_delta\ndata: {"run_id":"r1","seq":4,"kind":"text_delta","text":"x"}\n\n'),
    )
    const events = []
    for await (const event of new TetherClient({ fetch: server.fetch }).runEvents('r1', 3)) events.push(event)
    expect(events).toEqual([{ run_id: 'r1', seq: 4, kind: 'text_delta', text: 'x' }])
  })

  it('gives up on a server that does not answer in time', async () => {
    const hang = (_: string, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal!.reason)))
    const client = new TetherClient({ fetch: hang, requestTimeoutMs: 20 })
    await expect(client.config()).rejects.toMatchObject({ name: 'TimeoutError' })
  })
})
