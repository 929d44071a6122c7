/**
 * Markdown to safe HTML. Model output is untrusted: marked renders it, DOMPurify strips anything
 * that could run script, and links open in a new tab without access to this page.
 *
 * Code blocks are highlighted with highlight.js (its core and the few languages registered below,
 * bundled: no CDN) and carry a copy button, which MarkdownText.vue handles. A block in a language
 * not registered here stays plain.
 *
 * Rendering the whole text again on each delta is deliberate: partial Markdown (an unclosed code
 * fence, half a table) renders differently once complete, and messages are small enough.
 */

import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import javascript from 'highlight.js/lib/languages/javascript'
import json from 'highlight.js/lib/languages/json'
import python from 'highlight.js/lib/languages/python'
import sql from 'highlight.js/lib/languages/sql'
import typescript from 'highlight.js/lib/languages/typescript'
import xml from 'highlight.js/lib/languages/xml'
import yaml from 'highlight.js/lib/languages/yaml'
import { Marked, type Tokens } from 'marked'

const LANGUAGES = { bash, javascript, json, python, sql, typescript, xml, yaml }
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language)

const COPY_BUTTON =
  '<button type="button" class="copy-code" data-testid="copy-code" aria-label="Copy code">Copy</button>'

const markdown = new Marked({ gfm: true, breaks: true })
markdown.use({ renderer: { code: renderCode } })
let hooked = false

export function renderMarkdown(text: string): string {
  // Fail closed: without a DOM to sanitize with, DOMPurify would hand the input back unchanged.
  if (!DOMPurify.isSupported) return escapeHtml(text)
  if (!hooked) {
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A' && node.getAttribute('href')) {
        node.setAttribute('target', '_blank')
        node.setAttribute('rel', 'noopener noreferrer')
      }
    })
    hooked = true
  }
  return DOMPurify.sanitize(markdown.parse(text, { async: false }), { USE_PROFILES: { html: true } })
}

/** A fenced or indented code block: highlighted when its language is known, with a copy button. */
export function renderCode({ text, lang }: Pick<Tokens.Code, 'text' | 'lang'>): string {
  const name = (lang ?? '').trim().split(/\s+/)[0]?.toLowerCase() ?? ''
  const known = name ? hljs.getLanguage(name) : undefined
  const body = known ? hljs.highlight(text, { language: name, ignoreIllegals: true }).value : escapeHtml(text)
  const cls = known ? ` class="hljs language-${escapeHtml(name)}"` : ''
  return `<div class="code-block">${COPY_BUTTON}<pre><code${cls}>${body}</code></pre></div>\n`
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}
