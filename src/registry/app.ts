/**
 * The registry engine: OCI Distribution v1.1 / Docker Registry HTTP API v2 as one handler of
 * exchanges (`http/exchange.ts`). The edge's chain authenticates and counts the body before it;
 * the engine itself trusts every exchange it is given.
 *
 * This file is the single exit for the engine's errors: handlers and stores throw, `serve` maps the
 * error once (`registry/errors.ts`) and writes it with the one writer (`http/respond.ts`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createExchange, type Exchange } from '../http/exchange.js'
import { RegistryError } from '../http/errors.js'
import { sendError } from '../http/respond.js'
import { NO_EVENTS, type EventSink } from '../events/events.js'
import { silentLogger, type Logger } from '../log.js'
import { Mirror, type MirrorOptions } from '../mirror/mirror.js'
import type { StorageDriver } from '../storage/driver/storage-driver.js'
import type { ManifestCacheOptions } from '../storage/manifest-cache.js'
import type { ManifestObserver } from '../storage/manifest-observer.js'
import type { QuotaCheck } from '../storage/quota.js'
import { createRegistryStore, type RegistryStore } from '../storage/registry-store.js'
import { toRegistryError } from './errors.js'
import { registryRoutes } from './handlers/index.js'
import { matchRoute } from './routes.js'

/** distribution's limit (`maxManifestBodySize`); the spec asks registries to accept at least 4 MB. */
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024

export interface RegistryAppOptions {
  driver: StorageDriver
  logger?: Logger
  /** Largest manifest body accepted on PUT (default 4 MiB); larger ones get 413. */
  maxManifestBytes?: number
  /** Bounds of the in-process cache of manifest bytes by digest (storage/manifest-cache.ts). */
  manifestCache?: ManifestCacheOptions
  /**
   * Accept image manifests whose layers, and indexes whose child manifests, are not stored
   * (`--allow-sparse-manifests`); the config must still be. Default false: MANIFEST_BLOB_UNKNOWN.
   */
  allowSparseManifests?: boolean
  /** Where committed changes are told (the audit trail, webhooks); default none. */
  events?: EventSink
  /** Pull-through mirrors (src/mirror); the manifest limit defaults to `maxManifestBytes`. */
  mirror?: Omit<MirrorOptions, 'logger' | 'maxManifestBytes'> & { maxManifestBytes?: number }
  /** Told about committed manifest changes and pulls (the metadata index; storage/manifest-observer.ts). */
  observer?: ManifestObserver
  /** Repository quotas (storage/quota.ts): a push past one is refused with DENIED before anything is stored. */
  quota?: QuotaCheck
}

export interface RegistryApp {
  /** The engine's handler. Resolves when it is done with the exchange; never rejects (every failure becomes an OCI error response). */
  readonly serve: (exchange: Exchange) => Promise<void>
  /** A Node request listener over `serve`, without any edge step (no authentication, no body limit): tests and tools. */
  readonly handle: (request: IncomingMessage, response: ServerResponse) => void
  /** Resolves when requests in flight have finished. */
  close(): Promise<void>
  /** The stores the app serves from (for maintenance tools and tests). */
  readonly store: RegistryStore
  /**
   * The repository a request for `name` really reads: with a mirror, `docker.io/library/alpine` for
   * `library/alpine?ns=docker.io` or (with a default mirror) for a name that is no local repository;
   * else `name`. Access rules are asked about this name.
   */
  readonly repositoryOf: (name: string, query: URLSearchParams) => Promise<string>
  /** The mirror prefixes (`docker.io`, ...), empty without mirrors. */
  readonly mirrorPrefixes: readonly string[]
}

/**
 * Pushes and deletes under a mirror prefix are refused: the content there is the upstream's, and a
 * push would make the cache disagree with it (distribution's proxy refuses them too). 405
 * UNSUPPORTED rather than 403 DENIED: nobody may do it, whoever they are, and docker shows
 * "denied" as if a login were missing, which would send users to check their credentials.
 */
