/** Pieces several pages use: pull commands with copy, the confirmation dialog, the pager, status messages. */
import { h, replace } from './dom.js'

/** The polite live region: "Copied", "Tag deleted" … */
export function announce(message: string): void {
  const region = document.getElementById('status')
  if (region === null) return
  replace(region, message)
  window.setTimeout(() => {
    if (region.textContent === message) replace(region)
  }, 4000)
}

export type PullTool = 'docker' | 'podman' | 'skopeo' | 'oras'
const TOOLS: readonly PullTool[] = ['docker', 'podman', 'skopeo', 'oras']
let chosenTool: PullTool = 'docker'

/** The pull command for `repository` at a tag (`:tag`) or digest (`@sha256:…`) with the chosen tool. */
export function pullCommand(tool: PullTool, repository: string, reference: string): string {
  const plain = location.protocol === 'http:'
  const at = reference.includes(':') ? `@${reference}` : `:${reference}`
  const image = `${location.host}/${repository}${at}`
  const last = repository.slice(repository.lastIndexOf('/') + 1)
  switch (tool) {
    case 'docker':
      return `docker pull ${image}`
    case 'podman':
      return `podman pull ${plain ? '--tls-verify=false ' : ''}${image}`
    case 'skopeo':
      return `skopeo copy ${plain ? '--src-tls-verify=false ' : ''}docker://${image} oci:${last}`
    case 'oras':
      return `oras pull ${plain ? '--plain-http ' : ''}${image}`
  }
}

export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    const area = h('textarea', { class: 'visually-hidden', 'aria-hidden': 'true' })
    area.value = text
    document.body.appendChild(area)
    area.select()
    const done = document.execCommand('copy')
    area.remove()
    return done
  }
}

export function copyButton(text: () => string, label: string): HTMLButtonElement {
  return h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      'aria-label': label,
      onclick: () => {
        void copyText(text()).then(done => announce(done ? 'Copied to the clipboard' : 'Could not copy; select the text instead'))
      },
    },
    'Copy',
  )
}

/** Tool switcher + the command + a copy button. */
export function pullCommands(repository: string, reference: string): HTMLElement {
  const code = h('code', { class: 'command', 'data-testid': 'pull-command' })
  const show = (): void => replace(code, pullCommand(chosenTool, repository, reference))
  const buttons = TOOLS.map(tool =>
    h(
      'button',
      {
        type: 'button',
        class: 'tool',
        'aria-pressed': String(tool === chosenTool),
        onclick: (event: Event) => {
          chosenTool = tool
          for (const other of buttons) other.setAttribute('aria-pressed', String(other === event.currentTarget))
          show()
        },
      },
      tool,
    ),
  )
  show()
  return h(
    'section',
    { class: 'pull', 'aria-label': 'Pull command' },
    h('div', { class: 'tools', role: 'group', 'aria-label': 'Client' }, buttons),
    h(
      'div',
      { class: 'command-row' },
      code,
      copyButton(() => code.textContent ?? '', 'Copy the pull command'),
    ),
  )
}

/** Asks before something irreversible: resolves true when confirmed. A native modal <dialog> (focus trapped, Esc cancels). */
export function confirmDialog(title: string, body: readonly (Node | string)[], action: string): Promise<boolean> {
  return new Promise(resolve => {
    const heading = h('h2', { id: 'dialog-title' }, title)
    const dialog = h(
      'dialog',
      { 'aria-labelledby': 'dialog-title', class: 'confirm' },
      h(
        'form',
        { method: 'dialog' },
        heading,
        h('div', { class: 'dialog-body' }, ...body),
        h(
          'div',
          { class: 'actions' },
          h('button', { value: 'cancel', class: 'secondary', autofocus: true }, 'Cancel'),
          h('button', { value: 'confirm', class: 'danger' }, action),
        ),
      ),
    )
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'confirm')
      dialog.remove()
    })
    document.body.appendChild(dialog)
    dialog.showModal()
  })
}

/** "1–50 of 120" with previous and next. */
export function pager(total: number, offset: number, limit: number, go: (offset: number) => void): HTMLElement | null {
  if (total <= limit && offset === 0) return null
  const end = Math.min(total, offset + limit)
  return h(
    'nav',
    { class: 'pager', 'aria-label': 'Pages' },
    h('button', { type: 'button', class: 'secondary', disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit)) }, 'Previous'),
    h('span', null, `${total === 0 ? 0 : offset + 1}–${end} of ${total}`),
    h('button', { type: 'button', class: 'secondary', disabled: end >= total, onclick: () => go(offset + limit) }, 'Next'),
  )
}

export function errorBox(message: string): HTMLElement {
  return h('p', { class: 'error', role: 'alert' }, message)
}
