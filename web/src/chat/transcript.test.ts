import { describe, expect, it } from 'vitest'
import type { RunEvent, SessionDetail, StoredMessage } from '../api/types'
import { ev } from '../testing/fakeServer'
import {
  applyEvent,
  emptyTranscript,
  newRunView,
  renameRun,
  settleFromReport,
  transcriptFromSession,
  type RunView,
  type Transcript,
} from './transcript'
import { outcomeInWords } from './words'

function run(events: RunEvent[], t: Transcript = emptyTranscript()): Transcript {
  for (const event of events) applyEvent(t, event)
  return t
}

function text(view: RunView | undefined): string {
  return (view?.parts ?? []).map((p) => (p.kind === 'text' ? p.text : `[${p.call.tool}]`)).join('')
}

describe('applyEvent', () => {
  it('appends deltas to the message text', () => {
    const t = run([ev.started('r1', 0), ev.text('r1', 1, 'Hel'), ev.text('r1', 2, 'lo')])
    expect(text(t.runs.r1)).toBe('Hello')
    expect(t.runs.r1!.status).toBe('streaming')
  })

  it('shows tool calls as cards in order, and text after a card as a new block', () => {
    const t = run([
      ev.started('r1', 0),
      ev.text('r1', 1, 'Checking. '),
      ev.toolStarted('r1', 2, 'c1', 'lookup', { q: 'x' }),
    ])
    const view = t.runs.r1!
    const card = view.parts[1]
    expect(card).toMatchObject({ kind: 'tool', call: { tool: 'lookup', args: { q: 'x' }, status: 'running' } })
    run([ev.toolFinished('r1', 3, 'c1', 'ok', { hits: 2 }), ev.text('r1', 4, 'Found it.')], t)
    expect(card).toMatchObject({ call: { status: 'ok', result: { hits: 2 }, error: null } })
    expect(text(view)).toBe('Checking. [lookup]Found it.')
  })

  it('records a failed tool call with its error', () => {
    const t = run([ev.started('r1', 0), ev.toolStarted('r1', 1, 'c1'), ev.toolFinished('r1', 2, 'c1', 'error', null, 'boom')])
    expect(t.runs.r1!.parts[0]).toMatchObject({ call: { status: 'error', error: 'boom' } })
  })

  it('completes on run_finished and carries the usage', () => {
    const t = run([ev.started('r1', 0), ev.text('r1', 1, 'ok'), ev.finished('r1', 2)])
    expect(t.runs.r1).toMatchObject({ status: 'complete', run_status: 'completed', reason: null, usage: { output_tokens: 5 } })
    expect(outcomeInWords(t.runs.r1!)).toBe('')
  })

  it('goes stop -> stopping -> interrupted with the reason', () => {
    const t = run([ev.started('r1', 0), ev.text('r1', 1, 'partial'), ev.stopRequested('r1', 2)])
    expect(t.runs.r1).toMatchObject({ status: 'streaming', stopping: true })
    run([ev.finished('r1', 3, 'cancelled', 'user')], t)
    expect(t.runs.r1).toMatchObject({ status: 'interrupted', stopping: false, reason: 'user' })
    expect(text(t.runs.r1)).toBe('partial')
    expect(outcomeInWords(t.runs.r1!)).toBe('Stopped by you')
  })

  it.each([
    ['timeout', 'interrupted', /time limit/],
    ['token_budget', 'cancelled', /token budget/],
    ['cost_budget', 'cancelled', /cost budget/],
    ['shutdown', 'interrupted', /server shut down/],
  ] as const)('shows a %s stop as interrupted, in words', (reason, status, words) => {
    const t = run([ev.started('r1', 0), ev.finished('r1', 1, status, reason)])
    expect(t.runs.r1!.status).toBe('interrupted')
    expect(outcomeInWords(t.runs.r1!)).toMatch(words)
  })

  it('shows a failed run as an error with its message', () => {
    const t = run([ev.started('r1', 0), ev.finished('r1', 1, 'failed', 'error', 'provider said no')])
    expect(t.runs.r1!.status).toBe('error')
    expect(outcomeInWords(t.runs.r1!)).toBe('Failed: provider said no')
  })

  it('closes tool calls left running when the run ends', () => {
    const t = run([ev.started('r1', 0), ev.toolStarted('r1', 1, 'c1'), ev.finished('r1', 2, 'cancelled', 'user')])
    expect(t.runs.r1!.parts[0]).toMatchObject({ call: { status: 'cancelled' } })
  })

  it('ignores events it has already applied, as a resumed stream replays them', () => {
    const t = run([ev.started('r1', 0), ev.text('r1', 1, 'a'), ev.text('r1', 2, 'b')])
    expect(applyEvent(t, ev.text('r1', 2, 'b'))).toBe(false)
    expect(applyEvent(t, ev.text('r1', 1, 'a'))).toBe(false)
    expect(applyEvent(t, ev.text('r1', 3, 'c'))).toBe(true)
    expect(text(t.runs.r1)).toBe('abc')
  })

  it('ignores anything after run_finished', () => {
    const t = run([ev.started('r1', 0), ev.finished('r1', 1, 'cancelled', 'user')])
    expect(applyEvent(t, ev.text('r1', 2, 'late'))).toBe(false)
    expect(t.runs.r1!.status).toBe('interrupted')
  })

  it('shows a queued run until its first output', () => {
    const t = run([ev.started('r1', 0), ev.queued('r1', 1)])
    expect(t.runs.r1!.queued).toBe('local model')
    run([ev.text('r1', 2, 'x')], t)
    expect(t.runs.r1!.queued).toBeNull()
  })

  it('nests a sub-run under the tool call that started it', () => {
    const t = run([
      ev.started('r1', 0),
      ev.toolStarted('r1', 1, 'c1', 'delegate'),
      ev.childStarted('r1', 2, 'r2', 'c1'),
      ev.started('r2', 0, 's1', 'r1'),
      ev.text('r2', 1, 'sub answer'),
    ])
    expect(t.runs.r1!.parts[0]).toMatchObject({ call: { child_run_ids: ['r2'] } })
    expect(t.runs.r2).toMatchObject({ agent: 'helper', parent_run_id: 'r1', status: 'streaming' })
    expect(text(t.runs.r2)).toBe('sub answer')
  })

  it('puts a sub-run without a known call under its parent run', () => {
    const t = run([ev.started('r1', 0), ev.childStarted('r1', 1, 'r2', null)])
    expect(t.runs.r1!.child_run_ids).toEqual(['r2'])
  })

  it("waits for the sub-run's own stream rather than the parent's report, which may come first", () => {
    const t = run([ev.started('r1', 0), ev.childStarted('r1', 1, 'r2', null), ev.childFinished('r1', 2, 'r2')])
    expect(t.runs.r2!.status).toBe('streaming')
    expect(applyEvent(t, ev.text('r2', 0, 'late but real'))).toBe(true)
    expect(settleFromReport(t.runs.r2!)).toBe(true)
    expect(t.runs.r2!.status).toBe('complete')
  })

  it('re-keys a pending turn when the server names its run', () => {
    const t = emptyTranscript()
    t.items.push({ kind: 'run', key: 'k', run_id: 'pending:x' })
    t.runs['pending:x'] = newRunView('pending:x', { stopping: true })
    renameRun(t, 'pending:x', 'r1')
    applyEvent(t, ev.started('r1', 0))
    expect(t.items[0]!.run_id).toBe('r1')
    expect(Object.keys(t.runs)).toEqual(['r1'])
    expect(t.runs.r1).toMatchObject({ run_id: 'r1', stopping: true, last_seq: 0 })
  })
})

