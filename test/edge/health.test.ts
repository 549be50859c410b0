/**
 * /livez and /readyz on every door, without credentials, logged at debug only; the request id in
 * answers and log lines; the access log's counts of the bodies Berth writes itself; a client that
 * leaves a download early is an `aborted` access line, not an error.
 */
import test from 'ava'
import type { ExecutionContext } from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { startEdge, type EdgeOptions } from '../../src/edge/edge.js'
import { FileCertificateProvider } from '../../src/edge/tls/file-source.js'
import type { ReadinessCheck } from '../../src/health.js'
import { createLogger } from '../../src/log.js'
import { createRegistryApp } from '../../src/registry/app.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { EDGE_DEFAULTS } from '../helpers/edge.js'
import { request } from '../helpers/http.js'
import { waitFor } from '../helpers/procs.js'
import { createTestPki, type TestPki } from '../helpers/tls.js'
import { curl } from './curl.js'
import { startUpstream } from './upstream-fixture.js'

const CREDS = 'Basic ' + Buffer.from('ci:ci-password').toString('base64')
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

let root: string
let pki: TestPki
test.before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'berth-health-'))
  pki = await createTestPki(path.join(root, 'pki'))
  await writeFile(path.join(root, 'htpasswd'), `ci:${hashPassword('ci-password', 5)}\n`)
})
test.after.always(async () => {
  await rm(root, { recursive: true, force: true })
})

/** A check whose answer the test sets. */
function settable(name: string): ReadinessCheck & { value: string | undefined } {
  return {
    name,
    value: undefined,
    failure() {
      return this.value
    },
  }
}

async function engineEdge(t: ExecutionContext, options: Partial<EdgeOptions> = {}, driver: StorageDriver = new InMemoryDriver()) {
  const logs: string[] = []
  const logger = createLogger({ level: 'debug', write: line => logs.push(line) })
  const app = createRegistryApp({ driver, logger })
  const edge = await startEdge({
    ...EDGE_DEFAULTS,
    mode: 'local',
    host: '127.0.0.1',
    localPort: 0,
    domains: [],
    htpasswdPath: path.join(root, 'htpasswd'),
    internalListen: { port: 0, host: '127.0.0.1' },
    engine: app.serve,
    logger,
    ...options,
  })
  t.teardown(async () => {
    await edge.close()
    await app.close()
  })
  return { edge, logs }
}

test('local and internal doors: /livez and /readyz answer without credentials, HEAD too, other methods 405; logged at debug only', async t => {
  const storage = settable('storage')
  const { edge, logs } = await engineEdge(t, { readiness: { checks: [storage], probeIntervalMs: 1000, probeTimeoutMs: 1000 } })
  for (const url of [edge.urls.local!, edge.urls.internal!]) {
    const live = await request(url, '/livez')
    t.is(live.status, 200)
    t.deepEqual(live.json, { status: 'alive' })
    t.is(live.headers['cache-control'], 'no-store')
    const ready = await request(url, '/readyz')
    t.is(ready.status, 200)
    t.deepEqual(ready.json, { status: 'ready' })
    t.is((await request(url, '/readyz', { method: 'HEAD' })).status, 200)
    const post = await request(url, '/readyz', { method: 'POST' })
    t.is(post.status, 405)
    t.is(post.headers.allow, 'GET, HEAD')
    t.is((await request(url, '/v2/')).status, 401, 'everything else still needs a login')
  }
  storage.value = 'not writable'
  const down = await request(edge.urls.local!, '/readyz')
  t.is(down.status, 503)
  t.deepEqual(down.json, { status: 'not ready', failed: { storage: 'not writable' } })
  t.is((await request(edge.urls.local!, '/livez')).status, 200, 'the process still serves')
  storage.value = undefined
  t.is((await request(edge.urls.local!, '/readyz')).status, 200)

  await waitFor('the access lines', async () => logs.filter(line => / request .*path=\/(livez|readyz)/.test(line)).length >= 11 || undefined)
  const probeLines = logs.filter(line => / request .*path=\/(livez|readyz)/.test(line))
  t.true(
    probeLines.every(line => line.includes(' DEBUG ')),
    probeLines.find(line => !line.includes(' DEBUG ')),
  )
  t.true(logs.some(line => line.includes(' INFO  request ') && line.includes('path=/v2/')))
})

test('X-Request-Id: returned on every answer, a sane client id kept, any other replaced; the access line carries it', async t => {
  const { edge, logs } = await engineEdge(t)
  const url = edge.urls.local!
  const fresh = await request(url, '/v2/')
  t.regex(String(fresh.headers['x-request-id']), UUID)
  const kept = await request(url, '/v2/', { headers: { 'X-Request-Id': 'front-proxy:42.a_b' } })
  t.is(kept.headers['x-request-id'], 'front-proxy:42.a_b')
  const insane = await request(url, '/v2/', { headers: { 'X-Request-Id': 'two words' } })
  t.regex(String(insane.headers['x-request-id']), UUID)
  t.regex(String((await request(url, '/readyz')).headers['x-request-id']), UUID)
  await waitFor('the access line', async () => logs.find(line => line.includes('id=front-proxy:42.a_b')))
  t.regex(
    logs.find(line => line.includes('id=front-proxy:42.a_b'))!,
    /INFO {2}request method=GET path=\/v2\/ status=401 /,
  )
})

