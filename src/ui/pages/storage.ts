import type { StorageView } from '../../web/api-types.js'
import { api } from '../api.js'
import { formatBytes, h, table } from '../dom.js'
import type { App } from '../main.js'

export async function storagePage(app: App): Promise<HTMLElement> {
  app.title('Storage')
  const view = await api<StorageView>('GET', 'storage')
  const rows = view.repositories.map(repository =>
    h(
      'tr',
      null,
      h('th', { scope: 'row' }, app.link(`/ui/repository/${repository.name}`, repository.name)),
      h('td', { class: 'number' }, formatBytes(repository.size)),
      h('td', null, h('meter', { min: 0, max: Math.max(1, view.total), value: repository.size, 'aria-label': `share of ${repository.name}` })),
      h('td', { class: 'number' }, String(repository.tags)),
    ),
  )
  return h(
    'section',
    null,
    h('h1', { tabindex: -1 }, 'Storage'),
    h(
      'p',
      { class: 'lead' },
      h('strong', { 'data-testid': 'storage-total' }, formatBytes(view.total)),
      ` in ${view.repositories.length} ${view.repositories.length === 1 ? 'repository' : 'repositories'} you can see.`,
    ),
    h(
      'p',
      { class: 'muted' },
      'Sizes are compressed, as pushed; a layer two repositories share counts in both. Deleting a tag or an image frees space at the next garbage collection (berth gc).',
    ),
    view.repositories.length === 0 ? h('p', null, 'Nothing stored yet.') : table('Bytes per repository', ['Repository', 'Size', 'Share', 'Tags'], rows),
  )
}
