/**
 * Berth's Prometheus metrics, made with prom-client in a registry of their own (never the library's
 * global one). Names follow distribution (`registry_http_*`, its `handler` label values) where it
 * has one, so its dashboards work; the rest are `berth_*`. Every label has a bounded set of values:
 * the route name (never the raw path), the method (unknown ones count as `other`), the status, and
 * the repository only with `repositoryLabels` and at most `maxRepositories` names.
 *
 * The edge step records each exchange once, when its response closes, through label children bound
 * on first use and kept: a request allocates no label object. Storage and certificate gauges are
 * read when Prometheus scrapes, not on a timer.
 */
import { statfs } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Exchange, Step } from '../http/exchange.js'
import { CounterFamily, HistogramFamily, type CounterChild, type HistogramChild } from './series.js'
import { registryRoutes } from '../registry/handlers/index.js'
import { routeNameOf } from '../registry/routes.js'
import type { MirrorObserver, UpstreamErrorReason } from '../mirror/mirror.js'
import { STORAGE_ACTIONS, type StorageAction, type StorageTimers } from '../storage/driver/timed-driver.js'

/** distribution's `handler` values (its route names with `-` → `_`) for our route names. */
const HANDLER_OF_ROUTE: Readonly<Record<string, string>> = {
  base: 'base',
  catalog: 'catalog',
  tags: 'tags',
  manifest: 'manifest',
  'upload-start': 'blob_upload',
  upload: 'blob_upload_chunk',
  blob: 'blob',
  referrers: 'referrers',
  // Port 80 (not distribution's): HTTP-01 answers to the CA, and the redirects to HTTPS.
  'acme-challenge': 'acme_challenge',
  redirect: 'redirect',
}
const OTHER = 'other'
const HANDLERS = [...Object.values(HANDLER_OF_ROUTE), OTHER]
const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS', OTHER]
const MANIFEST = HANDLERS.indexOf('manifest')
const UPLOAD_CHUNK = HANDLERS.indexOf('blob_upload_chunk')
const UPLOAD_HANDLERS = new Set([HANDLERS.indexOf('blob_upload'), UPLOAD_CHUNK])
/** The repository label value once `maxRepositories` names are labelled (no repository name starts with `_`). */
export const OTHER_REPOSITORIES = '_other'

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
const SIZE_BUCKETS = [0, 512, 4096, 65_536, 1 << 20, 16 << 20, 128 << 20, 1 << 30, 4 * (1 << 30)]
/**
 * distribution's buckets for `registry_storage_action_seconds` (Prometheus' defaults, 5 ms to 10 s)
 * with finer ones below (a local filesystem answers in well under 5 ms) and two above for walks.
 * A superset: queries on distribution's `le` values still work.
 */
const STORAGE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
const GC_BUCKETS = [1, 5, 15, 60, 300, 900, 3600, 4 * 3600]

export interface RegistryMetricsOptions {
  /** Label manifest pushes and pulls with the repository (`--metrics-repository-labels`). Default false. */
  repositoryLabels?: boolean
  /** How many repository names get their own label value; the rest count as `_other`. Default 1000. */
  maxRepositories?: number
  /** Include prom-client's process and Node.js metrics (event-loop delay, heap, RSS …). Default true. */
  processMetrics?: boolean
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number
}

/** What the certificate gauges read at scrape time. */
export interface CertificateSource {
  current(): { readonly notAfter: Date } | undefined
}

/** What the repository gauges read at scrape time (the metadata index). */
export interface RepositorySizes {
  listRepositories(query: { sort?: 'size'; order?: 'desc'; limit?: number }): Promise<{ total: number; items: readonly { name: string; size: number }[] }>
}

/** What the ACME gauges read at scrape time (AcmeCertificateProvider.status()). */
export interface AcmeStatusSource {
  status(): { certificate?: { renewalAt: string }; retry?: { failures: number; nextAttemptAt: string } }
}

