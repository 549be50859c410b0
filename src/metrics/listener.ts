/**
 * The metrics listener (`--metrics-listen`): plain HTTP on its own address, apart from the registry's
 * doors, so metrics are never exposed with the registry by accident. It answers `GET /metrics` (and
 * HEAD) in the Prometheus text format and 404 to everything else; it has no login and no chain.
 */
import http from 'node:http'
import { closeServer, listen, urlOf, type ListenAddress } from '../edge/listeners.js'
import type { Logger } from '../log.js'
import type { RegistryMetrics } from './registry-metrics.js'

export interface MetricsListener {
  /** `http://host:port` (port 0 resolved). */
  readonly url: string
  close(): Promise<void>
}

/** Rejects with the listen error (EADDRINUSE …) when the address cannot be bound. */
export async function startMetricsListener(metrics: RegistryMetrics, address: ListenAddress, logger: Logger): Promise<MetricsListener> {
  const server = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: metrics are at GET /metrics\n')
      return
    }
    metrics.exposition().then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'Content-Type': contentType, 'Cache-Control': 'no-store' })
        res.end(req.method === 'HEAD' ? undefined : body)
      },
      (error: unknown) => {
        logger.warn('metrics collection failed', { error: error instanceof Error ? error.message : String(error) })
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('metrics collection failed\n')
      },
    )
  })
  server.keepAliveTimeout = 65_000
  await listen(server, address.port, address.host)
  const url = urlOf('http', server)
  logger.info('metrics listening', { url: `${url}/metrics` })
  return { url, close: () => closeServer(server) }
}
