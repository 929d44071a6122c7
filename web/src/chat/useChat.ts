/**
 * The chat page's state and actions: the core (`useTetherChat`: auth, sessions, send, stop,
 * approvals, resume) plus the features built on it, each in its own module.
 */

import { useAgentContext } from './agentContext'
import { useSessionFeed } from './sessionFeed'
import { useTurnActions } from './turnActions'
import { browserStorage } from './storage'
import { useTetherChat, type UseTetherChatOptions } from './useTetherChat'

export interface UseChatOptions extends UseTetherChatOptions {
  /** Reconnection delays of the session feed (see sessionFeed.ts). */
  feedRetryDelaysMs?: number[]
}

export function useChat(options: UseChatOptions = {}) {
  const chat = useTetherChat(options)
  useSessionFeed(chat, options.feedRetryDelaysMs)
  const storage = options.localStorage ?? browserStorage('localStorage')
  return { ...chat, ...useTurnActions(chat), ...useAgentContext(chat, storage) }
}

export type Chat = ReturnType<typeof useChat>
