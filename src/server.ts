/**
 * The composition root: the one place that turns a Config into running parts.
 *
 *   config ─► FilesystemDriver(<datadir>/data) or S3Driver(bucket) ─► registry engine (a handler)
 *          ─► edge: doors (HTTPS + port 80, or local; the internal door) → the chain of steps → engine
 *          ─► scheduler: upload purging, garbage collection, ACME certificate maintenance
 *
 * The edge calls the engine's handler in this process. With `upstream` set no engine is started:
 * the chain's innermost handler is the streaming proxy to that registry instead.
 * Each layer gets a plain options object; nothing else reads the Config.
 */
import { randomUUID } from 'node:crypto'
import { constants as fsConstants, realpathSync } from 'node:fs'
import { access, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { DEFAULTS, noUsersMessage, type Config } from './config/config.js'
import { parseListenAddress } from './config/values.js'
import { hostPath } from './container.js'
import { warnIfDomainsUncovered } from './edge/tls/certificate-checks.js'
import { ConfigError } from './config/errors.js'
import { UPLOAD_PURGING } from './config/settings.js'
import { startEdge, type Edge, type EdgeOptions } from './edge/edge.js'
import { connectionLimitFor, readFileLimit, type ConnectionLimitOptions } from './edge/connection-limits.js'
import { HtpasswdError, parseHtpasswd } from './edge/auth/htpasswd.js'
import type { CertificateProvider, ChallengeResponder, TlsCertificate } from './edge/tls/certificate-source.js'
import { CERT_STORE_ROOT, DriverCertStore, FileCertStore, type CertStore } from './edge/tls/cert-store.js'
import { AccessRules } from './access/access-file.js'
import { AccessFileError } from './access/rules.js'
import { TokenKeys } from './access/token-keys.js'
import { TokenService } from './access/token-service.js'
import { AuditLog } from './events/audit-log.js'
import { fanOut, type EventSink, type RegistryEvent } from './events/events.js'
import { shownEndpoint } from './events/webhook-queue.js'
import { Webhooks } from './events/webhooks.js'
import type { GcReport } from './storage/gc.js'
import type { AcmeCertificateProvider } from './edge/tls/acme-provider.js'
import { FileCertificateProvider } from './edge/tls/file-source.js'
import { CachedCheck, type ReadinessCheck } from './health.js'
import type { Logger } from './log.js'
import { startMetricsListener, type MetricsListener } from './metrics/listener.js'
import { RegistryMetrics } from './metrics/registry-metrics.js'
import { capYoungGeneration } from './process-memory.js'
import { createRegistryApp, type RegistryApp, type RegistryAppOptions } from './registry/app.js'
import { runEviction } from './mirror/cache-eviction.js'
import type { MirrorObserver } from './mirror/mirror.js'
import { INDEX_REFRESH_INTERVAL_MS, MetadataIndex, PULL_FLUSH_INTERVAL_MS, RECONCILE_INTERVAL_MS } from './storage/metadata/metadata-index.js'
import { runGc } from './storage/gc-schedule.js'
import { STORAGE_SURVEY_INTERVAL_MS, StorageSurvey } from './storage/storage-survey.js'
import { RepositoryQuotas } from './storage/quota.js'
import { compilePolicies } from './storage/retention.js'
import { runRetention } from './storage/retention-schedule.js'
import { every, scheduled, type PeriodicJob } from './scheduler.js'
import { Drain } from './edge/steps/drain.js'
import { openStorage as openStore, prepareFolder as prepareStoreFolder, StorageOpenError } from './storage/open-storage.js'
import { purgeAbandonedUploads } from './storage/purge-uploads.js'
import { probeStorage } from './storage/storage-probe.js'
import type { StorageDriver } from './storage/driver/storage-driver.js'
import { TimedDriver } from './storage/driver/timed-driver.js'
import { webUiParts } from './web/setup.js'

export interface RunningServer {
  /** Where the edge listens (port 0 resolved). */
  readonly urls: Edge['urls']
  /** Where images are stored, or undefined with `upstream`. */
  readonly storage: string | undefined
  /** 'in-process' for the built-in engine, or the upstream URL. */
  readonly upstream: string
  /** The certificate served at start, if any yet (ACME may still be ordering). */
  readonly certificate: TlsCertificate | undefined
  readonly certificateSource: string | undefined
  /** Extra lines for people setting up clients (e.g. where the self-signed CA goes). */
  readonly hints: readonly string[]
  /** Basic auth: the file and how many users, or undefined when auth is off. */
  readonly auth: { readonly file: string; readonly users: number } | undefined
  /** The metrics listener (`http://host:port`, serving /metrics), or undefined when off. */
  readonly metricsUrl?: string | undefined
  /** Access rules: the file and how many rules, or undefined without rules. */
  readonly access?: { readonly file: string; readonly rules: number } | undefined
  /**
   * Applies what may change without a restart (SIGHUP after editing the config file): read-only
   * mode, and the access and htpasswd files are read again at once. Never rejects.
   */
  reload(next: Pick<Config, 'readOnly'>): Promise<void>
  /**
   * Stops accepting connections, lets requests in flight (uploads) finish for up to `graceMs`,
   * then ends the rest. Idempotent.
   */
  close(graceMs?: number): Promise<void>
}

/** A listen failure on one of the public ports, with what the user can do about it. */
export class ListenError extends Error {
  override readonly name = 'ListenError'
  constructor(
    message: string,
    readonly port: number | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/**
 * The storage driver the config names, checked before anything listens: the datadir folder is
 * writable, or the bucket answers with these credentials (a clear one-line error, not a failure
 * at the first push). Resolves with the driver and how to show where images go.
 */
export async function openStorage(config: Config): Promise<{ driver: StorageDriver; shown: string }> {
  return asConfigError(openStore({ storage: config.storage, datadir: config.datadir, create: true }))
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  // Users first: a refused start (HTTPS without a login) creates nothing and listens on nothing.
  const auth = await checkHtpasswd(config, logger)
  const metrics = config.metricsListen === undefined ? undefined : new RegistryMetrics({ repositoryLabels: config.metricsRepositoryLabels })
  const opened = config.upstream === undefined ? timedStorage(await openStorage(config), metrics) : undefined
  if (config.clientCa !== undefined) await mustRead(config.clientCa, '--client-ca')

  // With S3 storage, ACME state and its lock live in the bucket too: every instance shares one
  // account, one certificate and one order, and any of them answers the CA's HTTP-01 request.
  const sharedCertStore = opened !== undefined && config.storage.kind === 's3' ? new DriverCertStore(opened.driver, CERT_STORE_ROOT) : undefined
  const audit = config.auditLog === undefined ? undefined : await openAuditLog(config.auditLog, logger)
  const webhooks = opened === undefined || config.webhooks.length === 0 ? undefined : await startWebhooks(config, opened.driver, metrics, logger)
  const events = fanOut([...(audit !== undefined ? [audit] : []), ...(webhooks !== undefined ? [webhooks] : [])])
  const access = await startAccess(config, sharedCertStore, events, logger)
  const { provider, challenges, source, hints, acme } = await certificateFor(config, logger, sharedCertStore, metrics)
  if (metrics !== undefined) watchForMetrics(metrics, config, { provider, acme })
  provider?.onChange(certificate => warnIfDomainsUncovered(certificate, config.domains, logger))
  // The metadata index sits beside the engine: told of every committed change, loaded in the background.
  const index = opened === undefined ? undefined : new MetadataIndex(opened.driver, { logger })
  if (metrics !== undefined && index !== undefined) metrics.watchRepositories(index)
  // New cached content asks for a trim of the cache soon (backgroundJobs sets what that does).
  const cacheTrim = { soon: (): void => {} }
  const quotas = repositoryQuotas(config, index, metrics, logger)
  const app =
    opened === undefined
      ? undefined
      : createRegistryApp({
          driver: opened.driver,
          logger,
          allowSparseManifests: config.allowSparseManifests,
          events,
          ...(index ? { observer: index } : {}),
          ...(quotas !== undefined ? { quota: quotas } : {}),
          ...mirrorOptions(
            config,
            mirrorObserver(config, metrics, () => cacheTrim.soon()),
          ),
        })
  // The web UI (src/web): its session key lives with the certificates (the bucket with S3).
  // The storage page's figures (unique/shared bytes, what GC would free): walked in the background, never per request.
  const survey = app === undefined || opened === undefined ? undefined : new StorageSurvey(opened.driver, { logger })
  const ui =
    app === undefined || index === undefined ? undefined : await webUiParts({ app, metadata: index, survey, sharedCertStore, certsDir: config.certs, logger })
  const drain = new Drain()
  const storageCheck = opened === undefined ? undefined : storageReadiness(opened.driver, logger)
  const readiness = [...(storageCheck !== undefined ? [storageCheck] : []), drainReadiness(drain)]

  let readOnly = config.readOnly
  if (readOnly) logger.warn('read-only mode: pulls work, pushes and deletes are refused (405), garbage collection and upload purging wait')

  // Memory: a small V8 young generation (process-memory.ts says why and how).
  const uncapYoungGeneration = capYoungGeneration()
  let edge: Edge
  let metricsListener: MetricsListener | undefined
  try {
    if (provider !== undefined)
      await provider.start().catch((error: unknown) => {
        // A certificate pair that does not load is a setting to fix, not a crash: one line, exit 2.
        if (config.certificate.kind !== 'files') throw error
        throw new ConfigError(`--tls-cert/--tls-key: ${(error as Error).message}`, { cause: error })
      })
    const connectionLimits = connectionLimitsFor(config, await readFileLimit(), logger)
    // Before the doors open, so the first /readyz already knows whether storage takes writes.
    await storageCheck?.start()
    edge = await startEdge(
      edgeOptions(config, { app, drain, provider, challenges, connectionLimits, readiness, metrics, access, readOnly: () => readOnly, events, logger, ui }),
    )
    if (metrics !== undefined && config.metricsListen !== undefined) {
      metricsListener = await startMetricsListener(metrics, parseListenAddress(config.metricsListen), logger).catch(async (error: unknown) => {
        await edge.close()
        throw metricsListenError(error, config.metricsListen as string)
      })
    }
  } catch (error) {
    await storageCheck?.stop()
    uncapYoungGeneration()
    await provider?.stop().catch(() => {})
    await app?.close()
    access?.close()
    await audit?.close()
    await webhooks?.close()
    throw explainStartError(error, config)
  }

  // After the edge listens: the first ACME order needs the HTTP port up for the CA's challenge.
  const jobs = backgroundJobs(config, { driver: opened?.driver, app, index, survey, acme, metrics, readOnly: () => readOnly, events, cacheTrim }, logger)
  let closing: Promise<void> | undefined
  return {
    urls: edge.urls,
    storage: opened?.shown,
    upstream: config.upstream ?? 'in-process',
    certificate: provider?.current(),
    certificateSource: source,
    hints,
    auth,
    metricsUrl: metricsListener?.url,
    access: access === undefined ? undefined : { file: access.rules.path, rules: access.rules.current().ruleCount },
    async reload(next) {
      if (next.readOnly !== readOnly) {
        readOnly = next.readOnly
        if (readOnly) logger.warn('read-only mode on: pushes and deletes are refused (405) until it is switched off')
        else logger.info('read-only mode off: pushes and deletes are accepted again')
      }
      await Promise.all([access?.rules.reloadNow(), audit?.reopen()])
    },
    close(graceMs = 10_000) {
      closing ??= (async () => {
        // Requests in flight (a layer upload) get up to graceMs to finish; new ones get 503 meanwhile.
        await drain.start(graceMs)
        await Promise.race([edge.close(), delay(graceMs + 1000)])
        await metricsListener?.close()
        await provider?.stop().catch(() => {})
        await Promise.all([...jobs.map(job => job.stop()), storageCheck?.stop()])
        if (app !== undefined) await Promise.race([app.close(), delay(1000)])
        // After the engine: the last pulls counted are written.
        if (index !== undefined) await Promise.race([index.close(), delay(5000)])
        access?.close()
        await audit?.close()
        await webhooks?.close()
        uncapYoungGeneration()
      })()
      return closing
    },
  }
}

/**
 * The pull-through mirrors, when any: blobs up to the body limit (the largest layer a push may
 * bring), manifests up to the engine's own limit.
 */
function mirrorOptions(config: Config, observer: MirrorObserver | undefined): Pick<RegistryAppOptions, 'mirror'> {
  if (config.mirrors.length === 0) return {}
  return {
    mirror: {
      upstreams: config.mirrors,
      defaultPrefix: config.mirrorDefault,
      tagTtlMs: config.mirrorTagTtlMs,
      maxBlobBytes: config.maxBody,
      ...(observer !== undefined ? { observer } : {}),
    },
  }
}

/** What the mirror reports to: the metrics, and with --mirror-max-size the cache trim (`stored`). */
function mirrorObserver(config: Config, metrics: RegistryMetrics | undefined, stored: () => void): MirrorObserver | undefined {
  if (config.mirrors.length === 0) return undefined
  const counted = metrics?.watchMirror(config.mirrors.map(mirror => mirror.prefix))
  if (counted === undefined && config.mirrorMaxSizeBytes === undefined) return undefined
  return {
    cacheRead: (prefix, kind, result) => counted?.cacheRead(prefix, kind, result),
    staleServed: prefix => counted?.staleServed(prefix),
    upstreamError: (prefix, reason) => counted?.upstreamError(prefix, reason),
    stored: () => stored(),
  }
}

/** The edge's options from the config: doors, limits, and the engine (or the upstream) innermost. */
function edgeOptions(
  config: Config,
  parts: {
    app: RegistryApp | undefined
    drain: Drain
    provider: CertificateProvider | undefined
    challenges: ChallengeResponder | undefined
    connectionLimits: ConnectionLimitOptions
    readiness: readonly ReadinessCheck[]
    metrics: RegistryMetrics | undefined
    access: AccessControl | undefined
    readOnly: () => boolean
    events: EventSink
    logger: Logger
    ui?: EdgeOptions['ui']
  },
): EdgeOptions {
  const { app, provider } = parts
  return {
    ...(parts.ui !== undefined ? { ui: parts.ui } : {}),
    mode: config.mode,
    ...(config.host !== undefined ? { host: config.host } : {}),
    localPort: config.port,
    httpPort: config.httpPort,
    httpsPort: config.httpsPort,
    // Without --domain, the names on the certificate are the names port 80 redirects for.
    domains: config.domains.length > 0 ? [...config.domains] : [...(provider?.current()?.names ?? [])],
    ...(app !== undefined ? { engine: app.serve } : { upstream: { url: config.upstream ?? '' } }),
    ...(config.internalListen !== undefined ? { internalListen: parseListenAddress(config.internalListen) } : {}),
    innerSteps: [parts.drain.step],
    readiness: { checks: parts.readiness, probeIntervalMs: DEFAULTS.readinessInterval, probeTimeoutMs: DEFAULTS.readinessTimeout },
    ...(parts.metrics !== undefined ? { metrics: parts.metrics } : {}),
    events: parts.events,
    ...(parts.access !== undefined
      ? {
          access: {
            policy: parts.access.policy,
            tokens: parts.access.tokens,
            ...(app !== undefined && app.mirrorPrefixes.length > 0 ? { repositoryOf: app.repositoryOf, mirrorPrefixes: app.mirrorPrefixes } : {}),
          },
        }
      : {}),
    readOnly: parts.readOnly,
    realm: config.realm,
    maxBodyBytes: config.maxBody,
    idleTimeoutMs: config.idleTimeoutMs,
    headersTimeoutMs: DEFAULTS.headersTimeout,
    handshakeTimeoutMs: DEFAULTS.handshakeTimeout,
    connectionLimits: parts.connectionLimits,
    ...(provider !== undefined ? { certificate: provider } : {}),
    ...(parts.challenges !== undefined ? { challenges: parts.challenges } : {}),
    // Always passed: the edge turns basic auth on when the file exists and watches it for changes.
    htpasswdPath: config.htpasswd,
    // HTTPS without --allow-anonymous never opens when the file goes away or is emptied while running.
    whenNoUsers: config.mode === 'https' && !config.allowAnonymous ? 'closed' : 'open',
    ...(config.clientCa !== undefined ? { clientCaPath: config.clientCa } : {}),
    logger: parts.logger,
  }
}

/** The access rules and the token service, when an access file is configured. */
interface AccessControl {
  readonly rules: AccessRules
  readonly tokens: TokenService
  readonly policy: () => ReturnType<AccessRules['current']>
  close(): void
}

/**
 * With an access file: its rules (a broken file refuses the start, naming line and column) and the
 * token service, whose signing keys live with the certificates (`--certs`, or the bucket with S3, so
 * every instance checks every instance's tokens).
 */
async function startAccess(config: Config, sharedCertStore: CertStore | undefined, events: EventSink, logger: Logger): Promise<AccessControl | undefined> {
  if (config.accessFile === undefined) return undefined
  const file = config.accessFile
  const onReload = () => events.emit({ action: 'access-reload', file, outcome: 'applied' })
  const rules = await AccessRules.open(file, { logger, onReload }).catch((error: unknown) => {
    if (error instanceof AccessFileError) throw new ConfigError(`--access ${error.message}`, { cause: error })
    throw error
  })
  try {
    let store = sharedCertStore
    if (store === undefined) {
      await prepareFolder(config.certs, 'certs', config.certs)
      store = new FileCertStore(config.certs)
    }
    const keys = await TokenKeys.open(store, { logger })
    // One name for every instance and every way the registry is reached: the tokens' audience.
    const tokens = new TokenService({ keys, issuer: 'berth', service: config.domains[0] ?? 'berth' })
    return {
      rules,
      tokens,
      policy: () => rules.current(),
      close() {
        rules.close()
        keys.close()
      },
    }
  } catch (error) {
    rules.close()
    throw error
  }
}

/** The audit trail's file, opened before anything listens: a path that cannot be written stops the start. */
async function openAuditLog(path: string, logger: Logger): Promise<AuditLog> {
  try {
    return await AuditLog.open(path, logger)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a folder' : String(code ?? (error as Error).message)
    throw new ConfigError(`--audit-log ${path}: cannot append to it (${reason})`, { cause: error })
  }
}

/**
 * Webhooks (events/webhooks.ts): their queue lives in the store (the bucket with S3), so pending
 * deliveries survive restarts and any instance picks up a stopped one's.
 */
async function startWebhooks(config: Config, driver: StorageDriver, metrics: RegistryMetrics | undefined, logger: Logger): Promise<Webhooks> {
  let record: ((result: 'delivered' | 'retried' | 'failed' | 'dropped') => void) | undefined
  const webhooks = await Webhooks.start({
    driver,
    endpoints: config.webhooks,
    logger,
    timeoutMs: DEFAULTS.webhookTimeout,
    maxAttempts: DEFAULTS.webhookMaxAttempts,
    maxAgeMs: DEFAULTS.webhookMaxAge,
    retryMinMs: DEFAULTS.webhookRetryMin,
    retryMaxMs: DEFAULTS.webhookRetryMax,
    maxQueued: DEFAULTS.webhookQueued,
    maxUnwritten: DEFAULTS.webhookUnwritten,
    heartbeatMs: DEFAULTS.webhookHeartbeat,
    leaseMs: DEFAULTS.webhookLease,
    onResult: result => record?.(result),
  })
  if (metrics !== undefined) record = metrics.watchWebhooks(webhooks)
  logger.info('webhooks on', { endpoints: config.webhooks.map(hook => shownEndpoint(hook.url)).join(' '), pulls: webhooks.wantsPulls })
  return webhooks
}

/** Quotas (storage/quota.ts) read the metadata index; refusals are counted, and the quotas in force logged once. */
function repositoryQuotas(
  config: Config,
  index: MetadataIndex | undefined,
  metrics: RegistryMetrics | undefined,
  logger: Logger,
): RepositoryQuotas | undefined {
  if (config.quotas.length === 0) return undefined
  if (index === undefined) {
    logger.warn('quotas ignored with --upstream: the upstream registry stores the images', { quotas: config.quotas.length })
    return undefined
  }
  const quotas = new RepositoryQuotas(config.quotas, index, metrics !== undefined ? { onRefused: refusal => metrics.quotaRefused(refusal) } : {})
  logger.info('quotas on', { quotas: quotas.describe() })
  return quotas
}

/** The audit line of a finished collection. */
function gcEvent(report: GcReport): RegistryEvent {
  return {
    action: 'gc',
    blobsDeleted: report.blobs.length,
    bytesFreed: report.bytesFreed,
    manifestsDeleted: report.manifests.length,
    seconds: (report.finishedAt.getTime() - report.startedAt.getTime()) / 1000,
  }
}

/**
 * /readyz's storage check: every DEFAULTS.readinessInterval a small object is written and deleted
 * through the driver (storage/storage-probe.ts), under a name of this process.
 */
function storageReadiness(driver: StorageDriver, logger: Logger): CachedCheck {
  const instance = randomUUID()
  return new CachedCheck({
    name: 'storage',
    probe: () => probeStorage(driver, instance),
    failureText: 'not writable',
    intervalMs: DEFAULTS.readinessInterval,
    timeoutMs: DEFAULTS.readinessTimeout,
    logger,
  })
}

/** /readyz fails once shutdown has begun, so a load balancer stops sending before the doors close. */
function drainReadiness(drain: Drain): ReadinessCheck {
  return { name: 'shutdown', failure: () => (drain.isDraining ? 'draining' : undefined) }
}

/**
 * The connection limits: as configured, else the total below the open-file limit and per address
 * the default, at most a quarter of the total (so one address never takes the whole registry).
 */
function connectionLimitsFor(config: Config, fileLimit: number | undefined, logger: Logger): ConnectionLimitOptions {
  const safe = fileLimit === undefined ? DEFAULTS.maxConnections : connectionLimitFor(fileLimit)
  const maxConnections = config.maxConnections ?? safe
  if (maxConnections > safe && fileLimit !== undefined) {
    logger.warn('--max-connections is close to the open-file limit: requests may fail with "too many open files"', { maxConnections, fileLimit, safe })
  }
  const maxConnectionsPerAddress = config.maxConnectionsPerAddress ?? Math.min(DEFAULTS.maxConnectionsPerAddress, Math.max(1, Math.floor(maxConnections / 4)))
  return { maxConnections, maxConnectionsPerAddress }
}

/**
 * The background jobs, all started here: with the engine, upload purging always and garbage
 * collection with --gc-interval (on S3 a run takes the lock in the bucket, so one instance collects
 * at a time); with ACME, certificate maintenance at once and then whenever the provider says it is
 * next due.
 */
function backgroundJobs(
  config: Config,
  parts: {
    driver: StorageDriver | undefined
    app: RegistryApp | undefined
    index: MetadataIndex | undefined
    survey: StorageSurvey | undefined
    acme: AcmeCertificateProvider | undefined
    metrics: RegistryMetrics | undefined
    /** Read-only mode: purging and collecting wait (a backup or migration is reading the store). */
    readOnly: () => boolean
    events: EventSink
    /** Its `soon` is set here: new cached content asks for a trim within DEFAULTS.mirrorEvictionDelay. */
    cacheTrim: { soon: () => void }
  },
  logger: Logger,
): PeriodicJob<unknown>[] {
  const { driver, app, index, survey, acme, metrics, readOnly } = parts
  const jobs: PeriodicJob<unknown>[] = []
  if (app !== undefined)
    jobs.push(
      every(UPLOAD_PURGING.intervalMs, async () => {
        if (readOnly()) return 0
        const count = await purgeAbandonedUploads(app.store.uploads, config.uploadMaxAgeMs, logger)
        metrics?.uploadsPurgedCount(count)
        return count
      }),
    )
  if (driver !== undefined && config.gcIntervalMs !== undefined)
    jobs.push(
      every(config.gcIntervalMs, async signal => {
        if (readOnly()) return undefined
        const report = await runGc(driver, logger, signal)
        if (report !== undefined) {
          metrics?.gcCompleted(report)
          if (!report.dryRun) parts.events.emit(gcEvent(report))
          await index?.manifestsCollected(report.manifests)
          await survey?.refresh(signal)
        }
        return report
      }),
    )
  if (driver !== undefined && app !== undefined && index !== undefined && config.retentionIntervalMs !== undefined) {
    // Retention policies, then garbage collection when an image went (a run already in progress elsewhere is skipped).
    const policies = compilePolicies(config.retention)
    jobs.push(
      every(config.retentionIntervalMs, async signal => {
        if (readOnly()) return undefined
        const result = await runRetention({
          driver,
          store: app.store,
          index,
          policies,
          events: parts.events,
          logger,
          shouldStop: () => readOnly() || signal.aborted,
        })
        if (result !== undefined) metrics?.retentionRemoved(result)
        if (result === undefined || result.manifests === 0 || readOnly() || signal.aborted) return result
        const report = await runGc(driver, logger, signal)
        if (report !== undefined) {
          metrics?.gcCompleted(report)
          parts.events.emit(gcEvent(report))
          await index.manifestsCollected(report.manifests)
          await survey?.refresh(signal)
        }
        return result
      }),
    )
  }
  if (driver !== undefined && app !== undefined && index !== undefined && config.mirrorMaxSizeBytes !== undefined) {
    const job = mirrorCacheJob(config.mirrorMaxSizeBytes, { driver, app, index, metrics, readOnly, events: parts.events }, logger)
    jobs.push(job)
    let pending: NodeJS.Timeout | undefined
    parts.cacheTrim.soon = () => {
      if (pending !== undefined) return
      pending = setTimeout(() => {
        pending = undefined
        void job.runNow()
      }, DEFAULTS.mirrorEvictionDelay)
      pending.unref()
    }
  }
  if (index !== undefined) jobs.push(...metadataIndexJobs(index, logger))
  if (survey !== undefined)
    jobs.push(
      scheduled(
        () => STORAGE_SURVEY_INTERVAL_MS,
        signal => survey.refresh(signal),
        { runAtStart: true },
      ),
    )
  if (acme !== undefined)
    jobs.push(
      scheduled(
        () => acme.nextCheckDelay(),
        signal => acme.maintain(signal),
        { runAtStart: true },
      ),
    )
  return jobs
}

/**
 * --mirror-max-size: every DEFAULTS.mirrorEvictionInterval (and soon after new content was cached)
 * the least recently pulled cached images beyond the cap are evicted (mirror/cache-eviction.ts),
 * then garbage collection frees their blobs (those written within its grace period on a later run).
 */
function mirrorCacheJob(
  maxBytes: number,
  parts: { driver: StorageDriver; app: RegistryApp; index: MetadataIndex; metrics: RegistryMetrics | undefined; readOnly: () => boolean; events: EventSink },
  logger: Logger,
): PeriodicJob<unknown> {
  const { driver, app, index, readOnly } = parts
  const recordTrim = parts.metrics?.watchMirrorCap(maxBytes)
  return every(DEFAULTS.mirrorEvictionInterval, async signal => {
    if (readOnly()) return undefined
    await index.flushPulls() // this process's pulls count as uses
    const trimmed = await runEviction({
      driver,
      store: app.store,
      lastPulled: async name => {
        const records = await index.readRepository(name)
        return digest => records.pullsOf(digest, undefined).last
      },
      maxBytes,
      minAgeMs: DEFAULTS.mirrorEvictionMinAge,
      logger,
      events: parts.events,
      shouldStop: () => readOnly() || signal.aborted,
    })
    if (trimmed !== undefined) recordTrim?.({ bytes: trimmed.plan.bytes, bytesAfter: trimmed.plan.bytesAfter, images: trimmed.result.images })
    if (trimmed === undefined || trimmed.result.manifests === 0 || readOnly() || signal.aborted) return trimmed
    const report = await runGc(driver, logger, signal)
    if (report !== undefined) {
      parts.metrics?.gcCompleted(report)
      parts.events.emit(gcEvent(report))
      await index.manifestsCollected(report.manifests)
    }
    return trimmed
  })
}

/**
 * The metadata index's background work: load the view and reconcile it with the tree at start
 * (fills what a crash, an older Berth or registry:2 left out) and daily; read other processes'
 * changes every INDEX_REFRESH_INTERVAL_MS; write counted pulls every PULL_FLUSH_INTERVAL_MS.
 */
function metadataIndexJobs(index: MetadataIndex, logger: Logger): PeriodicJob<unknown>[] {
  // Failures are logged and the next run tries again; a run stopped by shutdown is not a failure.
  const logged =
    <T>(what: string, work: (signal: AbortSignal) => Promise<T>) =>
    async (signal: AbortSignal): Promise<T | undefined> => {
      try {
        return await work(signal)
      } catch (error) {
        if (!signal.aborted) logger.warn(`metadata index: ${what} failed`, { error: error instanceof Error ? error.message : String(error) })
        return undefined
      }
    }
  const reconcile = logged('reconciling with the registry tree', async signal => {
    await index.ready()
    const report = await index.reindex({ signal })
    if (report.tagsWritten + report.tagsDeleted + report.manifestsWritten + report.manifestsDeleted > 0) {
      logger.info('metadata index reconciled with the registry tree', { ...report })
    }
    return report
  })
  return [
    scheduled(() => RECONCILE_INTERVAL_MS, reconcile, { runAtStart: true }),
    every(
      INDEX_REFRESH_INTERVAL_MS,
      logged('refresh', () => index.refresh()),
    ),
    every(PULL_FLUSH_INTERVAL_MS, () => index.flushPulls()),
  ]
}

/** With metrics on, every storage driver call is timed (`registry_storage_action_seconds`). */
function timedStorage<T extends { driver: StorageDriver }>(opened: T, metrics: RegistryMetrics | undefined): T {
  if (metrics === undefined) return opened
  return { ...opened, driver: new TimedDriver(opened.driver, metrics.storageTimers(opened.driver.name)) }
}

/** What metrics read at scrape time: the data folder's filesystem, the served certificate, ACME's schedule. */
function watchForMetrics(
  metrics: RegistryMetrics,
  config: Config,
  parts: { provider: CertificateProvider | undefined; acme: AcmeCertificateProvider | undefined },
): void {
  if (config.upstream === undefined && config.storage.kind === 'filesystem') metrics.watchDisk(join(config.datadir, 'data'))
  if (parts.provider !== undefined) metrics.watchCertificate(parts.provider)
  if (parts.acme !== undefined) metrics.watchAcme(parts.acme)
}

function metricsListenError(error: unknown, address: string): Error {
  const code = (error as NodeJS.ErrnoException).code
  const reason =
    code === 'EADDRINUSE'
      ? 'the port is already in use'
      : code === 'EACCES'
        ? 'permission denied'
        : code === 'EADDRNOTAVAIL'
          ? 'not an address of this machine'
          : String(code ?? (error as Error).message)
  return new ListenError(`--metrics-listen ${address}: ${reason}`, undefined, { cause: error })
}

async function certificateFor(
  config: Config,
  logger: Logger,
  sharedCertStore?: CertStore,
  metrics?: RegistryMetrics,
): Promise<{ provider?: CertificateProvider; challenges?: ChallengeResponder; source?: string; hints: string[]; acme?: AcmeCertificateProvider }> {
  const choice = config.certificate
  switch (choice.kind) {
    case 'none':
      return { hints: [] }
    case 'files':
      await mustRead(choice.cert, '--tls-cert')
      await mustRead(choice.key, '--tls-key')
      return {
        provider: new FileCertificateProvider({ certPath: choice.cert, keyPath: choice.key, logger }),
        source: `files ${choice.cert}`,
        hints: [],
      }
    case 'self-signed': {
      await prepareFolder(config.certs, 'certs', config.certs)
      const { SelfSignedCertificateProvider } = await import('./edge/tls/self-signed.js')
      const provider = new SelfSignedCertificateProvider({ certsDir: config.certs, names: config.domains, logger })
      const host = (config.domains[0] ?? 'localhost') + (config.httpsPort === 443 ? '' : `:${config.httpsPort}`)
      return { provider, source: `self-signed (local CA ${hostPath(provider.caPath)})`, hints: [provider.dockerHint(host)] }
    }
    case 'acme': {
      await prepareFolder(config.certs, 'certs', config.certs)
      return acmeProvider(config, choice, logger, sharedCertStore, metrics)
    }
  }
}

/** Automatic HTTPS: the provider answers HTTP-01 on the HTTP port; backgroundJobs schedules its orders and renewals. */
async function acmeProvider(
  config: Config,
  choice: Extract<Config['certificate'], { kind: 'acme' }>,
  logger: Logger,
  sharedCertStore?: CertStore,
  metrics?: RegistryMetrics,
): Promise<{ provider: CertificateProvider; challenges: ChallengeResponder; source: string; hints: string[]; acme: AcmeCertificateProvider }> {
  const [{ AcmeCertificateProvider }, { AcmeError }] = await Promise.all([import('./edge/tls/acme-provider.js'), import('./edge/tls/acme-options.js')])
  let provider: InstanceType<typeof AcmeCertificateProvider>
  try {
    provider = new AcmeCertificateProvider({
      domains: config.domains,
      directory: choice.directory,
      email: choice.email,
      agreeTos: choice.agreeTos,
      eab: choice.eab,
      certsDir: config.certs,
      httpPort: config.httpPort,
      logger,
      selfSchedule: false,
      ...(sharedCertStore !== undefined ? { store: sharedCertStore } : {}),
      ...(metrics !== undefined ? { onOrder: (result: 'issued' | 'failed') => metrics.acmeOrder(result) } : {}),
    })
  } catch (error) {
    if (error instanceof AcmeError) throw new ConfigError(error.message, { cause: error })
    throw error
  }
  const hints =
    config.httpPort === 80 ? [] : [`ACME HTTP-01 needs the CA to reach port 80 of ${config.domains.join(', ')}; forward it to --http-port ${config.httpPort}`]
  return { provider, challenges: provider.challenges, source: `ACME ${provider.directoryUrl}`, hints, acme: provider }
}

/**
 * Basic auth: an explicit --htpasswd must exist; the default file is optional in --local mode and
 * with --allow-anonymous (then auth is off until the file appears: the edge watches it). HTTPS
 * mode otherwise needs at least one user (safe by default; --upstream included, since Berth cannot
 * tell whether that registry checks logins: the seed's registry:2 behind nginx did not).
 */
async function checkHtpasswd(config: Config, logger: Logger): Promise<{ file: string; users: number } | undefined> {
  // With access rules the file decides what anonymous callers may do; without users nobody logs in.
  const mustHaveUsers = config.mode === 'https' && !config.allowAnonymous && config.accessFile === undefined
  let text: string
  try {
    text = await readFile(config.htpasswd, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT' && mustHaveUsers) throw new ConfigError(noUsersMessage(config, 'no-file'), { cause: error })
    if (code === 'ENOENT' && !config.isHtpasswdExplicit) return undefined
    if (code === 'ENOENT')
      throw new ConfigError(`--htpasswd ${config.htpasswd}: no such file (create it with: berth htpasswd add <user> --file ${config.htpasswd})`)
    if (code === 'EACCES') throw new ConfigError(`cannot read ${config.htpasswd}: permission denied (it must be readable by the user running berth)`)
    throw error
  }
  try {
    const users = parseHtpasswd(text, config.htpasswd)
    if (users.size === 0 && mustHaveUsers) throw new ConfigError(noUsersMessage(config, 'empty'))
    if (users.size === 0) logger.warn('htpasswd file has no users: requests need no login until one is added', { file: config.htpasswd })
    return { file: config.htpasswd, users: users.size }
  } catch (error) {
    if (error instanceof HtpasswdError) throw new ConfigError(error.message, { cause: error })
    throw error
  }
}

async function mustRead(file: string, setting: string): Promise<void> {
  try {
    await access(file, fsConstants.R_OK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code)
    throw new ConfigError(`${setting} ${file}: ${reason}`, { cause: error })
  }
}

/** Creates the folder if needed and checks that this user can write to it, naming the fix if not. */
async function prepareFolder(folder: string, setting: string, shown: string): Promise<void> {
  return asConfigError(prepareStoreFolder(folder, setting, shown))
}

function asConfigError<T>(promise: Promise<T>): Promise<T> {
  return promise.catch((error: unknown) => {
    throw error instanceof StorageOpenError ? new ConfigError(error.message, { cause: error }) : error
  })
}

/** Turns listen errors into one line that says what to do. */
export function explainStartError(error: unknown, config: Config): Error {
  if (error instanceof ConfigError) return error
  const errno = error as NodeJS.ErrnoException & { port?: number; address?: string }
  const port = errno.port
  if (errno.code === 'EACCES' && port !== undefined) {
    return new ListenError(
      `cannot listen on port ${port}: permission denied (ports below 1024 need privileges). ` +
        `Fix: sudo setcap cap_net_bind_service=+ep ${realExecPath()}, ` +
        `or run it in docker compose (ports 80/443 are mapped there), or choose other ports with --https-port/--http-port`,
      port,
      { cause: error },
    )
  }
  if (errno.code === 'EADDRINUSE' && port !== undefined) {
    const flag = config.mode === 'local' ? '--port' : port === config.httpPort ? '--http-port' : '--https-port'
    return new ListenError(
      `port ${port} is already in use by another program (find it: sudo ss -ltnp 'sport = :${port}'); stop it or choose another ${flag}`,
      port,
      { cause: error },
    )
  }
  if (errno.code === 'EADDRNOTAVAIL') {
    return new ListenError(`--host ${errno.address ?? config.host ?? ''} is not an address of this machine`, port, { cause: error })
  }
  return error instanceof Error ? error : new Error(String(error))
}

/** The file the capability must be set on: node, or the single binary itself (symlinks resolved). */
function realExecPath(): string {
  try {
    return realpathSync(process.execPath) // start-up error path only, never a request path
  } catch {
    return process.execPath
  }
}

function delay(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms).unref())
}
