/**
 * Quotas: a size limit per repository glob (`quotas:` in the config file), checked when a manifest
 * is pushed, and when an upload starts in a repository already at its limit (an early refusal
 * that saves sending the layers). The rules, stated once here and in the README:
 *
 * - The FIRST quota whose globs match a repository applies (as retention policies and access
 *   rules); a repository no quota matches has no limit.
 * - Usage is the metadata index's size of the repository: config and layers of every image
 *   manifest it holds, tagged or not (a layer two images share counts twice, as `berth ls` and the
 *   web UI show it). Blobs no manifest references yet do not count.
 * - A manifest push adds its config and layers (each digest once, foreign layers left out) when the
 *   repository does not hold that manifest yet. An index adds nothing itself: each child was counted
 *   when it was pushed (children come first). A manifest the repository holds adds nothing (a re-tag).
 * - A push that adds bytes and would take usage past the limit is refused with DENIED before the
 *   manifest is stored: no tag is created or moved. The layers the client uploaded before it are
 *   referenced by nothing, and garbage collection removes them once they are older than its grace
 *   period. A push that adds nothing is never refused, even over the limit (a lowered quota does not
 *   block re-tags or indexes of images already counted).
 * - The check reads the index when the request arrives: pushes to one repository at the same moment
 *   may together overshoot by what they add; the next push sees the total.
 */
import { compileGlob } from '../access/rules.js'
import { QuotaExceededError } from './errors.js'
import { isIndexType, parseManifest } from './manifest.js'
import { imageSize } from './metadata/describe.js'
import type { MetadataStore } from './metadata/view.js'
import { formatBytes } from './usage.js'

/** One quota as configured (config/values.ts parses it). */
export interface QuotaSetting {
  /** Repository globs as in the access file (`ci/*`, `team/**`). */
  readonly repositories: readonly string[]
  /** Most bytes the repository's images may hold. */
  readonly maxSize: number
}

/** A manifest as received by a PUT, before it is stored. */
export interface IncomingManifest {
  readonly content: Buffer
  readonly mediaType: string | undefined
  readonly digest: string
}

/** What the engine asks before it stores anything (registry/handlers). Both throw QuotaExceededError to refuse. */
export interface QuotaCheck {
  /** Before a manifest PUT stores the manifest or moves a tag. */
  checkPush(repository: string, manifest: IncomingManifest): Promise<void>
  /** Before an upload starts: refused only when the repository is already at or over its limit. */
  checkUpload(repository: string): Promise<void>
}

/** A repository's quota, its usage, and the glob that matched. */
export interface QuotaUsage {
  readonly glob: string
  readonly limit: number
  readonly usage: number
}

interface CompiledQuota {
  readonly setting: QuotaSetting
  readonly globs: readonly { readonly text: string; readonly pattern: RegExp }[]
}

/** Compiles quotas; throws Error naming the first bad glob (config parsing checks the same). */
function compileQuotas(quotas: readonly QuotaSetting[]): CompiledQuota[] {
  return quotas.map(setting => ({
    setting,
    globs: setting.repositories.map(text => {
      const pattern = compileGlob(text)
      if (typeof pattern === 'string') throw new Error(pattern)
      return { text, pattern }
    }),
  }))
}

/** Bytes a manifest adds to a repository that does not hold it yet: config and layers of an image, 0 for an index. */
export function manifestBytes(content: Buffer): number {
  let parsed
  try {
    parsed = parseManifest(content)
  } catch {
    return 0
  }
  return isIndexType(parsed.mediaType) ? 0 : imageSize(content)
}

/** A refusal, as told to `onRefused` (metrics): the quota's glob, and whether a manifest PUT or an upload start was refused. */
export interface QuotaRefusal {
  readonly repository: string
  readonly quota: string
  readonly stage: 'push' | 'upload'
}

export class RepositoryQuotas implements QuotaCheck {
  readonly #quotas: readonly CompiledQuota[]
  readonly #metadata: MetadataStore
  readonly #onRefused: ((refusal: QuotaRefusal) => void) | undefined

  constructor(quotas: readonly QuotaSetting[], metadata: MetadataStore, options: { onRefused?: (refusal: QuotaRefusal) => void } = {}) {
    this.#quotas = compileQuotas(quotas)
    this.#metadata = metadata
    this.#onRefused = options.onRefused
  }

  /** Each quota as `glob, glob: size`, in order, `; ` between them (the start-up log line). */
  describe(): string {
    return this.#quotas.map(quota => `${quota.globs.map(glob => glob.text).join(', ')}: ${formatBytes(quota.setting.maxSize)}`).join('; ')
  }

  /** The quota of `repository` (first match) and the glob that matched it, or undefined. */
  quotaFor(repository: string): { glob: string; limit: number } | undefined {
    for (const quota of this.#quotas) {
      const glob = quota.globs.find(candidate => candidate.pattern.test(repository))
      if (glob !== undefined) return { glob: glob.text, limit: quota.setting.maxSize }
    }
    return undefined
  }

  /** Usage against quota, or undefined when no quota applies. */
  async usageOf(repository: string): Promise<QuotaUsage | undefined> {
    const quota = this.quotaFor(repository)
    if (quota === undefined) return undefined
    const { items } = await this.#metadata.listRepositories({ prefix: repository })
    const usage = items.find(item => item.name === repository)?.size ?? 0
    return { ...quota, usage }
  }

  async checkPush(repository: string, manifest: IncomingManifest): Promise<void> {
    const quota = this.quotaFor(repository)
    if (quota === undefined) return
    const push = manifestBytes(manifest.content)
    if (push === 0 || (await this.#metadata.image(repository, manifest.digest)) !== undefined) return
    const { usage } = (await this.usageOf(repository))!
    if (usage + push <= quota.limit) return
    this.#onRefused?.({ repository, quota: quota.glob, stage: 'push' })
    throw new QuotaExceededError(
      repository,
      quota.glob,
      quota.limit,
      usage,
      push,
      `push refused: ${repository} would exceed its quota (${JSON.stringify(quota.glob)}: ${formatBytes(quota.limit)}; ` +
        `used ${formatBytes(usage)}, this push ${formatBytes(push)}); delete images and run berth gc, or raise the quota`,
    )
  }

  async checkUpload(repository: string): Promise<void> {
    const state = await this.usageOf(repository)
    if (state === undefined || state.usage < state.limit) return
    this.#onRefused?.({ repository, quota: state.glob, stage: 'upload' })
    throw new QuotaExceededError(
      repository,
      state.glob,
      state.limit,
      state.usage,
      0,
      `upload refused: ${repository} is at its quota (${JSON.stringify(state.glob)}: ${formatBytes(state.limit)}; ` +
        `used ${formatBytes(state.usage)}); delete images and run berth gc, or raise the quota`,
    )
  }
}
