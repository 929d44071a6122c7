/**
 * A message that never reached a run: its send failed before the server named the run (the server
 * was down, answered 5xx, or refused it as busy). What the person typed is never lost: the turn
 * stays in the transcript marked with why it was not sent, and its text goes back into the
 * composer. The next send drops such turns, since their text is sent again from the composer.
 */

import { ApiError } from '../api/client'
import { describe, isRetryable } from './failure'
import type { Transcript } from './transcript'

/** Mark the turn of the pending run view `viewId` as not sent, for `reason`. */
export function markUnsent(t: Transcript, viewId: string, reason: string): void {
  const view = t.runs[viewId]
  if (view) {
    view.status = 'error'
    view.error = `not sent: ${reason}`
    view.stopping = false
    view.paused = null
  }
  for (const item of t.items) {
    if (item.kind === 'user' && item.run_id === viewId) item.unsent = reason
  }
}

/** Remove the turns that were never sent (their text went back to the composer). */
export function dropUnsent(t: Transcript): void {
  const ids = new Set(t.items.flatMap((item) => (item.kind === 'user' && item.unsent ? [item.run_id] : [])))
  if (ids.size === 0) return
  t.items = t.items.filter((item) => !ids.has(item.run_id))
  for (const id of ids) if (id) delete t.runs[id]
}

/** Why a send failed, in the words a person reads: a busy chat says what the server says. */
export function sendFailureInWords(err: unknown): string {
  if (!(err instanceof ApiError)) return describe(err)
  if (err.status >= 500) return `the server had a problem (${err.status} ${err.problem.title})`
  return err.problem.detail ?? err.problem.title
}

/** Whether sending the same message again may work (a busy chat or a refused message won't). */
export function isWorthResending(err: unknown): boolean {
  return !(err instanceof ApiError) || isRetryable(err.status)
}

/** The composer's text once `message` comes back to it, keeping anything typed meanwhile. */
export function withMessageBack(draft: string, message: string): string {
  const typed = draft.trim()
  if (!typed || typed === message.trim()) return message
  return `${message}\n\n${draft}`
}

/** `text` ending with a full stop (unless it already ends a sentence). */
export function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`
}
