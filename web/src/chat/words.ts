/** The words the UI uses for statuses and stop reasons. */

import type { RunView } from './transcript'
import type { StopReason } from '../api/types'

const REASONS: Record<StopReason, string> = {
  user: 'stopped by you',
  timeout: 'stopped: the run hit its time limit',
  token_budget: 'stopped: the run used up its token budget',
  cost_budget: 'stopped: the run used up its cost budget',
  disconnect: 'stopped: the client disconnected',
  shutdown: 'interrupted: the server shut down',
  superseded: 'stopped: a newer message replaced it',
  error: 'failed',
  worker_lost: 'interrupted: the worker running it was lost',
  parent: 'stopped with its parent run',
}

export function reasonInWords(reason: StopReason | null): string {
  return reason ? (REASONS[reason] ?? `stopped (${reason})`) : ''
}

/** One line saying how a finished run ended, or "" for a plain completion. */
export function outcomeInWords(view: RunView): string {
  switch (view.status) {
    case 'streaming':
    case 'complete':
      return ''
    case 'interrupted':
      if (view.ended_awaiting_approval && view.reason === 'timeout') {
        return 'Stopped: nobody answered the approval request in time'
      }
      return capitalize(reasonInWords(view.reason) || 'interrupted')
    case 'error':
      return view.error ? `Failed: ${view.error}` : 'Failed'
  }
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1)
}

/** When a paused run gives up waiting, in the reader's local time ("" if unknown). */
export function expiryInWords(expiresAt: string | null): string {
  if (!expiresAt) return ''
  const date = new Date(expiresAt)
  if (Number.isNaN(date.getTime())) return ''
  const time = date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
  return date.toDateString() === new Date().toDateString()
    ? `until ${time}`
    : `until ${date.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })}, ${time}`
}
