/**
 * Everything the chat page does, without the page: auth, agents, sessions, sending, streaming,
 * stopping and resuming. Components only render this state and call these actions.
 *
 * Guarantees:
 * - Stop always goes to the server (the run's cancel route, or the session's with the
 *   client_request_id while the run id is unknown); the turn shows "stopping…" until the
 *   server's `run_finished` arrives. Aborting a fetch is never how a run is stopped.
 * - A stream that ends without `run_finished`, or any failed request, raises a banner with a
 *   Retry; nothing waits silently. Retrying a stream replays from the last applied seq.
 * - A send that fails before the server names its run keeps the message: it goes back into
 *   `draft` (the composer) and its turn says why it was not sent (unsent.ts).
 * - Stop's progress is one explicit state (stopState.ts).
 * - A streaming run's id and last seq are kept in sessionStorage; after a reload the session is
 *   loaded, the active run's stored output dropped, and its events replayed from the start.
 * - Work started for one session never lands in another: each switch bumps an epoch and aborts
 *   the streams of the previous one.
 * - A run that pauses for approval stays the current run (Send stays off, Stop stays on). Once
 *   every waiting call has a decision they go to `POST /runs/{id}/resume` and the continuation
 *   streams into the same turn. Stopping a paused run follows its events to the end, since no
 *   stream is open for it; a resume refused because the run moved on (409) says so and shows
 *   how the run ended. A reload replays the run's events, which end at `run_paused` again.
 */

import { computed, getCurrentScope, onScopeDispose, ref, shallowRef } from 'vue'
import { ApiError, AuthError, TetherClient, type FetchLike } from '../api/client'
import type { AgentInfo, Json, RunEvent, SessionSummary } from '../api/types'
import { awaitingCalls, collectDecisions } from './approval'
import { describe, isRetryable } from './failure'
import {
  applyEvent,
  childIds,
  emptyTranscript,
  isFinished,
  newRunView,
  renameRun,
  settleFromReport,
  transcriptFromSession,
  type Decision,
  type RunView,
  type ToolCallView,
  type Transcript,
} from './transcript'
import { browserStorage, randomId, readJson, type KeyValueStorage } from './storage'
import { StopControl } from './stopState'
import { dropUnsent, isWorthResending, markUnsent, sendFailureInWords, sentence, withMessageBack } from './unsent'

export { memoryStorage, type KeyValueStorage } from './storage'

export interface UseTetherChatOptions {
  baseUrl?: string
  fetch?: FetchLike
  /** Keeps the API key and the last agent (default: window.localStorage). */
  localStorage?: KeyValueStorage
  /** Keeps the open session and the streaming run, per tab (default: window.sessionStorage). */
  sessionStorage?: KeyValueStorage
  pageSize?: number
  newId?: () => string
  requestTimeoutMs?: number
  streamIdleTimeoutMs?: number
}

export interface Banner {
  message: string
  /** What Retry does; null when retrying cannot help (e.g. a rejected request). */
  retry: (() => Promise<void>) | null
}

/** What sessionStorage keeps about the run streaming in this tab. */
export interface ActiveRunMemo {
  session_id: string | null
  run_id: string | null
  client_request_id: string | null
  last_seq: number
}

export const STORAGE_KEYS = {
  apiKey: 'tether.apiKey',
  agent: 'tether.agent',
  view: 'tether.view',
  run: 'tether.run',
} as const

/** The id prefix of a run view the server has not named yet. */
export const PENDING = 'pending:'

