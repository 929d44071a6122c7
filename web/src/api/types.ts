/**
 * The wire contract of `tether serve`, as the browser sees it.
 *
 * Mirrors `tether.events` (the run events) and `tether.http.schemas` (the JSON bodies). Event
 * `kind`s are part of the contract and never change once released; new fields may appear, so
 * nothing here rejects unknown fields.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

export type TerminalStatus = 'completed' | 'cancelled' | 'failed' | 'interrupted'
export type RunStatus = 'pending' | 'running' | 'paused' | TerminalStatus
export type StopReason =
  | 'user'
  | 'timeout'
  | 'token_budget'
  | 'cost_budget'
  | 'disconnect'
  | 'shutdown'
  | 'superseded'
  | 'error'
  | 'worker_lost'
  | 'parent'
export type StopMode = 'now' | 'after_turn'
/** `awaiting_approval`: its run paused on it; `denied`: a person said no (the model is told why). */
export type ToolStatus = 'awaiting_approval' | 'running' | 'ok' | 'error' | 'cancelled' | 'denied'
export type MessageStatus = 'complete' | 'streaming' | 'interrupted' | 'error'

export interface Usage {
  input_tokens: number
  output_tokens: number
  requests: number
  cost_usd: number
}

interface EventBase {
  run_id: string
  /** Strictly increasing per run from 0; doubles as the SSE id. */
  seq: number
}

export interface RunStarted extends EventBase {
  kind: 'run_started'
  session_id: string
  agent: string
  parent_run_id: string | null
}
export interface TextDelta extends EventBase {
  kind: 'text_delta'
  text: string
}
export interface ToolCallStarted extends EventBase {
  kind: 'tool_call_started'
  call_id: string
  tool: string
  args: Record<string, Json>
}
export interface ToolCallFinished extends EventBase {
  kind: 'tool_call_finished'
  call_id: string
  /** `denied`: a person refused the call; `result` is the denial message the model reads. */
  status: 'ok' | 'error' | 'cancelled' | 'denied'
  result: Json
  error: string | null
}
export interface ChildRunStarted extends EventBase {
  kind: 'child_run_started'
  child_run_id: string
  agent: string
  call_id: string | null
}
export interface ChildRunFinished extends EventBase {
  kind: 'child_run_finished'
  child_run_id: string
  status: TerminalStatus
  reason: StopReason | null
}
export interface RunQueued extends EventBase {
  kind: 'run_queued'
  resource: string
}
export interface StopRequested extends EventBase {
  kind: 'stop_requested'
  reason: StopReason
  mode: StopMode
  action: 'keep' | 'rollback'
  by: string | null
}
/** A tool call that waits for a person's approval. */
export interface PendingCall {
  call_id: string
  tool: string
  args: Record<string, Json>
}
/** A person's answer to one pending call. */
export interface ToolDecision {
  call_id: string
  approved: boolean
  /** Edited arguments to run the tool with instead of the model's (approvals only). */
  args: Record<string, Json> | null
  /** Why it was denied; the model reads it (denials only). */
  message: string | null
}
/**
 * The run waits for approval of `calls`. The stream ends here but the run is not over:
 * `POST /runs/{run_id}/resume` continues it, or a cancel (or `expires_at`) ends it.
 */
export interface RunPaused extends EventBase {
  kind: 'run_paused'
  calls: PendingCall[]
  expires_at: string | null
}
/** The first event of a resumed stream: the run continues with these decisions. */
export interface RunResumed extends EventBase {
  kind: 'run_resumed'
  decisions: ToolDecision[]
}
export interface RunFinished extends EventBase {
  kind: 'run_finished'
  status: TerminalStatus
  reason: StopReason | null
  usage: Usage
  error: string | null
}

export type RunEvent =
  | RunStarted
  | TextDelta
  | ToolCallStarted
  | ToolCallFinished
  | ChildRunStarted
  | ChildRunFinished
  | RunQueued
  | StopRequested
  | RunPaused
  | RunResumed
  | RunFinished

export interface ServerConfig {
  auth_required: boolean
}

export interface AgentInfo {
  name: string
  description: string | null
  /** The JSON schema of the agent's context model, or null when it takes none. */
  context_schema?: JsonSchema | null
}

/** The part of JSON schema the context form understands; anything else is edited as JSON. */
export interface JsonSchema {
  type?: string | string[]
  title?: string
  description?: string
  default?: Json
  enum?: Json[]
  properties?: Record<string, JsonSchema>
  required?: string[]
  anyOf?: JsonSchema[]
  $ref?: string
}

export interface SessionSummary {
  session_id: string
  agent: string
  title: string | null
  created_at: string
  updated_at: string
}

export interface SessionPage {
  sessions: SessionSummary[]
  next_before: string | null
}

export interface StoredToolCall {
  call_id: string
  tool: string
  args: Record<string, Json>
  status: ToolStatus
  result: Json
  error: string | null
}

export interface StoredMessage {
  message_id: string
  run_id: string
  role: 'user' | 'assistant'
  content: string
  status: MessageStatus
  created_at: string
  tool_calls: StoredToolCall[]
}

export interface StoredRun {
  run_id: string
  status: RunStatus
  reason: StopReason | null
  parent_run_id: string | null
  /** Why a failed run failed. */
  error?: string | null
}

export interface SessionDetail {
  session_id: string
  agent: string
  title: string | null
  messages: StoredMessage[]
  runs: StoredRun[]
  active_run_id: string | null
}

export interface StartRunBody {
  message: string
  session_id?: string
  client_request_id?: string
  on_disconnect?: 'cancel' | 'continue'
  /** Validated against the agent's context model. */
  context?: Record<string, Json>
}

export interface ResumeRunBody {
  decisions: ToolDecision[]
  on_disconnect?: 'cancel' | 'continue'
}

/** What `POST /sessions/{id}/rollback` discarded: the turn of `run_id`, and its user message. */
export interface RollbackResult {
  run_id: string
  message: string
}

/** The frames of `GET /sessions/{id}/events`, the live feed of one session. */
export type SessionFeedEvent =
  | { kind: 'run_started'; run_id: string; agent: string }
  | { kind: 'run_finished'; run_id: string; status: TerminalStatus; reason: StopReason | null }
  | { kind: 'session_updated'; session: SessionSummary }

export interface CancelRunBody {
  reason?: 'user'
  mode?: StopMode
  wait?: boolean
}

export interface CancelResult {
  run_id: string | null
  accepted: boolean
  status: RunStatus | null
  reason: StopReason | null
}

/** RFC 9457 problem details, the body of every error response. */
export interface Problem {
  type: string
  title: string
  status: number
  detail: string | null
  /** A 409 for a busy session names the run that keeps it busy. */
  active_run_id?: string | null
}
