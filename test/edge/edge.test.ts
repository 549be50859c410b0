/**
 * The edge against a tiny recording upstream, driven with curl (what users type) and node sockets
 * (for aborts). The registry-client tests (skopeo, podman, docker-registry upstream) are in
 * registry2-upstream.test.ts.
 */
import test from 'ava'
import type { ExecutionContext } from 'ava'
import { execFile } from 'node:child_process'
import { appendFile, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import net from 'node:net'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import { startEdge } from '../../src/edge/edge.js'
import { EDGE_DEFAULTS, LOCAL_TEST_EDGE } from '../helpers/edge.js'
import type { Edge, EdgeOptions } from '../../src/edge/edge.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { FileCertificateProvider } from '../../src/edge/tls/file-source.js'
import { createLogger } from '../../src/log.js'
import { createTestPki } from '../helpers/tls.js'
import type { TestPki } from '../helpers/tls.js'
import { curl } from './curl.js'
import { startUpstream } from './upstream-fixture.js'
import { waitFor, withDeadline } from '../helpers/procs.js'
import type { Upstream } from './upstream-fixture.js'

const PASSWORD = 'correct horse'
const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64')
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

let pki: TestPki
let root: string
test.before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'berth-edge-'))
  pki = await createTestPki(path.join(root, 'pki'))
})
test.after.always(async () => {
  await rm(root, { recursive: true, force: true })
})

interface Setup {
  edge: Edge
  upstream: Upstream
  logs: string[]
  dir: string
  htpasswd: string
}

async function setup(
  t: ExecutionContext,
  options: Partial<EdgeOptions> & { users?: Record<string, string>; tlsFiles?: { certPath: string; keyPath: string } } = {},
): Promise<Setup> {
  const upstream = await startUpstream()
  const dir = await mkdtemp(path.join(root, 'case-'))
  const htpasswd = path.join(dir, 'htpasswd')
  if (options.users) {
    await writeFile(
      htpasswd,
      Object.entries(options.users)
        .map(([user, password]) => `${user}:${hashPassword(password, 5)}\n`)
        .join(''),
    )
  }
  const logs: string[] = []
  const logger = createLogger({ level: 'debug', write: line => logs.push(line) })
  const mode = options.mode ?? 'https'
  const edge = await startEdge({
    ...EDGE_DEFAULTS,
    host: '127.0.0.1',
    localPort: 0,
    httpPort: 0,
    httpsPort: 0,
    domains: ['localhost'],
    upstream: { url: upstream.url },
    ...(mode === 'https'
      ? { certificate: new FileCertificateProvider({ ...(options.tlsFiles ?? { certPath: pki.certPath, keyPath: pki.keyPath }), pollMs: 100, logger }) }
      : {}),
    ...(options.users ? { htpasswdPath: htpasswd } : {}),
    logger,
    ...options,
    mode,
  })
  t.teardown(async () => {
    await edge.close()
    await upstream.close()
  })
  return { edge, upstream, logs, dir, htpasswd }
}

const tlsArgs = () => ['--cacert', pki.caPath]