function message(partial: Partial<StoredMessage> & Pick<StoredMessage, 'message_id' | 'run_id' | 'role'>): StoredMessage {
  return { content: '', status: 'complete', created_at: '2025-01-01T00:00:00Z', tool_calls: [], ...partial }
}

describe('transcriptFromSession', () => {
  const finished: SessionDetail = {
    session_id: 's1',
    agent: 'helper',
    title: 'Old chat',
    active_run_id: null,
    runs: [
      { run_id: 'r1', status: 'completed', reason: null, parent_run_id: null },
      { run_id: 'r2', status: 'cancelled', reason: 'timeout', parent_run_id: null },
      { run_id: 'r3', status: 'completed', reason: null, parent_run_id: 'r2' },
    ],
    messages: [
      message({ message_id: 'm1', run_id: 'r1', role: 'user', content: 'hi' }),
      message({ message_id: 'm2', run_id: 'r1', role: 'assistant', content: 'hello' }),
      message({ message_id: 'm3', run_id: 'r2', role: 'user', content: 'look it up' }),
      message({
        message_id: 'm4',
        run_id: 'r2',
        role: 'assistant',
        content: 'Checking.',
        status: 'interrupted',
        tool_calls: [{ call_id: 'c1', tool: 'lookup', args: { q: 'x' }, status: 'running', result: null, error: null }],
      }),
      message({ message_id: 'm5', run_id: 'r3', role: 'user', content: 'sub prompt' }),
      message({ message_id: 'm6', run_id: 'r3', role: 'assistant', content: 'sub answer' }),
    ],
  }

  it('rebuilds turns with their statuses, reasons and tool cards', () => {
    const t = transcriptFromSession(finished)
    expect(t.items.map((i) => (i.kind === 'user' ? `user:${i.content}` : `run:${i.run_id}`))).toEqual([
      'user:hi',
      'run:r1',
      'user:look it up',
      'run:r2',
    ])
    expect(t.runs.r1).toMatchObject({ status: 'complete' })
    expect(t.runs.r2).toMatchObject({ status: 'interrupted', reason: 'timeout' })
    expect(outcomeInWords(t.runs.r2!)).toMatch(/time limit/)
    // A call stored as running in a run that is over never finished.
    expect(t.runs.r2!.parts[1]).toMatchObject({ kind: 'tool', call: { status: 'cancelled' } })
    expect(t.runs.r2!.child_run_ids).toEqual(['r3'])
    expect(text(t.runs.r3)).toBe('sub answer')
  })

  it('never lets events change a stored, finished run', () => {
    const t = transcriptFromSession(finished)
    expect(applyEvent(t, ev.text('r1', 5, 'more'))).toBe(false)
  })

  it("keeps the active run's user message but drops its stored output, for a replay from the start", () => {
    const session: SessionDetail = {
      ...finished,
      active_run_id: 'r9',
      runs: [...finished.runs, { run_id: 'r9', status: 'running', reason: null, parent_run_id: null }],
      messages: [
        ...finished.messages,
        message({ message_id: 'm7', run_id: 'r9', role: 'user', content: 'again' }),
        message({ message_id: 'm8', run_id: 'r9', role: 'assistant', content: 'Hel', status: 'streaming' }),
      ],
    }
    const t = transcriptFromSession(session)
    expect(t.items.at(-2)).toMatchObject({ kind: 'user', content: 'again' })
    expect(t.items.at(-1)).toMatchObject({ kind: 'run', run_id: 'r9' })
    expect(t.runs.r9).toMatchObject({ status: 'streaming', last_seq: -1, parts: [] })
    run([ev.started('r9', 0), ev.text('r9', 1, 'Hel'), ev.text('r9', 2, 'lo')], t)
    expect(text(t.runs.r9)).toBe('Hello')
  })

  it('gives an active run that stored nothing yet a turn for its replay', () => {
    const t = transcriptFromSession({ ...finished, active_run_id: 'r9', runs: [], messages: [] })
    expect(t.items).toEqual([{ kind: 'run', key: 'run:r9', run_id: 'r9' }])
    expect(t.runs.r9!.status).toBe('streaming')
  })

  it('shows a run stored as running but not active as interrupted', () => {
    const t = transcriptFromSession({
      ...finished,
      runs: [{ run_id: 'r1', status: 'running', reason: 'worker_lost', parent_run_id: null }],
      messages: finished.messages.slice(0, 2),
    })
    expect(t.runs.r1!.status).toBe('interrupted')
  })
})

