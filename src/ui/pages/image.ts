import type { DeleteResult, ImageView, ReferrerEntry } from '../../web/api-types.js'
import { api } from '../api.js'
import { formatBytes, h, isolated, shortDigest, table, time } from '../dom.js'
import type { App } from '../main.js'
import { announce, confirmDialog, errorBox, pullCommands } from '../parts.js'

export async function imagePage(app: App, name: string, query: URLSearchParams): Promise<HTMLElement> {
  const reference = query.get('reference') ?? 'latest'
  const image = await api<ImageView>('GET', 'image', { repository: name, reference })
  const isDigest = reference.includes(':')
  const heading = isDigest ? `${name}@${shortDigest(reference)}` : `${name}:${reference}`
  app.title(heading)
  const imageLink = (digest: string, text: string): HTMLAnchorElement => app.link(`/ui/image/${name}?reference=${encodeURIComponent(digest)}`, text)
  const problem = h('div')

  const facts: [string, Node | string][] = [
    ['Digest', h('code', { class: 'wrap' }, image.digest)],
    ['Media type', image.mediaType],
    [
      'Tags',
      image.tags.length > 0
        ? h(
            'ul',
            { class: 'inline' },
            image.tags.map(tag => h('li', null, app.link(`/ui/image/${name}?reference=${tag}`, tag))),
          )
        : 'none',
    ],
    ['Size', formatBytes(image.size)],
    ['Created', time(image.created)],
    ['Pushed', time(image.pushedAt)],
    ['Last pulled', time(image.lastPulledAt)],
    ['Pulls', String(image.pullCount)],
  ]
  if (image.platform !== null) facts.push(['Platform', image.platform])
  if (image.artifactType !== null) facts.push(['Artifact type', isolated(image.artifactType)])
  if (image.subject !== null) facts.push(['Refers to', imageLink(image.subject, shortDigest(image.subject))])

  const sections: (HTMLElement | null)[] = []
  if (image.isIndex) {
    const rows = image.platforms.map(entry =>
      h(
        'tr',
        null,
        h('th', { scope: 'row' }, imageLink(entry.digest, entry.platform)),
        h('td', null, h('code', { title: entry.digest }, shortDigest(entry.digest))),
        h('td', { class: 'number' }, formatBytes(entry.size)),
      ),
    )
    sections.push(
      h(
        'section',
        { 'aria-labelledby': 'platforms' },
        h('h2', { id: 'platforms' }, `Platforms (${image.platforms.length})`),
        table('Platforms', ['Platform', 'Digest', 'Size'], rows),
        image.attestationManifests > 0 ? h('p', { class: 'muted' }, `${image.attestationManifests} build attestation manifest(s) not listed.`) : null,
      ),
    )
  }
  if (image.layers.length > 0) {
    let number = 0
    const rows = image.layers.map(layer =>
      h(
        'tr',
        { class: layer.emptyLayer ? 'empty-layer' : undefined },
        h('td', { class: 'number' }, layer.emptyLayer ? '' : String(++number)),
        h('td', { class: 'number' }, layer.emptyLayer ? '—' : formatBytes(layer.size)),
        h(
          'td',
          null,
          layer.createdBy !== null
            ? h('code', { class: 'wrap' }, isolated(layer.createdBy))
            : layer.digest !== null
              ? h('code', null, shortDigest(layer.digest))
              : '—',
        ),
      ),
    )
    sections.push(
      h(
        'section',
        { 'aria-labelledby': 'layers' },
        h('h2', { id: 'layers' }, 'Layers and history'),
        table('Layers and history', ['#', 'Size', 'Instruction'], rows),
      ),
    )
  }
  sections.push(keyValues('labels', 'Labels', image.labels), keyValues('annotations', 'Annotations', image.annotations))
  sections.push(referrers(image, imageLink))

  const deleteImage = async (): Promise<void> => {
    const body = [
      h('p', null, 'This deletes the image ', h('code', { class: 'wrap' }, image.digest), '.'),
      image.tags.length > 0 ? h('p', null, 'These tags go with it: ', h('strong', null, image.tags.join(', ')), '.') : h('p', null, 'No tag points at it.'),
      h('p', { class: 'muted' }, 'Its space is freed at the next garbage collection (berth gc).'),
    ]
    if (!(await confirmDialog(`Delete this image of ${name}?`, body, 'Delete image'))) return
    try {
      await api<DeleteResult>('DELETE', 'image', { repository: name, digest: image.digest })
      announce('Image deleted')
      app.navigate(`/ui/repository/${name}`, { replace: true })
    } catch (error) {
      problem.replaceChildren(errorBox((error as Error).message))
    }
  }

  return h(
    'section',
    null,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, app.link('/', 'Repositories'), ' / ', app.link(`/ui/repository/${name}`, name), ' / '),
    h('h1', { tabindex: -1 }, heading),
    pullCommands(name, isDigest ? image.digest : reference),
    h(
      'dl',
      { class: 'facts' },
      facts.map(([term, value]) => [h('dt', null, term), h('dd', null, value)]),
    ),
    problem,
    ...sections,
    image.canDelete
      ? h(
          'section',
          { class: 'danger-zone', 'aria-labelledby': 'delete-image' },
          h('h2', { id: 'delete-image' }, 'Delete'),
          h('button', { type: 'button', class: 'danger', onclick: () => void deleteImage() }, 'Delete image…'),
        )
      : null,
  )
}

function keyValues(id: string, title: string, map: Readonly<Record<string, string>>): HTMLElement | null {
  const entries = Object.entries(map)
  if (entries.length === 0) return null
  return h(
    'section',
    { 'aria-labelledby': id },
    h('h2', { id }, title),
    h(
      'dl',
      { class: 'pairs', 'data-testid': id },
      entries.map(([key, value]) => [h('dt', null, isolated(key)), h('dd', null, isolated(value))]),
    ),
  )
}

function referrers(image: ImageView, link: (digest: string, text: string) => HTMLAnchorElement): HTMLElement | null {
  const groups: [string, readonly ReferrerEntry[]][] = [
    ['Signatures', image.referrers.signatures],
    ['SBOMs', image.referrers.sboms],
    ['Attestations', image.referrers.attestations],
    ['Other artifacts', image.referrers.other],
  ]
  const present = groups.filter(([, entries]) => entries.length > 0)
  if (present.length === 0) return null
  return h(
    'section',
    { 'aria-labelledby': 'referrers' },
    h('h2', { id: 'referrers' }, 'Referrers'),
    present.map(([title, entries]) =>
      h(
        'div',
        { class: 'referrer-group' },
        h('h3', null, `${title} (${entries.length})`),
        h(
          'ul',
          null,
          entries.map(entry =>
            h('li', null, link(entry.digest, shortDigest(entry.digest)), ' ', h('span', { class: 'muted' }, isolated(entry.artifactType ?? entry.mediaType))),
          ),
        ),
      ),
    ),
  )
}
