/**
 * Read-only enumeration of a datadir for maintenance (garbage collection, usage reports): the
 * repositories, their link folders and the stored blobs, in distribution's layout (paths.ts), so
 * it works the same on a tree written by registry:2. Nothing here is for a request path: it walks
 * the whole tree.
 */
import { PathNotFoundError, statFileOrUndefined, type StorageDriver } from './driver/storage-driver.js'
import { isDigest } from './digest.js'
import { BLOBS_ROOT, REPOSITORIES_ROOT } from './paths.js'
import { isRepositoryName } from './reference.js'

/** One `<alg>/<hex>/link` file below a link folder (`_layers`, `_manifests/revisions`). */
export interface LinkEntry {
  /** `<alg>:<hex>`, taken from the path as distribution does (the content is not trusted). */
  readonly digest: string
  /** The folder `<alg>/<hex>` (driver path); its `link` file is `${dir}/link`. */
  readonly dir: string
  /** Modification time of the link file, or undefined when the folder has no `link`. */
  readonly modTime: Date | undefined
}

export interface BlobEntry {
  readonly digest: string
  /** The folder `blobs/<alg>/<xx>/<hex>`. */
  readonly dir: string
  /** Size and time of `data`; undefined when the folder has no `data` file. */
  readonly size: number | undefined
  readonly modTime: Date | undefined
}

export async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return await driver.list(path)
  } catch (error) {
    if (error instanceof PathNotFoundError) return []
    throw error
  }
}

function base(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1)
}

/**
 * Every repository: a folder below `repositories/` holding `_manifests`, `_layers` or `_uploads`
 * (a repository whose manifests were all deleted still has layer links to clean). Sorted.
 */
export async function listRepositories(driver: StorageDriver): Promise<string[]> {
  const names = new Set<string>()
  const prefix = `${REPOSITORIES_ROOT}/`
  try {
    await driver.walk(REPOSITORIES_ROOT, info => {
      if (!info.isDir) return
      const name = base(info.path)
      if (!name.startsWith('_')) return
      if (name === '_manifests' || name === '_layers' || name === '_uploads') {
        const repository = info.path.slice(prefix.length, info.path.lastIndexOf('/'))
        if (isRepositoryName(repository)) names.add(repository)
      }
      return 'skip'
    })
  } catch (error) {
    if (error instanceof PathNotFoundError) return []
    throw error
  }
  return [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
}

/** The `<alg>/<hex>/link` entries below `folder` (e.g. a repository's `_layers`). */
export async function listLinks(driver: StorageDriver, folder: string): Promise<LinkEntry[]> {
  const entries: LinkEntry[] = []
  for (const algorithmDir of await listOrEmpty(driver, folder)) {
    for (const hexDir of await listOrEmpty(driver, algorithmDir)) {
      const digest = `${base(algorithmDir)}:${base(hexDir)}`
      if (!isDigest(digest)) continue
      const info = await statFileOrUndefined(driver, `${hexDir}/link`)
      entries.push({ digest, dir: hexDir, modTime: info?.modTime })
    }
  }
  return entries
}

/** Visits every folder of `blobs/<alg>/<xx>/<hex>` with the stat of its `data`. */
export async function forEachBlob(driver: StorageDriver, visit: (blob: BlobEntry) => Promise<void>): Promise<void> {
  for (const algorithmDir of await listOrEmpty(driver, BLOBS_ROOT)) {
    for (const prefixDir of await listOrEmpty(driver, algorithmDir)) {
      for (const hexDir of await listOrEmpty(driver, prefixDir)) {
        const digest = `${base(algorithmDir)}:${base(hexDir)}`
        if (!isDigest(digest)) continue
        const info = await statFileOrUndefined(driver, `${hexDir}/data`)
        await visit({ digest, dir: hexDir, size: info?.size, modTime: info?.modTime })
      }
    }
  }
}

/**
 * Every digest a manifest names, read leniently (any JSON shape): config, layers, index
 * children, `subject`, OCI artifact `blobs` and Docker schema 1 `fsLayers`. Garbage collection
 * keeps what this returns, so being generous here can only keep too much, never lose data;
 * schema 1 manifests written by old registry:2 clients are covered although Berth refuses new ones.
 */
export interface ManifestReferences {
  readonly blobs: string[]
  readonly children: string[]
  readonly subject: string | undefined
}

export function manifestReferences(content: Uint8Array): ManifestReferences | undefined {
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(content.buffer, content.byteOffset, content.byteLength).toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined
  const object = json as Record<string, unknown>
  const digestOf = (value: unknown, key = 'digest'): string | undefined => {
    if (typeof value !== 'object' || value === null) return undefined
    const digest = (value as Record<string, unknown>)[key]
    return typeof digest === 'string' && isDigest(digest) ? digest : undefined
  }
  const each = (value: unknown, key = 'digest'): string[] =>
    Array.isArray(value) ? value.map(item => digestOf(item, key)).filter((d): d is string => d !== undefined) : []
  const blobs = [...each(object['layers']), ...each(object['blobs']), ...each(object['fsLayers'], 'blobSum')]
  const config = digestOf(object['config'])
  if (config !== undefined) blobs.push(config)
  return { blobs, children: each(object['manifests']), subject: digestOf(object['subject']) }
}
