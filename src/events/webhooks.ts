/**
 * Webhooks: an event sink that POSTs committed changes to HTTP endpoints, durably.
 *
 * `emit` only builds the body and appends it to the endpoint's in-memory list: a push never waits
 * for the store or an endpoint. Per endpoint two loops run in the background:
 *
 * - the writer stores each delivery (webhook-queue.ts) before its first attempt, then hands it to
 *   the sender while the sender holds fewer than `maxQueued`; beyond that it stays only in the
 *   store and is read back once the sender's list runs dry (memory stays bounded whatever the
 *   endpoint does). Events arriving while `maxUnwritten` wait to be stored are dropped and counted
 *   (the store is not keeping up): the one case where an event is lost.
 * - the sender sends one delivery at a time, oldest first. A 2xx answer deletes the record;
 *   anything else (status, refused connection, no answer within the timeout) schedules the same
 *   delivery again after `retryDelay` (exponential with jitter), and the ones behind it wait: an
 *   endpoint gets its events in order. After `maxAttempts` tries, or once `maxAgeMs` have passed
 *   since it was queued, the delivery becomes a dead letter (`failed/`, listed by `berth events`);
 *   while the endpoint keeps failing, a delivery already past that age is given up without a try.
 *
 * Delivery is at least once: a process that stops between the receiver's answer and the delete
 * sends that event again after restarting. Receivers deduplicate by the event `id`.
 *
 * Several processes on one bucket: each stores its deliveries under its own instance folder and
 * holds that folder's lock (StorageDriver.lock, rewritten every `heartbeatMs`). A process adopts
 * another's folder (moves its records into its own) only once that lock is free or older than
 * `leaseMs`, at start and every `leaseMs`; a stopped process releases its lock, so a restart picks
 * its deliveries up at once. Before each attempt the sender checks that the record is still in its
 * folder, so a record adopted elsewhere or dropped with `berth events drop` is not sent again.
 * Ordering holds per process and endpoint, not across processes.
 */
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { compileGlob } from '../access/rules.js'
import type { WebhookSetting } from '../config/values.js'
import type { Logger } from '../log.js'
import { LockBusyError, type StorageDriver, type StoreLock } from '../storage/driver/storage-driver.js'
import { eventsOwnerLockPath } from '../storage/paths.js'
import type { Actor, EventSink, RegistryEvent } from './events.js'
import { isWebhookEvent, renderBody, signature, SIGNATURE_HEADER, type EventSource, type WebhookEvent, type WebhookFormat } from './webhook-payload.js'
import { endpointKey, newDeliveryId, shownEndpoint, WebhookQueue, type DeliveryRecord } from './webhook-queue.js'

/** How each delivery ended up, for metrics. */
export type DeliveryResult = 'delivered' | 'retried' | 'failed' | 'dropped'

export interface WebhooksOptions {
  readonly driver: StorageDriver
  readonly endpoints: readonly WebhookSetting[]
  readonly logger: Logger
  /** One attempt's limit, for endpoints without their own `timeoutMs`. */
  readonly timeoutMs: number
  readonly maxAttempts: number
  readonly maxAgeMs: number
  readonly retryMinMs: number
  readonly retryMaxMs: number
  /** Deliveries held in memory per endpoint (the rest wait in the store). */
  readonly maxQueued: number
  /** Events per endpoint waiting to be stored; beyond it new ones are dropped. */
  readonly maxUnwritten: number
  readonly heartbeatMs: number
  readonly leaseMs: number
  /** Sent as User-Agent. */
  readonly userAgent?: string
  /** Called once per attempt outcome (metrics). */
  readonly onResult?: (result: DeliveryResult) => void
  /** Milliseconds since the epoch (tests). */
  readonly now?: () => number
  /** A number in [0, 1) for the jitter (tests). */
  readonly random?: () => number
}

/**
 * The wait before try number `attempts + 1`, after `attempts` failed ones: `minMs` × 4^(attempts−1),
 * at most `maxMs`, then ±20% jitter (so many deliveries failing together do not retry together).
 * With 1 s and 1 h: about 1 s, 4 s, 16 s, 1 min, 4 min, 17 min, then 1 h.
 */
