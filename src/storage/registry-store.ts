/**
 * The storage engine as one object: every store built over one driver. `registry/` talks to
 * this; GC and other tools can build the same from their own driver.
 *
 * Invariants every writer keeps (and garbage collection may rely on):
 * - A link is written only after the thing it names is stored: `_layers` and revision links
 *   after the blob's `data`, a tag's `current/link` after the revision link, a referrer link
 *   after the revision link. So a crash can leave orphans (bytes nobody links) but never a link
 *   to missing bytes.
 * - Blob `data` is immutable and content addressed; writing it again is a no-op or an atomic
 *   replacement with identical bytes, so two pushes of one blob can race safely.
 * - Deleting removes links only (`BlobStore.unlink`, `ManifestStore.delete`, `TagStore.untag`);
 *   bytes are left for garbage collection, which must sweep a blob only when no `_layers` link,
 *   revision link or in-flight upload commit can still name it.
 * - `_referrers` is an index that may dangle (registry:2 never updates it); readers check the
 *   revision link. `_uploads/<id>` is state that `UploadStore.purge` removes by age.
 * - Nothing here caches storage state across requests except upload hash states, which are
 *   checked against the bytes on disk before use, and manifest bytes by digest (content
 *   addressed, so never stale; manifest-cache.ts), so another process (registry:2, GC, another
 *   instance on the bucket) may change the tree underneath: tags and links are read every time.
 */
import type { StorageDriver } from './driver/storage-driver.js'
import { BlobStore } from './blob-store.js'
import { Catalog } from './catalog.js'
import { guardForGc } from './gc-guard.js'
import { ManifestCache, type ManifestCacheOptions } from './manifest-cache.js'
import type { ManifestObserver } from './manifest-observer.js'
import { ManifestStore } from './manifest-store.js'
import { ReferrerStore } from './referrer-store.js'
import { TagStore } from './tag-store.js'
import { UploadStore } from './upload-store.js'

export interface RegistryStore {
  readonly driver: StorageDriver
  readonly blobs: BlobStore
  readonly uploads: UploadStore
  readonly manifests: ManifestStore
  readonly tags: TagStore
  readonly referrers: ReferrerStore
  readonly catalog: Catalog
  /** Told about committed manifest changes and pulls (the metadata index), when one is set. */
  readonly observer: ManifestObserver | undefined
}

export interface RegistryStoreOptions {
  /** Bounds of the in-process cache of manifest bytes (default 4 MiB, manifests up to 256 KiB). */
  manifestCache?: ManifestCacheOptions
  /** Accept manifests and indexes whose layers or children are not stored (ManifestStoreOptions). */
  allowSparseManifests?: boolean
  /** See ManifestObserver; the manifest store calls it after each committed change. */
  observer?: ManifestObserver
}

export function createRegistryStore(unguarded: StorageDriver, options: RegistryStoreOptions = {}): RegistryStore {
  // On S3 every touch and link write follows the writers' half of GC's delete-intent rule (gc-guard.ts).
  const driver = guardForGc(unguarded)
  const blobs = new BlobStore(driver)
  const tags = new TagStore(driver)
  const referrers = new ReferrerStore(driver, blobs)
  return {
    driver,
    blobs,
    uploads: new UploadStore(driver, blobs),
    manifests: new ManifestStore(driver, blobs, tags, referrers, new ManifestCache(options.manifestCache), {
      allowSparse: options.allowSparseManifests ?? false,
      ...(options.observer === undefined ? {} : { observer: options.observer }),
    }),
    tags,
    referrers,
    catalog: new Catalog(driver),
    observer: options.observer,
  }
}
