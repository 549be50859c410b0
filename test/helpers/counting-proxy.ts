/**
 * A counting proxy in front of a mirror's upstream: it counts each request by method and path (the
 * count of upstream blob GETs is read here) and can play an upstream that is down (connections
 * reset) or throttling (429) without stopping the registry behind it.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface CountingProxy {
  url: string
  mode: 'ok' | 'down' | '429'
  /** `GET /v2/…/blobs/sha256:…` → count */
  counts: Map<string, number>
  /** Requests with `method` whose path ends with `pathEnd`. */
  count(method: string, pathEnd: string): number
  close(): Promise<void>
}

export async function countingProxy(target: string): Promise<CountingProxy> {
  const agent = new http.Agent({ keepAlive: true })
  const proxy: CountingProxy = {
    url: '',
    mode: 'ok',
    counts: new Map(),
    count: (method, pathEnd) => [...proxy.counts].filter(([key]) => key.startsWith(`${method} `) && key.endsWith(pathEnd)).reduce((sum, [, n]) => sum + n, 0),
    close: async () => {
      server.closeAllConnections()
      agent.destroy()
      await new Promise(resolve => server.close(resolve))
    },
  }
  const server = http.createServer((req, res) => {
    const key = `${req.method} ${(req.url ?? '').split('?')[0]}`
    proxy.counts.set(key, (proxy.counts.get(key) ?? 0) + 1)
    if (proxy.mode === 'down') return void req.socket.destroy()
    if (proxy.mode === '429') return void res.writeHead(429, { 'Retry-After': '30', 'Content-Length': 0 }).end()
    const upstream = http.request(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers, agent }, answer => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    upstream.on('error', () => res.destroy())
    req.pipe(upstream)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return proxy
}
