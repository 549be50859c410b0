/**
 * The repository list (distribution's `catalog.go`): a repository is a folder under
 * `repositories/` that has a `_manifests` child. `_`-prefixed folders are never descended.
 * This walks the tree, so it is for `GET /v2/_catalog`, not for hot paths.
 */
import { PathNotFoundError, type StorageDriver } from './driver/storage-driver.js'
import { REPOSITORIES_ROOT } from './paths.js'
import { isRepositoryName } from './reference.js'

export class Catalog {
  constructor(private readonly driver: StorageDriver) {}

  /** Every repository name, sorted lexically. */
  async list(): Promise<string[]> {
    const names: string[] = []
    const prefix = `${REPOSITORIES_ROOT}/`
    try {
      await this.driver.walk(REPOSITORIES_ROOT, info => {
        if (!info.isDir) return
        const base = info.path.slice(info.path.lastIndexOf('/') + 1)
        if (!base.startsWith('_')) return
        if (base === '_manifests') {
          const name = info.path.slice(prefix.length, info.path.lastIndexOf('/'))
          if (isRepositoryName(name)) names.push(name)
        }
        return 'skip'
      })
    } catch (error) {
      if (error instanceof PathNotFoundError) return []
      throw error
    }
    return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  }
}