test('the access log counts the bodies Berth writes itself: 401 and 413', async t => {
  const { edge, logs } = await engineEdge(t, { maxBodyBytes: 1024 })
  const url = edge.urls.local!
  const denied = await request(url, '/v2/', { headers: { 'X-Request-Id': 'denied-1' } })
  t.is(denied.status, 401)
  t.true(denied.body.byteLength > 0)
  const large = await request(url, '/v2/app/blobs/uploads/', {
    method: 'POST',
    headers: { 'X-Request-Id': 'large-1', Authorization: CREDS },
    body: Buffer.alloc(2048),
  })
  t.is(large.status, 413)
  const line = (id: string) => waitFor(`the access line of ${id}`, async () => logs.find(entry => entry.includes(`id=${id}`)))
  t.regex(await line('denied-1'), new RegExp(`status=401 bytes=${denied.body.byteLength} `))
  t.regex(await line('large-1'), new RegExp(`status=413 bytes=${large.body.byteLength} `))
})

test('a client that closes a blob download early is an aborted access line at info, never an error', async t => {
  // The filesystem driver: it reads a blob in chunks, as in production.
  const { edge, logs } = await engineEdge(t, {}, new FilesystemDriver(await mkdtemp(path.join(root, 'data-'))))
  const url = edge.urls.local!
  // Larger than what loopback socket buffers hold, so the answer cannot finish without the client.
  const blob = randomBytes(64 * 1024 * 1024)
  const digest = 'sha256:' + createHash('sha256').update(blob).digest('hex')
  const pushed = await request(url, `/v2/app/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { Authorization: CREDS }, body: blob })
  t.is(pushed.status, 201)
  const target = new URL(url)
  // A raw socket: it stops reading from the kernel when paused, then leaves.
  const socket = net.connect(Number(target.port), target.hostname)
  socket.write(`GET /v2/app/blobs/${digest} HTTP/1.1\r\nHost: x\r\nAuthorization: ${CREDS}\r\nX-Request-Id: leaves-early\r\n\r\n`)
  await new Promise(resolve => socket.once('data', resolve))
  socket.pause()
  await new Promise(resolve => setTimeout(resolve, 100))
  socket.destroy()
  const line = await waitFor('the access line', async () => logs.find(entry => entry.includes('id=leaves-early')))
  t.regex(line, /INFO {2}request method=GET .* status=200 .*aborted=true/)
  await new Promise(resolve => setTimeout(resolve, 200))
  t.deepEqual(
    logs.filter(entry => / (ERROR|WARN) /.test(entry)),
    [],
  )
})

test('https and port 80: /readyz before the client-certificate check and before the redirect; the refusal names the missing certificate and the request id', async t => {
  const logs: string[] = []
  const logger = createLogger({ level: 'debug', write: line => logs.push(line) })
  const upstream = await startUpstream()
  const edge = await startEdge({
    ...EDGE_DEFAULTS,
    mode: 'https',
    host: '127.0.0.1',
    httpPort: 0,
    httpsPort: 0,
    domains: ['localhost'],
    certificate: new FileCertificateProvider({ certPath: pki.certPath, keyPath: pki.keyPath, logger }),
    clientCaPath: pki.caPath,
    htpasswdPath: path.join(root, 'htpasswd'),
    upstream: { url: upstream.url },
    readiness: { probeIntervalMs: 200, probeTimeoutMs: 1000 },
    logger,
  })
  t.teardown(async () => {
    await edge.close()
    await upstream.close()
  })
  const https = edge.urls.https!
  const ready = await curl(['--cacert', pki.caPath, `${https}/readyz`])
  t.is(ready.status, 200, ready.body)
  t.deepEqual(JSON.parse(ready.body), { status: 'ready' })
  t.is(ready.headers['strict-transport-security'], 'max-age=31536000')
  const port80 = await request(edge.urls.http!, '/readyz')
  t.is(port80.status, 200)
  t.is((await request(edge.urls.http!, '/livez')).status, 200)
  t.is((await request(edge.urls.http!, '/v2/')).status, 301, 'everything else is still redirected')

  const refused = await curl(['--cacert', pki.caPath, '-H', 'X-Request-Id: no-cert-1', `${https}/v2/`])
  t.is(refused.status, 400)
  t.is(refused.headers['x-request-id'], 'no-cert-1')
  const line = await waitFor('the refusal', async () => logs.find(entry => entry.includes('client certificate refused')))
  t.regex(line, /WARN {2}client certificate refused .*reason="no client certificate sent" .*id=no-cert-1/)

  // --upstream: ready while the upstream answers.
  await upstream.close()
  await waitFor('/readyz to turn 503', async () => (await request(edge.urls.http!, '/readyz')).status === 503 || undefined)
  t.deepEqual((await request(edge.urls.http!, '/readyz')).json, { status: 'not ready', failed: { upstream: 'not answering' } })
})
