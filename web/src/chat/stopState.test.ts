import { describe, expect, it } from 'vitest'
import { StopControl } from './stopState'

describe('StopControl', () => {
  it('waits for the run id when the stop could not be delivered, then confirms', () => {
    const stop = new StopControl()
    stop.want()
    expect(stop.isWaitingForId).toBe(true)
    stop.sending()
    expect([stop.isSent, stop.isWaitingForId]).toEqual([true, false])
    stop.notDeliverable()
    expect([stop.isSent, stop.isWaitingForId]).toEqual([false, true])
    stop.sending()
    stop.confirmed()
    expect([stop.isSent, stop.isConfirmed]).toEqual([true, true])
    stop.want() // pressing again changes nothing
    expect(stop.state).toBe('confirmed')
    stop.reset()
    expect(stop.state).toBe('idle')
  })
})
