/**
 * The one file that knows the on-disk layout. It is distribution's layout
 * (`registry/storage/paths.go`, identical in 2.8 and 3.x), so a `registry:2` data folder is served
 * as is and the other way round. Paths are driver paths (absolute, relative to the driver root,
 * which is `<datadir>/data`):
 *
 * ```
 * /docker/registry/v2/
 * ├── blobs/
 * │   └── <alg>/<hex[0:2]>/<hex>/data              raw bytes (layer, config or manifest, byte for byte)
 * └── repositories/
 *     └── <name>/                                  may be nested: library/alpine, a/b/c
 *         ├── _layers/<alg>/<hex>/link             this repository may read blob <alg>:<hex>
 *         ├── _manifests/
 *         │   ├── revisions/<alg>/<hex>/link       manifest <alg>:<hex> exists in this repository
 *         │   └── tags/<tag>/
 *         │       ├── current/link                 the digest the tag points to now
 *         │       └── index/<alg>/<hex>/link       every digest the tag has pointed to
 *         ├── _uploads/<uuid>/
 *         │   ├── data                             bytes received so far (appended)
 *         │   ├── startedat                        RFC 3339 UTC time, e.g. 2024-05-01T12:00:00Z
 *         │   └── hashstates/<alg>/<offset>        Go hash state written by registry:2; Berth never
 *         │                                        writes it and re-hashes `data` instead
 *         ├── _referrers/<subject-alg>/<subject-hex>/<alg>/<hex>/link      (Berth only)
 *         └── _mirror                              (Berth only) a file: this repository is a pull-through
 *                                                  cache of an upstream (JSON: prefix, upstream, repository)
 * ```
 *
 * Every `link` file holds a digest string such as `sha256:96443a…` with no trailing newline.
 *
 * `_referrers` is Berth's own index for the OCI 1.1 referrers API: one link per manifest in this
 * repository whose `subject` is `<subject-alg>:<subject-hex>`; the link names the referring
 * manifest. registry:2 ignores it (its catalog and garbage collector skip `_`-prefixed folders and
 * never read it; distribution PR #4828 uses the same idea). It is an index, not the truth: a
 * referrer whose revision link is gone (deleted here or by registry:2) is skipped on read.
 *
 * Outside that tree, under `/berth/`, Berth keeps what registry:2 never reads: the readiness probe's
 * object `/berth/health/<instance>` (written and deleted every few seconds, see
 * storage-probe.ts), the collector's state on S3 (`gc-guard.ts`), on S3 the ACME state
 * (`edge/tls/cert-store.ts`), the webhook delivery queue (`events/webhook-queue.ts`):
 *
 * ```
 * /berth/events/
 * ├── pending/<instance>/<endpoint>/<id>.json   a delivery not yet done, owned by one serving process
 * ├── failed/<id>.json                           a dead letter: given up after the last try (kept)
 * └── owners/<instance>                          that process's lock (StorageDriver.lock): alive while held
 * ```
 *
 * the last garbage collection's summary `/berth/gc/last-run` (JSON, written by whoever ran it:
 * `berth serve`'s schedule or `berth gc`; read by the storage page, gc-last-run.ts),
 * and the metadata index (`metadata/metadata-index.ts`), records derived from the tree above that
 * `berth reindex` can always rebuild:
 *
 * ```
 * /berth/index/
 * ├── repositories/<name>/                         may be nested like the registry's own folders
 * │   ├── _tags/<tag>                              JSON: the digest the tag points to, pushed-at
 * │   ├── _manifests/<alg>/<hex>                   JSON: media type, size, platforms, created, labels,
 * │   │                                            subject, artifact type, pushed-at of one manifest
 * │   └── _pulls/<instance>                        JSON: pull counts and last pull per digest, counted by
 * │                                                one process (every process writes only its own)
 * └── changes/<instance>                           JSON: the repositories one process changed lately, so
 *                                                  the others know what to read again
 * ```
 * The `_` folders cannot collide with a nested repository: name components never start with `_`.
 *
 * Names, tags and digests are checked against the spec's grammar here, before any path is built,
 * so nothing a client sends can point outside the tree.
 */
import { isDigest, parseDigest, type Digest } from './digest.js'
import { assertRepositoryName, assertTag, isRepositoryName, isTag } from './reference.js'