test('local mode proxies to the upstream with X-Forwarded-* and X-Real-IP, logging no header values', async t => {
  const { edge, upstream, logs } = await setup(t, { mode: 'local' })
  const url = edge.urls.local!
  const result = await curl([
    `${url}/v2/library/app/manifests/latest?x=1`,
    '-H',
    'x-berth-internal: forged',
    '-H',
    'X-Forwarded-For: 203.0.113.9',
    '-H',
    'Host: registry.example.com',
  ])
  t.is(result.status, 200)
  const seen = upstream.seen[0]!
  t.is(seen.url, '/v2/library/app/manifests/latest?x=1')
  t.is(seen.headers.host, 'registry.example.com')
  t.is(seen.headers['x-forwarded-host'], 'registry.example.com')
  t.is(seen.headers['x-forwarded-proto'], 'http')
  t.is(seen.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.is(seen.headers['x-real-ip'], '127.0.0.1')
  t.is(result.headers['strict-transport-security'], undefined)
  const line = logs.find(entry => entry.includes('INFO  request '))
  t.truthy(line)
  t.regex(line!, /method=GET path=\/v2\/library\/app\/manifests\/latest status=200 bytes=\d+ received=0 ms=\d+ user=- /)
  t.notRegex(logs.join('\n'), /forged/)
})

test('https: HSTS, TLS 1.2 minimum, ALPN http/1.1 only, the full chain served', async t => {
  const { edge } = await setup(t)
  const url = edge.urls.https!
  const result = await curl([...tlsArgs(), `${url}/v2/`])
  t.is(result.status, 200)
  t.is(result.headers['strict-transport-security'], 'max-age=31536000')
  const old = await curl([...tlsArgs(), '--tls-max', '1.1', '--tlsv1.0', `${url}/v2/`])
  t.not(old.exitCode, 0, 'TLS 1.1 must be refused')
  const port = Number(new URL(url).port)
  const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.ca.cert, ALPNProtocols: ['h2', 'http/1.1'] })
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
  t.is(socket.alpnProtocol, 'http/1.1')
  t.true(socket.authorized)
  // Leaf + CA: a client that only knows the root can build the path from what the server sends.
  const chain: string[] = []
  for (let cert = socket.getPeerCertificate(true); cert && !chain.includes(cert.fingerprint256); cert = cert.issuerCertificate) chain.push(cert.fingerprint256)
  t.is(chain.length, 2)
  const cbc = tls.connect({
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    ca: pki.ca.cert,
    maxVersion: 'TLSv1.2',
    ciphers: 'ECDHE-RSA-AES128-SHA256:AES128-SHA',
  })
  await t.throwsAsync(new Promise((resolve, reject) => cbc.once('secureConnect', resolve).once('error', reject)))
  socket.destroy()
  cbc.destroy()
})

test('port 80 redirects to https with path and query: 301 for GET/HEAD, 308 otherwise, only to configured names', async t => {
  const { edge } = await setup(t)
  const httpUrl = edge.urls.http!
  const httpsPort = new URL(edge.urls.https!).port
  const get = await curl(['-H', 'Host: localhost', `${httpUrl}/v2/app/blobs/uploads/?digest=sha256:abc&x=y`])
  t.is(get.status, 301)
  t.is(get.headers.location, `https://localhost:${httpsPort}/v2/app/blobs/uploads/?digest=sha256:abc&x=y`)
  const head = await curl(['-I', '-H', 'Host: localhost:80', `${httpUrl}/v2/`])
  t.is(head.status, 301)
  const post = await curl(['-X', 'POST', '-H', 'Host: localhost', '--data-binary', 'body', `${httpUrl}/v2/app/blobs/uploads/`])
  t.is(post.status, 308)
  const patch = await curl(['-X', 'PATCH', '-H', 'Host: localhost', `${httpUrl}/v2/x`])
  t.is(patch.status, 308)
  const evil = await curl(['-H', 'Host: evil.example', `${httpUrl}/phish`])
  t.is(evil.status, 301)
  t.is(evil.headers.location, `https://localhost:${httpsPort}/phish`)
  // Following the redirect ends at the registry over TLS.
  const followed = await curl([...tlsArgs(), '-L', '-H', 'Host: localhost', `${httpUrl}/v2/`])
  t.is(followed.status, 200)
})

test('ACME HTTP-01 tokens are answered on port 80 from the challenge responder, unknown ones 404', async t => {
  const { edge } = await setup(t, { challenges: { keyAuthorization: token => (token === 'tok_en-1' ? 'tok_en-1.thumbprint' : undefined) } })
  const known = await curl([`${edge.urls.http!}/.well-known/acme-challenge/tok_en-1`])
  t.is(known.status, 200)
  t.is(known.body, 'tok_en-1.thumbprint')
  t.is((await curl([`${edge.urls.http!}/.well-known/acme-challenge/other`])).status, 404)
})

