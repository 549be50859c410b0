import type { DeleteResult, TagItem, TagPage } from '../../web/api-types.js'
import { api } from '../api.js'
import { formatBytes, h, shortDigest, table, time } from '../dom.js'
import type { App } from '../main.js'
import { announce, confirmDialog, copyButton, errorBox, pager, pullCommand, pullCommands } from '../parts.js'

const LIMIT = 50

export async function repositoryPage(app: App, name: string, query: URLSearchParams): Promise<HTMLElement> {
  app.title(name)
  const sort = query.get('sort') === 'name' ? 'name' : 'pushed'
  const offset = Number(query.get('offset') ?? '0') || 0
  const page = await api<TagPage>('GET', 'tags', { repository: name, sort, offset, limit: LIMIT })
  const here = (changes: Record<string, string | number>): string => {
    const next = new URLSearchParams({ sort, offset: String(offset), ...Object.fromEntries(Object.entries(changes).map(([k, v]) => [k, String(v)])) })
    if (next.get('offset') === '0') next.delete('offset')
    if (next.get('sort') === 'pushed') next.delete('sort')
    const search = next.toString()
    return `/ui/repository/${name}${search ? `?${search}` : ''}`
  }
  const problem = h('div')
  const remove = async (item: TagItem): Promise<void> => {
    const body =
      item.sameDigest.length > 0
        ? [h('p', null, 'Only the tag goes. The image stays, still tagged ', item.sameDigest.join(', '), '.')]
        : [
            h(
              'p',
              null,
              'Only the tag goes. The image ',
              h('code', null, shortDigest(item.digest)),
              ' stays, untagged, until it is deleted or garbage collected.',
            ),
          ]
    if (!(await confirmDialog(`Delete tag ${name}:${item.tag}?`, body, 'Delete tag'))) return
    try {
      await api<DeleteResult>('DELETE', 'tag', { repository: name, tag: item.tag })
      announce(`Deleted tag ${item.tag}`)
      app.navigate(here({}), { replace: true })
    } catch (error) {
      problem.replaceChildren(errorBox((error as Error).message))
    }
  }
  const rows = page.items.map(item =>
    h(
      'tr',
      null,
      h('th', { scope: 'row' }, app.link(`/ui/image/${name}?reference=${encodeURIComponent(item.tag)}`, item.tag)),
      h('td', null, h('code', { title: item.digest }, shortDigest(item.digest))),
      h(
        'td',
        null,
        item.platforms.length > 0
          ? h(
              'ul',
              { class: 'inline' },
              item.platforms.map(platform => h('li', null, platform)),
            )
          : '—',
      ),
      h('td', { class: 'number' }, formatBytes(item.size)),
      h('td', null, time(item.pushedAt)),
      h(
        'td',
        null,
        h(
          'div',
          { class: 'row-actions' },
          copyButton(() => pullCommand('docker', name, item.tag), `Copy the pull command of ${item.tag}`),
          page.canDelete
            ? h('button', { type: 'button', class: 'danger', 'aria-label': `Delete tag ${item.tag}`, onclick: () => void remove(item) }, 'Delete')
            : null,
        ),
      ),
    ),
  )
  const first = page.items[0]
  return h(
    'section',
    null,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, app.link('/', 'Repositories'), ' / '),
    h('h1', { tabindex: -1 }, name),
    first !== undefined ? pullCommands(name, first.tag) : null,
    h(
      'div',
      { class: 'controls' },
      h('h2', null, `Tags (${page.total})`),
      h('label', { for: 'tag-sort' }, 'Sort by'),
      h(
        'select',
        { id: 'tag-sort', onchange: (event: Event) => app.navigate(here({ sort: (event.target as HTMLSelectElement).value, offset: 0 })) },
        h('option', { value: 'pushed', selected: sort === 'pushed' }, 'Last pushed'),
        h('option', { value: 'name', selected: sort === 'name' }, 'Name'),
      ),
    ),
    problem,
    page.total === 0 ? h('p', null, 'No tags.') : table(`Tags of ${name}`, ['Tag', 'Digest', 'Platforms', 'Size', 'Pushed', 'Actions'], rows),
    pager(page.total, offset, LIMIT, next => app.navigate(here({ offset: next }))),
  )
}
