/**
 * Follows one session's live feed (`GET /sessions/{id}/events`), so a tab learns what other tabs
 * and workers do in its session.
 *
 * The feed starts "from now" and is not replayable: when an open feed breaks, it reconnects after
 * a growing delay and then calls `onResync`, since whatever happened meanwhile was missed. A
 * server that refuses the feed (404 from a server without it, or another 4xx) is not asked again
 * for this session. A feed problem never raises a banner: the feed is a nicety over the run
 * streams, which carry the guarantees.
 */

import { getCurrentScope, onScopeDispose, watch } from 'vue'
import { ApiError, type TetherClient } from '../api/client'
import type { SessionFeedEvent, SessionSummary } from '../api/types'
import { isRetryable } from './failure'
import { isFinished } from './transcript'
import { PENDING, type TetherChat } from './useTetherChat'

export interface SessionFeedHandlers {
  onEvent: (event: SessionFeedEvent) => void
  /** The feed is back after a break: events may have been missed. */
  onResync: () => void
}

/** Delays before each reconnection attempt; the last repeats. */
export const FEED_RETRY_DELAYS_MS = [1_000, 2_000, 5_000, 15_000]

export interface SessionFeed {
  close: () => void
  /** Settles once the feed gives up for good: closed, or refused by the server. */
  ended: Promise<void>
}

/** Follow `sessionId`'s feed until it is closed. */
export function followSessionFeed(
  client: TetherClient,
  sessionId: string,
  handlers: SessionFeedHandlers,
  retryDelaysMs: number[] = FEED_RETRY_DELAYS_MS,
): SessionFeed {
  const controller = new AbortController()
  const signal = controller.signal
  const ended = (async () => {
    let failures = 0
    let wasOpen = false
    while (!signal.aborted) {
      try {
        const events = await client.openSessionFeed(sessionId, signal)
        if (wasOpen) handlers.onResync()
        wasOpen = true
        failures = 0
        for await (const event of events) handlers.onEvent(event)
      } catch (err) {
        if (signal.aborted) return
        if (err instanceof ApiError && !isRetryable(err.status)) return
      }
      await sleep(retryDelaysMs[Math.min(failures++, retryDelaysMs.length - 1)] ?? 1_000, signal)
    }
  })()
  return { close: () => controller.abort(), ended }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })
}

/**
 * Keep the open session in step with its feed: a run started elsewhere (another tab, `tether
 * chat`) reloads the session, which shows its message and follows the run's own stream; a title
 * change updates the sidebar. A run's end needs nothing: the run's stream reports it.
 */
export function useSessionFeed(chat: TetherChat, retryDelaysMs?: number[]): void {
  let feed: SessionFeed | null = null
  watch(
    chat.sessionId,
    (id) => {
      feed?.close()
      feed = id ? followSessionFeed(chat.client, id, handlersFor(id), retryDelaysMs) : null
    },
    { immediate: true },
  )
  if (getCurrentScope()) onScopeDispose(() => feed?.close())

  function handlersFor(id: string): SessionFeedHandlers {
    const isOpen = () => chat.sessionId.value === id
    return {
      onEvent: (event) => {
        if (!isOpen()) return
        if (event.kind === 'run_started' && !isKnown(event.run_id)) void chat.openSession(id)
        if (event.kind === 'session_updated') showSession(event.session)
      },
      onResync: () => {
        if (isOpen() && !chat.isStreaming.value) void chat.openSession(id)
      },
    }
  }

  function isKnown(runId: string): boolean {
    if (chat.transcript.value.runs[runId]) return true
    // This tab's own send, whose stream has not named its run yet.
    const current = chat.currentRun.value
    return current !== null && current.run_id.startsWith(PENDING) && !isFinished(current)
  }

  /** The session moves to the top of the sidebar (it was just active) with its new title. */
  function showSession(session: SessionSummary): void {
    const others = chat.sessions.value.filter((s) => s.session_id !== session.session_id)
    chat.sessions.value = [session, ...others]
  }
}