test('without credentials every route and method gets 401 with Basic realm and the OCI UNAUTHORIZED body, HEAD included', async t => {
  const { edge, upstream } = await setup(t, { users: { alice: PASSWORD }, realm: 'My "Registry"' })
  const url = edge.urls.https!
  for (const [method, route] of [
    ['GET', '/v2/'],
    ['HEAD', '/v2/app/manifests/latest'],
    ['POST', '/v2/app/blobs/uploads/'],
    ['PUT', '/v2/app/manifests/1'],
    ['DELETE', '/v2/app/manifests/sha256:00'],
    ['PATCH', '/v2/app/blobs/uploads/x'],
    ['GET', '/anything'],
  ] as const) {
    const result = await curl([...tlsArgs(), ...(method === 'HEAD' ? ['-I'] : ['-X', method]), `${url}${route}`])
    t.is(result.status, 401, `${method} ${route}`)
    t.is(result.headers['www-authenticate'], 'Basic realm="My Registry", charset="UTF-8"')
    t.is(result.headers['docker-distribution-api-version'], 'registry/2.0')
    t.is(result.headers['strict-transport-security'], 'max-age=31536000')
    t.is(result.headers['content-type'], 'application/json; charset=utf-8')
    if (method !== 'HEAD') t.deepEqual(JSON.parse(result.body), { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] })
  }
  const wrong = await curl([...tlsArgs(), '-u', 'alice:nope', `${url}/v2/`])
  t.is(wrong.status, 401)
  const unknown = await curl([...tlsArgs(), '-u', 'bob:nope', `${url}/v2/`])
  t.is(unknown.status, 401)
  t.is(upstream.seen.length, 0, 'nothing unauthenticated reached the upstream')
  const ok = await curl([...tlsArgs(), '-u', `alice:${PASSWORD}`, `${url}/v2/`])
  t.is(ok.status, 200)
  t.is(upstream.seen[0]?.headers.authorization, basic('alice', PASSWORD))
})

test('an upload with Expect: 100-continue and no credentials is refused before the body is sent', async t => {
  const { edge, upstream } = await setup(t, { users: { alice: PASSWORD } })
  const result = await curl(
    [...tlsArgs(), '-v', '-X', 'PATCH', '-H', 'Expect: 100-continue', '--data-binary', '@-', `${edge.urls.https!}/v2/app/blobs/uploads/u`],
    Buffer.alloc(2 * 1024 * 1024),
  )
  t.is(result.status, 401)
  t.notRegex(result.stderr, /Done waiting for 100-continue/, 'curl got its answer instead of timing out and sending the body')
  const authed = await curl(
    [...tlsArgs(), '-u', `alice:${PASSWORD}`, '-X', 'PATCH', '-H', 'Expect: 100-continue', '--data-binary', '@-', `${edge.urls.https!}/v2/app/blobs/uploads/u`],
    Buffer.alloc(2 * 1024 * 1024),
  )
  t.is(authed.status, 200)
  t.is(upstream.seen[0]?.received, 2 * 1024 * 1024)
  t.is(upstream.seen[0]?.headers.expect, undefined)
})

test('an htpasswd file edited while running takes effect; a broken edit keeps the old users', async t => {
  const { edge, htpasswd, logs } = await setup(t, { users: { alice: PASSWORD } })
  const url = edge.urls.https!
  t.is((await curl([...tlsArgs(), '-u', 'bob:builder', `${url}/v2/`])).status, 401)
  // Apache's own tool, the way an admin adds a user.
  await new Promise<void>((resolve, reject) => execFile('htpasswd', ['-bB', htpasswd, 'bob', 'builder'], error => (error ? reject(error) : resolve())))
  await waitFor('bob to log in after being added', async () => (await curl([...tlsArgs(), '-u', 'bob:builder', `${url}/v2/`])).status === 200)
  await appendFile(htpasswd, 'carol:$apr1$abc$defghijklmnopqrstuvwx.\n')
  await waitFor('the broken edit to be logged', async () => logs.some(line => line.includes('htpasswd file not reloaded')))
  t.true(logs.some(line => /htpasswd file not reloaded.*line 3/.test(line)))
  t.is((await curl([...tlsArgs(), '-u', 'bob:builder', `${url}/v2/`])).status, 200, 'old users still work')
})

test('an htpasswd file with a non-bcrypt line is refused at start, naming the line', async t => {
  const dir = await mkdtemp(path.join(root, 'bad-'))
  const file = path.join(dir, 'htpasswd')
  await writeFile(file, `ok:${hashPassword('x', 4)}\nold:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n`)
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  await t.throwsAsync(startEdge({ ...LOCAL_TEST_EDGE, htpasswdPath: file, upstream: { url: upstream.url } }), {
    message: /htpasswd line 2: user "old" has a SHA-1 \(\{SHA\}\) hash/,
  })
})

