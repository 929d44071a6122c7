/**
 * The conversation as the UI shows it, and how run events change it.
 *
 * A transcript is a list of items (a user message, or an assistant turn = one run) plus a map of
 * run views by run id; sub-runs live in the same map and hang off the tool call that started them.
 * Live events and stored messages build the same shape, so a reloaded page looks like the live one.
 *
 * Guarantees: events apply at most once per run (a `seq` at or below the last applied one is a
 * duplicate, as happens when a stream is resumed); nothing applies after a run's `run_finished`;
 * a finished run has no tool call left "running" or "awaiting approval", and is not paused. A
 * paused run is not finished: `run_paused` marks its calls as awaiting approval, and the
 * `run_resumed` that continues it (or its `run_finished`) ends the pause. The functions mutate
 * the transcript they are given, so it can be a Vue `reactive` object or a plain one in tests.
 */

import type {
  Json,
  MessageStatus,
  PendingCall,
  RunEvent,
  SessionDetail,
  StopReason,
  StoredMessage,
  StoredRun,
  TerminalStatus,
  ToolStatus,
  Usage,
} from '../api/types'

export interface ToolCallView {
  call_id: string
  tool: string
  args: Record<string, Json>
  status: ToolStatus
  result: Json
  error: string | null
  /** Sub-runs this call started, by run id. */
  child_run_ids: string[]
  /** While the call awaits approval: what this page decided, not yet sent to the server. */
  decision: Decision | null
}

/** A person's answer to a call awaiting approval (the wire's `ToolDecision` without its id). */
export interface Decision {
  approved: boolean
  /** Edited arguments (approvals only); null runs the tool with the model's own. */
  args: Record<string, Json> | null
  /** Why it was denied (denials only); null lets the server word it. */
  message: string | null
}

export interface PauseView {
  /** The calls the run waits on, in the order the server listed them. */
  call_ids: string[]
  /** When the server gives up waiting and cancels the run (reason `timeout`). */
  expires_at: string | null
  /** The decisions are on their way to the server (`POST /runs/{id}/resume`). */
  submitting: boolean
}

export type Part = { kind: 'text'; text: string } | { kind: 'tool'; call: ToolCallView }

export interface RunView {
  run_id: string
  agent: string
  parent_run_id: string | null
  parts: Part[]
  status: MessageStatus
  /** The run's terminal status once known, and why it ended early. */
  run_status: TerminalStatus | null
  reason: StopReason | null
  error: string | null
  /** A stop was asked for (by this page, or reported by the server) and the run has not ended. */
  stopping: boolean
  /** The shared resource the run waits for, while it waits. */
  queued: string | null
  /** Set while the run waits for a person's approval (its stream has ended; the run has not). */
  paused: PauseView | null
  /** The run ended while it still waited for approval (stopped, or nobody answered in time). */
  ended_awaiting_approval: boolean
  usage: Usage | null
  /** Highest seq applied; -1 before any. */
  last_seq: number
  /** Sub-runs not tied to a known tool call (e.g. restored from storage). */
  child_run_ids: string[]
  /** How the parent's `child_run_finished` said this sub-run ended. */
  reported: { status: TerminalStatus; reason: StopReason | null } | null
}

export type Item =
  /** `unsent`: why this message never reached a run (see unsent.ts). */
  | { kind: 'user'; key: string; content: string; run_id: string | null; unsent?: string }
  | { kind: 'run'; key: string; run_id: string }

export interface Transcript {
  items: Item[]
  runs: Record<string, RunView>
}

export function emptyTranscript(): Transcript {
  return { items: [], runs: {} }
}

export function newRunView(runId: string, init: Partial<RunView> = {}): RunView {
  return {
    run_id: runId,
    agent: '',
    parent_run_id: null,
    parts: [],
    status: 'streaming',
    run_status: null,
    reason: null,
    error: null,
    stopping: false,
    queued: null,
    paused: null,
    ended_awaiting_approval: false,
    usage: null,
    last_seq: -1,
    child_run_ids: [],
    reported: null,
    ...init,
  }
}

