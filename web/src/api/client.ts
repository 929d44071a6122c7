/**
 * A small typed client for the `tether serve` HTTP API.
 *
 * Every error response becomes an `ApiError` carrying the server's problem+json; a 401 becomes
 * its subclass `AuthError`, so the UI can ask for a key. JSON requests time out; event streams
 * instead time out when idle (the server sends keep-alive comments), since a run may be long.
 */

import { readSse, type ReadSseOptions } from './sse'
import type {
  AgentInfo,
  CancelResult,
  CancelRunBody,
  Problem,
  ResumeRunBody,
  RollbackResult,
  RunEvent,
  SessionFeedEvent,
  ServerConfig,
  SessionDetail,
  SessionPage,
  SessionSummary,
  StartRunBody,
  StopReason,
  TerminalStatus,
} from './types'

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail ? `${problem.title}: ${problem.detail}` : problem.title)
    this.name = 'ApiError'
  }
}

/** The server refused the API key (or needs one and got none). */
export class AuthError extends ApiError {
  override name = 'AuthError'
}

export interface ClientOptions {
  /** Prefix of every route; "" means the origin the page was served from. */
  baseUrl?: string
  fetch?: FetchLike
  /** Read on every request, so a key entered later applies at once. */
  apiKey?: () => string | null
  requestTimeoutMs?: number
  streamIdleTimeoutMs?: number
}

export class TetherClient {
  private readonly baseUrl: string
  private readonly fetchImpl: FetchLike
  private readonly apiKey: () => string | null
  private readonly requestTimeoutMs: number
  private readonly sse: ReadSseOptions

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? '').replace(/\/$/, '')
    // Deliberate: bind, since calling a detached window.fetch throws "Illegal invocation".
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis)
    this.apiKey = options.apiKey ?? (() => null)
    this.requestTimeoutMs = options.requestTimeoutMs ?? 20_000
    // Three missed keep-alives at the server's usual 15 s ping: the connection is gone.
    this.sse = { idleTimeoutMs: options.streamIdleTimeoutMs ?? 45_000 }
  }

  config(): Promise<ServerConfig> {
    return this.json('GET', '/config')
  }

  agents(): Promise<AgentInfo[]> {
    return this.json('GET', '/agents')
  }

  sessions(agent: string, page: PageQuery = {}): Promise<SessionPage> {
    return this.json('GET', `/agents/${enc(agent)}/sessions${pageQuery(page)}`)
  }

  /** The caller's sessions across every agent, most recently active first. */
  allSessions(page: PageQuery = {}): Promise<SessionPage> {
    return this.json('GET', `/sessions${pageQuery(page)}`)
  }

  session(sessionId: string): Promise<SessionDetail> {
    return this.json('GET', `/sessions/${enc(sessionId)}`)
  }

  renameSession(sessionId: string, title: string): Promise<SessionSummary | null> {
    return this.json('PATCH', `/sessions/${enc(sessionId)}`, { title })
  }

  async deleteSession(sessionId: string): Promise<void> {
    await this.json('DELETE', `/sessions/${enc(sessionId)}`)
  }

  /** Discard the session's last turn (the run's user message and all after it). */
  rollback(sessionId: string, runId: string): Promise<RollbackResult> {
    return this.json('POST', `/sessions/${enc(sessionId)}/rollback`, { run_id: runId })
  }

  cancelRun(runId: string, body: CancelRunBody = { reason: 'user', mode: 'now' }): Promise<CancelResult> {
    return this.json('POST', `/runs/${enc(runId)}/cancel`, body)
  }

  cancelSessionRun(sessionId: string, clientRequestId?: string): Promise<CancelResult> {
    const body = clientRequestId ? { client_request_id: clientRequestId } : {}
    return this.json('POST', `/sessions/${enc(sessionId)}/cancel`, body)
  }

  /**
   * Start a run and yield its events as they stream, ending with `run_finished` (or `run_paused`,
   * when it waits for approval) if the stream lasts.
   */
  async *startRun(agent: string, body: StartRunBody, signal?: AbortSignal): AsyncGenerator<RunEvent> {
    const response = await this.send('POST', `/agents/${enc(agent)}/runs`, { body, signal, stream: true })
    yield* this.events(response)
  }

  /**
   * Continue a paused run with a decision for each call awaiting approval, and yield the
   * continuation as it streams: `run_resumed` first, then up to `run_finished` (or `run_paused`).
   */
  async *resumeRun(runId: string, body: ResumeRunBody, signal?: AbortSignal): AsyncGenerator<RunEvent> {
    const response = await this.send('POST', `/runs/${enc(runId)}/resume`, { body, signal, stream: true })
    yield* this.events(response)
  }

  /** Replay a run's events after `afterSeq` (-1: from the start), then follow it live. */
  async *runEvents(runId: string, afterSeq: number, signal?: AbortSignal): AsyncGenerator<RunEvent> {
    const path = `/runs/${enc(runId)}/events?after=${afterSeq}`
    const response = await this.send('GET', path, { signal, stream: true })
    yield* this.events(response)
  }

  /**
   * Open the session's live feed (from now on: runs starting and ending, title changes). Resolves
   * once the server has answered, so the caller knows the feed is connected.
   */
  async openSessionFeed(sessionId: string, signal?: AbortSignal): Promise<AsyncIterable<SessionFeedEvent>> {
    const response = await this.send('GET', `/sessions/${enc(sessionId)}/events`, { signal, stream: true })
    return this.feedEvents(response)
  }

  private async *feedEvents(response: Response): AsyncGenerator<SessionFeedEvent> {
    if (!response.body) return
    for await (const frame of readSse(response.body, this.sse)) {
      let data: unknown
      try {
        data = JSON.parse(frame.data)
      } catch {
        continue
      }
      const event = toFeedEvent(frame.event, data)
      if (event) yield event
    }
  }

  private async *events(response: Response): AsyncGenerator<RunEvent> {
    if (!response.body) return
    for await (const frame of readSse(response.body, this.sse)) {
      // Frames without JSON are not run events (a server may add others later): skip them.
      let event: unknown
      try {
        event = JSON.parse(frame.data)
      } catch {
        continue
      }
      if (isRunEvent(event)) yield event
    }
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const text = await this.request(method, path, { body }, (response) => response.text())
    return (text ? JSON.parse(text) : null) as T
  }

  private async send(
    method: string,
    path: string,
    options: { body?: unknown; signal?: AbortSignal | undefined; stream?: boolean },
  ): Promise<Response> {
    return this.request(method, path, options, async (response) => response)
  }

  /**
   * Send a request and hand the response to `read` while the deadline still holds. For a stream,
   * `read` returns at once: only the wait for its headers is bounded, as it lives as long as its run.
   */
  private async request<T>(
    method: string,
    path: string,
    options: { body?: unknown; signal?: AbortSignal | undefined; stream?: boolean },
    read: (response: Response) => Promise<T>,
  ): Promise<T> {
    const headers: Record<string, string> = {
      Accept: options.stream ? 'text/event-stream' : 'application/json',
    }
    const key = this.apiKey()
    if (key) headers.Authorization = `Bearer ${key}`
    if (options.body !== undefined) headers['Content-Type'] = 'application/json'
    const deadline = new AbortController()
    const timer = setTimeout(
      () => deadline.abort(new DOMException('the server did not answer in time', 'TimeoutError')),
      this.requestTimeoutMs,
    )
    const init: RequestInit = {
      method,
      headers,
      signal: options.signal ? AbortSignal.any([options.signal, deadline.signal]) : deadline.signal,
      cache: 'no-store',
    }
    if (options.body !== undefined) init.body = JSON.stringify(options.body)
    try {
      const response = await this.fetchImpl(`${this.baseUrl}${path}`, init)
      if (!response.ok) throw await toApiError(response)
      return await read(response)
    } finally {
      clearTimeout(timer)
    }
  }
}

