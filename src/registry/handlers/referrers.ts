/** `GET /v2/<name>/referrers/<digest>[?artifactType=]` (end-12a/12b): always an image index, never 404. */
import { MEDIA_TYPES } from '../../storage/manifest.js'
import { sendJson } from '../http.js'
import type { Handler } from '../routes.js'
import { pathDigest, repositoryName } from './params.js'

export const listReferrers: Handler = async ({ response, params, query, store }) => {
  const name = repositoryName(params)
  const subject = pathDigest(params)
  const artifactType = query.get('artifactType') ?? undefined
  const manifests = await store.referrers.list(name, subject, artifactType === '' ? undefined : artifactType)
  const headers: Record<string, string> = { 'Content-Type': MEDIA_TYPES.ociIndex }
  if (artifactType !== undefined && artifactType !== '') headers['OCI-Filters-Applied'] = 'artifactType'
  sendJson(response, 200, { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }, headers)
}
