/**
 * Approving or denying the tool calls a paused run waits on: editing the arguments as JSON, and
 * gathering one decision per waiting call for `POST /runs/{id}/resume`. Pure, so tests need no DOM.
 */

import type { Json, ToolDecision } from '../api/types'
import { findCall, type Decision, type RunView, type ToolCallView } from './transcript'

/** The arguments as the editor first shows them. */
export function formatArgs(args: Record<string, Json>): string {
  return JSON.stringify(args, null, 2)
}

export type ParsedArgs = { ok: true; args: Record<string, Json> } | { ok: false; error: string }

/** Read edited arguments: they must be a JSON object, as a tool's arguments always are. */
export function parseArgs(text: string): ParsedArgs {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    const why = err instanceof SyntaxError ? err.message : String(err)
    return { ok: false, error: `Not valid JSON: ${why}` }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, error: 'The arguments must be a JSON object, like {"name": "value"}.' }
  }
  return { ok: true, args: value as Record<string, Json> }
}

/**
 * The decision to send for an approval with these edited arguments: `args` stays null unless
 * the person changed them, so an untouched approval runs exactly what the model asked for.
 */
export function approval(original: Record<string, Json>, edited: Record<string, Json>): Decision {
  return { approved: true, args: sameJson(original, edited) ? null : edited, message: null }
}

export function denial(reason: string): Decision {
  const message = reason.trim()
  return { approved: false, args: null, message: message || null }
}

/** The calls the run waits on, in the server's order (skipping any this page never saw). */
export function awaitingCalls(view: RunView): ToolCallView[] {
  if (!view.paused) return []
  return view.paused.call_ids.flatMap((id) => findCall(view, id) ?? [])
}

/** Every waiting call's decision, ready to send; null while some call still waits for one. */
export function collectDecisions(view: RunView): ToolDecision[] | null {
  const decisions: ToolDecision[] = []
  for (const callId of view.paused?.call_ids ?? []) {
    const decision = findCall(view, callId)?.decision
    if (!decision) return null
    decisions.push({ call_id: callId, ...decision })
  }
  return decisions.length > 0 ? decisions : null
}

/** Equal as JSON values (object key order does not matter). */
export function sameJson(a: Json, b: Json): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]!))
  }
  const keys = Object.keys(a)
  return (
    keys.length === Object.keys(b).length &&
    keys.every((key) => Object.hasOwn(b, key) && sameJson(a[key]!, b[key]!))
  )
}
