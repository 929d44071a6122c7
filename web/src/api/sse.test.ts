import { describe, expect, it } from 'vitest'
import { readSse, SseParser, StreamIdleError, type SseFrame } from './sse'

function parseAll(chunks: string[]): SseFrame[] {
  const parser = new SseParser()
  return [...chunks.flatMap((chunk) => parser.feed(chunk)), ...parser.end()]
}

function streamOf(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder()
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk)
      controller.close()
    },
  })
}

async function collect(body: ReadableStream<Uint8Array>, idleTimeoutMs?: number): Promise<SseFrame[]> {
  const frames: SseFrame[] = []
  for await (const frame of readSse(body, idleTimeoutMs === undefined ? {} : { idleTimeoutMs })) frames.push(frame)
  return frames
}

const TWO_FRAMES =
  'id: 0\nevent: run_started\ndata: {"seq":0}\n\n' + 'id: 1\nevent: text_delta\ndata: {"seq":1,"text":"hi"}\n\n'

describe('SseParser', () => {
  it('parses id, event and data of each frame', () => {
    expect(parseAll([TWO_FRAMES])).toEqual([
      { id: '0', event: 'run_started', data: '{"seq":0}', retry: null },
      { id: '1', event: 'text_delta', data: '{"seq":1,"text":"hi"}', retry: null },
    ])
  })

  it('gives the same frames however the text is split into chunks', () => {
    const whole = parseAll([TWO_FRAMES])
    for (let cut = 0; cut <= TWO_FRAMES.length; cut++) {
      expect(parseAll([TWO_FRAMES.slice(0, cut), TWO_FRAMES.slice(cut)])).toEqual(whole)
    }
    expect(parseAll([...TWO_FRAMES])).toEqual(whole) // one character at a time
  })

  it('joins multi-line data with newlines', () => {
    expect(parseAll(['data: first\ndata: second\ndata:\ndata:  indented\n\n'])).toEqual([
      { id: '', event: 'message', data: 'first\nsecond\n\n indented', retry: null },
    ])
  })

  it('accepts CRLF and CR line endings, including a CRLF split across chunks', () => {
    const crlf = 'id: 7\r\ndata: a\r\n\r\n'
    for (let cut = 0; cut <= crlf.length; cut++) {
      expect(parseAll([crlf.slice(0, cut), crlf.slice(cut)])).toEqual([
        { id: '7', event: 'message', data: 'a', retry: null },
      ])
    }
    expect(parseAll(['data: a\r\rdata: b\r\r'])).toEqual([
      { id: '', event: 'message', data: 'a', retry: null },
      { id: '', event: 'message', data: 'b', retry: null },
    ])
  })

  it('keeps the last id across frames that have none', () => {
    const frames = parseAll(['id: 4\ndata: a\n\ndata: b\n\nid: 5\ndata: c\n\n'])
    expect(frames.map((f) => f.id)).toEqual(['4', '4', '5'])
  })

  it('skips comments and does not dispatch frames without data, though their id counts', () => {
    const parser = new SseParser()
    const frames = parser.feed(': keep-alive\n\nid: 9\n\nevent: ping\n\ndata: x\n\n')
    expect(frames).toEqual([{ id: '9', event: 'message', data: 'x', retry: null }])
    expect(parser.lastEventId).toBe('9')
  })

  it('handles fields without a colon, values without the space, retry and unknown fields', () => {
    expect(parseAll(['data\nretry: 3000\nfoo: bar\ndata:x\n\n'])).toEqual([
      { id: '', event: 'message', data: '\nx', retry: 3000 },
    ])
  })

  it('drops an unterminated frame at the end of the stream', () => {
    expect(parseAll(['data: complete\n\ndata: cut sho'])).toEqual([
      { id: '', event: 'message', data: 'complete', retry: null },
    ])
  })

  it('keeps data text intact, colons and all', () => {
    expect(parseAll(['data: {"a": "b: c"}\n\n'])[0]!.data).toBe('{"a": "b: c"}')
  })
})

describe('readSse', () => {
  it('decodes UTF-8 characters split across chunks', async () => {
    const bytes = new TextEncoder().encode('data: héllo 👋\n\n')
    const frames = await collect(streamOf([bytes.slice(0, 8), bytes.slice(8, 14), bytes.slice(14)]))
    expect(frames.map((f) => f.data)).toEqual(['héllo 👋'])
  })

  it('yields frames as chunks arrive and finishes a CR-terminated frame at the end', async () => {
    const frames = await collect(streamOf(['data: a\n', '\ndata: b\r', '\r']))
    expect(frames.map((f) => f.data)).toEqual(['a', 'b'])
  })

  it('fails with StreamIdleError when the server sends nothing for too long', async () => {
    const silent = new ReadableStream<Uint8Array>({ start() {} })
    await expect(collect(silent, 20)).rejects.toBeInstanceOf(StreamIdleError)
  })

  it('cancels the body when the reader stops early', async () => {
    let cancelled = false
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('data: a\n\ndata: b\n\n'))
      },
      cancel() {
        cancelled = true
      },
    })
    for await (const frame of readSse(body)) {
      expect(frame.data).toBe('a')
      break
    }
    expect(cancelled).toBe(true)
  })
})
