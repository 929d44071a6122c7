import { describe, expect, it } from 'vitest'
import { renderMarkdown } from './markdown'

// Sanitizing proper needs a real DOM (checked in the browser tests); here, without one,
// rendering must fail closed instead of passing model output through as HTML.
describe('renderMarkdown without a DOM', () => {
  it('escapes everything rather than return unsanitized HTML', () => {
    const html = renderMarkdown('<img src=x onerror="alert(1)"> **hi**')
    expect(html).toBe('&#60;img src=x onerror=&#34;alert(1)&#34;&#62; **hi**')
  })
})
