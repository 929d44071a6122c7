/**
 * A server-sent events parser for streams read with `fetch`.
 *
 * `EventSource` can neither POST nor send an `Authorization` header, so runs are read with fetch
 * and parsed here, following the WHATWG event-stream rules: lines end in CRLF, LF or CR (a CR at
 * the end of one chunk may be followed by the LF at the start of the next); `data:` lines of one
 * frame join with "\n"; the last `id:` seen persists across frames; a frame with no data is not
 * dispatched; `:` lines are comments (keep-alives); an unterminated frame at the end of the stream
 * is discarded, because it may be cut short.
 */

export interface SseFrame {
  /** The last event id seen on the stream when this frame was dispatched ("" if none yet). */
  id: string
  /** The `event:` field, or "message" when the frame had none. */
  event: string
  data: string
  retry: number | null
}

const LF = 10
const CR = 13

export class SseParser {
  private buffer = ''
  private scanFrom = 0
  private dataLines: string[] = []
  private eventType = ''
  private retry: number | null = null
  lastEventId = ''

  /** Parse the next piece of text and return the frames it completed. */
  feed(chunk: string): SseFrame[] {
    const frames: SseFrame[] = []
    const buf = this.buffer + chunk
    let lineStart = 0
    let i = this.scanFrom
    for (; i < buf.length; i++) {
      const c = buf.charCodeAt(i)
      if (c !== LF && c !== CR) continue
      // A CR ending this chunk may be the first half of a CRLF: decide when more text arrives.
      if (c === CR && i + 1 === buf.length) break
      this.processLine(buf.slice(lineStart, i), frames)
      if (c === CR && buf.charCodeAt(i + 1) === LF) i++
      lineStart = i + 1
    }
    this.buffer = buf.slice(lineStart)
    this.scanFrom = i - lineStart
    return frames
  }

  /** The stream ended: finish a pending CR-terminated line; an unterminated frame is dropped. */
  end(): SseFrame[] {
    const frames: SseFrame[] = []
    if (this.buffer.endsWith('\r')) this.processLine(this.buffer.slice(0, -1), frames)
    this.buffer = ''
    this.scanFrom = 0
    this.dataLines = []
    this.eventType = ''
    return frames
  }

  private processLine(line: string, frames: SseFrame[]): void {
    if (line === '') {
      this.dispatch(frames)
      return
    }
    if (line.charCodeAt(0) === 58 /* ':' */) return
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32 /* ' ' */) value = value.slice(1)
    switch (field) {
      case 'data':
        this.dataLines.push(value)
        break
      case 'event':
        this.eventType = value
        break
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value)
        break
      default:
        break // unknown fields are ignored, as the spec says
    }
  }

  private dispatch(frames: SseFrame[]): void {
    if (this.dataLines.length > 0) {
      frames.push({
        id: this.lastEventId,
        event: this.eventType || 'message',
        data: this.dataLines.join('\n'),
        retry: this.retry,
      })
    }
    this.dataLines = []
    this.eventType = ''
  }
}

/** No bytes (not even a keep-alive comment) arrived for too long: the connection is presumed dead. */
export class StreamIdleError extends Error {
  constructor(readonly idleMs: number) {
    super(`no data from the server for ${Math.round(idleMs / 1000)} s`)
    this.name = 'StreamIdleError'
  }
}

export interface ReadSseOptions {
  /** Give up on a stream that sends nothing for this long (0 or undefined: wait forever). */
  idleTimeoutMs?: number
}

/**
 * Yield the frames of an event stream until it ends. Breaking out of the loop cancels the body.
 *
 * @throws StreamIdleError when `idleTimeoutMs` passes with no bytes; network errors propagate.
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  options: ReadSseOptions = {},
): AsyncGenerator<SseFrame, void, undefined> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  const parser = new SseParser()
  let done = false
  try {
    for (;;) {
      const chunk = await readWithin(reader, options.idleTimeoutMs ?? 0)
      if (chunk.done) {
        done = true
        yield* parser.feed(decoder.decode())
        yield* parser.end()
        return
      }
      yield* parser.feed(decoder.decode(chunk.value, { stream: true }))
    }
  } finally {
    if (!done) await reader.cancel().catch(() => undefined)
    reader.releaseLock()
  }
}

async function readWithin(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  timeoutMs: number,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  if (timeoutMs <= 0) return reader.read()
  let timer: ReturnType<typeof setTimeout> | undefined
  const idle = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StreamIdleError(timeoutMs)), timeoutMs)
  })
  try {
    return await Promise.race([reader.read(), idle])
  } finally {
    clearTimeout(timer)
  }
}