export function isFinished(view: RunView): boolean {
  return view.status !== 'streaming'
}

/** How a run's terminal status shows on its message. A stop, for any reason, reads "interrupted". */
export function messageStatusOf(status: TerminalStatus): MessageStatus {
  switch (status) {
    case 'completed':
      return 'complete'
    case 'cancelled':
    case 'interrupted':
      return 'interrupted'
    case 'failed':
      return 'error'
  }
}

/**
 * Give a run view a new id: the page shows a turn before the server names its run, and
 * `run_started` brings the real id.
 */
export function renameRun(t: Transcript, fromId: string, toId: string): RunView | undefined {
  const view = t.runs[fromId]
  if (!view || fromId === toId) return view
  delete t.runs[fromId]
  view.run_id = toId
  t.runs[toId] = view
  for (const item of t.items) {
    if (item.run_id === fromId) item.run_id = toId
  }
  return view
}

/**
 * Apply one event to the run it names, creating the view if needed.
 *
 * @returns false when the event was ignored: a duplicate by seq, or after the run finished.
 */
export function applyEvent(t: Transcript, event: RunEvent): boolean {
  const view = (t.runs[event.run_id] ??= newRunView(event.run_id))
  if (event.seq <= view.last_seq || isFinished(view)) return false
  view.last_seq = event.seq
  switch (event.kind) {
    case 'run_started':
      view.agent = event.agent
      view.parent_run_id = event.parent_run_id ?? null
      break
    case 'text_delta': {
      view.queued = null
      const last = view.parts[view.parts.length - 1]
      if (last?.kind === 'text') last.text += event.text
      else view.parts.push({ kind: 'text', text: event.text })
      break
    }
    case 'tool_call_started': {
      view.queued = null
      // One card per call, even if a call is announced again (as when an approved one runs).
      const known = findCall(view, event.call_id)
      if (known) {
        known.args = event.args ?? known.args
        known.status = 'running'
        known.decision = null
      } else {
        view.parts.push({ kind: 'tool', call: newCall(event.call_id, event.tool, event.args ?? {}, 'running') })
      }
      break
    }
    case 'tool_call_finished': {
      const call = findCall(view, event.call_id)
      if (call) {
        call.status = event.status
        call.result = event.result ?? null
        call.error = event.error ?? null
      }
      break
    }
    case 'child_run_started':
      startChild(t, view, event.child_run_id, event.agent, event.call_id)
      break
    case 'child_run_finished': {
      // Deliberate: only noted. The child's own stream may lag behind its parent's, and finishing
      // the child here would drop its last deltas; `settleFromReport` uses this if that stream fails.
      const child = t.runs[event.child_run_id]
      if (child) child.reported = { status: event.status, reason: event.reason ?? null }
      break
    }
    case 'run_queued':
      view.queued = event.resource
      break
    case 'stop_requested':
      view.stopping = true
      if (!view.reason) view.reason = event.reason
      break
    case 'run_paused':
      pause(view, event.calls ?? [], event.expires_at ?? null)
      break
    case 'run_resumed':
      view.paused = null
      for (const decision of event.decisions ?? []) {
        const call = findCall(view, decision.call_id)
        if (!call) continue
        call.decision = null
        if (decision.approved) {
          call.status = 'running'
          if (decision.args) call.args = decision.args
        } else {
          // The denial's own tool_call_finished follows, with the message the model was given.
          call.status = 'denied'
          call.result = decision.message ?? null
        }
      }
      break
    case 'run_finished':
      finish(view, event.status, event.reason ?? null, event.error ?? null)
      view.usage = event.usage ?? null
      break
    default:
      break // a kind this UI does not know yet: its seq still counts, so a replay skips it
  }
  return true
}

