/**
 * A tiny upstream for edge tests: records what reached it and how each exchange ended.
 *   GET  /download/<bytes>[?slow]  streams that many bytes (slowly with ?slow: 64 KiB every 20 ms)
 *   GET  /die-mid-body             sends headers and half a body, then destroys the socket
 *   *    /stall-read               reads one chunk of the body, then never reads again
 *   *    /early-reject             answers 404 at once without reading the request body
 *   *    anything else             reads the whole body, answers JSON {received, headers, url}
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface SeenRequest {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  received: number
  /** The request body arrived completely. */
  complete: boolean
  /** The connection closed before the exchange finished (upload or download aborted). */
  aborted: boolean
  /** Response bytes written before the end or the abort. */
  sent: number
}

export interface Upstream {
  readonly url: string
  readonly seen: SeenRequest[]
  connections(): Promise<number>
  /** Resumes /stall-read bodies (a paused socket does not notice its peer leave until it reads again). */
  resumeStalled(): void
  /** Resolves when `count` requests have ended (finished or aborted). */
  settled(count: number): Promise<void>
  close(): Promise<void>
}

export async function startUpstream(): Promise<Upstream> {
  const seen: SeenRequest[] = []
  const stalled: http.IncomingMessage[] = []
  let ended = 0
  const waiters: { count: number; resolve: () => void }[] = []
  const markEnded = () => {
    ended++
    for (const waiter of waiters.splice(0)) {
      if (ended >= waiter.count) waiter.resolve()
      else waiters.push(waiter)
    }
  }
  const server = http.createServer((req, res) => {
    const record: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, received: 0, complete: false, aborted: false, sent: 0 }
    seen.push(record)
    let done = false
    const finish = (aborted: boolean) => {
      if (done) return
      done = true
      record.aborted = aborted
      markEnded()
    }
    res.on('close', () => finish(!res.writableFinished))
    req.on('data', (chunk: Buffer) => (record.received += chunk.length))
    req.on('end', () => (record.complete = true))
    const download = /^\/download\/(\d+)(\?slow)?$/.exec(req.url ?? '')
    if (download) {
      let left = Number(download[1])
      const slow = download[2] !== undefined
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left })
      const chunk = Buffer.alloc(64 * 1024, 7)
      const pump = (): void => {
        while (left > 0 && !res.destroyed) {
          const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
          left -= piece.length
          record.sent += piece.length
          const more = res.write(piece)
          if (left === 0) return void res.end()
          if (slow) return void setTimeout(pump, 20)
          if (!more) return void res.once('drain', pump)
        }
      }
      pump()
      return
    }
    if (req.url === '/stall-read') {
      // Reads the first chunk, then stops reading: the proxy must stop reading the client too.
      req.once('data', () => req.pause())
      stalled.push(req)
      return
    }
    if (req.url === '/early-reject') {
      // Answers at once without reading the body, as a registry does for an unknown upload.
      const body = JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'upload unknown', detail: null }] })
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
      return
    }
    if (req.url === '/die-mid-body') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 1_000_000 })
      res.write(Buffer.alloc(500_000, 1), () => setTimeout(() => res.socket?.destroy(), 50))
      record.sent = 500_000
      return
    }
    req.on('end', () => {
      const body = JSON.stringify({ received: record.received, headers: req.headers, url: req.url })
      res.writeHead(req.url?.startsWith('/v2/unauthorized') ? 401 : 200, {
        'content-type': 'application/json',
        'docker-distribution-api-version': 'registry/2.0',
      })
      res.end(body)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    connections: () => new Promise((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count)))),
    resumeStalled: () => {
      for (const req of stalled.splice(0)) req.resume()
    },
    settled: count => (ended >= count ? Promise.resolve() : new Promise(resolve => waiters.push({ count, resolve }))),
    close: () =>
      new Promise(resolve => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