export function useTetherChat(options: UseTetherChatOptions = {}) {
  const local = options.localStorage ?? browserStorage('localStorage')
  const perTab = options.sessionStorage ?? browserStorage('sessionStorage')
  const pageSize = options.pageSize ?? 30
  const newId = options.newId ?? randomId

  const apiKey = ref<string | null>(local.getItem(STORAGE_KEYS.apiKey))
  const client = new TetherClient({
    baseUrl: options.baseUrl ?? '',
    apiKey: () => apiKey.value,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.requestTimeoutMs ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
    ...(options.streamIdleTimeoutMs ? { streamIdleTimeoutMs: options.streamIdleTimeoutMs } : {}),
  })

  const ready = ref(false)
  const authRequired = ref<boolean | null>(null)
  const authError = ref<string | null>(null)
  const agents = shallowRef<AgentInfo[]>([])
  const agent = ref<string | null>(null)
  const sessions = ref<SessionSummary[]>([])
  const nextBefore = ref<string | null>(null)
  const sessionsLoading = ref(false)
  const sessionId = ref<string | null>(null)
  const sessionLoading = ref(false)
  const loadedTitle = ref<string | null>(null)
  const transcript = ref<Transcript>(emptyTranscript())
  /** The top-level run the composer is bound to ("pending:…" until the server names it). */
  const currentRunId = ref<string | null>(null)
  const banner = shallowRef<Banner | null>(null)
  /** The composer's text: a send that fails puts its message back here. */
  const draft = ref('')
  /** The `context` every run of this chat is started with (see useAgentContext). */
  const runContext = shallowRef<Record<string, Json> | null>(null)

  const needsKey = computed(() => authError.value !== null || (authRequired.value === true && !apiKey.value))
  const currentRun = computed<RunView | null>(() =>
    currentRunId.value ? (transcript.value.runs[currentRunId.value] ?? null) : null,
  )
  const isStreaming = computed(() => currentRun.value !== null && !isFinished(currentRun.value))
  const isStopping = computed(() => isStreaming.value && currentRun.value!.stopping)
  /** The current run waits for a person's decision (not being stopped, no decision on its way). */
  const isAwaitingApproval = computed(() => {
    const paused = isStreaming.value ? currentRun.value!.paused : null
    return paused !== null && !paused.submitting && !currentRun.value!.stopping
  })
  const sessionTitle = computed(
    () => sessions.value.find((s) => s.session_id === sessionId.value)?.title ?? loadedTitle.value,
  )

  let epoch = 0
  const streams = new Set<AbortController>()
  /** The stream reading each run view, by view id; one at a time. */
  const following = new Map<string, AbortController>()
  /** Streams that broke before their run finished, by run view id; Retry resumes them. */
  const broken = new Map<string, { top: boolean }>()
  let clientRequestId: string | null = null
  let pendingMessage: string | null = null
  const stopState = new StopControl()

  // ---- start-up, auth, agents -------------------------------------------------------------

  async function init(): Promise<void> {
    banner.value = null
    try {
      authRequired.value = (await client.config()).auth_required
    } catch (err) {
      fail(err, init)
      return
    }
    if (needsKey.value) return
    await loadAgents()
  }

  async function loadAgents(): Promise<void> {
    try {
      agents.value = await client.agents()
    } catch (err) {
      fail(err, loadAgents)
      return
    }
    ready.value = true
    const view = readJson<{ agent: string | null; session_id: string | null }>(perTab, STORAGE_KEYS.view)
    const names = agents.value.map((a) => a.name)
    const preferred = [view?.agent, agent.value, local.getItem(STORAGE_KEYS.agent)].find(
      (name): name is string => !!name && names.includes(name),
    )
    const chosen = preferred ?? names[0] ?? null
    if (!chosen) return
    const restore = view?.agent === chosen ? view.session_id : null
    await selectAgent(chosen, { sessionId: restore })
  }

  function setApiKey(key: string): Promise<void> {
    const trimmed = key.trim()
    if (!trimmed) return Promise.resolve()
    apiKey.value = trimmed
    local.setItem(STORAGE_KEYS.apiKey, trimmed)
    authError.value = null
    return init()
  }

  function forgetApiKey(): void {
    apiKey.value = null
    local.removeItem(STORAGE_KEYS.apiKey)
    leaveSession()
    ready.value = false
  }

  async function selectAgent(name: string, opts: { sessionId?: string | null } = {}): Promise<void> {
    setAgent(name)
    if (opts.sessionId) {
      void loadSessions()
      await openSession(opts.sessionId)
    } else {
      newChat()
      await loadSessions()
    }
  }

  function setAgent(name: string): void {
    if (name === agent.value) return
    agent.value = name
    local.setItem(STORAGE_KEYS.agent, name)
  }

  // ---- sessions ---------------------------------------------------------------------------

  /** The sidebar lists the user's sessions of every agent, most recently active first. */
  async function loadSessions(more = false): Promise<void> {
    sessionsLoading.value = true
    try {
      const page = await client.allSessions({ limit: pageSize, before: more ? nextBefore.value : null })
      if (more) {
        const seen = new Set(sessions.value.map((s) => s.session_id))
        sessions.value = [...sessions.value, ...page.sessions.filter((s) => !seen.has(s.session_id))]
        nextBefore.value = page.next_before
      } else if (sessions.value.length > pageSize) {
        // More pages were loaded: refresh the first and keep the rest, with their cursor.
        const fresh = new Set(page.sessions.map((s) => s.session_id))
        sessions.value = [...page.sessions, ...sessions.value.filter((s) => !fresh.has(s.session_id))]
      } else {
        // The open session stays listed even if this page was read just before it existed.
        const open = sessions.value.find((s) => s.session_id === sessionId.value)
        const listed = page.sessions.some((s) => s.session_id === sessionId.value)
        sessions.value = open && !listed ? [open, ...page.sessions] : page.sessions
        nextBefore.value = page.next_before
      }
    } catch (err) {
      fail(err, () => loadSessions(more))
    } finally {
      sessionsLoading.value = false
    }
  }

  async function openSession(id: string): Promise<void> {
    leaveSession()
    const mine = epoch
    sessionId.value = id
    saveView()
    sessionLoading.value = true
    try {
      const detail = await client.session(id)
      if (mine !== epoch) return
      // Opening another agent's session from the sidebar switches the agent with it.
      if (agents.value.some((a) => a.name === detail.agent)) setAgent(detail.agent)
      saveView()
      transcript.value = transcriptFromSession(detail)
      loadedTitle.value = detail.title
      const active = detail.active_run_id
      if (active) {
        currentRunId.value = active
        rememberRun({ session_id: id, run_id: active, client_request_id: null, last_seq: -1 })
        follow(active, -1, true)
      } else {
        perTab.removeItem(STORAGE_KEYS.run)
      }
    } catch (err) {
      if (mine !== epoch) return
      if (err instanceof ApiError && err.status === 404) {
        newChat()
        sessions.value = sessions.value.filter((s) => s.session_id !== id)
        banner.value = { message: 'That session no longer exists.', retry: null }
        return
      }
      fail(err, () => openSession(id))
    } finally {
      if (mine === epoch) sessionLoading.value = false
    }
  }

  function newChat(): void {
    leaveSession()
    saveView()
  }

  async function renameSession(id: string, title: string): Promise<boolean> {
    const trimmed = title.trim()
    if (!trimmed) return false
    try {
      await client.renameSession(id, trimmed)
    } catch (err) {
      fail(err, null)
      return false
    }
    sessions.value = sessions.value.map((s) => (s.session_id === id ? { ...s, title: trimmed } : s))
    if (id === sessionId.value) loadedTitle.value = trimmed
    return true
  }

  async function deleteSession(id: string): Promise<boolean> {
    try {
      await client.deleteSession(id)
    } catch (err) {
      fail(err, null)
      return false
    }
    sessions.value = sessions.value.filter((s) => s.session_id !== id)
    if (id === sessionId.value) newChat()
    return true
  }

  // ---- sending and streaming --------------------------------------------------------------

  function send(text: string): boolean {
    const message = text.trim()
    const name = agent.value
    if (!message || !name || isStreaming.value || needsKey.value || sessionLoading.value) return false
    banner.value = null
    const crid = newId()
    const viewId = PENDING + crid
    const t = transcript.value
    dropUnsent(t)
    t.items.push({ kind: 'user', key: `user:${crid}`, content: message, run_id: viewId })
    t.runs[viewId] = newRunView(viewId, { agent: name })
    t.items.push({ kind: 'run', key: `run:${crid}`, run_id: viewId })
    currentRunId.value = viewId
    clientRequestId = crid
    pendingMessage = message
    stopState.reset()
    rememberRun({ session_id: sessionId.value, run_id: null, client_request_id: crid, last_seq: -1 })
    startRun(viewId, message, crid)
    return true
  }

  function startRun(viewId: string, message: string, crid: string): void {
    const name = agent.value!
    // Deliberate: a reload or a dropped connection must not stop the answer (the page resumes
    // the stream); only the Stop button, Esc, or a deadline stops a run.
    const body = {
      message,
      client_request_id: crid,
      on_disconnect: 'continue' as const,
      ...(sessionId.value ? { session_id: sessionId.value } : {}),
      ...(runContext.value ? { context: runContext.value } : {}),
    }
    void consume(viewId, true, (signal) => client.startRun(name, body, signal))
  }

  /** Follow a run's stream from after `afterSeq`: a resumed top-level run, or a sub-run. */
  function follow(runId: string, afterSeq: number, top: boolean): void {
    if (following.has(runId)) return
    transcript.value.runs[runId] ??= newRunView(runId)
    void consume(runId, top, (signal) => client.runEvents(runId, afterSeq, signal))
  }

  async function consume(
    startId: string,
    top: boolean,
    open: (signal: AbortSignal) => AsyncIterable<RunEvent>,
  ): Promise<void> {
    const mine = epoch
    const controller = new AbortController()
    streams.add(controller)
    let viewId = startId
    let applied = 0
    following.set(viewId, controller)
    broken.delete(viewId)
    // Released before the end is handled, so a handler can open the run's next stream (a
    // paused run's end); guarded, so this stream never releases that next one.
    const release = () => {
      if (following.get(viewId) === controller) following.delete(viewId)
    }
    try {
      for await (const event of open(controller.signal)) {
        if (mine !== epoch) return
        if (viewId.startsWith(PENDING) && event.run_id !== viewId) {
          viewId = adoptRunId(viewId, event.run_id, controller)
        }
        if (event.kind === 'run_started' && top && event.run_id === viewId) onTopRunStarted(event.session_id)
        if (!applyEvent(transcript.value, event)) continue
        applied++
        if (top && event.run_id === viewId) rememberSeq(event.seq)
        if (event.kind === 'child_run_started') follow(event.child_run_id, -1, false)
        if ((event.kind === 'run_finished' || event.kind === 'run_paused') && event.run_id === viewId) break
      }
      if (mine !== epoch) return
      release()
      const view = transcript.value.runs[viewId]
      if (view && isFinished(view)) onRunFinished(view, top)
      else if (view?.paused && !view.paused.submitting) onRunPaused(view, applied > 0)
      else streamBroke(viewId, top, null)
    } catch (err) {
      if (mine !== epoch || controller.signal.aborted) return
      release()
      streamBroke(viewId, top, err)
    } finally {
      streams.delete(controller)
      release()
    }
  }

  /** The server named the pending run: re-key its view, and remember the id for reloads. */
  function adoptRunId(pendingId: string, runId: string, controller: AbortController): string {
    renameRun(transcript.value, pendingId, runId)
    if (currentRunId.value === pendingId) currentRunId.value = runId
    following.delete(pendingId)
    following.set(runId, controller)
    return runId
  }

  function onTopRunStarted(startedSession: string): void {
    if (!sessionId.value) {
      sessionId.value = startedSession
      saveView()
      const now = new Date().toISOString()
      if (!sessions.value.some((s) => s.session_id === startedSession)) {
        const summary = { session_id: startedSession, agent: agent.value ?? '', title: null, created_at: now, updated_at: now }
        sessions.value = [summary, ...sessions.value]
      }
      // The server has titled the new session from its first message: show it at once.
      void loadSessions()
    }
    rememberRun({
      session_id: startedSession,
      run_id: currentRunId.value,
      client_request_id: clientRequestId,
      last_seq: -1,
    })
    pendingMessage = null
    // Stop was pressed before the run had an id, and the session route could not take it.
    if (stopState.isWaitingForId) void sendStop()
  }

  function onRunFinished(view: RunView, top: boolean): void {
    broken.delete(view.run_id)
    clearStreamBanner()
    if (!top) return
    if (view.run_id === currentRunId.value) {
      perTab.removeItem(STORAGE_KEYS.run)
      stopState.reset()
    }
    // A sub-run whose stream failed is settled from what the parent reported about it.
    for (const id of allChildIds(view)) {
      const child = transcript.value.runs[id]
      if (child && settleFromReport(child)) broken.delete(id)
    }
    clearStreamBanner()
    void loadSessions()
  }

  /**
   * The run waits for approval and its stream has ended, as it should (a stream that starts at
   * the pause ends at once, `progressed` false).
   */
  function onRunPaused(view: RunView, progressed: boolean): void {
    broken.delete(view.run_id)
    clearStreamBanner()
    if (!view.stopping || view.run_id !== currentRunId.value) return
    if (progressed) {
      // A stop that crossed the pause ends the run in the store only: fetch that end. (If the
      // stop is still on its way, this finds nothing new, and its answer follows the run again.)
      followPaused(view)
    } else if (stopState.isConfirmed) {
      // Deliberate: no automatic retry, which could spin against a run that stays paused.
      banner.value = {
        message: 'The run was stopped, but its end has not arrived yet.',
        retry: async () => followPaused(view),
      }
    }
  }

  /** Follow a paused run no stream is open for, to see what happens to it next. */
  function followPaused(view: RunView): void {
    if (isFinished(view) || !view.paused || view.paused.submitting) return
    follow(view.run_id, view.last_seq, view.run_id === currentRunId.value)
  }

  function clearStreamBanner(): void {
    if (broken.size === 0 && banner.value?.retry === retryStreams) banner.value = null
  }

  function streamBroke(viewId: string, top: boolean, err: unknown): void {
    const view = transcript.value.runs[viewId]
    if (!view || isFinished(view)) return
    if (!top && settleFromReport(view)) return
    if (view.paused?.submitting && resumeFailed(view, err)) return
    if (top && viewId.startsWith(PENDING)) {
      sendFailed(viewId, err)
      return
    }
    if (err instanceof AuthError) {
      fail(err, null)
      return
    }
    if (err instanceof ApiError && !isRetryable(err.status)) {
      // The server refused the run or its stream (a conflict, a run it no longer has): this page
      // cannot follow it, so the turn ends here. Retry reloads what the server stored.
      view.status = 'error'
      view.error = describe(err)
      view.stopping = false
      view.paused = null
      if (top) perTab.removeItem(STORAGE_KEYS.run)
      const session = sessionId.value
      const reload = top && session ? () => openSession(session) : null
      banner.value = { message: describe(err), retry: reload }
      return
    }
    broken.set(viewId, { top })
    banner.value = {
      message: err ? `Lost the connection to the run: ${describe(err)}` : 'The connection to the run was lost.',
      retry: retryStreams,
    }
  }

  /**
   * The send failed before the server named its run (see unsent.ts): the message goes back into
   * the composer. A busy session is reloaded, so the run that keeps it busy shows.
   */
  function sendFailed(viewId: string, err: unknown): void {
    const reason = err ? sendFailureInWords(err) : 'the connection closed before the run started'
    markUnsent(transcript.value, viewId, reason)
    perTab.removeItem(STORAGE_KEYS.run)
    draft.value = withMessageBack(draft.value, pendingMessage ?? '')
    pendingMessage = null
    if (err instanceof AuthError) return fail(err, null)
    const resend = isWorthResending(err) ? async () => void sendDraft() : null
    const notice: Banner = { message: `Not sent: ${sentence(reason)} Your message is back in the message box.`, retry: resend }
    banner.value = notice
    const busyWith = err instanceof ApiError ? err.problem.active_run_id : null
    const session = sessionId.value
    if (busyWith && session && !transcript.value.runs[busyWith]) {
      void openSession(session).then(() => (banner.value ??= notice))
    }
  }

  /** Send what the composer holds; it empties once the message is taken. */
  function sendDraft(): boolean {
    const taken = send(draft.value)
    if (taken) draft.value = ''
    return taken
  }

  /** Resume every broken stream from the last event applied (top-level ones have an id by now). */
  async function retryStreams(): Promise<void> {
    banner.value = null
    const entries = [...broken.entries()]
    broken.clear()
    for (const [viewId, { top }] of entries) {
      const view = transcript.value.runs[viewId]
      if (view && !isFinished(view)) follow(viewId, view.last_seq, top)
    }
  }

  // ---- approvals --------------------------------------------------------------------------

  /**
   * Record a decision for one call the current run waits on; once every waiting call has one,
   * send them all and stream the continuation into the same turn.
   *
   * @returns false when the call is not waiting for a decision (or the decisions are on their way).
   */
  function decide(callId: string, decision: Decision): boolean {
    const view = currentRun.value
    const call = view?.paused && !view.paused.submitting && !view.stopping ? findWaiting(view, callId) : null
    if (!view || !call) return false
    call.decision = decision
    if (collectDecisions(view)) void resume(view)
    return true
  }

  /** Take back a decision that has not been sent yet (while other calls still wait for theirs). */
  function undoDecision(callId: string): boolean {
    const view = currentRun.value
    const call = view?.paused && !view.paused.submitting ? findWaiting(view, callId) : null
    if (!call) return false
    call.decision = null
    return true
  }

  function findWaiting(view: RunView, callId: string): ToolCallView | null {
    return awaitingCalls(view).find((call) => call.call_id === callId) ?? null
  }

  async function resume(view: RunView): Promise<void> {
    const decisions = collectDecisions(view)
    if (!decisions || !view.paused || view.paused.submitting || isFinished(view)) return
    view.paused.submitting = true
    banner.value = null
    // Deliberate: like a start, a reload or a dropped connection must not stop the continuation.
    const body = { decisions, on_disconnect: 'continue' as const }
    await consume(view.run_id, true, (signal) => client.resumeRun(view.run_id, body, signal))
  }

  /**
   * The decisions did not get through (the resume request failed before `run_resumed`).
   *
   * @returns false for what any refused stream gets (a lost key, a run the server no longer has).
   */
  function resumeFailed(view: RunView, err: unknown): boolean {
    view.paused!.submitting = false
    if (err instanceof AuthError) return false
    if (!(err instanceof ApiError) || isRetryable(err.status)) {
      // The request may or may not have landed; sending it again is safe: if it did, the
      // server answers 409 and the run's events are followed instead.
      const why = err ?? new Error('the connection closed before the run went on')
      fail(why, () => resume(view), "Couldn't send your decision")
      return true
    }
    const detail = err.problem.detail ?? err.problem.title
    if (err.status === 409) {
      // Timed out, stopped or resumed elsewhere: the run's own events say how it went on.
      forgetDecisions(view)
      banner.value = {
        message: `Your decision was not applied: the run is no longer waiting for approval (${detail}).`,
        retry: null,
      }
      followPaused(view)
      return true
    }
    if (err.status === 422) {
      // The decisions don't match the calls the server waits on: let the person decide again.
      forgetDecisions(view)
      banner.value = { message: `The server refused the decisions: ${detail}`, retry: null }
      return true
    }
    return false
  }

  function forgetDecisions(view: RunView): void {
    for (const part of view.parts) {
      if (part.kind === 'tool') part.call.decision = null
    }
  }

  // ---- stopping ---------------------------------------------------------------------------

  /** Ask the server to stop the streaming run; "stopping…" shows until its run_finished. */
  async function stop(): Promise<void> {
    const view = currentRun.value
    if (!view || isFinished(view) || stopState.isSent) return
    view.stopping = true
    stopState.want()
    await sendStop()
  }

  async function sendStop(): Promise<void> {
    const view = currentRun.value
    if (!view || isFinished(view)) return
    const runId = view.run_id.startsWith(PENDING) ? null : view.run_id
    stopState.sending()
    try {
      if (runId) {
        await client.cancelRun(runId, { reason: 'user', mode: 'now' })
        stopState.confirmed()
        // A paused run has no stream open: its end is only in its events.
        followPaused(view)
      } else if (sessionId.value && clientRequestId) {
        const result = await client.cancelSessionRun(sessionId.value, clientRequestId)
        if (!result?.accepted) {
          // The run did not exist yet: stop it by id once run_started names it (or now, if that
          // happened while this request was on its way).
          stopState.notDeliverable()
          if (!view.run_id.startsWith(PENDING) && !isFinished(view)) await sendStop()
        }
      } else {
        stopState.notDeliverable() // a new session's first run: stopped by id once run_started names it
      }
    } catch (err) {
      stopState.reset()
      if (!isFinished(view)) view.stopping = false
      fail(err, stop, "Couldn't stop the run")
    }
  }

  // ---- plumbing ---------------------------------------------------------------------------

  function leaveSession(): void {
    epoch++
    for (const controller of streams) controller.abort()
    streams.clear()
    following.clear()
    broken.clear()
    transcript.value = emptyTranscript()
    sessionId.value = null
    loadedTitle.value = null
    currentRunId.value = null
    sessionLoading.value = false
    clientRequestId = null
    pendingMessage = null
    stopState.reset()
    banner.value = null
  }

  function fail(err: unknown, retry: (() => Promise<void>) | null, prefix?: string): void {
    if (err instanceof AuthError) {
      authError.value = apiKey.value
        ? 'Invalid API key: the server refused it. Enter a valid key.'
        : 'This server needs an API key.'
      apiKey.value = null
      local.removeItem(STORAGE_KEYS.apiKey)
      banner.value = null
      return
    }
    const canRetry = !(err instanceof ApiError) || isRetryable(err.status)
    const message = prefix ? `${prefix}: ${describe(err)}` : describe(err)
    banner.value = { message, retry: canRetry ? retry : null }
  }

  function dismissBanner(): void {
    banner.value = null
  }

  async function retry(): Promise<void> {
    const action = banner.value?.retry
    banner.value = null
    if (action) await action()
  }

  function saveView(): void {
    perTab.setItem(STORAGE_KEYS.view, JSON.stringify({ agent: agent.value, session_id: sessionId.value }))
  }

  let memo: ActiveRunMemo | null = null
  function rememberRun(next: ActiveRunMemo): void {
    memo = next
    perTab.setItem(STORAGE_KEYS.run, JSON.stringify(next))
  }
  function rememberSeq(seq: number): void {
    if (!memo) return
    memo.last_seq = seq
    perTab.setItem(STORAGE_KEYS.run, JSON.stringify(memo))
  }

  function allChildIds(view: RunView): string[] {
    const ids: string[] = []
    for (const id of childIds(view)) {
      ids.push(id)
      const child = transcript.value.runs[id]
      if (child) ids.push(...allChildIds(child))
    }
    return ids
  }

  function dispose(): void {
    epoch++
    for (const controller of streams) controller.abort()
    streams.clear()
  }
  if (getCurrentScope()) onScopeDispose(dispose)

  return {
    // state
    ready,
    apiKey,
    authRequired,
    authError,
    needsKey,
    agents,
    agent,
    sessions,
    nextBefore,
    sessionsLoading,
    sessionId,
    sessionTitle,
    sessionLoading,
    transcript,
    currentRunId,
    currentRun,
    isStreaming,
    isStopping,
    isAwaitingApproval,
    banner,
    draft,
    runContext,
    client,
    // actions
    init,
    setApiKey,
    forgetApiKey,
    selectAgent,
    loadSessions,
    loadMoreSessions: () => loadSessions(true),
    openSession,
    newChat,
    renameSession,
    deleteSession,
    send,
    sendDraft,
    stop,
    decide,
    undoDecision,
    retry,
    dismissBanner,
    dispose,
  }
}

export type TetherChat = ReturnType<typeof useTetherChat>
