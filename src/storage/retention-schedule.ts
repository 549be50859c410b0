/**
 * Retention as a background job of `berth serve` (`--retention-interval`, on when the config has
 * retention policies): the same plan and removal as `berth retention`, with the serving process's
 * store (so its metadata index sees each removal at once) and event sink (audit log, webhooks).
 * server.ts runs garbage collection after a run that removed an image.
 */
import type { EventSink } from '../events/events.js'
import type { Logger } from '../log.js'
import type { StorageDriver } from './driver/storage-driver.js'
import type { MetadataIndex } from './metadata/metadata-index.js'
import type { RegistryStore } from './registry-store.js'
import { applyRetention, planFromStore, type CompiledPolicy, type RetentionResult } from './retention.js'

export interface RetentionRun {
  readonly driver: StorageDriver
  readonly store: RegistryStore
  readonly index: MetadataIndex
  readonly policies: readonly CompiledPolicy[]
  readonly events: EventSink
  readonly logger: Logger
  /** True stops the run between two items (read-only mode switched on, shutdown). */
  readonly shouldStop: () => boolean
}

/** One run, logged; resolves with what it removed, or undefined when it failed (never rejects). */
export async function runRetention(run: RetentionRun): Promise<RetentionResult | undefined> {
  const started = Date.now()
  try {
    await run.index.flushPulls() // this process's pulls count for pulledWithin
    const plan = await planFromStore(run.driver, run.index, run.policies, new Date())
    const result = await applyRetention(run.store, plan, { events: run.events, shouldStop: run.shouldStop })
    run.logger.info('retention done', {
      repositories: plan.repositories,
      tags: result.tags,
      images: result.manifests,
      bytes: result.bytes,
      skipped: result.skipped.length,
      stopped: result.stopped,
      ms: Date.now() - started,
    })
    for (const { item, why } of result.skipped.slice(0, 20)) {
      run.logger.info('retention kept', { repository: item.repository, reference: item.tag ?? item.digest, why })
    }
    return result
  } catch (error) {
    run.logger.error('retention failed', { error: error instanceof Error ? error.message : String(error) })
    return undefined
  }
}
