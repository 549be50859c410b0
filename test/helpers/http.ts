/**
 * A small HTTP client on `node:http` for handler tests: it shows every header as sent (fetch
 * hides some and normalises framing) and lets a test send a body as a stream, cut a request
 * short, or bypass Content-Length.
 */
import { request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Readable } from 'node:stream'

export interface HttpResponse {
  status: number
  headers: IncomingHttpHeaders
  /** Header names and values as received, repeated lines apart (Node joins some in `headers`). */
  rawHeaders: string[]
  body: Buffer
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: any
}

export interface RequestOptions {
  method?: string
  headers?: Record<string, string | number>
  /** A Buffer/string is sent with Content-Length; a stream is sent chunked unless a length header is given. */
  body?: Buffer | string | Readable
}

export function baseUrl(server: Server): string {
  const address = server.address() as AddressInfo
  return `http://127.0.0.1:${address.port}`
}

/** `target` is a listening server on 127.0.0.1, or a base URL such as `http://127.0.0.1:5000`. */
export function request(target: Server | string, path: string, options: RequestOptions = {}): Promise<HttpResponse> {
  let host = '127.0.0.1'
  let port: number
  if (typeof target === 'string') {
    const url = new URL(target)
    host = url.hostname.replace(/^\[|\]$/g, '')
    port = Number(url.port || 80)
  } else {
    port = (target.address() as AddressInfo).port
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, path, method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', chunk => chunks.push(chunk as Buffer))
      res.on('error', reject)
      res.on('end', () => {
        const body = Buffer.concat(chunks)
        let json: unknown
        try {
          json = body.byteLength > 0 ? JSON.parse(body.toString('utf8')) : undefined
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body, json })
      })
    })
    req.on('error', reject)
    const body = options.body
    if (body === undefined) req.end()
    else if (typeof body === 'string' || Buffer.isBuffer(body)) {
      if (options.headers?.['Content-Length'] === undefined && options.headers?.['content-length'] === undefined) {
        req.setHeader('Content-Length', Buffer.byteLength(body))
      }
      req.end(body)
    } else body.pipe(req)
  })
}