export function retryDelay(attempts: number, minMs: number, maxMs: number, random: number): number {
  const base = Math.min(maxMs, minMs * 4 ** Math.max(0, attempts - 1))
  return Math.max(0, Math.round(base * (0.8 + 0.4 * random)))
}

interface Endpoint {
  readonly url: string
  readonly key: string
  readonly shown: string
  readonly secret: string | undefined
  readonly events: ReadonlySet<string>
  readonly repositories: readonly RegExp[] | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly timeoutMs: number
  readonly format: WebhookFormat
}

/** One endpoint's queue: deliveries waiting to be stored, stored ones held for sending, and whether more wait only in the store. */
class Lane {
  readonly unwritten: DeliveryRecord[] = []
  readonly ready: DeliveryRecord[] = []
  /** Ids in `ready` (so a reload from the store does not add one twice). */
  readonly known = new Set<string>()
  spilled = true
  /** The last attempt failed: deliveries past the age limit are given up without a try. */
  failing = false
  writing = false
  /** One at a time: a batch of writes, or a reload from the store. */
  exclusive: Promise<void> = Promise.resolve()
  #wake: (() => void) | undefined

  constructor(readonly endpoint: Endpoint) {}

  wake(): void {
    this.#wake?.()
    this.#wake = undefined
  }

  /** Resolves on `wake()`, after `ms` when given, or when `signal` aborts. */
  wait(signal: AbortSignal, ms?: number): Promise<void> {
    return new Promise(resolve => {
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = ms === undefined ? undefined : setTimeout(done, ms)
      signal.addEventListener('abort', done)
      this.#wake = done
    })
  }

  serially(task: () => Promise<void>): Promise<void> {
    const next = this.exclusive.then(task, task)
    this.exclusive = next.catch(() => {})
    return next
  }
}

function endpointOf(setting: WebhookSetting, defaultTimeoutMs: number): Endpoint {
  return {
    url: setting.url,
    key: endpointKey(setting.url),
    shown: shownEndpoint(setting.url),
    secret: setting.secret,
    events: new Set(setting.events ?? ['push', 'delete']),
    repositories: setting.repositories?.map(glob => {
      const compiled = compileGlob(glob)
      if (typeof compiled === 'string') throw new TypeError(compiled)
      return compiled
    }),
    headers: setting.headers ?? {},
    timeoutMs: setting.timeoutMs ?? defaultTimeoutMs,
    format: setting.format ?? 'distribution',
  }
}

function wants(endpoint: Endpoint, event: WebhookEvent): boolean {
  if (!endpoint.events.has(event.action)) return false
  if (event.action === 'gc' || endpoint.repositories === undefined) return true
  return endpoint.repositories.some(pattern => pattern.test(event.repository))
}

export class Webhooks implements EventSink {
  readonly wantsPulls: boolean
  readonly #options: WebhooksOptions
  readonly #queue: WebhookQueue
  readonly #lanes: readonly Lane[]
  readonly #stop = new AbortController()
  readonly #now: () => number
  readonly #random: () => number
  readonly #loops: Promise<void>[] = []
  #instance = ''
  #lock: StoreLock | undefined
  #source: EventSource = { addr: hostname(), instanceID: '' }
  #closed = false
  #adoptTimer: NodeJS.Timeout | undefined
  #droppedSinceLog = 0

  private constructor(options: WebhooksOptions) {
    this.#options = options
    this.#queue = new WebhookQueue(options.driver)
    this.#lanes = options.endpoints.map(setting => new Lane(endpointOf(setting, options.timeoutMs)))
    this.wantsPulls = this.#lanes.some(lane => lane.endpoint.events.has('pull'))
    this.#now = options.now ?? Date.now
    this.#random = options.random ?? Math.random
  }

