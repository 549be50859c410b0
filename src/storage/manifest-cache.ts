/**
 * Manifest bytes by digest, in process, least recently used first out, bounded in bytes.
 *
 * Safe because a digest names its bytes forever (content addressed): an entry can be old but
 * never wrong. It answers only "what are the bytes of <digest>", never "does <digest> exist" or
 * "where does a tag point": those change (DELETE, garbage collection, another process or
 * instance on the same store) and are read from the store on every request (manifest-store.ts).
 */

export interface CachedManifest {
  readonly content: Buffer
  readonly mediaType: string
}

export interface ManifestCacheOptions {
  /** Upper bound of the bytes held, entries' bookkeeping included (default 4 MiB; 0 turns caching off). */
  maxBytes?: number
  /** Manifests larger than this are not kept (default 256 KiB). */
  maxEntryBytes?: number
}

export const DEFAULT_MANIFEST_CACHE_BYTES = 4 * 1024 * 1024
export const DEFAULT_MANIFEST_CACHE_ENTRY_BYTES = 256 * 1024
/** Rough per-entry cost besides the content (digest string, objects, map slot), counted against maxBytes. */
const ENTRY_OVERHEAD = 256

export class ManifestCache {
  readonly maxBytes: number
  readonly maxEntryBytes: number
  readonly #entries = new Map<string, CachedManifest>()
  #bytes = 0

  constructor(options: ManifestCacheOptions = {}) {
    this.maxBytes = options.maxBytes ?? DEFAULT_MANIFEST_CACHE_BYTES
    this.maxEntryBytes = Math.min(options.maxEntryBytes ?? DEFAULT_MANIFEST_CACHE_ENTRY_BYTES, this.maxBytes)
  }

  /** The bytes held now, bookkeeping included; never above maxBytes. */
  get bytes(): number {
    return this.#bytes
  }

  get size(): number {
    return this.#entries.size
  }

  get(digest: string): CachedManifest | undefined {
    const entry = this.#entries.get(digest)
    if (entry !== undefined) {
      // Most recently used goes last (Map keeps insertion order).
      this.#entries.delete(digest)
      this.#entries.set(digest, entry)
    }
    return entry
  }

  /**
   * Keeps `entry` unless too large. The content is shared with every later `get` (and may be the
   * caller's own Buffer): nobody may modify it. A Buffer that is a slice of a larger memory block
   * (Node's pool) is copied first, so the bound counts what is really kept alive.
   */
  set(digest: string, entry: CachedManifest): void {
    if (entry.content.byteLength > this.maxEntryBytes) return
    if (entry.content.buffer.byteLength !== entry.content.byteLength) {
      const own = Buffer.allocUnsafeSlow(entry.content.byteLength)
      entry.content.copy(own)
      entry = { content: own, mediaType: entry.mediaType }
    }
    const cost = costOf(digest, entry)
    if (cost > this.maxBytes) return
    this.delete(digest)
    this.#entries.set(digest, entry)
    this.#bytes += cost
    for (const [oldest, old] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break
      this.#entries.delete(oldest)
      this.#bytes -= costOf(oldest, old)
    }
  }

  delete(digest: string): void {
    const entry = this.#entries.get(digest)
    if (entry === undefined) return
    this.#entries.delete(digest)
    this.#bytes -= costOf(digest, entry)
  }
}

function costOf(digest: string, entry: CachedManifest): number {
  return entry.content.byteLength + digest.length + entry.mediaType.length + ENTRY_OVERHEAD
}