test('local mode without an htpasswd file is open; creating the file turns auth on', async t => {
  const { edge } = await setup(t, { mode: 'local', htpasswdPath: undefined })
  const dir = await mkdtemp(path.join(root, 'later-'))
  const file = path.join(dir, 'htpasswd')
  const upstream = await startUpstream()
  const laterLogs: string[] = []
  const later = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: file,
    upstream: { url: upstream.url },
    logger: createLogger({ level: 'debug', write: line => laterLogs.push(line) }),
  })
  t.teardown(async () => {
    await later.close()
    await upstream.close()
  })
  t.is((await curl([`${later.urls.local!}/v2/`])).status, 200)
  await writeFile(file, `alice:${hashPassword(PASSWORD, 4)}\n`)
  const status = await waitFor('auth to turn on', async () => {
    const { status } = await curl([`${later.urls.local!}/v2/`])
    return status !== 200 && status
  })
  t.is(status, 401, laterLogs.join('\n'))
  t.is((await curl(['-u', `alice:${PASSWORD}`, `${later.urls.local!}/v2/`])).status, 200)
  t.is((await curl([`${edge.urls.local!}/v2/`])).status, 200)
})

test('repeated failed logins from one address get 429 while another address still logs in', async t => {
  // A slow refill so a loaded test machine cannot hand a token back in the middle of the test.
  const { edge } = await setup(t, { users: { alice: PASSWORD }, loginThrottle: { burst: 10, refillMs: 120_000 } })
  const url = edge.urls.https!
  // All at once: a token is taken before each compare, so exactly the burst (10) gets a bcrypt
  // check however the requests interleave, and the rest are turned away without one.
  const results = await Promise.all(
    Array.from({ length: 14 }, (_, i) => curl([...tlsArgs(), '--interface', '127.0.0.1', '-u', `alice:guess${i}`, `${url}/v2/`])),
  )
  const statuses = results.map(result => result.status).sort((a, b) => a - b)
  t.deepEqual(statuses, [...Array(10).fill(401), ...Array(4).fill(429)])
  const throttled = await curl([...tlsArgs(), '--interface', '127.0.0.1', '-u', 'alice:again', `${url}/v2/`])
  t.truthy(throttled.headers['retry-after'])
  t.is(JSON.parse(throttled.body).errors[0].code, 'TOOMANYREQUESTS')
  // Another address is not affected.
  t.is((await curl([...tlsArgs(), '--interface', '127.0.0.2', '-u', `alice:${PASSWORD}`, `${url}/v2/`])).status, 200)
})