function refuseMirrorWrite(mirror: Mirror, name: string, query: URLSearchParams): void {
  const prefix = mirror.prefixOfWrite(name, query)
  if (prefix === undefined) return
  throw new RegistryError(
    'UNSUPPORTED',
    { name: name.slice(0, 300), mirror: prefix },
    {
      message: `${prefix}/ is a read-only mirror of ${mirror.upstreamUrl(prefix) ?? 'another registry'}: push and delete are refused there; push to a name outside the mirror prefixes`,
      headers: { Allow: 'GET, HEAD' },
    },
  )
}

export function createRegistryApp(options: RegistryAppOptions): RegistryApp {
  const logger = options.logger ?? silentLogger
  const store = createRegistryStore(options.driver, {
    ...(options.manifestCache === undefined ? {} : { manifestCache: options.manifestCache }),
    allowSparseManifests: options.allowSparseManifests ?? false,
    ...(options.observer === undefined ? {} : { observer: options.observer }),
  })
  const maxManifestBytes = options.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES
  const events = options.events ?? NO_EVENTS
  const quota = options.quota
  const inFlight = new Set<Promise<void>>()
  const mirror = options.mirror === undefined ? undefined : new Mirror(store, { maxManifestBytes, ...options.mirror, logger })

  async function dispatch(exchange: Exchange): Promise<void> {
    const { req: request, res: response, path, query } = exchange
    try {
      const match = matchRoute(registryRoutes, path)
      if (!match) throw new RegistryError('NOT_FOUND', undefined, { message: `no route for ${request.method} ${path.slice(0, 200)}` })
      exchange.route = match.route.name
      exchange.repository = match.params.name
      const method = request.method ?? 'GET'
      const handler = match.route.handlers[method]
      if (!handler) {
        throw new RegistryError(
          'UNSUPPORTED',
          { method },
          {
            message: `${method} is not supported on this endpoint`,
            headers: { Allow: Object.keys(match.route.handlers).join(', ') },
          },
        )
      }
      if (mirror !== undefined && method !== 'GET' && method !== 'HEAD' && match.params.name !== undefined) refuseMirrorWrite(mirror, match.params.name, query)
      await handler({ exchange, request, response, body: exchange.body, params: match.params, query, store, logger, maxManifestBytes, mirror, events, quota })
    } catch (caught) {
      writeError(exchange, caught)
    }
  }

  function writeError(exchange: Exchange, caught: unknown): void {
    const { req: request } = exchange
    const error = toRegistryError(caught)
    // A client that leaves mid-upload or mid-download is normal: the access line says `aborted`.
    const clientGone = (request.destroyed && !request.complete) || (exchange.res.destroyed && !exchange.res.writableFinished)
    if (error.status >= 500 && !clientGone) {
      const cause = error.cause instanceof Error ? error.cause : error
      logger.error('request failed', {
        method: request.method,
        path: exchange.path.slice(0, 300),
        error: cause.message,
        code: (cause as { code?: unknown }).code === undefined ? undefined : String((cause as { code?: unknown }).code),
        id: exchange.id,
      })
    }
    sendError(exchange, error)
  }

  const serve = (exchange: Exchange): Promise<void> => {
    const task = dispatch(exchange).catch(error => {
      // dispatch already catches everything; this is the last guard against a bug in writeError.
      logger.error('unhandled error in request', { error: error instanceof Error ? error.message : String(error), id: exchange.id })
      if (!exchange.res.destroyed) exchange.res.destroy()
    })
    inFlight.add(task)
    void task.finally(() => inFlight.delete(task))
    return task
  }

  return {
    serve,
    handle(request, response) {
      void serve(createExchange(request, response, 'internal'))
    },
    async close() {
      await Promise.allSettled(inFlight)
      mirror?.close()
    },
    store,
    repositoryOf: async (name, query) => (mirror === undefined ? name : ((await mirror.route(name, query))?.name ?? name)),
    mirrorPrefixes: options.mirror?.upstreams.map(upstream => upstream.prefix) ?? [],
  }
}
