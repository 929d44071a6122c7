/**
 * Regenerate the last answer, or edit the last message and send it again. Both go through
 * `POST /sessions/{id}/rollback`, which discards the session's last turn (its user message and
 * everything after it) from the stored history, then send a message as a new turn: the discarded
 * one (regenerate) or the edit. Only a finished last turn qualifies, and only while nothing runs.
 */

import { computed, ref } from 'vue'
import { ApiError } from '../api/client'
import { describe, isRetryable } from './failure'
import { childIds, isFinished, type Transcript } from './transcript'
import { PENDING, type TetherChat } from './useTetherChat'

export interface LastTurn {
  run_id: string
  /** The user message that started it. */
  message: string
}

/** The transcript's last turn if it can be taken back: a user message and its finished run. */
export function lastTurn(t: Transcript): LastTurn | null {
  const [user, run] = t.items.slice(-2)
  if (user?.kind !== 'user' || run?.kind !== 'run' || user.unsent || user.run_id !== run.run_id) return null
  const view = t.runs[run.run_id]
  if (!view || !isFinished(view) || run.run_id.startsWith(PENDING)) return null
  return { run_id: run.run_id, message: user.content }
}

/** Remove the turn of `runId` (its user message, its run and the run's sub-runs). */
export function dropTurn(t: Transcript, runId: string): void {
  const view = t.runs[runId]
  const gone = new Set([runId, ...(view ? childIds(view) : [])])
  t.items = t.items.filter((item) => !item.run_id || !gone.has(item.run_id))
  for (const id of gone) delete t.runs[id]
}

export function useTurnActions(chat: TetherChat) {
  const rollingBack = ref(false)
  const last = computed(() => (chat.isStreaming.value || rollingBack.value ? null : lastTurn(chat.transcript.value)))

  /** Take the last turn back, then send `message` in its place. */
  async function replaceLastTurn(message: string): Promise<boolean> {
    const turn = last.value
    const session = chat.sessionId.value
    if (!turn || !session || !message.trim()) return false
    rollingBack.value = true
    chat.banner.value = null
    try {
      await chat.client.rollback(session, turn.run_id)
    } catch (err) {
      const retry = !(err instanceof ApiError) || isRetryable(err.status)
      chat.banner.value = {
        message: `Couldn't take back the last answer: ${describe(err)}`,
        retry: retry ? async () => void (await replaceLastTurn(message)) : null,
      }
      return false
    } finally {
      rollingBack.value = false
    }
    if (chat.sessionId.value !== session) return false
    dropTurn(chat.transcript.value, turn.run_id)
    return chat.send(message)
  }

  return {
    /** The turn regenerate and edit act on, or null when they can't. */
    lastTurn: last,
    rollingBack,
    regenerate: () => (last.value ? replaceLastTurn(last.value.message) : Promise.resolve(false)),
    editAndResend: (message: string) => replaceLastTurn(message),
  }
}