test('a body over the limit: 413 on Content-Length before any byte is read, and on a chunked body that grows past it', async t => {
  const { edge, upstream } = await setup(t, { maxBodyBytes: 1024 * 1024 })
  const url = edge.urls.https!
  const declared = await curl(
    [...tlsArgs(), '-X', 'PUT', '-H', 'Content-Type: application/octet-stream', '--data-binary', '@-', `${url}/v2/app/blobs/uploads/1?digest=sha256:00`],
    Buffer.alloc(1024 * 1024 + 1),
  )
  t.is(declared.status, 413)
  t.is(declared.headers['docker-distribution-api-version'], 'registry/2.0')
  t.is(JSON.parse(declared.body).errors[0].code, 'SIZE_INVALID')
  t.is(upstream.seen.length, 0, 'a declared oversize body never reaches the upstream')

  const chunked = await curl(
    [...tlsArgs(), '-X', 'PATCH', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', `${url}/v2/app/blobs/uploads/2`],
    Buffer.alloc(3 * 1024 * 1024, 1),
  )
  t.is(chunked.status, 413)
  t.is(JSON.parse(chunked.body).errors[0].code, 'SIZE_INVALID')
  await upstream.settled(1)
  const seen = upstream.seen[0]!
  t.false(seen.complete, 'the upstream saw the upload cut off, not a completed body')
  t.true(seen.aborted)
  t.true(seen.received <= 1024 * 1024, `upstream got ${seen.received} bytes, at most the limit`)

  const exact = await curl(
    [...tlsArgs(), '-X', 'PATCH', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', `${url}/v2/app/blobs/uploads/3`],
    Buffer.alloc(1024 * 1024, 2),
  )
  t.is(exact.status, 200)
  t.is(JSON.parse(exact.body).received, 1024 * 1024)
})

test('a down upstream gives 502 with an OCI JSON body, and the edge keeps serving', async t => {
  const { edge, upstream } = await setup(t, { mode: 'local' })
  await upstream.close()
  for (const method of ['GET', 'PATCH']) {
    const result = await curl(['-X', method, ...(method === 'PATCH' ? ['--data-binary', 'abc'] : []), `${edge.urls.local!}/v2/`])
    t.is(result.status, 502)
    t.is(JSON.parse(result.body).errors[0].code, 'UNAVAILABLE')
    t.is(result.headers['docker-distribution-api-version'], 'registry/2.0')
  }
})

test('an upstream closing a kept-alive connection as it is reused: a GET is sent again on a new one, a body upload gets 502', async t => {
  // Each connection answers its first request (keep-alive) and is dropped when a second one comes:
  // the race with an upstream's keep-alive timeout, made certain.
  const requests: string[] = []
  const server = net.createServer(socket => {
    let answered = false
    socket.on('data', data => {
      requests.push(data.toString('latin1').split(' ', 2).join(' '))
      if (answered) return socket.destroy()
      answered = true
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}')
    })
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  const edge = await startEdge({
    ...LOCAL_TEST_EDGE,
    upstream: { url: `http://127.0.0.1:${port}` },
    logger: createLogger({ level: 'error', write: () => {} }),
  })
  t.teardown(async () => {
    await edge.close()
    server.close()
  })
  const url = `${edge.urls.local!}/v2/`
  t.is((await curl([url])).status, 200)
  const again = await curl([url])
  t.is(again.status, 200, 'the GET was sent again on a fresh connection')
  t.deepEqual(requests, ['GET /v2/', 'GET /v2/', 'GET /v2/'], 'once, dropped on the reused connection, once more')
  // A request with a body is not replayed (its bytes are gone): the client gets the 502 and retries.
  const upload = await curl(['-X', 'PATCH', '--data-binary', 'abc', url])
  t.is(upload.status, 502)
  t.is(JSON.parse(upload.body).errors[0].code, 'UNAVAILABLE')
})

function rawRequest(url: string, options: http.RequestOptions): http.ClientRequest {
  const target = new URL(url)
  return (target.protocol === 'https:' ? https : http).request({
    host: target.hostname,
    port: target.port,
    ca: pki.ca.cert,
    servername: 'localhost',
    agent: false,
    ...options,
  })
}

test('a client aborting an upload mid-body aborts the upstream request; nothing stays open', async t => {
  const { edge, upstream } = await setup(t)
  const request = rawRequest(edge.urls.https!, { method: 'PATCH', path: '/v2/app/blobs/uploads/abort', headers: { 'transfer-encoding': 'chunked' } })
  request.on('error', () => {})
  request.write(Buffer.alloc(256 * 1024))
  await waitFor('the upload to reach the upstream', async () => (upstream.seen[0]?.received ?? 0) > 0, { intervalMs: 20 })
  request.destroy()
  await upstream.settled(1)
  t.false(upstream.seen[0]!.complete)
  t.true(upstream.seen[0]!.aborted)
  await waitFor('the upstream socket to close (not left hanging)', async () => (await upstream.connections()) === 0, { intervalMs: 20 })
})

test('a client aborting a download stops the upstream response; nothing stays open', async t => {
  const { edge, upstream } = await setup(t)
  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const request = rawRequest(edge.urls.https!, { method: 'GET', path: '/download/500000000?slow' })
    request.on('response', resolve).on('error', reject).end()
  })
  t.is(response.statusCode, 200)
  await new Promise(resolve => response.once('data', resolve))
  response.destroy()
  await upstream.settled(1)
  const seen = upstream.seen[0]!
  t.true(seen.aborted)
  t.true(seen.sent < 500_000_000, `upstream stopped after ${seen.sent} bytes`)
  const sentAtAbort = seen.sent
  await sleep(300)
  t.is(seen.sent, sentAtAbort, 'the upstream is not writing any more')
  await waitFor('the upstream socket to close', async () => (await upstream.connections()) === 0, { intervalMs: 20 })
})

test('an upstream dying mid-response cuts the client response (curl sees a partial transfer)', async t => {
  const { edge } = await setup(t)
  const result = await curl([...tlsArgs(), '-o', '/dev/null', `${edge.urls.https!}/die-mid-body`])
  t.is(result.exitCode, 18, `curl exit ${result.exitCode}: ${result.stderr}`) // CURLE_PARTIAL_FILE
  t.is((await curl([...tlsArgs(), `${edge.urls.https!}/v2/`])).status, 200, 'the edge keeps serving')
})

test('a large download streams through with its length and content intact', async t => {
  const { edge } = await setup(t)
  const result = await curl([...tlsArgs(), '-o', '/dev/null', '-w', '%{size_download}', `${edge.urls.https!}/download/104857600`])
  t.is(result.exitCode, 0)
  t.true(result.body.endsWith('104857600') || result.headers['content-length'] === '104857600')
})

test('--client-ca: a request without a client certificate gets 400, one with a certificate from the CA passes', async t => {
  const { edge } = await setup(t, { clientCaPath: pki.caPath })
  const url = edge.urls.https!
  const without = await curl([...tlsArgs(), `${url}/v2/`])
  t.is(without.status, 400)
  t.regex(JSON.parse(without.body).errors[0].message, /No required SSL certificate was sent/)
  const other = await createTestPki(path.join(root, 'other-ca'))
  const foreign = await curl([...tlsArgs(), '--cert', other.clientCertPath, '--key', other.clientKeyPath, `${url}/v2/`])
  t.is(foreign.status, 400)
  t.regex(JSON.parse(foreign.body).errors[0].message, /SSL certificate error/)
  const withCert = await curl([...tlsArgs(), '--cert', pki.clientCertPath, '--key', pki.clientKeyPath, `${url}/v2/`])
  t.is(withCert.status, 200)
})

function fingerprint(url: string, ca: string): Promise<string> {
  const target = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: target.hostname, port: Number(target.port), servername: 'localhost', ca }, () => {
      resolve(socket.getPeerCertificate().fingerprint256)
      socket.destroy()
    })
    socket.on('error', reject)
  })
}