export const ROOT = '/docker/registry/v2'
export const BLOBS_ROOT = `${ROOT}/blobs`
export const REPOSITORIES_ROOT = `${ROOT}/repositories`

export const HEALTH_ROOT = '/berth/health'
export const GC_LAST_RUN_PATH = '/berth/gc/last-run'

function assertInstance(instance: string): void {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(instance)) throw new TypeError(`invalid instance name ${JSON.stringify(instance)}`)
}

/** The readiness probe's object of one process (`instance`: letters, digits and dashes). */
export function healthProbePath(instance: string): string {
  assertInstance(instance)
  return `${HEALTH_ROOT}/${instance}`
}

export const EVENTS_ROOT = '/berth/events'
export const EVENTS_PENDING_ROOT = `${EVENTS_ROOT}/pending`
export const EVENTS_FAILED_ROOT = `${EVENTS_ROOT}/failed`

const eventNameGrammar = /^[A-Za-z0-9-]{1,64}$/

function eventName(value: string, what: string): string {
  if (!eventNameGrammar.test(value)) throw new TypeError(`invalid ${what} ${JSON.stringify(value)}`)
  return value
}

/** The pending deliveries of one process (`instance`), one folder per endpoint key below. */
export function eventsPendingPath(instance: string): string {
  return `${EVENTS_PENDING_ROOT}/${eventName(instance, 'instance name')}`
}

/** The pending deliveries of one process to one endpoint (`endpoint`: a key derived from its URL). */
export function eventsEndpointPath(instance: string, endpoint: string): string {
  return `${eventsPendingPath(instance)}/${eventName(endpoint, 'endpoint key')}`
}

export function eventPendingRecordPath(instance: string, endpoint: string, id: string): string {
  return `${eventsEndpointPath(instance, endpoint)}/${eventName(id, 'delivery id')}.json`
}

export function eventFailedRecordPath(id: string): string {
  return `${EVENTS_FAILED_ROOT}/${eventName(id, 'delivery id')}.json`
}

/** The lock a serving process holds while it owns `pending/<instance>/`; another adopts the folder once it is free or stale. */
export function eventsOwnerLockPath(instance: string): string {
  return `${EVENTS_ROOT}/owners/${eventName(instance, 'instance name')}`
}

export const INDEX_ROOT = '/berth/index'
export const INDEX_REPOSITORIES_ROOT = `${INDEX_ROOT}/repositories`
export const INDEX_CHANGES_ROOT = `${INDEX_ROOT}/changes`
/** The folders of one repository's records, below `indexRepositoryPath(name)`. */
export const INDEX_RECORD_FOLDERS = ['_tags', '_manifests', '_pulls'] as const

export function indexRepositoryPath(name: string): string {
  assertRepositoryName(name)
  return `${INDEX_REPOSITORIES_ROOT}/${name}`
}

export function indexTagPath(name: string, tag: string): string {
  assertTag(tag)
  return `${indexRepositoryPath(name)}/_tags/${tag}`
}

export function indexManifestPath(name: string, digest: Digest | string): string {
  const { algorithm, hex } = digestOfAny(digest)
  return `${indexRepositoryPath(name)}/_manifests/${algorithm}/${hex}`
}

export function indexPullsPath(name: string, instance: string): string {
  assertInstance(instance)
  return `${indexRepositoryPath(name)}/_pulls/${instance}`
}

export function indexChangesPath(instance: string): string {
  assertInstance(instance)
  return `${INDEX_CHANGES_ROOT}/${instance}`
}

/**
 * What an index record's path names: its repository and kind, and the tag, digest or instance.
 * Undefined for a path that is not a record.
 */
export function parseIndexRecordPath(path: string): { repository: string; kind: 'tag' | 'manifest' | 'pulls'; key: string } | undefined {
  if (!path.startsWith(`${INDEX_REPOSITORIES_ROOT}/`)) return undefined
  const parts = path.slice(INDEX_REPOSITORIES_ROOT.length + 1).split('/')
  const at = parts.findIndex(part => part.startsWith('_'))
  if (at < 1) return undefined
  const repository = parts.slice(0, at).join('/')
  const rest = parts.slice(at + 1)
  if (!isRepositoryName(repository)) return undefined
  if (parts[at] === '_tags' && rest.length === 1 && isTag(rest[0]!)) return { repository, kind: 'tag', key: rest[0]! }
  if (parts[at] === '_manifests' && rest.length === 2 && isDigest(`${rest[0]}:${rest[1]}`))
    return { repository, kind: 'manifest', key: `${rest[0]}:${rest[1]}` }
  if (parts[at] === '_pulls' && rest.length === 1 && /^[A-Za-z0-9-]{1,64}$/.test(rest[0]!)) return { repository, kind: 'pulls', key: rest[0]! }
  return undefined
}