function newCall(callId: string, tool: string, args: Record<string, Json>, status: ToolStatus): ToolCallView {
  return { call_id: callId, tool, args, status, result: null, error: null, child_run_ids: [], decision: null }
}

function pause(view: RunView, calls: PendingCall[], expiresAt: string | null): void {
  view.queued = null
  for (const pending of calls) {
    const call = findCall(view, pending.call_id)
    if (call) {
      call.status = 'awaiting_approval'
      call.args = pending.args ?? call.args
      call.decision = null
    } else {
      // Deliberate: built whole before it is pushed, so a reactive transcript tracks every field.
      view.parts.push({ kind: 'tool', call: newCall(pending.call_id, pending.tool, pending.args ?? {}, 'awaiting_approval') })
    }
  }
  view.paused = { call_ids: calls.map((c) => c.call_id), expires_at: expiresAt, submitting: false }
}

/** Finish a sub-run whose own stream could not be read, from what its parent reported. */
export function settleFromReport(view: RunView): boolean {
  if (isFinished(view) || !view.reported) return false
  finish(view, view.reported.status, view.reported.reason, null)
  return true
}

function startChild(
  t: Transcript,
  parent: RunView,
  childId: string,
  agent: string,
  callId: string | null,
): void {
  const child = (t.runs[childId] ??= newRunView(childId))
  child.agent = agent
  child.parent_run_id = parent.run_id
  const owner = callId ? (findCall(parent, callId)?.child_run_ids ?? parent.child_run_ids) : parent.child_run_ids
  if (!owner.includes(childId)) owner.push(childId)
}

function finish(
  view: RunView,
  status: TerminalStatus,
  reason: StopReason | null,
  error: string | null,
): void {
  view.status = messageStatusOf(status)
  view.run_status = status
  // A completed run has no reason; keep what stop_requested said only if the run did stop.
  view.reason = status === 'completed' ? null : (reason ?? view.reason)
  view.error = error
  view.stopping = false
  view.queued = null
  view.ended_awaiting_approval = view.paused !== null
  view.paused = null
  for (const part of view.parts) {
    if (part.kind !== 'tool') continue
    part.call.decision = null
    if (part.call.status === 'running' || part.call.status === 'awaiting_approval') part.call.status = 'cancelled'
  }
}

export function findCall(view: RunView, callId: string): ToolCallView | undefined {
  for (const part of view.parts) {
    if (part.kind === 'tool' && part.call.call_id === callId) return part.call
  }
  return undefined
}

/**
 * Build the transcript of a stored session.
 *
 * The active run (and its sub-runs) keep their user message but lose their stored assistant
 * output: the caller replays the run's events from the start, which rebuilds that output with no
 * gap and no duplicate.
 */
export function transcriptFromSession(session: SessionDetail): Transcript {
  const t = emptyTranscript()
  const stored = new Map<string, StoredRun>(session.runs.map((run) => [run.run_id, run]))
  const replayed = session.active_run_id ? descendants(session.runs, session.active_run_id) : new Set<string>()

  for (const message of session.messages) {
    const run = stored.get(message.run_id)
    const isSubRun = Boolean(run?.parent_run_id)
    if (message.role === 'user') {
      // A sub-run's prompt is its parent's tool call arguments, already on screen.
      if (isSubRun) continue
      t.items.push({ kind: 'user', key: message.message_id, content: message.content, run_id: message.run_id })
      ensureRunItem(t, message.run_id, replayed, stored)
      continue
    }
    const view = ensureView(t, message.run_id, replayed, stored)
    if (!isSubRun) ensureRunItem(t, message.run_id, replayed, stored)
    if (replayed.has(message.run_id)) continue
    addStoredMessage(view, message)
  }

  // An active run that has stored nothing yet still needs its turn on screen for the replay.
  if (session.active_run_id) ensureRunItem(t, session.active_run_id, replayed, stored)

  // Hang stored sub-runs under their parents (storage does not say which tool call started them).
  for (const run of session.runs) {
    if (!run.parent_run_id || replayed.has(run.run_id) || !t.runs[run.run_id]) continue
    const parent = t.runs[run.parent_run_id]
    if (parent && !parent.child_run_ids.includes(run.run_id)) parent.child_run_ids.push(run.run_id)
  }
  return t
}