test('certificate files replaced while running are served to new connections without dropping open ones; a broken file is logged and the old certificate kept', async t => {
  const dir = await mkdtemp(path.join(root, 'reload-'))
  const certPath = path.join(dir, 'fullchain.pem')
  const keyPath = path.join(dir, 'privkey.pem')
  await copyFile(pki.certPath, certPath)
  await copyFile(pki.keyPath, keyPath)
  const { edge, logs } = await setup(t, { tlsFiles: { certPath, keyPath } })
  const url = edge.urls.https!
  const before = await fingerprint(url, pki.ca.cert)
  t.is(before, new X509Certificate(await readFile(pki.certPath)).fingerprint256)

  // An open keep-alive connection that must survive the swap.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca.cert })
  t.teardown(() => agent.destroy())
  const get = () =>
    new Promise<{ status: number; socket: unknown }>((resolve, reject) => {
      const target = new URL(url)
      https
        .get({ host: target.hostname, port: target.port, path: '/v2/', agent, servername: 'localhost' }, response => {
          response.resume()
          response.on('end', () => resolve({ status: response.statusCode ?? 0, socket: response.socket }))
        })
        .on('error', reject)
    })
  const first = await get()

  const renewed = await createTestPki(path.join(dir, 'renewed'))
  await writeFile(keyPath, await readFile(renewed.keyPath))
  await writeFile(certPath, await readFile(renewed.certPath))
  const after = await waitFor('the new certificate to be served', async () => {
    const served = await fingerprint(url, renewed.ca.cert).catch(() => before)
    return served !== before && served
  })
  t.is(after, new X509Certificate(await readFile(renewed.certPath)).fingerprint256)
  const second = await get()
  t.is(second.status, 200)
  t.is(second.socket, first.socket, 'the open connection kept going on its old certificate')

  await writeFile(certPath, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n')
  await waitFor('the broken certificate file to be logged', async () => logs.some(line => line.includes('new TLS certificate not loaded')))
  t.is(await fingerprint(url, renewed.ca.cert), after, 'still serving the last good certificate')
})

test('SIGHUP reloads the certificate files', async t => {
  const dir = await mkdtemp(path.join(root, 'hup-'))
  const certPath = path.join(dir, 'fullchain.pem')
  const keyPath = path.join(dir, 'privkey.pem')
  await copyFile(pki.certPath, certPath)
  await copyFile(pki.keyPath, keyPath)
  const { edge, logs } = await setup(t, { tlsFiles: { certPath, keyPath }, certificate: new FileCertificateProvider({ certPath, keyPath, pollMs: 3_600_000 }) })
  const renewed = await createTestPki(path.join(dir, 'renewed'))
  await writeFile(keyPath, await readFile(renewed.keyPath))
  await writeFile(certPath, await readFile(renewed.certPath))
  process.kill(process.pid, 'SIGHUP')
  await waitFor('the reloaded certificate to be in service', async () => logs.some(line => line.includes('TLS certificate in service')), { intervalMs: 50 })
  t.is(await fingerprint(edge.urls.https!, renewed.ca.cert), new X509Certificate(await readFile(renewed.certPath)).fingerprint256)
})

test.serial('a stalled upload is ended by the idle timeout (no total timeout), and the upstream sees the abort', async t => {
  const { edge, upstream } = await setup(t, { mode: 'local', idleTimeoutMs: 2500 })
  const target = new URL(edge.urls.local!)
  const request = http.request({
    host: target.hostname,
    port: target.port,
    method: 'PATCH',
    path: '/v2/app/blobs/uploads/slow',
    agent: false,
    headers: { 'transfer-encoding': 'chunked' },
  })
  const closed = new Promise<void>(resolve => request.on('error', () => resolve()).on('close', () => resolve()))
  // Steady progress for longer than the idle limit keeps the upload alive...
  for (let i = 0; i < 30; i++) {
    request.write(Buffer.alloc(1024))
    await sleep(100)
  }
  t.false(request.destroyed, 'an upload that keeps moving is not cut')
  // ...then silence: the idle timeout (not a total one) ends it, 2.5 s after the last byte.
  const started = Date.now()
  await withDeadline(closed, 30_000, 'the stalled upload was not ended by the idle timeout')
  t.true(Date.now() - started >= 2000, `closed ${Date.now() - started} ms after the last byte, before the idle timeout`)
  await upstream.settled(1)
  t.true(upstream.seen[0]!.aborted)
  t.false(upstream.seen[0]!.complete)
})

test('an upstream that answers before reading the whole upload (404 upload unknown) gets its answer to the client intact', async t => {
  const { edge } = await setup(t)
  for (let i = 0; i < 3; i++) {
    const result = await curl(
      [...tlsArgs(), '-X', 'PATCH', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', `${edge.urls.https!}/early-reject`],
      Buffer.alloc(32 * 1024 * 1024, 3),
    )
    t.is(result.status, 404, result.stderr)
    t.is(JSON.parse(result.body).errors[0].code, 'BLOB_UPLOAD_UNKNOWN')
  }
})

test.serial('backpressure: when the upstream stops reading, the edge stops reading the client (nothing piles up in memory)', async t => {
  // A paused socket does not see its peer leave (nothing reads it), so the idle timeout is what ends
  // an upload that is both stalled upstream and abandoned by the client; keep it short here.
  const { edge, upstream, logs } = await setup(t, { idleTimeoutMs: 3000 })
  const target = new URL(edge.urls.https!)
  const request = https.request({
    host: target.hostname,
    port: target.port,
    method: 'PATCH',
    path: '/stall-read',
    ca: pki.ca.cert,
    servername: 'localhost',
    agent: false,
    headers: { 'transfer-encoding': 'chunked' },
  })
  request.on('error', () => {})
  const total = 512 * 1024 * 1024
  const chunk = Buffer.alloc(1024 * 1024)
  let written = 0
  const pump = () => {
    while (written < total) {
      written += chunk.length
      if (!request.write(chunk)) return void request.once('drain', pump)
    }
  }
  pump()
  let previous = -1
  // Wait until the client cannot write any more (all buffers on the way are full).
  for (let i = 0; i < 40 && written !== previous; i++) {
    previous = written
    await sleep(250)
  }
  const upstreamGot = upstream.seen[0]?.received ?? 0
  t.log(`client wrote ${(written / 1048576).toFixed(0)} MiB, upstream read ${(upstreamGot / 1048576).toFixed(1)} MiB before everything stalled`)
  t.true(written < 64 * 1024 * 1024, `the client could push ${written} bytes into a stalled upload`)
  request.destroy()
  // The edge notices the abandoned upload by its idle timeout (its access log line, aborted) and destroys
  // the upstream request; the upstream sees that as soon as it reads again.
  await waitFor('the edge to end the abandoned upload', async () => logs.some(line => /request method=PATCH path=\/stall-read .*aborted=true/.test(line)))
  upstream.resumeStalled()
  await upstream.settled(1)
  t.true(upstream.seen[0]!.aborted)
  t.false(upstream.seen[0]!.complete)
})

test.serial('slowloris: a client dribbling its headers is cut off after the headers timeout', async t => {
  const { edge, upstream } = await setup(t, { mode: 'local', headersTimeoutMs: 1000 })
  const target = new URL(edge.urls.local!)
  const socket = net.connect(Number(target.port), target.hostname)
  let answer = ''
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString()))
  const closed = new Promise<void>(resolve => socket.on('close', () => resolve()))
  socket.on('error', () => {})
  socket.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\n')
  const started = Date.now()
  const dribble = setInterval(() => socket.writable && socket.write(`X-Slow-${Date.now()}: 1\r\n`), 200)
  // Without the headers timeout the dribble keeps the connection open (Node's own default is 60 s).
  await withDeadline(closed, 20_000, 'the dribbling client was not cut off').finally(() => clearInterval(dribble))
  const elapsed = Date.now() - started
  t.true(elapsed >= 900, `closed after ${elapsed} ms, before the headers timeout`)
  t.regex(answer, /^HTTP\/1\.1 408/)
  t.is(upstream.seen.length, 0)
})

