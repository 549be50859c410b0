/**
 * Berth's web UI: plain TypeScript and the DOM, no framework (five pages do not need one, and
 * nothing here needs updating when a framework moves on). Routes (History API, same URLs the
 * server answers with this page):
 *   /, /ui/repositories        repositories      /ui/repository/<name>             one repository's tags
 *   /ui/image/<name>?reference=<tag|digest>       one image                          /ui/storage, /ui/login
 */
import type { SessionInfo } from '../web/api-types.js'
import { api, ApiFailure, rememberSession } from './api.js'
import { h, replace } from './dom.js'
import { errorBox } from './parts.js'
import { imagePage } from './pages/image.js'
import { loginPage } from './pages/login.js'
import { repositoriesPage } from './pages/repositories.js'
import { repositoryPage } from './pages/repository.js'
import { storagePage } from './pages/storage.js'

export interface App {
  readonly session: SessionInfo
  navigate(url: string, options?: { replace?: boolean }): void
  /** A link handled by the router. */
  link(href: string, ...children: (Node | string)[]): HTMLAnchorElement
  setSession(session: SessionInfo): void
  /** Sets the document title and the page heading's focus target. */
  title(text: string): void
}

let session: SessionInfo
const main = (): HTMLElement => document.getElementById('content') as HTMLElement

const app: App = {
  get session() {
    return session
  },
  navigate(url, options = {}) {
    if (options.replace === true) history.replaceState(null, '', url)
    else history.pushState(null, '', url)
    void render(true)
  },
  link(href, ...children) {
    return h(
      'a',
      {
        href,
        onclick: (event: Event) => {
          const mouse = event as MouseEvent
          if (mouse.button !== 0 || mouse.metaKey || mouse.ctrlKey || mouse.shiftKey || mouse.altKey) return
          event.preventDefault()
          app.navigate(href)
        },
      },
      ...children,
    )
  },
  setSession(next) {
    session = next
    rememberSession(next)
    renderHeader()
  },
  title(text) {
    document.title = `${text} · Berth`
  },
}

function renderHeader(): void {
  const header = document.getElementById('session')
  if (header === null) return
  if (session.user !== null) {
    replace(
      header,
      h('span', { class: 'user' }, h('span', { class: 'visually-hidden' }, 'Logged in as '), session.user),
      h(
        'button',
        {
          type: 'button',
          class: 'secondary',
          onclick: () => {
            void api<SessionInfo>('POST', 'logout').then(next => {
              app.setSession(next)
              app.navigate('/')
            })
          },
        },
        'Log out',
      ),
    )
  } else if (session.canLogIn) {
    replace(header, app.link(`/ui/login?next=${encodeURIComponent(location.pathname + location.search)}`, 'Log in'))
  } else replace(header)
}

function markCurrentNav(path: string): void {
  for (const link of document.querySelectorAll<HTMLAnchorElement>('nav.site a')) {
    const target = link.getAttribute('href') ?? ''
    const current = target === '/ui/storage' ? path.startsWith('/ui/storage') : !path.startsWith('/ui/storage') && !path.startsWith('/ui/login')
    if (current) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
}

async function render(moveFocus: boolean): Promise<void> {
  const path = location.pathname
  const query = new URLSearchParams(location.search)
  const target = main()
  markCurrentNav(path)
  target.setAttribute('aria-busy', 'true')
  try {
    let page: HTMLElement
    if (path.startsWith('/ui/login')) page = loginPage(app, query)
    else if (path.startsWith('/ui/storage')) page = await storagePage(app, query)
    else if (path.startsWith('/ui/repository/')) page = await repositoryPage(app, decodeURIComponent(path.slice('/ui/repository/'.length)), query)
    else if (path.startsWith('/ui/image/')) page = await imagePage(app, decodeURIComponent(path.slice('/ui/image/'.length)), query)
    else page = await repositoriesPage(app, query)
    replace(target, page)
  } catch (error) {
    app.title('Error')
    const message = error instanceof ApiFailure && error.status === 404 ? 'Not found, or you may not see it.' : (error as Error).message
    replace(
      target,
      h('h1', { tabindex: -1 }, 'Something went wrong'),
      errorBox(message),
      session.user === null && session.canLogIn
        ? h('p', null, app.link(`/ui/login?next=${encodeURIComponent(path + location.search)}`, 'Log in'), ' to see more.')
        : null,
    )
  } finally {
    target.removeAttribute('aria-busy')
  }
  if (moveFocus) (target.querySelector('h1') ?? target).focus()
}

function layout(): void {
  const skip = h('a', { class: 'skip', href: '#content' }, 'Skip to content')
  const header = h(
    'header',
    { class: 'top' },
    app.link('/', h('img', { src: '/ui/assets/icon.svg', alt: '', width: 24, height: 24 }), h('span', { class: 'brand' }, 'Berth')),
    h('nav', { class: 'site', 'aria-label': 'Main' }, app.link('/', 'Repositories'), app.link('/ui/storage', 'Storage')),
    h('div', { id: 'session', class: 'session' }),
  )
  const content = h('main', { id: 'content', tabindex: -1 })
  const status = h('div', { id: 'status', class: 'status', role: 'status', 'aria-live': 'polite' })
  replace(document.body, skip, header, content, status)
}

async function start(): Promise<void> {
  layout()
  try {
    app.setSession(await api<SessionInfo>('GET', 'session'))
  } catch (error) {
    replace(main(), errorBox(`Berth does not answer: ${(error as Error).message}`))
    return
  }
  window.addEventListener('popstate', () => void render(true))
  await render(false)
}

void start()
