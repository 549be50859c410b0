/**
 * The webhook deliveries kept in the store (`/berth/events/`, drawn in storage/paths.ts), so they
 * survive a restart and, on S3, live in the bucket every instance shares. One record per event and
 * endpoint, a small JSON object holding the exact body to send:
 *
 * - `pending/<instance>/<endpoint>/<id>.json`: not delivered yet. `<instance>` is the serving
 *   process that owns it (it holds `owners/<instance>`); `<endpoint>` a key of the endpoint's URL.
 * - `failed/<id>.json`: a dead letter, kept until `berth events retry` or `drop`.
 *
 * Ids sort by creation time (milliseconds, then a per-process sequence), so a folder listed and
 * sorted gives one process's deliveries in the order their events happened.
 */
import { createHash, randomBytes } from 'node:crypto'
import { ignoreMissing, PathNotFoundError, type StorageDriver } from '../storage/driver/storage-driver.js'
import {
  EVENTS_FAILED_ROOT,
  EVENTS_PENDING_ROOT,
  eventFailedRecordPath,
  eventPendingRecordPath,
  eventsEndpointPath,
  eventsPendingPath,
} from '../storage/paths.js'

export interface DeliveryRecord {
  readonly version: 1
  /** The delivery (event × endpoint); sorts by creation time. */
  readonly id: string
  /** The event's id, the same for every endpoint (`id` in the body). */
  readonly eventId: string
  readonly endpoint: string
  readonly contentType: string
  /** The exact body; signed again at each attempt with the endpoint's current secret. */
  readonly body: string
  readonly action: string
  readonly repository?: string | undefined
  readonly tag?: string | undefined
  readonly digest?: string | undefined
  /** When the event happened (ISO 8601). */
  readonly createdAt: string
  /** When it entered the queue (again, after `berth events retry`): the age limit counts from here. */
  readonly queuedAt: string
  readonly attempts: number
  readonly nextAttemptAt: string
  readonly lastError?: string | undefined
  /** Set on a dead letter: when it was given up. */
  readonly failedAt?: string | undefined
}

/** A record as `berth events` shows it, with where it lies. */
export interface ListedDelivery {
  readonly state: 'pending' | 'failed'
  /** The owning process (pending only). */
  readonly instance?: string | undefined
  readonly record: DeliveryRecord
}

let sequence = 0

/** A new delivery id: creation time, a sequence within this process, a random part (ids of several processes never collide). */
export function newDeliveryId(now: number): string {
  sequence = (sequence + 1) % 1_000_000
  return `${String(now).padStart(14, '0')}-${String(sequence).padStart(6, '0')}-${randomBytes(4).toString('hex')}`
}

/** The folder name of an endpoint's deliveries: a digest of its URL (the URL itself may hold a token in its query). */
export function endpointKey(url: string): string {
  return createHash('sha256').update(url).digest('hex').slice(0, 32)
}

/** The URL as logs and `berth events` show it: no query, no fragment (tokens live there). */
export function shownEndpoint(url: string): string {
  const parsed = new URL(url)
  return `${parsed.origin}${parsed.pathname}`
}

function encode(record: DeliveryRecord): Buffer {
  return Buffer.from(JSON.stringify(record))
}

function decode(content: Buffer): DeliveryRecord | undefined {
  try {
    const parsed = JSON.parse(content.toString('utf8')) as Partial<DeliveryRecord>
    if (parsed.version === 1 && typeof parsed.id === 'string' && typeof parsed.endpoint === 'string' && typeof parsed.body === 'string')
      return parsed as DeliveryRecord
  } catch {
    // not a record: skipped
  }
  return undefined
}

async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return await driver.list(path)
  } catch (error) {
    if (error instanceof PathNotFoundError) return []
    throw error
  }
}

const idOfPath = (path: string): string => path.slice(path.lastIndexOf('/') + 1).replace(/\.json$/, '')
const nameOf = (path: string): string => path.slice(path.lastIndexOf('/') + 1)

/** Reads and writes delivery records through the driver. Holds no state of its own. */
export class WebhookQueue {
  constructor(readonly driver: StorageDriver) {}

  putPending(instance: string, record: DeliveryRecord): Promise<void> {
    return this.driver.putContent(eventPendingRecordPath(instance, endpointKey(record.endpoint), record.id), encode(record))
  }

  /** Whether the pending record is still there (not dropped with `berth events drop`, not adopted by another process). */
  async hasPending(instance: string, record: DeliveryRecord): Promise<boolean> {
    try {
      await this.driver.stat(eventPendingRecordPath(instance, endpointKey(record.endpoint), record.id))
      return true
    } catch (error) {
      if (error instanceof PathNotFoundError) return false
      throw error
    }
  }

