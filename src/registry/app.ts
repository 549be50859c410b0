/**
 * The registry engine: OCI Distribution v1.1 / Docker Registry HTTP API v2 as a plain Node
 * request listener. It listens only behind the edge (loopback or a unix socket) and, when given
 * `internalSecret`, refuses any request that does not carry it, so no other local process can
 * skip the edge's authentication.
 *
 * This file is the single exit for errors: handlers and stores throw, `handle` maps the error
 * once (`registry/errors.ts`) and writes the OCI JSON body. Every response, errors included,
 * carries `Docker-Distribution-API-Version: registry/2.0` (docker's ping looks for it).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { silentLogger, type Logger } from '../log.js'
import { every } from '../scheduler.js'
import type { StorageDriver } from '../storage/driver/storage-driver.js'
import type { ManifestCacheOptions } from '../storage/manifest-cache.js'
import { purgeAbandonedUploads } from '../storage/purge-uploads.js'
import { createRegistryStore, type RegistryStore } from '../storage/registry-store.js'
import { RegistryError, toRegistryError } from './errors.js'
import { registryRoutes } from './handlers/index.js'
import { API_VERSION, API_VERSION_HEADER, sendJson } from './http.js'
import { matchRoute } from './routes.js'

/** The header the edge adds with the per-process secret. */
export const INTERNAL_SECRET_HEADER = 'x-berth-internal'

/** distribution's limit (`maxManifestBodySize`); the spec asks registries to accept at least 4 MB. */
export const DEFAULT_MAX_MANIFEST_BYTES = 4 * 1024 * 1024

export interface RegistryAppOptions {
  driver: StorageDriver
  logger?: Logger
  /** When set, every request must carry `x-berth-internal: <secret>`. */
  internalSecret?: string
  /** Largest manifest body accepted on PUT (default 4 MiB); larger ones get 413. */
  maxManifestBytes?: number
  /**
   * Deletes abandoned uploads older than `maxAgeMs`, checked every `intervalMs` (default: off; the
   * composition root passes the settings' UPLOAD_PURGING). Stopped by `close()`.
   */
  uploadPurging?: { maxAgeMs: number; intervalMs: number } | false
  /** Bounds of the in-process cache of manifest bytes by digest (storage/manifest-cache.ts). */
  manifestCache?: ManifestCacheOptions
}

/** The query of every request without one (most): shared, so handlers only read it. */
const NO_QUERY: URLSearchParams = new URLSearchParams()

export interface RegistryApp {
  /** A Node request listener. Never throws or rejects; every failure becomes an OCI error response. */
  handle(request: IncomingMessage, response: ServerResponse): void
  /** Stops the upload purge timer; resolves when requests in flight have finished. */
  close(): Promise<void>
  /** The stores the app serves from (for maintenance tools and tests). */
  readonly store: RegistryStore
}

function secretDigest(value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

export function createRegistryApp(options: RegistryAppOptions): RegistryApp {
  const logger = options.logger ?? silentLogger
  const store = createRegistryStore(options.driver, options.manifestCache === undefined ? {} : { manifestCache: options.manifestCache })
  const maxManifestBytes = options.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES
  // Compare fixed-length digests so the comparison time tells nothing about the secret's length.
  const expectedSecret = options.internalSecret === undefined ? undefined : secretDigest(options.internalSecret)
  const inFlight = new Set<Promise<void>>()
  const purging = options.uploadPurging || undefined
  const purgeJob = purging && every(purging.intervalMs, () => purgeAbandonedUploads(store.uploads, purging.maxAgeMs, logger))

  function checkInternalSecret(request: IncomingMessage): void {
    if (expectedSecret === undefined) return
    const given = request.headers[INTERNAL_SECRET_HEADER]
    if (typeof given !== 'string' || given === '') throw new RegistryError('UNAUTHORIZED', undefined, { message: 'request did not come through the edge' })
    if (!timingSafeEqual(secretDigest(given), expectedSecret)) throw new RegistryError('DENIED', undefined, { message: 'request did not come through the edge' })
  }

  async function dispatch(request: IncomingMessage, response: ServerResponse): Promise<void> {
    response.setHeader(API_VERSION_HEADER, API_VERSION)
    try {
      checkInternalSecret(request)
      // RFC 9112 §3.2: a request with more than one Host line is a 400. Node keeps the first and
      // drops the rest, so a front proxy that keeps the last would see another host than we do.
      if (countHeaderLines(request.rawHeaders, 'host') > 1) {
        throw new RegistryError('UNSUPPORTED', undefined, { status: 400, message: 'more than one Host header', headers: { Connection: 'close' } })
      }
      const rawUrl = request.url ?? '/'
      const queryAt = rawUrl.indexOf('?')
      const path = queryAt === -1 ? rawUrl : rawUrl.slice(0, queryAt)
      const query = queryAt === -1 ? NO_QUERY : new URLSearchParams(rawUrl.slice(queryAt + 1))
      const match = matchRoute(registryRoutes, path)
      if (!match) throw new RegistryError('NOT_FOUND', undefined, { message: `no route for ${request.method} ${path.slice(0, 200)}` })
      const method = request.method ?? 'GET'
      const handler = match.route.handlers[method]
      if (!handler) {
        throw new RegistryError('UNSUPPORTED', { method }, {
          message: `${method} is not supported on this endpoint`,
          headers: { Allow: Object.keys(match.route.handlers).join(', ') },
        })
      }
      await handler({ request, response, params: match.params, query, store, logger, maxManifestBytes })
    } catch (caught) {
      writeError(request, response, caught)
    }
  }

  function writeError(request: IncomingMessage, response: ServerResponse, caught: unknown): void {
    const error = toRegistryError(caught)
    const clientGone = request.destroyed && !request.complete
    if (error.status >= 500 && !clientGone) {
      const cause = error.cause instanceof Error ? error.cause : error
      logger.error('request failed', {
        method: request.method,
        path: (request.url ?? '').split('?', 1)[0]?.slice(0, 300),
        error: cause.message,
        code: (cause as { code?: unknown }).code === undefined ? undefined : String((cause as { code?: unknown }).code),
      })
    }
    // Already answered in full (the edge's 413 when a chunked body crossed the limit, in process):
    // the failure is the body's, and destroying now could cut that answer before the client reads it.
    if (response.writableEnded && !response.destroyed) return
    if (response.headersSent || response.destroyed) {
      // Mid-body failure (or the client left): the only honest signal left is to cut the connection.
      response.destroy()
      return
    }
    // A request body we did not read must not be taken for the next request on this connection.
    if (!request.complete) response.setHeader('Connection', 'close')
    sendJson(response, error.status, error.toBody(), { ...error.headers, [API_VERSION_HEADER]: API_VERSION })
  }

  return {
    handle(request, response) {
      const task = dispatch(request, response).catch(error => {
        // dispatch already catches everything; this is the last guard against a bug in writeError.
        logger.error('unhandled error in request', { error: error instanceof Error ? error.message : String(error) })
        if (!response.destroyed) response.destroy()
      })
      inFlight.add(task)
      void task.finally(() => inFlight.delete(task))
    },
    async close() {
      await purgeJob?.stop()
      await Promise.allSettled([...inFlight])
    },
    store,
  }
}

/** How many header lines named `name` (lower case) the request had, duplicates included. */
export function countHeaderLines(rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const header = rawHeaders[i]!
    if (header.length === name.length && header.toLowerCase() === name) count++
  }
  return count
}
