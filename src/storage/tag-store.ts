/**
 * Tags (distribution's `tagStore`): `_manifests/tags/<tag>/current/link` names the manifest the
 * tag points to, `index/<alg>/<hex>/link` every manifest it ever pointed to.
 */
import { PathNotFoundError, type StorageDriver } from './driver/storage-driver.js'
import { parseDigest, type Digest } from './digest.js'
import { ManifestUnknownError, RepositoryUnknownError } from './errors.js'
import { isTag } from './reference.js'
import { manifestsPath, tagCurrentLinkPath, tagIndexLinkPath, tagPath, tagsPath } from './paths.js'

export class TagStore {
  constructor(private readonly driver: StorageDriver) {}

  /**
   * Every tag of `name`, sorted lexically. A tag folder without a `current/link` (left by a
   * crash between creating the folder and writing the link) is not a tag.
   * Throws RepositoryUnknownError when the repository has no `_manifests`.
   */
  async list(name: string): Promise<string[]> {
    let entries: string[]
    try {
      entries = await this.driver.list(tagsPath(name))
    } catch (error) {
      if (!(error instanceof PathNotFoundError)) throw error
      try {
        await this.driver.stat(manifestsPath(name))
      } catch (inner) {
        if (inner instanceof PathNotFoundError) throw new RepositoryUnknownError(name)
        throw inner
      }
      return []
    }
    const candidates = entries.map(entry => entry.slice(entry.lastIndexOf('/') + 1)).filter(isTag)
    const present = await Promise.all(
      candidates.map(tag =>
        this.driver.stat(tagCurrentLinkPath(name, tag)).then(
          () => true,
          error => {
            if (error instanceof PathNotFoundError) return false
            throw error
          },
        ),
      ),
    )
    return candidates.filter((_, i) => present[i]).sort(compareTags)
  }

  /** The digest `tag` points to. Throws ManifestUnknownError. */
  async resolve(name: string, tag: string): Promise<Digest> {
    let content: Buffer
    try {
      content = await this.driver.getContent(tagCurrentLinkPath(name, tag))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new ManifestUnknownError(tag)
      throw error
    }
    try {
      return parseDigest(content.toString('utf8').trim())
    } catch {
      throw new ManifestUnknownError(tag, `tag ${tag} holds a corrupt link`)
    }
  }

  /** Points `tag` at `digest`: index link first, then the current link (as distribution's `Tag`). */
  async tag(name: string, tag: string, digest: Digest): Promise<void> {
    await this.driver.putContent(tagIndexLinkPath(name, tag, digest), Buffer.from(digest.value))
    await this.driver.putContent(tagCurrentLinkPath(name, tag), Buffer.from(digest.value))
  }

  /** Removes `tag` only (its whole folder). Throws ManifestUnknownError when there is no such tag. */
  async untag(name: string, tag: string): Promise<void> {
    try {
      await this.driver.delete(tagPath(name, tag))
    } catch (error) {
      if (error instanceof PathNotFoundError) throw new ManifestUnknownError(tag)
      throw error
    }
  }

  /** Removes every tag of `name` whose current link is `digest` (linear scan, as distribution). */
  async untagDigest(name: string, digest: Digest): Promise<string[]> {
    let tags: string[]
    try {
      tags = await this.list(name)
    } catch (error) {
      if (error instanceof RepositoryUnknownError) return []
      throw error
    }
    const removed: string[] = []
    await Promise.all(
      tags.map(async tag => {
        let current: Digest
        try {
          current = await this.resolve(name, tag)
        } catch (error) {
          if (error instanceof ManifestUnknownError) return
          throw error
        }
        if (current.value !== digest.value) return
        await this.untag(name, tag).catch(error => {
          if (!(error instanceof ManifestUnknownError)) throw error
        })
        removed.push(tag)
      }),
    )
    return removed.sort(compareTags)
  }
}

/** Lexical order by code unit, which for the tag grammar's ASCII is byte order (what Go sorts by). */
export function compareTags(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
