/**
 * Markdown to safe HTML. Model output is untrusted: marked renders it, DOMPurify strips anything
 * that could run script, and links open in a new tab without access to this page.
 *
 * Rendering the whole text again on each delta is deliberate: partial Markdown (an unclosed code
 * fence, half a table) renders differently once complete, and messages are small enough.
 */

import DOMPurify from 'dompurify'
import { Marked } from 'marked'

const markdown = new Marked({ gfm: true, breaks: true })
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

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}