/** Resolves with how long `socket` stayed open (ms), or rejects after `deadlineMs`. */
function openFor(socket: net.Socket, deadlineMs: number): Promise<number> {
  const started = Date.now()
  socket.on('error', () => {})
  return withDeadline(new Promise<number>(resolve => socket.on('close', () => resolve(Date.now() - started))), deadlineMs, 'the connection was not closed')
}

test.serial('HTTPS: a TCP connection that never starts its TLS handshake is closed after the handshake timeout', async t => {
  const { edge } = await setup(t, { handshakeTimeoutMs: 500 })
  const target = new URL(edge.urls.https!)
  const elapsed = await openFor(net.connect(Number(target.port), target.hostname), 10_000)
  t.true(elapsed >= 400 && elapsed < 5000, `closed after ${elapsed} ms`)
})

test.serial('HTTPS: a connection silent after its handshake, or dribbling headers, is closed after the headers timeout', async t => {
  const { edge, upstream } = await setup(t, { headersTimeoutMs: 1000 })
  const target = new URL(edge.urls.https!)
  const connect = () =>
    new Promise<tls.TLSSocket>((resolve, reject) => {
      const socket = tls.connect({ port: Number(target.port), host: target.hostname, ca: pki.ca.cert, servername: 'localhost' }, () => resolve(socket))
      socket.once('error', reject)
    })
  const silent = await connect()
  const partial = await connect()
  let answer = ''
  partial.on('data', (chunk: Buffer) => (answer += chunk.toString()))
  partial.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\n')
  const [silentMs, partialMs] = await Promise.all([openFor(silent, 15_000), openFor(partial, 15_000)])
  t.true(silentMs >= 900, `silent connection closed after ${silentMs} ms`)
  t.true(partialMs >= 900, `partial request closed after ${partialMs} ms`)
  t.regex(answer, /^HTTP\/1\.1 408/)
  t.is(upstream.seen.length, 0)
})