interface HandlerSeries {
  readonly requestSize: HistogramChild
  readonly responseSize: HistogramChild
  /** By method index. */
  readonly duration: (HistogramChild | undefined)[]
  /** By method index, then status. */
  readonly requests: (Map<number, CounterChild> | undefined)[]
}

export class RegistryMetrics {
  readonly registry = new Registry()
  private readonly now: () => number
  private readonly repositoryLabels: boolean
  private readonly maxRepositories: number
  private readonly requests: CounterFamily
  private readonly duration: HistogramFamily
  private readonly series: HandlerSeries[]
  private readonly pushes: CounterFamily
  private readonly pulls: CounterFamily
  private readonly pushesByRepository = new Map<string, CounterChild>()
  private readonly pullsByRepository = new Map<string, CounterChild>()
  private readonly uploadsInProgress: Gauge
  /** By handler index. */
  private readonly inFlight: Gauge.Internal<'handler'>[]
  private readonly uploadBytes: CounterChild
  private readonly failedLogins: Counter
  private readonly throttledLogins: Counter
  private readonly deniedRequests: Counter<'reason'>
  private readonly gcRuns: Counter
  private readonly gcDuration: Histogram
  private readonly gcFreedBytes: Counter
  private readonly uploadsPurged: Counter
  private readonly retentionTags: Counter
  private readonly retentionManifests: Counter
  private readonly quotaRefusals: Counter
  private acmeOrders: Counter | undefined

