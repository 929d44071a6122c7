/**
 * A scripted stand-in for `tether serve` at the fetch boundary, for tests without a browser.
 *
 * JSON routes answer from a table; event-stream routes hand the test a `FakeStream` to push SSE
 * frames into (or cut), so a test decides exactly when each event arrives. Every request is
 * recorded. A request nothing answers fails the test loudly with a 599 problem.
 */

import type { FetchLike } from '../api/client'
import type { Json, RunEvent, StopReason, TerminalStatus, ToolDecision } from '../api/types'

export interface RecordedRequest {
  method: string
  path: string
  headers: Record<string, string>
  body: unknown
  signal: AbortSignal | null
}

type Handler = (request: RecordedRequest) => Response | Promise<Response>

export class FakeStream {
  private controller!: ReadableStreamDefaultController<Uint8Array>
  private readonly encoder = new TextEncoder()
  readonly body: ReadableStream<Uint8Array>
  closed = false

  constructor(readonly request: RecordedRequest) {
    this.body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.controller = controller
      },
      cancel: () => {
        this.closed = true
      },
    })
    request.signal?.addEventListener('abort', () => {
      if (this.closed) return
      this.closed = true
      this.controller.error(new DOMException('The operation was aborted.', 'AbortError'))
    })
  }

  /** Send events as SSE frames, the way the server writes them. */
  push(...events: RunEvent[]): void {
    for (const event of events) this.raw(sseFrame(event))
  }

  raw(text: string): void {
    if (!this.closed) this.controller.enqueue(this.encoder.encode(text))
  }

  /** Send a frame of the session feed (`GET /sessions/{id}/events`). */
  feed(event: string, data: unknown): void {
    this.raw(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  /** End the stream cleanly (whether or not a run_finished was sent). */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.controller.close()
  }

  /** Break the connection mid-stream. */
  fail(): void {
    if (this.closed) return
    this.closed = true
    this.controller.error(new TypeError('network error'))
  }
}

export function sseFrame(event: RunEvent): string {
  return `id: ${event.seq}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`
}

export class FakeServer {
  readonly requests: RecordedRequest[] = []
  private readonly routes: { method: string; path: string | RegExp; handler: Handler }[] = []
  private readonly waiting = new Map<string, ((stream: FakeStream) => void)[]>()
  private readonly opened = new Map<string, FakeStream[]>()

  /** Answer `method path` (exact path with query, or a RegExp) with JSON; later routes win. */
  json(method: string, path: string | RegExp, body: unknown, status = 200): this {
    return this.on(method, path, () => jsonResponse(body, status))
  }

  problem(method: string, path: string | RegExp, status: number, title: string, detail: string): this {
    return this.on(method, path, () =>
      new Response(JSON.stringify({ type: 'about:blank', title, status, detail }), {
        status,
        headers: { 'Content-Type': 'application/problem+json' },
      }),
    )
  }

  /** Answer `method path` with an event stream the test drives; see `stream()`. */
  streams(method: string, path: string | RegExp): this {
    const key = `${method} ${String(path)}`
    return this.on(method, path, (request) => {
      const stream = new FakeStream(request)
      const waiter = this.waiting.get(key)?.shift()
      if (waiter) waiter(stream)
      else this.opened.set(key, [...(this.opened.get(key) ?? []), stream])
      return new Response(stream.body, { headers: { 'Content-Type': 'text/event-stream' } })
    })
  }

  /** The next stream opened on a `streams()` route, waiting for the request if need be. */
  stream(method: string, path: string | RegExp): Promise<FakeStream> {
    const key = `${method} ${String(path)}`
    const ready = this.opened.get(key)?.shift()
    if (ready) return Promise.resolve(ready)
    return new Promise((resolve) => {
      this.waiting.set(key, [...(this.waiting.get(key) ?? []), resolve])
    })
  }

  on(method: string, path: string | RegExp, handler: Handler): this {
    this.routes.unshift({ method, path, handler })
    return this
  }

