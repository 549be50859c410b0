/**
 * The browser code's only way to make elements: `h(tag, attributes, ...children)`. Strings become
 * text nodes (never HTML), so repository names, tags, labels and annotations, which are
 * attacker-controlled, are always shown as text. Nothing in src/ui uses innerHTML.
 */

export type Child = Node | string | number | null | undefined | false | readonly Child[]
type Listener = (event: Event) => void
export type Attributes = Record<string, string | number | boolean | null | undefined | Listener>

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes?: Attributes | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (typeof value === 'function') element.addEventListener(name.slice(2).toLowerCase(), value)
    else if (name === 'class') element.className = String(value)
    else element.setAttribute(name, value === true ? '' : String(value))
  }
  append(element, children)
  return element
}

export function append(parent: Node, children: readonly Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    if (Array.isArray(child)) append(parent, child as readonly Child[])
    else parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child as string | number)))
  }
}

/** Replaces the children of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild)
  append(parent, children)
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB']

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '—'
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`
}

/** "3 hours ago" with the exact time in a <time> element's title and datetime. */
export function time(iso: string | null | undefined): Node {
  if (iso === null || iso === undefined) return document.createTextNode('—')
  const date = new Date(iso)
  if (Number.isNaN(date.getTime())) return document.createTextNode('—')
  return h('time', { datetime: date.toISOString(), title: date.toLocaleString() }, relative(date))
}

function relative(date: Date): string {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000)
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
  const steps: [number, Intl.RelativeTimeFormatUnit][] = [
    [60, 'second'],
    [60, 'minute'],
    [24, 'hour'],
    [30, 'day'],
    [12, 'month'],
  ]
  let value = seconds
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return format.format(-value, unit)
    value = Math.round(value / size)
  }
  return format.format(-value, 'year')
}

export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':')
  return colon < 0 ? digest.slice(0, 12) : digest.slice(colon + 1, colon + 13)
}

/** A value that may hold right-to-left or other bidirectional text, isolated so it cannot reorder what surrounds it. */
export function isolated(value: string): HTMLElement {
  return h('bdi', null, value)
}

/** A table inside a scrolling region (phones), with a caption for screen readers. */
export function table(caption: string, headings: readonly string[], rows: readonly HTMLTableRowElement[]): HTMLElement {
  return h(
    'div',
    { class: 'table-wrap', role: 'region', 'aria-label': caption, tabindex: 0 },
    h(
      'table',
      null,
      h('caption', { class: 'visually-hidden' }, caption),
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          headings.map(text => h('th', { scope: 'col' }, text)),
        ),
      ),
      h('tbody', null, rows),
    ),
  )
}