function ensureView(
  t: Transcript,
  runId: string,
  replayed: Set<string>,
  stored: Map<string, StoredRun>,
): RunView {
  const existing = t.runs[runId]
  if (existing) return existing
  const run = stored.get(runId)
  const view = newRunView(runId, { parent_run_id: run?.parent_run_id ?? null })
  if (!replayed.has(runId)) {
    // Not replayed: this run is over as far as the page is concerned; no event may change it.
    view.last_seq = Number.MAX_SAFE_INTEGER
    view.status = 'complete'
    if (run && isTerminal(run.status)) {
      view.run_status = run.status
      view.status = messageStatusOf(run.status)
      view.reason = run.status === 'completed' ? null : run.reason
      view.error = run.error ?? null
    } else if (run) {
      // Stored as still running, yet not the active run: it was cut off (e.g. a crashed worker).
      view.status = 'interrupted'
      view.reason = run.reason
    }
  }
  t.runs[runId] = view
  return view
}

function ensureRunItem(
  t: Transcript,
  runId: string,
  replayed: Set<string>,
  stored: Map<string, StoredRun>,
): void {
  ensureView(t, runId, replayed, stored)
  if (!t.items.some((item) => item.kind === 'run' && item.run_id === runId)) {
    t.items.push({ kind: 'run', key: `run:${runId}`, run_id: runId })
  }
}

function addStoredMessage(view: RunView, message: StoredMessage): void {
  if (message.content) {
    const last = view.parts[view.parts.length - 1]
    if (last?.kind === 'text') last.text += `\n\n${message.content}`
    else view.parts.push({ kind: 'text', text: message.content })
  }
  for (const call of message.tool_calls ?? []) {
    // A call stored as running (or awaiting approval) in a run that is over never finished.
    const open = call.status === 'running' || call.status === 'awaiting_approval'
    const shown = newCall(call.call_id, call.tool, call.args ?? {}, open ? 'cancelled' : call.status)
    shown.result = call.result ?? null
    shown.error = call.error ?? null
    view.parts.push({ kind: 'tool', call: shown })
  }
  // Without a stored run row, the messages' own statuses are the best evidence of how it ended.
  // A message stored as streaming in a run that is over was cut off.
  const status = message.status === 'streaming' ? 'interrupted' : message.status
  if (view.run_status === null && rank(status) > rank(view.status)) view.status = status
}

function rank(status: MessageStatus): number {
  return { complete: 0, streaming: 1, interrupted: 2, error: 3 }[status]
}

function isTerminal(status: string): status is TerminalStatus {
  return status === 'completed' || status === 'cancelled' || status === 'failed' || status === 'interrupted'
}

function descendants(runs: StoredRun[], rootId: string): Set<string> {
  const found = new Set([rootId])
  let grew = true
  while (grew) {
    grew = false
    for (const run of runs) {
      if (run.parent_run_id && found.has(run.parent_run_id) && !found.has(run.run_id)) {
        found.add(run.run_id)
        grew = true
      }
    }
  }
  return found
}

/** Drop a run's output so a replay from seq -1 can rebuild it. */
export function resetRun(t: Transcript, runId: string): void {
  const view = t.runs[runId]
  if (!view) return
  for (const childId of childIds(view)) {
    resetRun(t, childId)
    delete t.runs[childId]
  }
  t.runs[runId] = newRunView(runId, { agent: view.agent, parent_run_id: view.parent_run_id })
}

export function childIds(view: RunView): string[] {
  const ids = [...view.child_run_ids]
  for (const part of view.parts) {
    if (part.kind === 'tool') ids.push(...part.call.child_run_ids)
  }
  return ids
}