  calls(method: string, path: string | RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && matches(path, r.path))
  }

  readonly fetch: FetchLike = async (input, init = {}) => {
    const url = new URL(input, 'http://tether.test')
    const headers: Record<string, string> = {}
    new Headers(init.headers).forEach((value, name) => (headers[name] = value))
    const request: RecordedRequest = {
      method: init.method ?? 'GET',
      path: url.pathname + url.search,
      headers,
      body: typeof init.body === 'string' ? JSON.parse(init.body) : null,
      signal: init.signal ?? null,
    }
    this.requests.push(request)
    const route = this.routes.find((r) => r.method === request.method && matches(r.path, request.path))
    if (!route) {
      return jsonResponse(
        { type: 'about:blank', title: 'Not scripted', status: 599, detail: `${request.method} ${request.path}` },
        599,
      )
    }
    return route.handler(request)
  }
}

function matches(pattern: string | RegExp, path: string): boolean {
  return typeof pattern === 'string' ? pattern === path : pattern.test(path)
}

function jsonResponse(body: unknown, status = 200): Response {
  if (status === 204) return new Response(null, { status })
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
}

/** Events with sensible defaults, so a test states only what it is about. */
export const ev = {
  started: (run_id: string, seq: number, session_id = 's1', parent_run_id: string | null = null): RunEvent => ({
    kind: 'run_started',
    run_id,
    seq,
    session_id,
    agent: 'helper',
    parent_run_id,
  }),
  text: (run_id: string, seq: number, text: string): RunEvent => ({ kind: 'text_delta', run_id, seq, text }),
  toolStarted: (run_id: string, seq: number, call_id: string, tool = 'lookup', args = {}): RunEvent => ({
    kind: 'tool_call_started',
    run_id,
    seq,
    call_id,
    tool,
    args,
  }),
  toolFinished: (
    run_id: string,
    seq: number,
    call_id: string,
    status: 'ok' | 'error' | 'cancelled' | 'denied' = 'ok',
    result: unknown = 'done',
    error: string | null = null,
  ): RunEvent => ({ kind: 'tool_call_finished', run_id, seq, call_id, status, result: result as never, error }),
  childStarted: (run_id: string, seq: number, child_run_id: string, call_id: string | null): RunEvent => ({
    kind: 'child_run_started',
    run_id,
    seq,
    child_run_id,
    agent: 'researcher',
    call_id,
  }),
  childFinished: (run_id: string, seq: number, child_run_id: string, status: TerminalStatus = 'completed'): RunEvent => ({
    kind: 'child_run_finished',
    run_id,
    seq,
    child_run_id,
    status,
    reason: null,
  }),
  queued: (run_id: string, seq: number, resource = 'local model'): RunEvent => ({
    kind: 'run_queued',
    run_id,
    seq,
    resource,
  }),
  stopRequested: (run_id: string, seq: number, reason: 'user' | 'timeout' = 'user'): RunEvent => ({
    kind: 'stop_requested',
    run_id,
    seq,
    reason,
    mode: 'now',
    action: 'keep',
    by: null,
  }),
  paused: (
    run_id: string,
    seq: number,
    calls: { call_id: string; tool?: string; args?: Record<string, Json> }[],
    expires_at: string | null = null,
  ): RunEvent => ({
    kind: 'run_paused',
    run_id,
    seq,
    calls: calls.map((c) => ({ call_id: c.call_id, tool: c.tool ?? 'delete_record', args: c.args ?? {} })),
    expires_at,
  }),
  resumed: (run_id: string, seq: number, decisions: ToolDecision[]): RunEvent => ({
    kind: 'run_resumed',
    run_id,
    seq,
    decisions,
  }),
  finished: (
    run_id: string,
    seq: number,
    status: TerminalStatus = 'completed',
    reason: StopReason | null = null,
    error: string | null = null,
  ): RunEvent => ({
    kind: 'run_finished',
    run_id,
    seq,
    status,
    reason,
    usage: { input_tokens: 10, output_tokens: 5, requests: 1, cost_usd: 0 },
    error,
  }),
}
