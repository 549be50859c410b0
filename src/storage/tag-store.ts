/**
 * Tags (distribution's `tagStore`): `_manifests/tags/<tag>/current/link` names the manifest the
 * tag points to, `index/<alg>/<hex>/link` every manifest it ever pointed to.
 */
import { PathNotFoundError, type StorageDriver } from './driver/storage-driver.js'
import { parseDigest, type Digest } from './digest.js'
import { ManifestUnknownError, RepositoryUnknownError, TagExistsError } from './errors.js'
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
    const candidates = await this.#candidates(name)
    const present = await Promise.all(candidates.map(tag => this.#hasCurrentLink(name, tag)))
    return candidates.filter((_, i) => present[i])
  }

  /**
   * One page of `list(name)`: at most `limit` tags strictly after `last` (which need not be a
   * tag), and whether more follow. The folder is listed once, but only the `current/link`s the
   * page needs are checked (in order, `PAGE_STAT_BATCH` at a time), so paging through a
   * repository with many tags costs one listing plus one stat per returned tag per page, not a
   * stat of every tag per page. Throws RepositoryUnknownError like `list`.
   */
  async page(name: string, last: string | undefined, limit: number): Promise<{ tags: string[]; more: boolean }> {
    const all = await this.#candidates(name)
    if (limit <= 0) return { tags: [], more: false }
    const after = last === undefined || last === '' ? all : all.slice(firstAfter(all, last))
    const tags: string[] = []
    let next = 0
    while (next < after.length) {
      // Check no more than the page still needs, plus the one that tells whether more follow.
      const batch = after.slice(next, next + Math.min(PAGE_STAT_BATCH, limit + 1 - tags.length))
      next += batch.length
      const present = await Promise.all(batch.map(tag => this.#hasCurrentLink(name, tag)))
      for (const [j, tag] of batch.entries()) {
        if (!present[j]) continue
        if (tags.length === limit) return { tags, more: true }
        tags.push(tag)
      }
    }
    return { tags, more: false }
  }

  /** Names of the tag folders that are valid tags, sorted; not yet checked for a `current/link`. */
  async #candidates(name: string): Promise<string[]> {
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
    return entries
      .map(entry => entry.slice(entry.lastIndexOf('/') + 1))
      .filter(isTag)
      .sort(compareTags)
  }

  #hasCurrentLink(name: string, tag: string): Promise<boolean> {
    return this.driver.stat(tagCurrentLinkPath(name, tag)).then(
      () => true,
      error => {
        if (error instanceof PathNotFoundError) return false
        throw error
      },
    )
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

  /**
   * Points `tag` at `digest` only if the tag does not exist or already names `digest`, atomically
   * across processes sharing the store (`putContentIfAbsent`). Throws TagExistsError otherwise.
   */
  async tagIfAbsent(name: string, tag: string, digest: Digest): Promise<void> {
    await this.driver.putContent(tagIndexLinkPath(name, tag, digest), Buffer.from(digest.value))
    if (await this.driver.putContentIfAbsent(tagCurrentLinkPath(name, tag), Buffer.from(digest.value))) return
    const current = await this.resolve(name, tag)
    if (current.value !== digest.value) throw new TagExistsError(name, tag, current.value)
  }

  /** Throws TagExistsError for the first of `tags` that exists and names another manifest than `digest`. */
  async assertNoneMoves(name: string, tags: readonly string[], digest: Digest): Promise<void> {
    for (const tag of tags) {
      let current: Digest
      try {
        current = await this.resolve(name, tag)
      } catch (error) {
        if (error instanceof ManifestUnknownError) continue
        throw error
      }
      if (current.value !== digest.value) throw new TagExistsError(name, tag, current.value)
    }
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

/** How many `current/link`s one page of tags checks at once. */
const PAGE_STAT_BATCH = 32

/** Index of the first entry of sorted `items` that sorts after `last` (binary search). */
function firstAfter(items: readonly string[], last: string): number {
  let low = 0
  let high = items.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (compareTags(items[middle] as string, last) <= 0) low = middle + 1
    else high = middle
  }
  return low
}

/** Lexical order by code unit, which for the tag grammar's ASCII is byte order (what Go sorts by). */
export function compareTags(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
