/**
 * How a tool card reaches the chat's approval actions without every component in between
 * (message list, run body, nested sub-runs) passing them along. App provides them; a card with
 * nothing provided shows a waiting call read-only.
 */

import type { InjectionKey } from 'vue'
import type { Decision } from '../chat/transcript'

export interface ApprovalActions {
  /** Record a decision for a waiting call; false if the call no longer takes one. */
  decide: (callId: string, decision: Decision) => boolean
  /** Take back a decision not sent yet. */
  undo: (callId: string) => boolean
}

export const APPROVALS: InjectionKey<ApprovalActions> = Symbol('approvals')
