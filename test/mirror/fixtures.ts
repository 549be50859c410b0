/**
 * An upstream registry for mirror tests, in this process: Berth's engine on the in-memory driver,
 * reached two ways: `direct` (to push test content) and `front`, what the mirror talks to, which
 * counts requests by method and kind and can play a registry that is down, throttling, asks for
 * Basic or Bearer credentials (with a token realm at `/token`), redirects blobs to another origin,
 * or corrupts what it sends.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ExecutionContext } from 'ava'
import { createRegistryApp, type RegistryApp, type RegistryAppOptions } from '../../src/registry/app.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { silentLogger } from '../../src/log.js'

export type Mode = 'ok' | '429' | '503' | 'reset'

export interface FakeUpstream {
  readonly direct: string
  readonly url: string
  readonly app: RegistryApp
  /** `GET manifest`, `HEAD manifest`, `GET blob`, `HEAD blob`, `token` → count. */
  readonly counts: Map<string, number>
  /** Authorization headers the redirect target (another origin) received. */
  readonly cdnAuthorizations: (string | undefined)[]
  mode: Mode
  auth: { kind: 'basic' | 'bearer'; user: string; password: string } | undefined
  redirectBlobs: boolean
  /** Changes a response body on its way out (same length): a corrupting upstream. */
  corrupt: ((kind: string) => boolean) | undefined
  count(key: string): number
}

async function listen(t: ExecutionContext, handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(handler)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

function kindOf(path: string): string {
  if (/\/manifests\/[^/]+$/.test(path)) return 'manifest'
  if (/\/blobs\/uploads/.test(path)) return 'upload'
  if (/\/blobs\/[^/]+$/.test(path)) return 'blob'
  return 'other'
}

export async function startUpstream(t: ExecutionContext): Promise<FakeUpstream> {
  const app = createRegistryApp({ driver: new InMemoryDriver() })
  t.teardown(() => app.close())
  const direct = await listen(t, app.handle)
  const tokens = new Set<string>()
  const cdnAuthorizations: (string | undefined)[] = []
  const cdn = await listen(t, (request, response) => {
    cdnAuthorizations.push(request.headers.authorization)
    // The CDN serves the blob from the registry without any credentials of its own.
    const path = new URL(request.url ?? '/', 'http://x').searchParams.get('path') ?? '/'
    app.handle(Object.assign(request, { url: path }), response)
  })
  const upstream: FakeUpstream = {
    direct: direct.url,
    url: '',
    app,
    counts: new Map(),
    cdnAuthorizations,
    mode: 'ok',
    auth: undefined,
    redirectBlobs: false,
    corrupt: undefined,
    count: key => upstream.counts.get(key) ?? 0,
  }
  const bump = (key: string): void => void upstream.counts.set(key, upstream.count(key) + 1)
  const front = await listen(t, (request, response) => {
    const url = new URL(request.url ?? '/', 'http://x')
    const { auth } = upstream
    const basic = auth === undefined ? undefined : `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString('base64')}`
    if (url.pathname === '/token') {
      bump('token')
      if (request.headers.authorization !== basic) return void response.writeHead(401).end()
      const token = `token-${tokens.size}-${url.searchParams.get('scope') ?? ''}`
      tokens.add(token)
      response.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }))
      return
    }
    const kind = kindOf(url.pathname)
    bump(`${request.method} ${kind}`)
    if (upstream.mode === 'reset') return void request.socket.destroy()
    if (upstream.mode === '429') return void response.writeHead(429, { 'Retry-After': '7', 'Content-Length': 0 }).end()
    if (upstream.mode === '503') return void response.writeHead(503, { 'Content-Length': 0 }).end()
    if (auth?.kind === 'basic' && request.headers.authorization !== basic) {
      return void response.writeHead(401, { 'WWW-Authenticate': 'Basic realm="fake"', 'Content-Length': 0 }).end()
    }
    if (auth?.kind === 'bearer' && !tokens.has(String(request.headers.authorization).replace(/^Bearer /, ''))) {
      const name = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(url.pathname)?.[1] ?? ''
      response.writeHead(401, {
        'WWW-Authenticate': `Bearer realm="${upstream.url}/token",service="fake-registry",scope="repository:${name}:pull"`,
        'Content-Length': 0,
      })
      return void response.end()
    }
    if (kind === 'blob' && request.method === 'GET' && upstream.redirectBlobs) {
      return void response.writeHead(307, { Location: `${cdn.url}/data?path=${encodeURIComponent(url.pathname)}`, 'Content-Length': 0 }).end()
    }
    if (upstream.corrupt?.(`${request.method} ${kind}`) === true) {
      const write = response.write.bind(response)
      const end = response.end.bind(response)
      let flipped = false
      const flip = (chunk: unknown): unknown => {
        if (flipped || !Buffer.isBuffer(chunk) || chunk.byteLength === 0) return chunk
        flipped = true
        const copy = Buffer.from(chunk)
        copy[copy.byteLength - 1] = copy[copy.byteLength - 1]! ^ 0xff
        return copy
      }
      // A test double of a broken upstream: its bytes are changed on the way out.
      response.write = ((chunk: unknown, ...rest: never[]) => write(flip(chunk) as Buffer, ...rest)) as typeof response.write
      response.end = ((chunk?: unknown, ...rest: never[]) => end(flip(chunk) as Buffer, ...rest)) as typeof response.end
    }
    app.handle(request, response)
  })
  ;(upstream as { url: string }).url = front.url
  return upstream
}

export interface MirrorUnderTest {
  readonly url: string
  readonly app: RegistryApp
  readonly driver: InMemoryDriver
  /** The mirror's clock (ms); tests move it. */
  clock: number
}

export async function startMirror(
  t: ExecutionContext,
  mirror: Partial<NonNullable<RegistryAppOptions['mirror']>> & Pick<NonNullable<RegistryAppOptions['mirror']>, 'upstreams'>,
  options: Partial<RegistryAppOptions> = {},
): Promise<MirrorUnderTest> {
  const driver = options.driver instanceof InMemoryDriver ? options.driver : new InMemoryDriver()
  const state = { clock: 1_000_000 }
  const app = createRegistryApp({
    driver,
    logger: silentLogger,
    ...options,
    mirror: { tagTtlMs: 60_000, maxBlobBytes: 1024 ** 3, now: () => state.clock, ...mirror },
  })
  t.teardown(() => app.close())
  const { url } = await listen(t, app.handle)
  return Object.defineProperty({ url, app, driver } as unknown as MirrorUnderTest, 'clock', {
    get: () => state.clock,
    set: (value: number) => {
      state.clock = value
    },
  })
}