test.serial('connection limits: beyond the per-address limit a connection is closed at once; beyond the total it is answered 503', async t => {
  const { edge } = await setup(t, { mode: 'local', connectionLimits: { maxConnections: 3, maxConnectionsPerAddress: 2 } })
  const target = new URL(edge.urls.local!)
  const port = Number(target.port)
  const held: net.Socket[] = []
  t.teardown(() => held.forEach(socket => socket.destroy()))
  const connect = (localAddress: string) =>
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(socket))
      socket.once('error', reject)
      held.push(socket)
    })
  await connect('127.0.0.5')
  await connect('127.0.0.5')
  const third = await connect('127.0.0.5')
  t.true((await openFor(third, 5000)) < 2000)
  // The total: 127.0.0.6 takes the third place; the next connection, from anywhere, gets 503.
  await connect('127.0.0.6')
  const refused = await connect('127.0.0.7')
  let answer = ''
  refused.on('data', (chunk: Buffer) => (answer += chunk.toString()))
  refused.write('GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n')
  await openFor(refused, 5000)
  t.regex(answer, /^HTTP\/1\.1 503 /)
  t.regex(answer, /\r\nRetry-After: 5\r\n/i)
  t.regex(answer, /"code":"UNAVAILABLE"/)
  // Once connections close, new ones are served again.
  held.splice(0).forEach(socket => socket.destroy())
  await sleep(200)
  const result = await curl([`${edge.urls.local}/v2/`])
  t.is(result.status, 200)
})

test.serial('connection limits apply on the HTTPS door: a refused TLS connection reads its 503', async t => {
  const { edge } = await setup(t, { connectionLimits: { maxConnections: 1, maxConnectionsPerAddress: 5 } })
  const target = new URL(edge.urls.https!)
  const first = net.connect(Number(target.port), '127.0.0.1')
  first.on('error', () => {})
  t.teardown(() => first.destroy())
  await new Promise(resolve => first.once('connect', resolve))
  const result = await curl([`${edge.urls.https}/v2/`, ...tlsArgs()])
  t.is(result.status, 503)
  t.is(result.headers['retry-after'], '5')
})
