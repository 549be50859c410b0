/**
 * Shared pieces of the hardening suites (issue #8).
 *
 * Every suite has a quick size, run by `npm test` on every change, and a full size, run by
 * `npm run test:hardening` (which sets BERTH_HARDENING=full). `size(quick, full)` picks one.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readdir, readlink, readFile } from 'node:fs/promises'
import type { ExecutionContext } from 'ava'
import { request, type HttpResponse, type RequestOptions } from '../helpers/http.js'
import { makeTempDir, removeDir, run } from '../helpers/procs.js'

export const FULL = process.env['BERTH_HARDENING'] === 'full'

export function size<T>(quick: T, full: T): T {
  return FULL ? full : quick
}

/**
 * `berth serve` arguments for attacks whose hundreds of connections stand for as many clients but
 * come from one loopback address: the per-address connection limit would otherwise close them.
 */
export const ONE_ADDRESS_IS_MANY_CLIENTS = ['--max-connections-per-address', '1000000']

export function sha256(content: Buffer | string): string {
  return `sha256:${createHash('sha256').update(content).digest('hex')}`
}

export async function tempDir(t: ExecutionContext, prefix = 'berth-hardening-'): Promise<string> {
  const dir = await makeTempDir(prefix)
  t.teardown(() => removeDir(dir))
  return dir
}

/** Open file descriptors of a process, split into sockets and the rest. */
export async function fdCounts(pid: number): Promise<{ total: number; sockets: number; files: number }> {
  const entries = await readdir(`/proc/${pid}/fd`)
  let sockets = 0
  let files = 0
  for (const entry of entries) {
    const target = await readlink(`/proc/${pid}/fd/${entry}`).catch(() => '')
    if (target.startsWith('socket:')) sockets++
    else if (target.startsWith('/')) files++
  }
  return { total: entries.length, sockets, files }
}

export async function rssKiB(pid: number): Promise<{ rss: number; peak: number }> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8')
  return { rss: Number(/VmRSS:\s+(\d+)/.exec(text)?.[1] ?? 0), peak: Number(/VmHWM:\s+(\d+)/.exec(text)?.[1] ?? 0) }
}

/**
 * A loopback address whose route has an Ethernet MTU (1500: 1448-byte TCP segments), for the
 * tests of slow readers, or undefined when the route cannot be made (it needs root).
 *
 * Over 127.0.0.1 segments are 64 KiB, and Linux sizes a connection's send buffer from that: each
 * reader that stops has 1.5 MB of its download queued in the kernel (3.8 MB of kernel memory, `ss
 * -tm`), and about 600 of them reach the kernel's limit for all of TCP (`tcp_mem`, 2.2 GiB here),
 * after which it resets connections that retransmit, other clients' too (`dmesg`: "TCP: out of
 * memory"; nstat's TCPAbortOnMemory), whatever the server does. A reader on the internet gets
 * Ethernet-sized segments and about 30 KB queued in the kernel; this route gives the same here.
 */
export async function ethernetLoopback(t: ExecutionContext): Promise<string | undefined> {
  const address = '127.0.0.2'
  try {
    await run('ip', [
      'route',
      'replace',
      'local',
      `${address}/32`,
      'dev',
      'lo',
      'table',
      'local',
      'scope',
      'host',
      'src',
      '127.0.0.1',
      'mtu',
      'lock',
      '1500',
      'advmss',
      '1460',
    ])
  } catch {
    return undefined
  }
  t.teardown(async () => {
    await run('ip', ['route', 'del', 'local', `${address}/32`, 'table', 'local']).catch(() => {})
  })
  return address
}

/** Polls until `probe` is true or `ms` passed; returns the last value. */
export async function settle(probe: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    if (await probe()) return true
    if (Date.now() > end) return false
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

/** A request with extra headers merged in (e.g. Authorization). */
export function withHeaders(options: RequestOptions, headers: Record<string, string>): RequestOptions {
  return { ...options, headers: { ...options.headers, ...headers } }
}

/** Pushes one blob (POST + PUT); throws with the status and body on any failure. */
export async function pushBlob(url: string, name: string, content: Buffer, headers: Record<string, string> = {}): Promise<string> {
  const digest = sha256(content)
  const start = await request(url, `/v2/${name}/blobs/uploads/`, { method: 'POST', headers })
  if (start.status !== 202) throw new Error(`POST ${name} upload: ${start.status} ${start.body.toString().slice(0, 300)}`)
  const location = String(start.headers.location).replace(/^https?:\/\/[^/]+/, '')
  const done = await request(url, `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`, {
    method: 'PUT',
    headers: { ...headers, 'Content-Type': 'application/octet-stream' },
    body: content,
  })
  if (done.status !== 201) throw new Error(`PUT ${name} upload: ${done.status} ${done.body.toString().slice(0, 300)}`)
  return digest
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'

/** Pushes config + layers and the manifest under `tag`; returns the manifest digest and its layers. */
export async function pushImage(
  url: string,
  name: string,
  tag: string,
  layers: Buffer[],
  headers: Record<string, string> = {},
): Promise<{ digest: string; layers: string[] }> {
  const config = Buffer.from(
    JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(8).toString('hex') }),
  )
  const configDigest = await pushBlob(url, name, config, headers)
  const layerDigests: string[] = []
  for (const layer of layers) layerDigests.push(await pushBlob(url, name, layer, headers))
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
      layers: layers.map((layer, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigests[i], size: layer.byteLength })),
    }),
  )
  const put = await request(url, `/v2/${name}/manifests/${tag}`, { method: 'PUT', headers: { ...headers, 'Content-Type': OCI_MANIFEST }, body: manifest })
  if (put.status !== 201) throw new Error(`PUT manifest ${name}:${tag}: ${put.status} ${put.body.toString().slice(0, 300)}`)
  return { digest: sha256(manifest), layers: layerDigests }
}