describe('approvals', () => {
  const paused = (): Transcript =>
    run([
      ev.started('r1', 0),
      ev.text('r1', 1, 'I will delete record R-7.'),
      ev.toolStarted('r1', 2, 'c1', 'delete_record', { record_id: 'R-7' }),
      ev.paused('r1', 3, [{ call_id: 'c1', args: { record_id: 'R-7' } }], '2030-01-01T00:00:00Z'),
    ])

  it('marks the waiting calls and keeps the run open, not finished', () => {
    const t = paused()
    const view = t.runs.r1!
    expect(view).toMatchObject({
      status: 'streaming',
      paused: { call_ids: ['c1'], expires_at: '2030-01-01T00:00:00Z', submitting: false },
    })
    expect(view.parts[1]).toMatchObject({ call: { status: 'awaiting_approval', args: { record_id: 'R-7' }, decision: null } })
  })

  it('adds a card for a waiting call it never saw start', () => {
    const t = run([ev.started('r1', 0), ev.paused('r1', 1, [{ call_id: 'c9', tool: 'wipe', args: { all: true } }])])
    expect(t.runs.r1!.parts).toMatchObject([{ kind: 'tool', call: { call_id: 'c9', tool: 'wipe', status: 'awaiting_approval' } }])
  })

  it('runs an approved call with the edited arguments, in the same card and the same turn', () => {
    const t = paused()
    run(
      [
        ev.resumed('r1', 4, [{ call_id: 'c1', approved: true, args: { record_id: 'R-8' }, message: null }]),
        // A call announced again as it finally runs stays one card.
        ev.toolStarted('r1', 5, 'c1', 'delete_record', { record_id: 'R-8' }),
      ],
      t,
    )
    const view = t.runs.r1!
    expect(view.paused).toBeNull()
    expect(view.parts).toHaveLength(2)
    expect(view.parts[1]).toMatchObject({ call: { status: 'running', args: { record_id: 'R-8' } } })
    run([ev.toolFinished('r1', 6, 'c1', 'ok', 'record R-8 deleted'), ev.text('r1', 7, 'Done.'), ev.finished('r1', 8)], t)
    expect(view).toMatchObject({ status: 'complete', ended_awaiting_approval: false })
    expect(view.parts[1]).toMatchObject({ call: { status: 'ok', result: 'record R-8 deleted' } })
    expect(text(view)).toBe('I will delete record R-7.[delete_record]Done.')
  })

  it('shows a denied call as denied with its reason', () => {
    const t = paused()
    run([ev.resumed('r1', 4, [{ call_id: 'c1', approved: false, args: null, message: 'not that one' }])], t)
    expect(t.runs.r1!.parts[1]).toMatchObject({ call: { status: 'denied', result: 'not that one' } })
    run([ev.toolFinished('r1', 5, 'c1', 'denied', 'Denied by the user: not that one')], t)
    expect(t.runs.r1!.parts[1]).toMatchObject({ call: { status: 'denied', result: 'Denied by the user: not that one' } })
  })

  it('cancels the waiting calls when a paused run ends, and says when nobody answered in time', () => {
    const t = paused()
    const card = t.runs.r1!.parts[1]!
    if (card.kind === 'tool') card.call.decision = { approved: true, args: null, message: null }
    run([ev.stopRequested('r1', 4, 'timeout'), ev.finished('r1', 5, 'cancelled', 'timeout')], t)
    const view = t.runs.r1!
    expect(view).toMatchObject({ status: 'interrupted', paused: null, ended_awaiting_approval: true })
    expect(card).toMatchObject({ call: { status: 'cancelled', decision: null } })
    expect(outcomeInWords(view)).toBe('Stopped: nobody answered the approval request in time')
  })

  it('says "stopped by you" for a paused run you stopped', () => {
    const t = paused()
    run([ev.stopRequested('r1', 4), ev.toolFinished('r1', 5, 'c1', 'cancelled', null), ev.finished('r1', 6, 'cancelled', 'user')], t)
    expect(outcomeInWords(t.runs.r1!)).toBe('Stopped by you')
  })

  it('rebuilds a paused run from a replay that ends at run_paused', () => {
    const session: SessionDetail = {
      session_id: 's1',
      agent: 'records-clerk',
      title: null,
      active_run_id: 'r1',
      runs: [{ run_id: 'r1', status: 'paused', reason: null, parent_run_id: null }],
      messages: [
        message({ message_id: 'm1', run_id: 'r1', role: 'user', content: 'delete R-7' }),
        message({
          message_id: 'm2',
          run_id: 'r1',
          role: 'assistant',
          content: 'I will delete record R-7.',
          tool_calls: [
            { call_id: 'c1', tool: 'delete_record', args: { record_id: 'R-7' }, status: 'awaiting_approval', result: null, error: null },
          ],
        }),
      ],
    }
    const t = transcriptFromSession(session)
    expect(t.runs.r1).toMatchObject({ status: 'streaming', parts: [] })
    run(
      [
        ev.started('r1', 0),
        ev.text('r1', 1, 'I will delete record R-7.'),
        ev.toolStarted('r1', 2, 'c1', 'delete_record', { record_id: 'R-7' }),
        ev.paused('r1', 3, [{ call_id: 'c1', args: { record_id: 'R-7' } }]),
      ],
      t,
    )
    expect(t.runs.r1).toMatchObject({ status: 'streaming', paused: { call_ids: ['c1'] } })
    expect(t.runs.r1!.parts[1]).toMatchObject({ call: { status: 'awaiting_approval' } })
  })

  it('shows stored denied calls as denied, and calls left awaiting approval in a finished run as cancelled', () => {
    const t = transcriptFromSession({
      session_id: 's1',
      agent: 'records-clerk',
      title: null,
      active_run_id: null,
      runs: [{ run_id: 'r1', status: 'cancelled', reason: 'user', parent_run_id: null }],
      messages: [
        message({ message_id: 'm1', run_id: 'r1', role: 'user', content: 'delete both' }),
        message({
          message_id: 'm2',
          run_id: 'r1',
          role: 'assistant',
          tool_calls: [
            { call_id: 'c1', tool: 'delete_record', args: {}, status: 'denied', result: 'no', error: null },
            { call_id: 'c2', tool: 'delete_record', args: {}, status: 'awaiting_approval', result: null, error: null },
          ],
        }),
      ],
    })
    expect(t.runs.r1!.parts).toMatchObject([
      { call: { status: 'denied', result: 'no' } },
      { call: { status: 'cancelled' } },
    ])
  })
})
