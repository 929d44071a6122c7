/**
 * Where the Stop of the current run stands, as one explicit state:
 *
 *     idle ──stop──▶ wanted ──request sent──▶ sent ──server took it, by run id──▶ confirmed
 *                      ▲                        │
 *                      └──not deliverable yet───┘   (no run id yet: sent again once run_started names it)
 *
 * A failed request goes back to idle (the person may press Stop again); the run's end, a new
 * message or leaving the session go back to idle too. `sent` also covers a stop the session route
 * accepted by client_request_id: its end arrives on the run's stream, like any other.
 */

export type StopState = 'idle' | 'wanted' | 'sent' | 'confirmed'

export class StopControl {
  state: StopState = 'idle'

  /** A stop request is on its way or was taken: pressing Stop again does nothing. */
  get isSent(): boolean {
    return this.state === 'sent' || this.state === 'confirmed'
  }

  /** Stop was pressed but could not be sent yet: send it once the run has an id. */
  get isWaitingForId(): boolean {
    return this.state === 'wanted'
  }

  /** The server took the stop of this run by its id (so a paused run's end is in its events). */
  get isConfirmed(): boolean {
    return this.state === 'confirmed'
  }

  want(): void {
    if (this.state === 'idle') this.state = 'wanted'
  }

  sending(): void {
    this.state = 'sent'
  }

  confirmed(): void {
    this.state = 'confirmed'
  }

  /** The request could not name the run yet: wait for its id. */
  notDeliverable(): void {
    this.state = 'wanted'
  }

  reset(): void {
    this.state = 'idle'
  }
}
