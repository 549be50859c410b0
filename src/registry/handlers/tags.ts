/** `GET /v2/<name>/tags/list[?n=&last=]` (end-8a/8b) and `GET /v2/_catalog` (Docker extra). */
import { sendJson } from '../http.js'
import type { Handler } from '../routes.js'
import { pageSize, repositoryName } from './params.js'

/** distribution's defaults for the catalog: 100 entries unless `n` asks for up to 1000. */
export const CATALOG_DEFAULT_ENTRIES = 100
export const CATALOG_MAX_ENTRIES = 1000

/**
 * One page of a sorted list: entries strictly after `last`, at most `n`. The `Link` header
 * (RFC 8288) is sent only when more entries follow; `n=0` gives an empty page and no Link.
 */
function page(all: readonly string[], n: number | undefined, last: string | null): { items: string[]; more: boolean } {
  const after = last === null || last === '' ? all : all.filter(item => item > last)
  if (n === undefined) return { items: [...after], more: false }
  return { items: after.slice(0, n), more: n > 0 && after.length > n }
}

export const listTags: Handler = async ({ response, params, query, store }) => {
  const name = repositoryName(params)
  const n = pageSize(query)
  const tags = await store.tags.list(name)
  const { items, more } = page(tags, n, query.get('last'))
  const headers: Record<string, string> = {}
  const lastItem = items.at(-1)
  if (more && lastItem !== undefined && n !== undefined) {
    headers['Link'] = `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(lastItem)}>; rel="next"`
  }
  sendJson(response, 200, { name, tags: items }, headers)
}

export const listCatalog: Handler = async ({ response, query, store }) => {
  const requested = pageSize(query)
  const n = Math.min(requested ?? CATALOG_DEFAULT_ENTRIES, CATALOG_MAX_ENTRIES)
  const repositories = await store.catalog.list()
  const { items, more } = page(repositories, n, query.get('last'))
  const headers: Record<string, string> = {}
  const lastItem = items.at(-1)
  if (more && lastItem !== undefined) headers['Link'] = `</v2/_catalog?n=${n}&last=${encodeURIComponent(lastItem)}>; rel="next"`
  sendJson(response, 200, { repositories: items }, headers)
}