function digestOfAny(digest: Digest | string): Digest {
  return typeof digest === 'string' ? parseDigest(digest) : digest
}

function repository(name: string): string {
  assertRepositoryName(name)
  return `${REPOSITORIES_ROOT}/${name}`
}

/** The folder of a stored blob: `blobs/<alg>/<xx>/<hex>`. Deleting it removes the blob. */
export function blobDir(digest: Digest | string): string {
  const { algorithm, hex } = digestOfAny(digest)
  return `${BLOBS_ROOT}/${algorithm}/${hex.slice(0, 2)}/${hex}`
}

export function blobDataPath(digest: Digest | string): string {
  return `${blobDir(digest)}/data`
}

export function repositoryPath(name: string): string {
  return repository(name)
}

export function layerLinkPath(name: string, digest: Digest | string): string {
  const { algorithm, hex } = digestOfAny(digest)
  return `${repository(name)}/_layers/${algorithm}/${hex}/link`
}

export function manifestsPath(name: string): string {
  return `${repository(name)}/_manifests`
}

export function manifestRevisionsPath(name: string): string {
  return `${repository(name)}/_manifests/revisions`
}

export function manifestRevisionLinkPath(name: string, digest: Digest | string): string {
  const { algorithm, hex } = digestOfAny(digest)
  return `${repository(name)}/_manifests/revisions/${algorithm}/${hex}/link`
}

export function tagsPath(name: string): string {
  return `${repository(name)}/_manifests/tags`
}

/** The whole folder of one tag; untagging deletes it (as distribution's `tagStore.Untag`). */
export function tagPath(name: string, tag: string): string {
  assertTag(tag)
  return `${tagsPath(name)}/${tag}`
}

export function tagCurrentLinkPath(name: string, tag: string): string {
  return `${tagPath(name, tag)}/current/link`
}

export function tagIndexLinkPath(name: string, tag: string, digest: Digest | string): string {
  const { algorithm, hex } = digestOfAny(digest)
  return `${tagPath(name, tag)}/index/${algorithm}/${hex}/link`
}

export function uploadsPath(name: string): string {
  return `${repository(name)}/_uploads`
}

const uploadIdGrammar = /^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/

/** Upload ids are UUIDs (what registry:2 and Berth generate); anything else cannot name an upload. */
export function isUploadId(value: string): boolean {
  return uploadIdGrammar.test(value)
}

export function uploadPath(name: string, uploadId: string): string {
  if (!isUploadId(uploadId)) throw new RangeError('invalid upload id')
  return `${uploadsPath(name)}/${uploadId}`
}

export function uploadDataPath(name: string, uploadId: string): string {
  return `${uploadPath(name, uploadId)}/data`
}

export function uploadStartedAtPath(name: string, uploadId: string): string {
  return `${uploadPath(name, uploadId)}/startedat`
}

/**
 * The marker of a repository the pull-through mirror filled (src/mirror): its content was fetched
 * from an upstream, not pushed. A file whose name starts with `_`, so registry:2's catalog and
 * garbage collector pass over it, as they do over Berth's `_referrers`.
 */
export function mirrorMarkerPath(name: string): string {
  return `${repository(name)}/_mirror`
}

/** Folder holding one `<alg>/<hex>/link` per referrer of `subject`. */
export function referrersPath(name: string, subject: Digest | string): string {
  const { algorithm, hex } = digestOfAny(subject)
  return `${repository(name)}/_referrers/${algorithm}/${hex}`
}

export function referrerLinkPath(name: string, subject: Digest | string, referrer: Digest | string): string {
  const { algorithm, hex } = digestOfAny(referrer)
  return `${referrersPath(name, subject)}/${algorithm}/${hex}/link`
}