  /**
   * Takes this process's folder in the store, adopts the deliveries of stopped processes (and of
   * `berth events retry`), and starts sending. Rejects when the store cannot be written.
   */
  static async start(options: WebhooksOptions): Promise<Webhooks> {
    const webhooks = new Webhooks(options)
    await webhooks.#own()
    await webhooks.#adoptOrphans()
    for (const lane of webhooks.#lanes) webhooks.#loops.push(webhooks.#send(lane))
    webhooks.#adoptTimer = setInterval(() => void webhooks.#adoptOrphans(), options.leaseMs)
    webhooks.#adoptTimer.unref()
    return webhooks
  }

  /** This process's id in the store (and `source.instanceID` in bodies). */
  get instance(): string {
    return this.#instance
  }

  /** Deliveries held in memory, waiting to be stored or sent (more may wait in the store). */
  get queued(): number {
    return this.#lanes.reduce((sum, lane) => sum + lane.unwritten.length + lane.ready.length, 0)
  }

  emit(event: RegistryEvent, actor?: Actor): void {
    if (this.#closed || !isWebhookEvent(event)) return
    let id: string | undefined
    let time: Date | undefined
    const bodies = new Map<WebhookFormat, { contentType: string; body: string }>()
    for (const lane of this.#lanes) {
      if (!wants(lane.endpoint, event)) continue
      if (lane.unwritten.length >= this.#options.maxUnwritten) {
        this.#dropped()
        continue
      }
      id ??= randomUUID()
      time ??= new Date(this.#now())
      const format = lane.endpoint.format
      let rendered = bodies.get(format)
      if (rendered === undefined) {
        rendered = renderBody(format, event, actor, id, time, this.#source)
        bodies.set(format, rendered)
      }
      const at = time.toISOString()
      lane.unwritten.push({
        version: 1,
        id: newDeliveryId(time.getTime()),
        eventId: id,
        endpoint: lane.endpoint.url,
        contentType: rendered.contentType,
        body: rendered.body,
        action: event.action,
        ...(event.action !== 'gc' ? { repository: event.repository } : {}),
        ...(event.action === 'push' || event.action === 'pull' ? { tag: event.tag, digest: event.digest } : {}),
        ...(event.action === 'delete' ? (event.target === 'tag' ? { tag: event.reference } : { digest: event.reference }) : {}),
        createdAt: at,
        queuedAt: at,
        attempts: 0,
        nextAttemptAt: at,
      })
      if (!lane.writing) void this.#write(lane)
    }
  }

  /**
   * Stops: new events are ignored, those waiting to be stored are stored (for up to `graceMs`), an
   * attempt in flight is abandoned (it is sent again later), and this process's folder is released
   * so the next start adopts it at once. Idempotent.
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#adoptTimer)
    const flushed = Promise.all(this.#lanes.map(lane => this.#flush(lane)))
    await Promise.race([flushed, sleep(graceMs, undefined, { ref: false })])
    this.#stop.abort()
    for (const lane of this.#lanes) lane.wake()
    await Promise.all(this.#loops)
    await this.#lock?.release().catch(() => {})
  }

  async #flush(lane: Lane): Promise<void> {
    while (lane.unwritten.length > 0 || lane.writing) await sleep(5)
  }

  async #own(): Promise<void> {
    const instance = randomUUID()
    const lock = await this.#options.driver.lock(eventsOwnerLockPath(instance), { heartbeatMs: this.#options.heartbeatMs, staleMs: this.#options.leaseMs })
    this.#instance = instance
    this.#lock = lock
    this.#source = { addr: hostname(), instanceID: instance }
    lock.lost.addEventListener('abort', () => void this.#lost(), { once: true })
  }

  /** Another process took our folder over (we stalled past the lease): start again under a new one. */
  async #lost(): Promise<void> {
    if (this.#closed) return
    this.#options.logger.warn("webhooks: another process adopted this one's pending deliveries (it stalled past the lease); they may be sent twice")
    try {
      await this.#own()
      for (const lane of this.#lanes) {
        lane.ready.length = 0
        lane.known.clear()
        lane.spilled = true
        lane.wake()
      }
    } catch (error) {
      this.#options.logger.error('webhooks: cannot take a folder in the store again; deliveries wait until restart', { error: (error as Error).message })
    }
  }

  /** Moves the deliveries of processes whose lock is free or stale into this process's folder. */
  async #adoptOrphans(): Promise<void> {
    if (this.#closed) return
    try {
      for (const other of await this.#queue.instances()) {
        if (other === this.#instance || this.#closed) continue
        let lock: StoreLock
        try {
          lock = await this.#options.driver.lock(eventsOwnerLockPath(other), {
            waitMs: 0,
            heartbeatMs: this.#options.heartbeatMs,
            staleMs: this.#options.leaseMs,
          })
        } catch (error) {
          if (error instanceof LockBusyError) continue
          throw error
        }
        try {
          const keys = await this.#queue.adopt(other, this.#instance)
          const unknown = keys.filter(key => !this.#lanes.some(lane => lane.endpoint.key === key))
          if (unknown.length > 0) {
            this.#options.logger.warn(
              'webhooks: pending deliveries for endpoints no longer configured wait in the store (berth events lists them, berth events drop removes them)',
              {
                endpoints: unknown.length,
              },
            )
          }
          for (const lane of this.#lanes) {
            if (!keys.includes(lane.endpoint.key)) continue
            lane.spilled = true
            lane.wake()
          }
        } finally {
          await lock.release()
        }
      }
    } catch (error) {
      this.#options.logger.warn("webhooks: could not look for other processes' pending deliveries; trying again later", { error: (error as Error).message })
    }
  }

  #dropped(): void {
    this.#options.onResult?.('dropped')
    if (this.#droppedSinceLog++ === 0) {
      this.#options.logger.error('webhooks: events dropped, the store is not keeping up with writing deliveries', { limit: this.#options.maxUnwritten })
      setTimeout(() => {
        if (this.#droppedSinceLog > 1) this.#options.logger.error('webhooks: events dropped', { count: this.#droppedSinceLog - 1 })
        this.#droppedSinceLog = 0
      }, 60_000).unref()
    }
  }

  /** The writer: stores waiting deliveries in batches, then hands them to the sender while it has room. */
  async #write(lane: Lane): Promise<void> {
    lane.writing = true
    try {
      while (lane.unwritten.length > 0 && !this.#stop.signal.aborted) {
        const batch = lane.unwritten.slice(0, 16)
        const instance = this.#instance
        let failure: unknown
        await lane.serially(async () => {
          const results = await Promise.allSettled(batch.map(record => this.#queue.putPending(instance, record)))
          let stored = 0
          for (const [index, result] of results.entries()) {
            if (result.status === 'rejected') {
              failure = result.reason
              break
            }
            stored++
            const record = batch[index]!
            if (!lane.spilled && lane.ready.length < this.#options.maxQueued) {
              lane.ready.push(record)
              lane.known.add(record.id)
            } else {
              lane.spilled = true
            }
          }
          lane.unwritten.splice(0, stored)
          lane.wake()
        })
        if (failure !== undefined) {
          this.#options.logger.error('webhooks: cannot store a delivery; trying again', { endpoint: lane.endpoint.shown, error: (failure as Error).message })
          await sleep(this.#options.retryMinMs, undefined, { signal: this.#stop.signal }).catch(() => {})
        }
      }
    } finally {
      lane.writing = false
    }
  }

  /** Reads the oldest stored deliveries of this endpoint that are not in memory, up to the bound. */
  async #reload(lane: Lane): Promise<void> {
    lane.spilled = false
    const instance = this.#instance
    for (const id of await this.#queue.pendingIds(instance, lane.endpoint.key)) {
      if (lane.known.has(id)) continue
      if (lane.ready.length >= this.#options.maxQueued) {
        lane.spilled = true
        return
      }
      const record = await this.#queue.readPending(instance, lane.endpoint.key, id)
      if (record === undefined || record.endpoint !== lane.endpoint.url) continue
      lane.ready.push(record)
      lane.known.add(id)
    }
  }

  /** The sender of one endpoint: in order, one at a time, until close. */
  async #send(lane: Lane): Promise<void> {
    const signal = this.#stop.signal
    while (!signal.aborted) {
      try {
        const record = lane.ready[0]
        if (record === undefined) {
          if (lane.spilled) await lane.serially(() => this.#reload(lane))
          if (lane.ready.length === 0) await lane.wait(signal, lane.spilled ? this.#options.retryMinMs : undefined)
          continue
        }
        const wait = Date.parse(record.nextAttemptAt) - this.#now()
        if (wait > 0) {
          await sleep(wait, undefined, { signal }).catch(() => {})
          continue
        }
        await this.#deliver(lane, record)
      } catch (error) {
        if (signal.aborted) return
        this.#options.logger.warn('webhooks: the store did not answer; trying again', { endpoint: lane.endpoint.shown, error: (error as Error).message })
        await sleep(this.#options.retryMinMs, undefined, { signal }).catch(() => {})
      }
    }
  }

  #done(lane: Lane, record: DeliveryRecord): void {
    if (lane.ready[0] === record) lane.ready.shift()
    lane.known.delete(record.id)
  }

  async #deliver(lane: Lane, record: DeliveryRecord): Promise<void> {
    const instance = this.#instance
    if (!(await this.#queue.hasPending(instance, record))) {
      this.#done(lane, record)
      return
    }
    const age = this.#now() - Date.parse(record.queuedAt)
    if (lane.failing && age >= this.#options.maxAgeMs) {
      await this.#giveUp(lane, record, record.lastError ?? 'not delivered in time while the endpoint was failing')
      return
    }
    const outcome = await this.#attempt(lane.endpoint, record)
    if (this.#stop.signal.aborted) return
    if (outcome === undefined) {
      await this.#queue.deletePending(instance, record)
      this.#done(lane, record)
      lane.failing = false
      this.#options.onResult?.('delivered')
      this.#options.logger.debug('webhook delivered', { endpoint: lane.endpoint.shown, action: record.action, id: record.eventId })
      return
    }
    lane.failing = true
    const attempts = record.attempts + 1
    if (attempts >= this.#options.maxAttempts || age >= this.#options.maxAgeMs) {
      await this.#giveUp(lane, { ...record, attempts }, outcome)
      return
    }
    const delay = retryDelay(attempts, this.#options.retryMinMs, this.#options.retryMaxMs, this.#random())
    const next: DeliveryRecord = { ...record, attempts, lastError: outcome, nextAttemptAt: new Date(this.#now() + delay).toISOString() }
    lane.ready[0] = next
    await this.#queue.putPending(instance, next)
    this.#options.onResult?.('retried')
    this.#options.logger.warn('webhook not delivered; trying again', {
      endpoint: lane.endpoint.shown,
      action: record.action,
      error: outcome,
      attempt: attempts,
      of: this.#options.maxAttempts,
      retryInSeconds: Math.round(delay / 100) / 10,
    })
  }

  async #giveUp(lane: Lane, record: DeliveryRecord, error: string): Promise<void> {
    await this.#queue.fail(this.#instance, { ...record, lastError: error, failedAt: new Date(this.#now()).toISOString() })
    this.#done(lane, record)
    this.#options.onResult?.('failed')
    this.#options.logger.error('webhook given up after the last try (kept as failed: berth events lists it, berth events retry sends it again)', {
      endpoint: lane.endpoint.shown,
      action: record.action,
      repository: record.repository,
      attempts: record.attempts,
      error,
    })
  }

  /** One POST. Resolves undefined on a 2xx, else what went wrong (one line, no header values). */
  async #attempt(endpoint: Endpoint, record: DeliveryRecord): Promise<string | undefined> {
    const headers: Record<string, string> = {
      ...endpoint.headers,
      'content-type': record.contentType,
      'user-agent': this.#options.userAgent ?? 'Berth-Webhook',
      'x-berth-delivery': record.eventId,
    }
    if (endpoint.secret !== undefined) headers[SIGNATURE_HEADER] = signature(endpoint.secret, record.body)
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(endpoint.timeoutMs)])
    try {
      const response = await fetch(endpoint.url, { method: 'POST', headers, body: record.body, redirect: 'manual', signal })
      await response.body?.cancel().catch(() => {})
      return response.status >= 200 && response.status < 300 ? undefined : `HTTP ${response.status}`
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') return `no answer within ${endpoint.timeoutMs / 1000} s`
      const cause = (error as { cause?: { code?: string; message?: string } }).cause
      return cause?.code ?? cause?.message ?? (error as Error).message
    }
  }
}
