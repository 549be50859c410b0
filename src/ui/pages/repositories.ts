import type { RepositoryPage } from '../../web/api-types.js'
import { api } from '../api.js'
import { formatBytes, h, table, time } from '../dom.js'
import type { App } from '../main.js'
import { pager } from '../parts.js'

const LIMIT = 50

export async function repositoriesPage(app: App, query: URLSearchParams): Promise<HTMLElement> {
  app.title('Repositories')
  const q = query.get('q') ?? ''
  const sort = query.get('sort') ?? 'name'
  const namespace = query.get('namespace') ?? ''
  const offset = Number(query.get('offset') ?? '0') || 0
  const page = await api<RepositoryPage>('GET', 'repositories', { q, sort, namespace, offset, limit: LIMIT })
  const go = (changes: Record<string, string | number>): void => {
    const next = new URLSearchParams({ q, sort, namespace, offset: String(offset) })
    for (const [name, value] of Object.entries(changes)) next.set(name, String(value))
    const unset = Array.from(next.keys()).filter(name => next.get(name) === '' || (name === 'offset' && next.get(name) === '0'))
    for (const name of unset) next.delete(name)
    const search = next.toString()
    app.navigate(`/ui/repositories${search ? `?${search}` : ''}`, { replace: 'q' in changes })
  }

  const search = h('input', { id: 'repo-search', type: 'search', name: 'q', value: q, placeholder: 'Search repositories', autocomplete: 'off' })
  let timer: number | undefined
  search.addEventListener('input', () => {
    window.clearTimeout(timer)
    timer = window.setTimeout(() => go({ q: search.value.trim(), offset: 0 }), 300)
  })
  const sortSelect = h(
    'select',
    { id: 'repo-sort', onchange: (event: Event) => go({ sort: (event.target as HTMLSelectElement).value, offset: 0 }) },
    h('option', { value: 'name', selected: sort === 'name' }, 'Name'),
    h('option', { value: 'pushed', selected: sort === 'pushed' }, 'Last pushed'),
    h('option', { value: 'size', selected: sort === 'size' }, 'Size'),
  )
  const controls = h(
    'form',
    {
      role: 'search',
      class: 'controls',
      onsubmit: (event: Event) => {
        event.preventDefault()
        go({ q: search.value.trim(), offset: 0 })
      },
    },
    h('label', { for: 'repo-search', class: 'visually-hidden' }, 'Search repositories'),
    search,
    h('label', { for: 'repo-sort' }, 'Sort by'),
    sortSelect,
  )
  const namespaces =
    page.namespaces.length === 0
      ? null
      : h(
          'nav',
          { class: 'chips', 'aria-label': 'Namespaces' },
          h('button', { type: 'button', class: 'chip', 'aria-pressed': String(namespace === ''), onclick: () => go({ namespace: '', offset: 0 }) }, 'All'),
          page.namespaces.map(ns =>
            h(
              'button',
              { type: 'button', class: 'chip', 'aria-pressed': String(namespace === ns.name), onclick: () => go({ namespace: ns.name, offset: 0 }) },
              `${ns.name}/ `,
              h('span', { class: 'count' }, String(ns.repositories)),
            ),
          ),
        )
  const rows = page.items.map(item =>
    h(
      'tr',
      null,
      h('th', { scope: 'row' }, app.link(`/ui/repository/${item.name}`, item.name)),
      h('td', { class: 'number' }, String(item.tags)),
      h('td', { class: 'number' }, formatBytes(item.size)),
      h('td', null, time(item.lastPushed)),
    ),
  )
  let empty: HTMLElement | null = null
  if (page.total === 0) {
    if (q !== '' || namespace !== '') empty = h('p', null, 'No repository matches.')
    else if (app.session.user === null && app.session.canLogIn && app.session.anonymousSees !== 'everything') {
      empty = h('p', null, app.link('/ui/login?next=/', 'Log in'), ' to see the repositories.')
    } else {
      empty = h(
        'div',
        { class: 'empty' },
        h('p', null, 'No images yet. Push one:'),
        h('pre', null, h('code', null, `docker tag alpine ${location.host}/alpine\ndocker push ${location.host}/alpine`)),
      )
    }
  }
  return h(
    'section',
    null,
    h('h1', { tabindex: -1 }, 'Repositories'),
    controls,
    namespaces,
    empty ?? table('Repositories', ['Name', 'Tags', 'Size', 'Last pushed'], rows),
    pager(page.total, offset, LIMIT, next => go({ offset: next })),
  )
}
