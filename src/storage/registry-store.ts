/**
 * The storage engine as one object: every store built over one driver. `registry/` talks to
 * this; GC and other tools can build the same from their own driver.
 */
import type { StorageDriver } from './driver/storage-driver.js'
import { BlobStore } from './blob-store.js'
import { Catalog } from './catalog.js'
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
}

export function createRegistryStore(driver: StorageDriver): RegistryStore {
  const blobs = new BlobStore(driver)
  const tags = new TagStore(driver)
  const referrers = new ReferrerStore(driver, blobs)
  return {
    driver,
    blobs,
    uploads: new UploadStore(driver, blobs),
    manifests: new ManifestStore(driver, blobs, tags, referrers),
    tags,
    referrers,
    catalog: new Catalog(driver),
  }
}