export interface PageQuery {
  limit?: number
  before?: string | null
}

function pageQuery(page: PageQuery): string {
  const query = new URLSearchParams()
  if (page.limit !== undefined) query.set('limit', String(page.limit))
  if (page.before) query.set('before', page.before)
  const qs = query.toString()
  return qs ? `?${qs}` : ''
}

/** Frames the feed may add later, or malformed ones, are skipped (null). */
function toFeedEvent(name: string, data: unknown): SessionFeedEvent | null {
  if (!data || typeof data !== 'object') return null
  const d = data as Record<string, unknown>
  if (name === 'session_updated' && typeof d.session_id === 'string') {
    return { kind: 'session_updated', session: data as SessionSummary }
  }
  if (typeof d.run_id !== 'string') return null
  if (name === 'run_started') return { kind: 'run_started', run_id: d.run_id, agent: String(d.agent ?? '') }
  if (name === 'run_finished') {
    return { kind: 'run_finished', run_id: d.run_id, status: d.status as TerminalStatus, reason: (d.reason ?? null) as StopReason | null }
  }
  return null
}

function enc(segment: string): string {
  return encodeURIComponent(segment)
}

async function toApiError(response: Response): Promise<ApiError> {
  let problem: Problem = {
    type: 'about:blank',
    title: response.statusText || `HTTP ${response.status}`,
    status: response.status,
    detail: null,
  }
  try {
    const body: unknown = await response.json()
    if (body && typeof body === 'object') {
      const p = body as Partial<Problem> & { detail?: unknown }
      problem = {
        type: typeof p.type === 'string' ? p.type : problem.type,
        title: typeof p.title === 'string' ? p.title : problem.title,
        status: typeof p.status === 'number' ? p.status : problem.status,
        // FastAPI's own validation errors put a list in `detail`.
        detail: typeof p.detail === 'string' ? p.detail : p.detail ? JSON.stringify(p.detail) : null,
      }
      if (typeof p.active_run_id === 'string') problem.active_run_id = p.active_run_id
    }
  } catch {
    // Not JSON (a proxy's HTML page, say): the status line is all we have.
  }
  return response.status === 401 ? new AuthError(401, problem) : new ApiError(response.status, problem)
}

function isRunEvent(value: unknown): value is RunEvent {
  if (!value || typeof value !== 'object') return false
  const v = value as Record<string, unknown>
  return typeof v.kind === 'string' && typeof v.run_id === 'string' && typeof v.seq === 'number'
}
