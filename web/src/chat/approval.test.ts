import { describe, expect, it } from 'vitest'
import { ev } from '../testing/fakeServer'
import { approval, awaitingCalls, collectDecisions, denial, formatArgs, parseArgs, sameJson } from './approval'
import { applyEvent, emptyTranscript, findCall } from './transcript'

describe('editing the arguments', () => {
  it('round-trips the arguments through the editor', () => {
    const args = { record_id: 'R-7', force: false, tags: ['a'] }
    expect(parseArgs(formatArgs(args))).toEqual({ ok: true, args })
  })

  it.each([
    ['{"record_id": ', /Not valid JSON/],
    ['["R-7"]', /must be a JSON object/],
    ['"R-7"', /must be a JSON object/],
    ['null', /must be a JSON object/],
  ])('refuses %s with a reason', (text, error) => {
    const parsed = parseArgs(text)
    expect(parsed.ok).toBe(false)
    if (!parsed.ok) expect(parsed.error).toMatch(error)
  })

  it('sends no arguments for an untouched approval, and the edited ones otherwise', () => {
    const original = { record_id: 'R-7', opts: { a: 1, b: 2 } }
    expect(approval(original, { opts: { b: 2, a: 1 }, record_id: 'R-7' })).toEqual({ approved: true, args: null, message: null })
    expect(approval(original, { record_id: 'R-8', opts: { a: 1, b: 2 } })).toEqual({
      approved: true,
      args: { record_id: 'R-8', opts: { a: 1, b: 2 } },
      message: null,
    })
  })

  it('sends a denial with its trimmed reason, or none', () => {
    expect(denial('  not that one ')).toEqual({ approved: false, args: null, message: 'not that one' })
    expect(denial('   ')).toEqual({ approved: false, args: null, message: null })
  })

  it('compares JSON values by content', () => {
    expect(sameJson([1, { a: null }], [1, { a: null }])).toBe(true)
    expect(sameJson([1, 2], [2, 1])).toBe(false)
    expect(sameJson({ a: 1 }, { a: 1, b: 2 })).toBe(false)
    expect(sameJson({ a: [] }, { a: {} })).toBe(false)
  })
})

describe('gathering the decisions', () => {
  it('has them only once every waiting call is decided, in the order the server listed the calls', () => {
    const t = emptyTranscript()
    for (const event of [
      ev.started('r1', 0),
      ev.toolStarted('r1', 1, 'c1', 'delete_record'),
      ev.toolStarted('r1', 2, 'c2', 'delete_record'),
      ev.paused('r1', 3, [{ call_id: 'c2' }, { call_id: 'c1' }]),
    ]) {
      applyEvent(t, event)
    }
    const view = t.runs.r1!
    expect(awaitingCalls(view).map((c) => c.call_id)).toEqual(['c2', 'c1'])
    expect(collectDecisions(view)).toBeNull()
    findCall(view, 'c1')!.decision = denial('no')
    expect(collectDecisions(view)).toBeNull()
    findCall(view, 'c2')!.decision = approval({}, {})
    expect(collectDecisions(view)).toEqual([
      { call_id: 'c2', approved: true, args: null, message: null },
      { call_id: 'c1', approved: false, args: null, message: 'no' },
    ])
  })

  it('has none for a run that is not paused', () => {
    const t = emptyTranscript()
    applyEvent(t, ev.started('r1', 0))
    expect(collectDecisions(t.runs.r1!)).toBeNull()
    expect(awaitingCalls(t.runs.r1!)).toEqual([])
  })
})