export function describe(response: HttpResponse): string {
  return `${response.status} ${response.body.toString('utf8').slice(0, 200)}`
}

export interface RawResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** node:http request with a chosen source address (loopback has 127.0.0.0/8 to pick from). */
export function requestFrom(
  url: string,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer | string; localAddress?: string; timeoutMs?: number } = {},
): Promise<RawResponse> {
  return import('node:http').then(
    http =>
      new Promise((resolve, reject) => {
        const target = new URL(url)
        const req = http.request(
          {
            host: target.hostname.replace(/^\[|\]$/g, ''),
            port: Number(target.port),
            path,
            method: options.method ?? 'GET',
            headers: { ...options.headers, ...(options.body !== undefined ? { 'content-length': String(Buffer.byteLength(options.body)) } : {}) },
            agent: false,
            ...(options.localAddress ? { localAddress: options.localAddress } : {}),
            timeout: options.timeoutMs ?? 15_000,
          },
          res => {
            const chunks: Buffer[] = []
            res.on('data', chunk => chunks.push(chunk as Buffer))
            res.on('error', reject)
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
          },
        )
        req.on('timeout', () => req.destroy(new Error(`timeout on ${options.method ?? 'GET'} ${path}`)))
        req.on('error', reject)
        req.end(options.body)
      }),
  )
}

/**
 * Writes raw bytes on a fresh TCP connection and collects everything the server sends until it
 * closes the connection or `timeoutMs` passes (then `timedOut` is true). For parser tests that
 * node:http would refuse to send.
 */
export function rawExchange(
  host: string,
  port: number,
  bytes: Buffer | string,
  timeoutMs = 3000,
): Promise<{ text: string; closed: boolean; timedOut: boolean }> {
  return import('node:net').then(
    net =>
      new Promise(resolve => {
        const socket = net.connect({ host, port })
        const chunks: Buffer[] = []
        let done = false
        const finish = (timedOut: boolean) => {
          if (done) return
          done = true
          clearTimeout(timer)
          socket.destroy()
          resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: !timedOut, timedOut })
        }
        const timer = setTimeout(() => finish(true), timeoutMs)
        socket.on('connect', () => socket.write(bytes))
        socket.on('data', chunk => chunks.push(chunk))
        socket.on('error', () => finish(false))
        socket.on('close', () => finish(false))
      }),
  )
}

/** Status codes of every HTTP response found in a raw byte stream (pipelined answers included). */
export function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map(m => Number(m[1]))
}

/**
 * Starts `berth serve --local` with an htpasswd file holding alice:secret, and its internal door
 * (`--internal-listen`) on a free loopback port; returns it and the internal door's URL.
 */
export async function startAuthBerth(
  t: ExecutionContext,
  extraArgs: string[] = [],
): Promise<{ berth: import('../helpers/berth.js').Berth; internal: string; datadir: string }> {
  const { startBerth } = await import('../helpers/berth.js')
  const { run } = await import('../helpers/procs.js')
  const { freePort } = await import('../helpers/pebble.js')
  const dir = await tempDir(t)
  const htpasswd = `${dir}/htpasswd`
  await run('htpasswd', ['-Bbc', htpasswd, 'alice', 'secret'])
  const internal = `127.0.0.1:${await freePort()}`
  const berth = await startBerth({ datadir: `${dir}/datadir`, args: ['--htpasswd', htpasswd, '--internal-listen', internal, ...extraArgs] })
  t.teardown(() => berth.stop())
  return { berth, internal: `http://${internal}`, datadir: `${dir}/datadir` }
}

/** TCP sockets of a process by state (ESTAB, CLOSE-WAIT …), from `ss -tanp`. */
export async function socketStates(pid: number): Promise<Record<string, number>> {
  const { run } = await import('../helpers/procs.js')
  const { stdout } = await run('ss', ['-Htanp'])
  const states: Record<string, number> = {}
  for (const line of stdout.split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue
    const state = line.trim().split(/\s+/)[0]!
    states[state] = (states[state] ?? 0) + 1
  }
  return states
}
