/** Failed requests in words, and which failures are worth retrying. */

import { ApiError } from '../api/client'
import { StreamIdleError } from '../api/sse'

export function isRetryable(status: number): boolean {
  return status >= 500 || status === 408 || status === 429
}

export function describe(err: unknown): string {
  if (err instanceof ApiError) return err.message
  if (err instanceof StreamIdleError) return `the server went quiet (${err.message})`
  if (err instanceof DOMException && err.name === 'TimeoutError') return 'the server did not answer in time'
  if (err instanceof TypeError) return "can't reach the server"
  if (err instanceof Error) return err.message
  return String(err)
}
