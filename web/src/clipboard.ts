/**
 * Copy text to the clipboard. The Clipboard API needs a secure origin (https or localhost); on a
 * plain-http LAN address the old `execCommand('copy')` over a hidden textarea still works.
 */
export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    const area = document.createElement('textarea')
    area.value = text
    area.setAttribute('readonly', '')
    area.style.position = 'fixed'
    area.style.opacity = '0'
    document.body.appendChild(area)
    area.select()
    try {
      return document.execCommand('copy')
    } finally {
      area.remove()
    }
  }
}

/** Show "Copied" on `button` for a moment (its own text comes back after). */
export function flashCopied(button: HTMLElement, copied: boolean): void {
  const label = button.dataset.label ?? button.textContent ?? ''
  button.dataset.label = label
  button.textContent = copied ? 'Copied' : 'Copy failed'
  setTimeout(() => (button.textContent = label), 1500)
}
