/**
 * The route table. Order matters: names may contain `/`, so the upload routes come before the
 * blob route and the fixed `_catalog` before everything with a name.
 */
import type { Route } from '../routes.js'
import { base } from './base.js'
import { deleteBlob, getBlob } from './blobs.js'
import { deleteManifest, getManifest, putManifest } from './manifests.js'
import { listReferrers } from './referrers.js'
import { listCatalog, listTags } from './tags.js'
import { cancelUpload, getUpload, patchUpload, putUpload, startUpload } from './uploads.js'

const NAME = '(?<name>.+)'

export const registryRoutes: readonly Route[] = [
  { name: 'base', pattern: /^\/v2\/?$/, handlers: { GET: base, HEAD: base } },
  { name: 'catalog', pattern: /^\/v2\/_catalog$/, handlers: { GET: listCatalog } },
  { name: 'tags', pattern: new RegExp(`^/v2/${NAME}/tags/list$`), handlers: { GET: listTags } },
  {
    name: 'manifest',
    pattern: new RegExp(`^/v2/${NAME}/manifests/(?<reference>[^/]+)$`),
    handlers: { GET: getManifest, HEAD: getManifest, PUT: putManifest, DELETE: deleteManifest },
  },
  { name: 'upload-start', pattern: new RegExp(`^/v2/${NAME}/blobs/uploads/?$`), handlers: { POST: startUpload } },
  {
    name: 'upload',
    pattern: new RegExp(`^/v2/${NAME}/blobs/uploads/(?<uploadId>[^/]+)$`),
    handlers: { GET: getUpload, PATCH: patchUpload, PUT: putUpload, DELETE: cancelUpload },
  },
  { name: 'blob', pattern: new RegExp(`^/v2/${NAME}/blobs/(?<digest>[^/]+)$`), handlers: { GET: getBlob, HEAD: getBlob, DELETE: deleteBlob } },
  { name: 'referrers', pattern: new RegExp(`^/v2/${NAME}/referrers/(?<digest>[^/]+)$`), handlers: { GET: listReferrers } },
]
