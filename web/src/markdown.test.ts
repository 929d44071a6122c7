import { describe, expect, it } from 'vitest'
import { renderCode, renderMarkdown } from './markdown'

// Sanitizing proper needs a real DOM (checked in the browser tests); here, without one,
// rendering must fail closed instead of passing model output through as HTML.
describe('renderMarkdown without a DOM', () => {
  it('escapes everything rather than return unsanitized HTML', () => {
    const html = renderMarkdown('<img src=x onerror="alert(1)"> **hi**')
    expect(html).toBe('&#60;img src=x onerror=&#34;alert(1)&#34;&#62; **hi**')
  })
})

describe('code blocks', () => {
  it('highlight a registered language and escape the rest, each with a copy button', () => {
    const python = renderCode({ text: 'def f(x):\n    return "<b>"', lang: 'py' })
    expect(python).toContain('<code class="hljs language-py">')
    expect(python).toContain('<span class="hljs-keyword">def</span>')
    expect(python).toContain('&quot;&lt;b&gt;&quot;')
    expect(python).toContain('data-testid="copy-code"')
    const plain = renderCode({ text: '<script>x</script>', lang: 'cobol' })
    expect(plain).toContain('<pre><code>&#60;script&#62;x&#60;/script&#62;</code></pre>')
  })
})
