/**
 * `GET /v2/<name>/tags/list[?n=&last=]` (end-8a/8b) and `GET /v2/_catalog` (Docker extra).
 *
 * A client that asks for a page (`n`) gets at most `MAX_PAGE_ENTRIES` names per response: a larger
 * `n` gets that many and a `Link: <...>; rel="next"` to the rest. distribution-spec "Listing Tags"
 * lets a registry return fewer than `n` when it sends a Link, and listing clients follow it
 * (skopeo list-tags, tested; go-containerregistry's tag listing behind `crane ls`, from its source).
 * distribution 3.x answers a catalog `n` above `catalog.maxentries` (1000) with 400
 * PAGINATION_NUMBER_INVALID instead; capping keeps a client that asks for a bigger page
 * (go-containerregistry has sent `n=10000`) working instead of failing it.
 *
 * `tags/list` without `n` lists every tag, as registry:2 does: scripts written against it (`curl
 * .../tags/list | jq`) do not follow Links, and a repository with a tag per CI build passes 1,000
 * tags soon. The catalog without `n` gives distribution's default page of 100, with a Link.
 */
import { sendJson } from '../../http/respond.js'
import type { Handler } from '../routes.js'
import { pageSize, repositoryName } from './params.js'

/** The most names one response holds (distribution's default `catalog.maxentries`). */
export const MAX_PAGE_ENTRIES = 1000
/** distribution's default catalog page when `n` is not given. */
export const CATALOG_DEFAULT_ENTRIES = 100
export const CATALOG_MAX_ENTRIES = MAX_PAGE_ENTRIES
export const TAGS_MAX_ENTRIES = MAX_PAGE_ENTRIES

/**
 * One page of a sorted list: entries strictly after `last`, at most `n`. The `Link` header
 * (RFC 8288) is sent only when more entries follow; `n=0` gives an empty page and no Link.
 */
function page(all: readonly string[], n: number, last: string | null): { items: string[]; more: boolean } {
  const after = last === null || last === '' ? all : all.filter(item => item > last)
  return { items: after.slice(0, n), more: n > 0 && after.length > n }
}

function nextLink(path: string, n: number, lastItem: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(lastItem)}>; rel="next"`
}

export const listTags: Handler = async ({ exchange, params, query, store }) => {
  const name = repositoryName(params)
  const asked = pageSize(query)
  const last = query.get('last')
  // Without n: the whole list, every tag's link checked at once (a page checks them in batches).
  if (asked === undefined) return sendJson(exchange, 200, { name, tags: page(await store.tags.list(name), Infinity, last).items })
  const n = Math.min(asked, TAGS_MAX_ENTRIES)
  const { tags, more } = await store.tags.page(name, last ?? undefined, n)
  const headers: Record<string, string> = {}
  const lastItem = tags.at(-1)
  if (more && lastItem !== undefined) headers['Link'] = nextLink(`/v2/${name}/tags/list`, n, lastItem)
  sendJson(exchange, 200, { name, tags }, headers)
}

export const listCatalog: Handler = async ({ exchange, query, store }) => {
  const n = Math.min(pageSize(query) ?? CATALOG_DEFAULT_ENTRIES, CATALOG_MAX_ENTRIES)
  const access = exchange.access
  const stored = await store.catalog.list()
  // Under access rules the catalog names only what the caller may pull.
  const repositories = access === undefined ? stored : stored.filter(name => access.listable(name))
  const { items, more } = page(repositories, n, query.get('last'))
  const headers: Record<string, string> = {}
  const lastItem = items.at(-1)
  if (more && lastItem !== undefined) headers['Link'] = nextLink('/v2/_catalog', n, lastItem)
  sendJson(exchange, 200, { repositories: items }, headers)
}