  constructor(options: RegistryMetricsOptions = {}) {
    this.now = options.now ?? Date.now
    this.repositoryLabels = options.repositoryLabels ?? false
    this.maxRepositories = options.maxRepositories ?? 1000
    const registers = [this.registry]
    const registry = this.registry
    this.requests = new CounterFamily('registry_http_requests_total', 'HTTP requests answered, by status code, handler (route name) and method.', registry)
    this.duration = new HistogramFamily(
      'registry_http_request_duration_seconds',
      'Time from the request to the end of its response, in seconds.',
      DURATION_BUCKETS,
      registry,
    )
    const requestSize = new HistogramFamily('registry_http_request_size_bytes', 'Request body bytes received.', SIZE_BUCKETS, registry)
    const responseSize = new HistogramFamily('registry_http_response_size_bytes', 'Response body bytes sent.', SIZE_BUCKETS, registry)
    this.series = HANDLERS.map(handler => ({
      requestSize: requestSize.child({ handler }),
      responseSize: responseSize.child({ handler }),
      duration: [],
      requests: [],
    }))
    const inFlight = new Gauge({
      name: 'registry_http_in_flight_requests',
      help: 'Requests being answered now, by handler (route name).',
      labelNames: ['handler'],
      registers,
    })
    this.inFlight = HANDLERS.map(handler => inFlight.labels(handler))
    this.pushes = new CounterFamily('berth_manifest_pushes_total', 'Manifests stored (PUT answered 201).', registry)
    this.pulls = new CounterFamily('berth_manifest_pulls_total', 'Manifests served (GET answered 200).', registry)
    if (!this.repositoryLabels) {
      this.pushesByRepository.set(OTHER_REPOSITORIES, this.pushes.child())
      this.pullsByRepository.set(OTHER_REPOSITORIES, this.pulls.child())
    }
    this.uploadsInProgress = new Gauge({ name: 'berth_blob_uploads_in_progress', help: 'Blob upload requests (PATCH, PUT) receiving data now.', registers })
    this.uploadBytes = new CounterFamily('berth_blob_upload_bytes_total', 'Blob bytes received by upload requests.', registry).child()
    this.failedLogins = new Counter({ name: 'berth_auth_failed_logins_total', help: 'Requests with wrong credentials (answered 401).', registers })
    this.throttledLogins = new Counter({
      name: 'berth_auth_throttled_requests_total',
      help: 'Requests refused because their address failed to log in too often (answered 429).',
      registers,
    })
    this.deniedRequests = new Counter({
      name: 'berth_access_denied_requests_total',
      help: 'Requests the access rules refused: reason="anonymous" (401, no credentials), "scope" (401, a token without that grant), "invalid_token" (401), "denied" (403, a user the rules refuse).',
      labelNames: ['reason'],
      registers,
    })
    this.gcRuns = new Counter({ name: 'berth_gc_runs_total', help: 'Garbage collection runs completed while serving.', registers })
    this.gcDuration = new Histogram({
      name: 'berth_gc_duration_seconds',
      help: 'Duration of completed garbage collection runs.',
      buckets: GC_BUCKETS,
      registers,
    })
    this.gcFreedBytes = new Counter({ name: 'berth_gc_freed_bytes_total', help: 'Blob bytes deleted by garbage collection.', registers })
    this.uploadsPurged = new Counter({ name: 'berth_uploads_purged_total', help: 'Abandoned uploads deleted by upload purging.', registers })
    this.retentionTags = new Counter({ name: 'berth_retention_tags_removed_total', help: 'Tags removed by retention policies while serving.', registers })
    this.retentionManifests = new Counter({
      name: 'berth_retention_manifests_removed_total',
      help: 'Manifests (images) removed by retention policies while serving.',
      registers,
    })
    this.quotaRefusals = new Counter({
      name: 'berth_quota_refusals_total',
      help: 'Pushes refused by a quota (DENIED), by quota (its glob as configured) and stage: push (the manifest PUT), upload (an upload start in a repository at its limit).',
      labelNames: ['quota', 'stage'],
      registers,
    })
    if (options.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry })
      // Gauges named like counters fail `promtool check metrics`; the per-type gauges beside them carry the same numbers.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
        this.registry.removeSingleMetric(name)
    }
  }

  /** The edge step of the registry doors: put it first, so every exchange is timed and counted. */
  readonly step: Step = this.stepFor(path => routeNameOf(registryRoutes, path))

  /**
   * The same step for a door whose routes `routeOf` names from the path (port 80: `redirect`,
   * `acme-challenge`); the engine's route, when it sets one, wins. Unknown names count as `other`.
   */
  stepFor(routeOf: (path: string) => string | undefined): Step {
    return (exchange, next) => {
      const started = performance.now()
      const handler = handlerIndex(routeOf(exchange.path))
      const isUpload = handler === UPLOAD_CHUNK && isUploadData(exchange)
      if (isUpload) this.uploadsInProgress.inc()
      const inFlight = this.inFlight[handler]!
      inFlight.inc()
      exchange.res.once('close', () => {
        inFlight.dec()
        if (isUpload) this.uploadsInProgress.dec()
        this.record(exchange, (performance.now() - started) / 1000, exchange.route === undefined ? handler : handlerIndex(exchange.route))
      })
      return next(exchange)
    }
  }

  /** Records one finished exchange (the step calls it; tests too), by default named by the engine's route or the path. */
  record(exchange: Exchange, seconds: number, handler = handlerIndex(exchange.route ?? routeNameOf(registryRoutes, exchange.path))): void {
    const { meter } = exchange
    const status = exchange.res.statusCode
    const method = methodIndex(exchange.req.method)
    const series = this.series[handler]!
    let byStatus = series.requests[method]
    if (byStatus === undefined) series.requests[method] = byStatus = new Map()
    let counter = byStatus.get(status)
    if (counter === undefined)
      byStatus.set(status, (counter = this.requests.child({ code: String(status), handler: HANDLERS[handler]!, method: METHODS[method]! })))
    counter.inc()
    let duration = series.duration[method]
    if (duration === undefined) series.duration[method] = duration = this.duration.child({ handler: HANDLERS[handler]!, method: METHODS[method]! })
    duration.observe(seconds)
    series.requestSize.observe(meter.received)
    series.responseSize.observe(meter.sent)
    if (UPLOAD_HANDLERS.has(handler) && meter.received > 0) this.uploadBytes.inc(meter.received)
    if (handler === MANIFEST) {
      if (method === 0 && status === 200) this.countRepository(this.pulls, this.pullsByRepository, exchange.repository)
      else if (method === 2 && status === 201) this.countRepository(this.pushes, this.pushesByRepository, exchange.repository)
    }
  }

  loginFailed(): void {
    this.failedLogins.inc()
  }

  loginThrottled(): void {
    this.throttledLogins.inc()
  }

  /** A request the access rules refused, and why. */
  accessDenied(reason: 'anonymous' | 'scope' | 'invalid_token' | 'denied'): void {
    this.deniedRequests.inc({ reason })
  }

  /** A garbage collection run that completed (skipped and failed runs are only logged). */
  gcCompleted(report: { bytesFreed: number; startedAt: Date; finishedAt: Date }): void {
    this.gcRuns.inc()
    this.gcDuration.observe((report.finishedAt.getTime() - report.startedAt.getTime()) / 1000)
    this.gcFreedBytes.inc(report.bytesFreed)
  }

  /** A retention run while serving removed these. */
  retentionRemoved(result: { tags: number; manifests: number }): void {
    this.retentionTags.inc(result.tags)
    this.retentionManifests.inc(result.manifests)
  }

  /** A push or upload a quota refused; `quota` is a configured glob, so the label set stays as small as the config. */
  quotaRefused(refusal: { quota: string; stage: 'push' | 'upload' }): void {
    this.quotaRefusals.inc({ quota: refusal.quota, stage: refusal.stage })
  }

  uploadsPurgedCount(count: number): void {
    this.uploadsPurged.inc(count)
  }

  /** An ACME order ended (counted once `watchAcme` was called). */
  acmeOrder(result: 'issued' | 'failed'): void {
    this.acmeOrders?.labels(result).inc()
  }

  /**
   * The pull-through cache's series (`berth_mirror_*`), labelled by mirror prefix (the configured
   * ones only), every series present from the start at 0. Returns the observer the mirror reports to.
   */
  watchMirror(prefixes: readonly string[]): MirrorObserver {
    const registers = [this.registry]
    const reads = new Counter({
      name: 'berth_mirror_cache_requests_total',
      help: 'Manifest and blob reads under a mirror prefix: result="hit" answered from storage (a tag checked by HEAD included), "miss" needed the upstream\'s bytes (each client joining one download counts).',
      labelNames: ['prefix', 'kind', 'result'],
      registers,
    })
    const stale = new Counter({
      name: 'berth_mirror_stale_serves_total',
      help: 'Cached tags served because the upstream could not confirm them (down, 5xx, 429); once per tag and 30 s retry period.',
      labelNames: ['prefix'],
      registers,
    })
    const errors = new Counter({
      name: 'berth_mirror_upstream_errors_total',
      help: 'Failed exchanges with a mirror\'s upstream: reason="unavailable" (unreachable, timeout, 5xx, a wrong digest or size), "rate_limited" (429), "denied" (401/403).',
      labelNames: ['prefix', 'reason'],
      registers,
    })
    for (const prefix of prefixes) {
      for (const kind of ['manifest', 'blob']) for (const result of ['hit', 'miss']) reads.inc({ prefix, kind, result }, 0)
      stale.inc({ prefix }, 0)
      for (const reason of ['unavailable', 'rate_limited', 'denied'] satisfies UpstreamErrorReason[]) errors.inc({ prefix, reason }, 0)
    }
    return {
      cacheRead: (prefix, kind, result) => reads.labels(prefix, kind, result).inc(),
      staleServed: prefix => stale.labels(prefix).inc(),
      upstreamError: (prefix, reason) => errors.labels(prefix, reason).inc(),
      stored: () => {},
    }
  }

  /** With --mirror-max-size: the cache's size as the last trim measured it, and what trims evicted. */
  watchMirrorCap(maxBytes: number): (trim: { bytes: number; bytesAfter: number; images: number }) => void {
    const registers = [this.registry]
    new Gauge({ name: 'berth_mirror_cache_max_bytes', help: 'The cap on cached bytes (--mirror-max-size).', registers }).set(maxBytes)
    const size = new Gauge({
      name: 'berth_mirror_cache_bytes',
      help: 'Bytes the pull-through cache holds that no pushed image shares, as the last trim left them (before garbage collection frees evicted blobs).',
      registers,
    })
    const evicted = new Counter({
      name: 'berth_mirror_evicted_images_total',
      help: 'Cached images evicted to keep the cache within --mirror-max-size.',
      registers,
    })
    const evictedBytes = new Counter({
      name: 'berth_mirror_evicted_bytes_total',
      help: 'Cached bytes evicted (freed by the garbage collection that follows).',
      registers,
    })
    return trim => {
      size.set(trim.bytesAfter)
      evicted.inc(trim.images)
      evictedBytes.inc(trim.bytes - trim.bytesAfter)
    }
  }

  /**
   * Timers for a TimedDriver around the storage driver named `driver`: distribution's
   * `registry_storage_action_seconds{driver, action}`, one histogram child per action, bound now.
   * Call it once (the composition root does, for the one driver it opens).
   */
  storageTimers(driver: string): StorageTimers {
    const family = new HistogramFamily(
      'registry_storage_action_seconds',
      'Time a storage driver call takes, by driver and action (reader and writer: the open only).',
      STORAGE_BUCKETS,
      this.registry,
    )
    return Object.fromEntries(STORAGE_ACTIONS.map(action => [action, family.child({ driver, action })])) as Record<StorageAction, HistogramChild>
  }

  /** Free and total bytes of the filesystem holding `folder` (the data folder), read at each scrape. */
  watchDisk(folder: string): void {
    const registers = [this.registry]
    new Gauge({
      name: 'berth_storage_free_bytes',
      help: 'Bytes available to Berth on the filesystem of the data folder.',
      registers,
      async collect() {
        const stats = await statfs(folder)
        this.set(stats.bavail * stats.bsize)
      },
    })
    new Gauge({
      name: 'berth_storage_size_bytes',
      help: 'Size in bytes of the filesystem of the data folder.',
      registers,
      async collect() {
        const stats = await statfs(folder)
        this.set(stats.blocks * stats.bsize)
      },
    })
  }

  /** The served certificate's expiry, read at each scrape. Without a certificate yet, both read 0 (alerts fire). */
  watchCertificate(source: CertificateSource): void {
    const registers = [this.registry]
    const now = this.now
    new Gauge({
      name: 'berth_tls_certificate_expiry_seconds',
      help: 'Seconds until the served certificate expires (notAfter - now); 0 when none is served yet.',
      registers,
      collect() {
        const notAfter = source.current()?.notAfter.getTime()
        this.set(notAfter === undefined ? 0 : (notAfter - now()) / 1000)
      },
    })
    new Gauge({
      name: 'berth_tls_certificate_not_after_timestamp_seconds',
      help: "The served certificate's notAfter, in seconds since the epoch; 0 when none is served yet.",
      registers,
      collect() {
        this.set((source.current()?.notAfter.getTime() ?? 0) / 1000)
      },
    })
  }

  /** ACME renewal state, read at each scrape. */
  watchAcme(source: AcmeStatusSource): void {
    const registers = [this.registry]
    this.acmeOrders = new Counter({
      name: 'berth_acme_orders_total',
      help: 'ACME certificate orders sent to the CA, by result (issued, failed).',
      labelNames: ['result'],
      registers,
    })
    this.acmeOrders.labels('issued').inc(0)
    this.acmeOrders.labels('failed').inc(0)
    new Gauge({
      name: 'berth_acme_next_renewal_timestamp_seconds',
      help: 'When the certificate is next due for renewal (or the next retry after a failure), in seconds since the epoch.',
      registers,
      collect() {
        const status = source.status()
        const at = status.retry ? Date.parse(status.retry.nextAttemptAt) : Date.parse(status.certificate?.renewalAt ?? '')
        this.set(Number.isFinite(at) ? at / 1000 : 0)
      },
    })
    new Gauge({
      name: 'berth_acme_consecutive_failures',
      help: 'ACME orders that failed in a row since the last success.',
      registers,
      collect() {
        this.set(source.status().retry?.failures ?? 0)
      },
    })
  }

  /**
   * Webhook deliveries by result (delivered, retried, failed = given up, dropped = not stored), and
   * the deliveries held in memory, read at each scrape. Returns the counter's recorder.
   */
  watchWebhooks(source: { readonly queued: number }): (result: 'delivered' | 'retried' | 'failed' | 'dropped') => void {
    const registers = [this.registry]
    const deliveries = new Counter({
      name: 'berth_webhook_deliveries_total',
      help: 'Webhook delivery attempts and outcomes: delivered (2xx), retried (a failed attempt, tried again later), failed (given up: a dead letter), dropped (not stored).',
      labelNames: ['result'],
      registers,
    })
    for (const result of ['delivered', 'retried', 'failed', 'dropped']) deliveries.labels(result).inc(0)
    new Gauge({
      name: 'berth_webhook_queue_depth',
      help: 'Webhook deliveries held in memory, waiting to be stored or sent (more may wait in the store).',
      registers,
      collect() {
        this.set(source.queued)
      },
    })
    return result => deliveries.labels(result).inc()
  }

  /**
   * Repositories and their sizes from the metadata index, read at each scrape: how many there are,
   * and with `repositoryLabels` the bytes of the largest `maxRepositories` (compressed sizes of their
   * tagged images; a layer shared by two images counts in both).
   */
  watchRepositories(source: RepositorySizes): void {
    const registers = [this.registry]
    const maxRepositories = this.maxRepositories
    new Gauge({
      name: 'berth_repositories',
      help: 'Repositories in the metadata index.',
      registers,
      async collect() {
        const answer = await withinScrape(source.listRepositories({ limit: 0 }))
        if (answer !== undefined) this.set(answer.total)
      },
    })
    if (!this.repositoryLabels) return
    new Gauge({
      name: 'berth_repository_size_bytes',
      help: 'Compressed bytes of the tagged images of a repository (shared layers count in each), for the largest repositories.',
      labelNames: ['repository'],
      registers,
      async collect() {
        const answer = await withinScrape(source.listRepositories({ sort: 'size', order: 'desc', limit: maxRepositories }))
        if (answer === undefined) return
        this.reset()
        for (const item of answer.items) this.labels(item.name).set(item.size)
      },
    })
  }

  /** The text exposition format, and its content type. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }

  private countRepository(family: CounterFamily, children: Map<string, CounterChild>, repository: string | undefined): void {
    if (!this.repositoryLabels) return children.get(OTHER_REPOSITORIES)!.inc()
    const name = repository ?? OTHER_REPOSITORIES
    let child = children.get(name)
    if (child === undefined) {
      const key = children.size >= this.maxRepositories ? OTHER_REPOSITORIES : name
      child = children.get(key)
      if (child === undefined) children.set(key, (child = family.child({ repository: key })))
    }
    child.inc()
  }
}

/**
 * The answer if it comes within a second, else undefined (the gauge keeps its last value): the index
 * may still be loading after a start, and a scrape must not wait for it.
 */
async function withinScrape<T>(answer: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<undefined>(resolve => (timer = setTimeout(() => resolve(undefined), 1000)))
  try {
    return await Promise.race([answer.catch(() => undefined), late])
  } finally {
    clearTimeout(timer)
  }
}

function handlerIndex(route: string | undefined): number {
  const handler = route === undefined ? undefined : HANDLER_OF_ROUTE[route]
  return handler === undefined ? HANDLERS.length - 1 : HANDLERS.indexOf(handler)
}

function methodIndex(method: string | undefined): number {
  const index = method === undefined ? -1 : METHODS.indexOf(method)
  return index === -1 ? METHODS.length - 1 : index
}

/** A request sending blob data: PATCH or PUT on an upload URL (checked without matching the route). */
function isUploadData(exchange: Exchange): boolean {
  const method = exchange.req.method
  return (method === 'PATCH' || method === 'PUT') && exchange.path.includes('/blobs/uploads/')
}
