/**
 * What the storage page shows beyond the metadata index: bytes per repository split into unique
 * and shared (usage.ts, as `berth du`), what garbage collection would free now (gc.ts dry runs:
 * as the schedule runs it, and with --delete-untagged), and the last run that deleted
 * (gc-last-run.ts).
 *
 * Each figure needs a walk of the whole tree (every link, every blob, every manifest read), so it
 * is never computed on a request: `refresh` runs in the background (at start, on a schedule and
 * after each collection) and requests read the last result. One refresh runs at a time; asking
 * while one runs makes exactly one more run after it, so a result never predates the request
 * for it. Dry runs take no lock and change nothing.
 */
import { performance } from 'node:perf_hooks'
import { silentLogger, type Logger } from '../log.js'
import type { StorageDriver } from './driver/storage-driver.js'
import { collectGarbage } from './gc.js'
import { readLastGcRun, type GcRunSummary } from './gc-last-run.js'
import { diskUsage, type RepositoryUsage, type UsageReport } from './usage.js'

/** How often `berth serve` surveys the store when nothing asks sooner. */
export const STORAGE_SURVEY_INTERVAL_MS = 6 * 3600_000

export interface StorageSurveyResult {
  /** When the walk finished, and how long it took. */
  readonly computedAt: string
  readonly durationMs: number
  readonly usage: UsageReport
  /** By repository name. */
  readonly byRepository: ReadonlyMap<string, RepositoryUsage>
  /** What a collection as the schedule runs it (`berth gc`) would free now. */
  readonly gcWouldFree: { readonly blobs: number; readonly bytes: number }
  /** What `berth gc --delete-untagged` would free now. */
  readonly gcUntaggedWouldFree: { readonly blobs: number; readonly bytes: number; readonly manifests: number }
  /** The last collection that deleted, as recorded in the store. */
  readonly lastGc: GcRunSummary | undefined
}

export class StorageSurvey {
  readonly #driver: StorageDriver
  readonly #logger: Logger
  #latest: StorageSurveyResult | undefined
  #running: Promise<StorageSurveyResult | undefined> | undefined
  #again = false

  readonly #gracePeriodMs: number | undefined

  /** `gracePeriodMs`: the collections' grace period the dry runs assume (default gc.ts's, as `berth serve` runs them). */
  constructor(driver: StorageDriver, options: { logger?: Logger; gracePeriodMs?: number } = {}) {
    this.#driver = driver
    this.#logger = options.logger ?? silentLogger
    this.#gracePeriodMs = options.gracePeriodMs
  }

  /** The last result, or undefined before the first walk finished. */
  get latest(): StorageSurveyResult | undefined {
    return this.#latest
  }

  /**
   * Walks the store and replaces the result. Resolves with the new result, or undefined when the
   * walk failed (logged; the previous result stays) or `signal` stopped it. Never rejects.
   */
  refresh(signal?: AbortSignal): Promise<StorageSurveyResult | undefined> {
    if (this.#running !== undefined) {
      this.#again = true
      return this.#running
    }
    this.#running = (async () => {
      let result: StorageSurveyResult | undefined
      do {
        this.#again = false
        result = await this.#walk(signal)
      } while (this.#again && signal?.aborted !== true)
      return result
    })().finally(() => (this.#running = undefined))
    return this.#running
  }

  async #walk(signal: AbortSignal | undefined): Promise<StorageSurveyResult | undefined> {
    const started = performance.now()
    try {
      const usage = await diskUsage(this.#driver)
      signal?.throwIfAborted()
      const options = { dryRun: true, ...(signal ? { signal } : {}), ...(this.#gracePeriodMs !== undefined ? { gracePeriodMs: this.#gracePeriodMs } : {}) }
      const plain = await collectGarbage(this.#driver, options)
      const untagged = await collectGarbage(this.#driver, { ...options, deleteUntagged: true })
      const lastGc = await readLastGcRun(this.#driver)
      const result: StorageSurveyResult = {
        computedAt: new Date().toISOString(),
        durationMs: Math.round(performance.now() - started),
        usage,
        byRepository: new Map(usage.repositories.map(repository => [repository.name, repository])),
        gcWouldFree: { blobs: plain.blobs.length, bytes: plain.bytesFreed },
        gcUntaggedWouldFree: { blobs: untagged.blobs.length, bytes: untagged.bytesFreed, manifests: untagged.manifests.length },
        lastGc,
      }
      this.#latest = result
      return result
    } catch (error) {
      if (signal?.aborted !== true)
        this.#logger.warn('storage survey failed; the storage page keeps the previous figures', {
          error: error instanceof Error ? error.message : String(error),
        })
      return undefined
    }
  }
}
