/**
 * The `context` of agents that declare a context model (`AgentInfo.context_schema`).
 *
 * The page asks for it once per session with a form made from the schema, and sends it with every
 * run of that session. It is remembered per session (and the last one per agent prefills the form
 * of a new chat) in localStorage. The form knows flat fields of type string, number, integer and
 * boolean, and enums; any other field is typed as JSON. The server validates the context anyway.
 */

import { computed, shallowRef, watch } from 'vue'
import type { Json, JsonSchema } from '../api/types'
import type { KeyValueStorage } from './storage'
import type { TetherChat } from './useTetherChat'

export type FieldKind = 'text' | 'number' | 'integer' | 'boolean' | 'choice' | 'json'
export type FieldInput = string | boolean

export interface ContextField {
  name: string
  label: string
  description: string
  kind: FieldKind
  required: boolean
  choices: string[]
  /** What the input starts with: the remembered value, else the schema's default. */
  initial: FieldInput
}

export type ContextValues = Record<string, Json>

/** The form's fields for `schema`, prefilled from `remembered`. */
export function contextFields(schema: JsonSchema, remembered: ContextValues | null = null): ContextField[] {
  const required = new Set(schema.required ?? [])
  return Object.entries(schema.properties ?? {}).map(([name, property]) => {
    const kind = fieldKind(property)
    const choices = (property.enum ?? nonNull(property)?.enum ?? []).map(String)
    const value = remembered && name in remembered ? remembered[name] : property.default
    return {
      name,
      label: property.title ?? name,
      description: property.description ?? '',
      kind,
      required: required.has(name),
      choices,
      initial: toInput(kind, value),
    }
  })
}

/** The context the inputs describe, or what is wrong with them, by field name. */
export function contextFromInputs(
  fields: ContextField[],
  inputs: Record<string, FieldInput>,
): { context: ContextValues } | { errors: Record<string, string> } {
  const context: ContextValues = {}
  const errors: Record<string, string> = {}
  for (const field of fields) {
    const input = inputs[field.name] ?? field.initial
    if (field.kind === 'boolean') {
      context[field.name] = input === true
      continue
    }
    const text = String(input).trim()
    if (!text) {
      if (field.required) errors[field.name] = 'Required.'
      continue
    }
    const parsed = parseInput(field.kind, text)
    if (parsed === undefined) errors[field.name] = field.kind === 'json' ? 'Not valid JSON.' : `Not ${article(field.kind)}.`
    else context[field.name] = parsed
  }
  return Object.keys(errors).length ? { errors } : { context }
}

function fieldKind(property: JsonSchema): FieldKind {
  const p = nonNull(property) ?? property
  if (p.enum) return 'choice'
  const type = Array.isArray(p.type) ? p.type.find((t) => t !== 'null') : p.type
  if (type === 'string') return 'text'
  if (type === 'number' || type === 'integer' || type === 'boolean') return type
  return 'json'
}

/** `X | None` in pydantic is `anyOf: [X, {type: null}]`: the form edits the X. */
function nonNull(property: JsonSchema): JsonSchema | null {
  const options = property.anyOf?.filter((o) => o.type !== 'null') ?? []
  return options.length === 1 ? options[0]! : null
}

function toInput(kind: FieldKind, value: Json | undefined): FieldInput {
  if (kind === 'boolean') return value === true
  if (value === undefined || value === null) return ''
  return kind === 'json' ? JSON.stringify(value) : String(value)
}

function parseInput(kind: FieldKind, text: string): Json | undefined {
  switch (kind) {
    case 'text':
    case 'choice':
      return text
    case 'number':
    case 'integer': {
      const n = Number(text)
      return Number.isFinite(n) && (kind === 'number' || Number.isInteger(n)) ? n : undefined
    }
    default:
      try {
        return JSON.parse(text) as Json
      } catch {
        return undefined
      }
  }
}

function article(kind: FieldKind): string {
  return kind === 'integer' ? 'a whole number' : 'a number'
}

const KEY = 'tether.context.'

/** The context of the open chat: asked for once per session, sent with each of its runs. */
export function useAgentContext(chat: TetherChat, storage: KeyValueStorage) {
  const schema = computed(() => chat.agents.value.find((a) => a.name === chat.agent.value)?.context_schema ?? null)
  const context = shallowRef<ContextValues | null>(null)
  const fields = computed(() => {
    const remembered = context.value ?? read(`${KEY}agent.${chat.agent.value}`)
    return schema.value ? contextFields(schema.value, remembered) : []
  })

  watch(
    [chat.agent, chat.sessionId],
    ([agent, id], previous) => {
      const [oldAgent, oldId] = previous ?? [null, null]
      // A new chat's first run named its session (an opened session streams nothing yet): the
      // context given for the new chat is that session's.
      const named = id && !oldId && agent === oldAgent && chat.isStreaming.value
      if (named && context.value) write(`${KEY}session.${id}`, context.value)
      else context.value = id ? read(`${KEY}session.${id}`) : null
    },
    { immediate: true, flush: 'sync' },
  )
  // Deliberate: sync, so a send right after setContext already carries it.
  watch([context, schema], ([values, s]) => (chat.runContext.value = s ? values : null), {
    immediate: true,
    flush: 'sync',
  })

  /** Use `values` for this chat (and remember them for the next chat with this agent). */
  function setContext(values: ContextValues): void {
    context.value = values
    write(`${KEY}agent.${chat.agent.value}`, values)
    if (chat.sessionId.value) write(`${KEY}session.${chat.sessionId.value}`, values)
  }

  function read(key: string): ContextValues | null {
    try {
      return JSON.parse(storage.getItem(key) ?? 'null') as ContextValues | null
    } catch {
      return null
    }
  }
  function write(key: string, values: ContextValues): void {
    storage.setItem(key, JSON.stringify(values))
  }

  return {
    contextSchema: schema,
    contextFields: fields,
    context,
    /** The agent wants a context and this chat has none yet: the form shows. */
    needsContext: computed(() => schema.value !== null && context.value === null),
    setContext,
    editContext: () => (context.value = null),
  }
}
