import type { StorageSurveyView, StorageView } from '../../web/api-types.js'
import { api } from '../api.js'
import { formatBytes, h, table, time } from '../dom.js'
import type { App } from '../main.js'
import { pager } from '../parts.js'

const LIMIT = 50

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`
}

/** The whole store, from the server's last background survey. */
function surveySection(survey: StorageSurveyView): HTMLElement {
  const last = survey.lastGc
  const facts: [string, Node | string][] = [
    ['Stored', `${formatBytes(survey.storedBytes)} (each blob once), of which ${formatBytes(survey.sharedBytes)} shared by several repositories`],
    [
      'Garbage collection would free',
      `${formatBytes(survey.gcWouldFree.bytes)} (${plural(survey.gcWouldFree.blobs, 'blob')}) with berth gc; ` +
        `${formatBytes(survey.gcUntaggedWouldFree.bytes)} with berth gc --delete-untagged (${plural(survey.gcUntaggedWouldFree.manifests, 'untagged manifest')})`,
    ],
    ['Unfinished uploads', formatBytes(survey.uploadBytes)],
    [
      'Last garbage collection',
      last === null
        ? 'none recorded'
        : h(
            'span',
            null,
            time(last.finishedAt),
            `: freed ${formatBytes(last.bytesFreed)} (${plural(last.blobs, 'blob')}, ${plural(last.manifests, 'manifest')})${last.deleteUntagged ? ', with --delete-untagged' : ''}`,
          ),
    ],
    ['Figures as of', h('span', null, time(survey.computedAt), ` (a walk of the store that took ${(survey.durationMs / 1000).toFixed(1)} s)`)],
  ]
  return h(
    'section',
    { 'aria-labelledby': 'store-heading' },
    h('h2', { id: 'store-heading' }, 'The whole store'),
    h(
      'dl',
      { class: 'facts', 'data-testid': 'store-facts' },
      facts.map(([term, value]) => [h('dt', null, term), h('dd', null, value)]),
    ),
  )
}

export async function storagePage(app: App, query: URLSearchParams): Promise<HTMLElement> {
  app.title('Storage')
  const offset = Number(query.get('offset') ?? '0') || 0
  const view = await api<StorageView>('GET', 'storage', { offset, limit: LIMIT })
  const bytes = (value: number | null): string => (value === null ? '—' : formatBytes(value))
  const rows = view.repositories.map(repository =>
    h(
      'tr',
      null,
      h('th', { scope: 'row' }, app.link(`/ui/repository/${repository.name}`, repository.name)),
      h('td', { class: 'number' }, formatBytes(repository.size)),
      h('td', { class: 'number' }, bytes(repository.uniqueBytes)),
      h('td', { class: 'number' }, bytes(repository.sharedBytes)),
      h('td', null, h('meter', { min: 0, max: Math.max(1, view.total), value: repository.size, 'aria-label': `share of ${repository.name}` })),
      h('td', { class: 'number' }, String(repository.tags)),
    ),
  )
  const survey =
    view.survey === 'pending'
      ? h('p', { class: 'muted' }, 'Unique and shared bytes and what garbage collection would free are being computed in the background.')
      : view.survey === 'hidden'
        ? null
        : surveySection(view.survey)
  return h(
    'section',
    null,
    h('h1', { tabindex: -1 }, 'Storage'),
    h(
      'p',
      { class: 'lead' },
      h('strong', { 'data-testid': 'storage-total' }, formatBytes(view.total)),
      ` in ${view.count} ${view.count === 1 ? 'repository' : 'repositories'} you can see.`,
    ),
    h(
      'p',
      { class: 'muted' },
      'Size is what the images weigh as pushed (a layer two images share counts in both). Unique is stored only for this repository: ' +
        'what deleting it frees at the next garbage collection; shared is stored once for it and others. Deleting a tag or an image frees space at the next garbage collection (berth gc).',
    ),
    survey,
    view.count === 0 ? h('p', null, 'Nothing stored yet.') : table('Bytes per repository', ['Repository', 'Size', 'Unique', 'Shared', 'Share', 'Tags'], rows),
    pager(view.count, offset, LIMIT, next => app.navigate(`/ui/storage${next > 0 ? `?offset=${next}` : ''}`)),
  )
}
