/**
 * `GET /v2/<name>/referrers/<digest>[?artifactType=]` (end-12a/12b): always an image index, never 404.
 *
 * Paginated as distribution-spec v1.1 "Listing Referrers" allows: each response holds at most
 * `REFERRERS_PAGE_ENTRIES` descriptors and `REFERRERS_PAGE_BYTES` of descriptor JSON, in digest
 * order, and when more follow a `Link: </v2/<name>/referrers/<digest>?last=<digest>>; rel="next"`
 * (RFC 8288, the same form as tags/list and _catalog). The byte bound keeps every page well under
 * the 4 MiB that clients accept for a manifest-sized body (oras-go reads at most 4 MiB), however
 * large the referrers' annotations are; the entry bound caps the manifests one request reads.
 * An `artifactType` filter is applied before paging and carried in the Link, so every page is
 * filtered and says so with `OCI-Filters-Applied`.
 */
import { MEDIA_TYPES } from '../../storage/manifest.js'
import type { ReferrerPageOptions } from '../../storage/referrer-store.js'
import { sendJson } from '../../http/respond.js'
import type { Handler } from '../routes.js'
import { pathDigest, repositoryName } from './params.js'

export const REFERRERS_PAGE_ENTRIES = 1000
export const REFERRERS_PAGE_BYTES = 1024 * 1024

export const listReferrers: Handler = async ({ exchange, params, query, store }) => {
  const name = repositoryName(params)
  const subject = pathDigest(params)
  const artifactType = query.get('artifactType') || undefined
  const last = query.get('last') || undefined
  const options: ReferrerPageOptions = { maxEntries: REFERRERS_PAGE_ENTRIES, maxBytes: REFERRERS_PAGE_BYTES }
  if (artifactType !== undefined) options.artifactType = artifactType
  if (last !== undefined) options.last = last
  const { descriptors, more } = await store.referrers.page(name, subject, options)
  const headers: Record<string, string> = { 'Content-Type': MEDIA_TYPES.ociIndex }
  if (artifactType !== undefined) headers['OCI-Filters-Applied'] = 'artifactType'
  const lastDescriptor = descriptors.at(-1)
  if (more && lastDescriptor !== undefined) {
    const next = new URLSearchParams({ last: lastDescriptor.digest })
    if (artifactType !== undefined) next.set('artifactType', artifactType)
    headers['Link'] = `</v2/${name}/referrers/${subject.value}?${next.toString()}>; rel="next"`
  }
  sendJson(exchange, 200, { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: descriptors }, headers)
}