  deletePending(instance: string, record: DeliveryRecord): Promise<void> {
    return this.driver.delete(eventPendingRecordPath(instance, endpointKey(record.endpoint), record.id)).catch(ignoreMissing)
  }

  /** Makes it a dead letter: written under failed/, then removed from pending/. */
  async fail(instance: string, record: DeliveryRecord): Promise<void> {
    await this.driver.putContent(eventFailedRecordPath(record.id), encode(record))
    await this.deletePending(instance, record)
  }

  /** The ids of one process's pending deliveries to one endpoint, oldest first. */
  async pendingIds(instance: string, endpoint: string): Promise<string[]> {
    const paths = await listOrEmpty(this.driver, eventsEndpointPath(instance, endpoint))
    return paths
      .filter(path => path.endsWith('.json'))
      .map(idOfPath)
      .sort()
  }

  async readPending(instance: string, endpoint: string, id: string): Promise<DeliveryRecord | undefined> {
    try {
      return decode(await this.driver.getContent(eventPendingRecordPath(instance, endpoint, id)))
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined
      throw error
    }
  }

  /** The processes with a pending/ folder. */
  async instances(): Promise<string[]> {
    return (await listOrEmpty(this.driver, EVENTS_PENDING_ROOT)).map(nameOf)
  }

  /**
   * Moves every pending record of `from` under `to` (same endpoint folders, same ids). Resolves with
   * the endpoint keys that got records. The caller holds `from`'s owner lock.
   */
  async adopt(from: string, to: string): Promise<string[]> {
    const keys: string[] = []
    for (const folder of await listOrEmpty(this.driver, eventsPendingPath(from))) {
      const key = nameOf(folder)
      let moved = false
      for (const path of await listOrEmpty(this.driver, folder)) {
        if (!path.endsWith('.json')) continue
        await this.driver.move(path, eventPendingRecordPath(to, key, idOfPath(path))).catch(ignoreMissing)
        moved = true
      }
      if (moved) keys.push(key)
      await this.driver.removeEmptyDirectory(folder)
    }
    await this.driver.removeEmptyDirectory(eventsPendingPath(from))
    return keys
  }

  /** Every pending and failed record (for `berth events`), oldest first. */
  async list(): Promise<ListedDelivery[]> {
    const listed: ListedDelivery[] = []
    for (const instance of await this.instances()) {
      for (const folder of await listOrEmpty(this.driver, eventsPendingPath(instance))) {
        for (const path of await listOrEmpty(this.driver, folder)) {
          const record = await this.#read(path)
          if (record !== undefined) listed.push({ state: 'pending', instance, record })
        }
      }
    }
    for (const path of await listOrEmpty(this.driver, EVENTS_FAILED_ROOT)) {
      const record = await this.#read(path)
      if (record !== undefined) listed.push({ state: 'failed', record })
    }
    return listed.sort((a, b) => (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0))
  }

  /**
   * Puts dead letters back in the queue with their tries reset, under a folder no process owns
   * (`requeued-…`): a serving process adopts it within its adoption interval, or at its next start.
   * Resolves with the ids requeued.
   */
  async retry(ids: readonly string[] | 'all', now: Date): Promise<string[]> {
    const failed = (await this.list()).filter(item => item.state === 'failed' && (ids === 'all' || ids.includes(item.record.id)))
    if (failed.length === 0) return []
    const instance = `requeued-${randomBytes(6).toString('hex')}`
    for (const { record } of failed) {
      const { failedAt: _failedAt, ...rest } = record
      await this.putPending(instance, { ...rest, attempts: 0, queuedAt: now.toISOString(), nextAttemptAt: now.toISOString() })
      await this.driver.delete(eventFailedRecordPath(record.id)).catch(ignoreMissing)
    }
    return failed.map(item => item.record.id)
  }

  /** Deletes the deliveries with these ids (pending or failed), or every dead letter. Resolves with what was deleted. */
  async drop(ids: readonly string[] | 'failed'): Promise<ListedDelivery[]> {
    const chosen = (await this.list()).filter(item => (ids === 'failed' ? item.state === 'failed' : ids.includes(item.record.id)))
    for (const item of chosen) {
      const path =
        item.state === 'failed'
          ? eventFailedRecordPath(item.record.id)
          : eventPendingRecordPath(item.instance ?? '', endpointKey(item.record.endpoint), item.record.id)
      await this.driver.delete(path).catch(ignoreMissing)
    }
    return chosen
  }

  async #read(path: string): Promise<DeliveryRecord | undefined> {
    if (!path.endsWith('.json')) return undefined
    try {
      return decode(await this.driver.getContent(path))
    } catch (error) {
      if (error instanceof PathNotFoundError) return undefined
      throw error
    }
  }
}
