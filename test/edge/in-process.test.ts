/**
 * The edge handing requests to Berth's own engine in this process (`startEdge({ ...EDGE_DEFAULTS, engine })`, as
 * server.ts wires it): the edge's duties must hold without the loopback proxy in between — the body
 * limit (Content-Length and chunked), the internal-secret header (a client cannot forge it), the
 * X-Forwarded-* headers the engine sees, a client abort mid-upload, and HSTS on HTTPS.
 */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import http from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startEdge } from '../../src/edge/edge.js'
import { HTTPS_TEST_EDGE, LOCAL_TEST_EDGE } from '../helpers/edge.js'
import type { Edge } from '../../src/edge/edge.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { FileCertificateProvider } from '../../src/edge/tls/file-source.js'
import { silentLogger } from '../../src/log.js'
import { createRegistryApp } from '../../src/registry/app.js'
import type { RegistryApp } from '../../src/registry/app.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { createTestPki } from '../helpers/tls.js'
import { curl, startUpload, uploadedBytes } from './curl.js'
import { waitFor, withDeadline } from '../helpers/procs.js'

const CREDS = 'ci:ci-password'
// Above the filesystem driver's write buffer (256 KiB), so a refused or aborted chunk has really reached
// the disk and must be cut back (with a smaller limit it would only be dropped from memory).
const LIMIT = 4 * 1024 * 1024
const sha256 = (bytes: Uint8Array) => 'sha256:' + createHash('sha256').update(bytes).digest('hex')

let root: string
let app: RegistryApp
let edge: Edge
let base: string
/** Headers of the requests the engine was handed, in order (the engine's own view). */
const seen: IncomingHttpHeaders[] = []

/** A PATCH of an upload through a raw request, for tests that control how (or whether) the body is sent. */
function rawPatch(target: URL, headers: Record<string, string>): http.ClientRequest {
  return http.request({
    host: target.hostname,
    port: target.port,
    path: target.pathname,
    method: 'PATCH',
    agent: false,
    headers: { authorization: 'Basic ' + Buffer.from(CREDS).toString('base64'), 'content-type': 'application/octet-stream', ...headers },
  })
}

test.before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'berth-edge-inprocess-'))
  app = createRegistryApp({ driver: new FilesystemDriver(path.join(root, 'data')) })
  const htpasswd = path.join(root, 'htpasswd')
  await writeFile(htpasswd, `ci:${hashPassword('ci-password', 5)}\n`)
  edge = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: htpasswd,
    maxBodyBytes: LIMIT,
    logger: silentLogger,
    engine: exchange => {
      seen.push({ ...exchange.req.headers, 'exchange-remote': exchange.remote, 'exchange-door': exchange.door })
      return app.serve(exchange)
    },
  })
  base = edge.urls.local!
})

test.after.always(async () => {
  await edge?.close()
  await app?.close()
  if (root) await rm(root, { recursive: true, force: true })
})

/** GETs a blob, hashing it as it streams (never held whole). */
function readBlob(url: string): Promise<{ status: number; digest: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false, headers: { authorization: 'Basic ' + Buffer.from(CREDS).toString('base64') } }, response => {
        const hash = createHash('sha256')
        let bytes = 0
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length
          hash.update(chunk)
        })
        response.on('end', () => resolve({ status: response.statusCode ?? 0, digest: 'sha256:' + hash.digest('hex'), bytes }))
        response.on('error', reject)
      })
      .on('error', reject)
  })
}

/** Polls the upload's size until it is `expected` (30 s deadline); every size seen, the last one last. */
async function sizesUntil(location: string, expected: number): Promise<number[]> {
  const sizes: number[] = []
  await waitFor(
    `the upload to hold ${expected} bytes`,
    async () => {
      sizes.push(await uploadedBytes(CREDS, location))
      return sizes.at(-1) === expected
    },
    { intervalMs: 50 },
  ).catch(() => {})
  return sizes
}

async function patch(location: string, body: Buffer): Promise<number> {
  const result = await curl(['-u', CREDS, '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '--data-binary', '@-', location], body)
  return result.status
}

test.serial('a chunked PATCH past the limit gets 413 (OCI JSON); the upload keeps exactly its earlier bytes and completes with them', async t => {
  const location = await startUpload(base, CREDS, 'limit/chunked')
  const first = randomBytes(300 * 1024)
  t.is(await patch(location, first), 202)
  t.is(await uploadedBytes(CREDS, location), first.length)

  const tooBig = randomBytes(3 * LIMIT)
  const refused = await curl(
    ['-u', CREDS, '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', location],
    tooBig,
  )
  t.is(refused.status, 413)
  t.regex(refused.headers['content-type'] ?? '', /application\/json/)
  t.is(JSON.parse(refused.body).errors[0].code, 'SIZE_INVALID')

  // The engine cuts the refused chunk back asynchronously after its read fails.
  const kept = (await sizesUntil(location, first.length)).at(-1)
  t.is(kept, first.length, `the upload holds ${kept} bytes, it held ${first.length} before the refused PATCH`)

  const digest = sha256(first)
  const put = await curl(['-u', CREDS, '-X', 'PUT', `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`])
  t.is(put.status, 201, put.body)
  t.is(put.headers['docker-content-digest'], digest)
  const blob = await readBlob(`${base}/v2/limit/chunked/blobs/${digest}`)
  t.is(blob.status, 200)
  t.is(blob.digest, digest)
  t.is(blob.bytes, first.length)
  t.is(await curl(['-u', CREDS, '-I', `${base}/v2/limit/chunked/blobs/${sha256(tooBig)}`]).then(r => r.status), 404)
})

test.serial('a Content-Length over the limit gets 413 before any body is read or the engine is called', async t => {
  const location = await startUpload(base, CREDS, 'limit/declared')
  const before = seen.length
  // A raw request that declares a large body and sends none: the answer must come without it.
  const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const target = new URL(location)
    const request = rawPatch(target, { 'content-length': String(LIMIT + 1) })
    const timer = setTimeout(() => reject(new Error('no answer without the body')), 30_000)
    request.on('response', response => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', chunk => (body += chunk))
      response.on('end', () => {
        clearTimeout(timer)
        resolve({ status: response.statusCode ?? 0, body })
      })
    })
    request.on('error', error => {
      clearTimeout(timer)
      reject(error)
    })
    request.flushHeaders()
  })
  t.is(answer.status, 413)
  t.is(JSON.parse(answer.body).errors[0].code, 'SIZE_INVALID')
  t.is(seen.length, before, 'the engine was not handed the request')
  t.is(await uploadedBytes(CREDS, location), 0)
})

test.serial('unauthenticated requests never reach the engine, whatever headers they carry', async t => {
  const before = seen.length
  const forged = await curl(['-H', 'x-berth-internal: guess', `${base}/v2/`])
  t.is(forged.status, 401)
  t.truthy(forged.headers['www-authenticate'])
  const forgedCatalog = await curl(['-H', 'X-Forwarded-User: ci', `${base}/v2/_catalog`])
  t.is(forgedCatalog.status, 401)
  t.is(seen.length, before, 'unauthenticated requests never reach the engine')
  t.is((await curl(['-u', CREDS, `${base}/v2/`])).status, 200)
})

test.serial('the engine takes the client address and the door from the connection, never from forged X-Forwarded-* headers', async t => {
  const result = await curl([
    '-u',
    CREDS,
    '-H',
    'X-Forwarded-Proto: https',
    '-H',
    'X-Forwarded-Host: evil.example',
    '-H',
    'X-Real-IP: 203.0.113.9',
    '-H',
    'X-Forwarded-For: 203.0.113.9',
    `${base}/v2/`,
  ])
  t.is(result.status, 200)
  const headers = seen.at(-1)!
  t.is(headers['exchange-door'], 'local', 'the edge is plain HTTP in local mode')
  t.is(headers['exchange-remote'], '127.0.0.1')
  // And what a client sees of it: upload Locations stay relative, whatever was forged.
  const started = await curl([
    '-u',
    CREDS,
    '-X',
    'POST',
    '-H',
    'X-Forwarded-Host: evil.example',
    '-H',
    'X-Forwarded-Proto: https',
    `${base}/v2/fwd/blobs/uploads/`,
  ])
  t.is(started.status, 202)
  t.regex(started.headers.location ?? '', /^\/v2\/fwd\/blobs\/uploads\//)
})

test.serial('a client that aborts mid-PATCH: the server keeps serving and the upload keeps its earlier bytes and completes', async t => {
  const location = await startUpload(base, CREDS, 'abort/one')
  const first = randomBytes(100 * 1024)
  t.is(await patch(location, first), 202)
  const target = new URL(location)
  const request = rawPatch(target, { 'transfer-encoding': 'chunked' })
  request.on('error', () => {})
  request.write(randomBytes(3 * 1024 * 1024))
  // The status of an upload with a chunk in flight shows the bytes written so far (as registry:2
  // does); more than before proves the abort below has written bytes to cut back.
  const during = await waitFor(
    'bytes of the chunk in flight to reach the upload',
    async () => {
      const bytes = await uploadedBytes(CREDS, location)
      return bytes > first.length && bytes
    },
    { intervalMs: 20 },
  ).catch(() => first.length)
  t.true(during > first.length, `during the chunk the upload holds ${during} bytes`)
  request.destroy()

  // The session must return to its earlier size (the engine cuts back the unfinished chunk).
  const sizes = await sizesUntil(location, first.length)
  const kept = sizes.at(-1)
  t.log(`upload sizes seen after the abort: ${sizes.join(', ')}`)
  t.is(kept, first.length, `after the abort the upload holds ${kept} bytes; it held ${first.length} before`)
  t.is((await curl(['-u', CREDS, `${base}/v2/`])).status, 200, 'the server keeps serving')

  const second = randomBytes(50 * 1024)
  t.is(await patch(location, second), 202, 'the upload is resumable')
  const whole = Buffer.concat([first, second])
  const put = await curl(['-u', CREDS, '-X', 'PUT', `${location}?digest=${sha256(whole)}`])
  t.is(put.status, 201, put.body)
})

test.serial("HTTPS served in process carries HSTS, on engine answers and on the edge's own 401/413", async t => {
  const pki = await createTestPki(path.join(root, 'pki'))
  const secure = await startEdge({
    ...HTTPS_TEST_EDGE,
    certificate: new FileCertificateProvider({ certPath: pki.certPath, keyPath: pki.keyPath, pollMs: 100, logger: silentLogger }),
    htpasswdPath: path.join(root, 'htpasswd'),
    maxBodyBytes: LIMIT,
    logger: silentLogger,
    engine: app.serve,
  })
  t.teardown(() => secure.close())
  const url = secure.urls.https!
  const engineAnswer = await curl(['--cacert', pki.caPath, '-u', CREDS, `${url}/v2/`])
  t.is(engineAnswer.status, 200)
  t.is(engineAnswer.headers['strict-transport-security'], 'max-age=31536000')
  const missing = await curl(['--cacert', pki.caPath, '-u', CREDS, `${url}/v2/hsts/blobs/${sha256(Buffer.from('x'))}`])
  t.is(missing.status, 404)
  t.is(missing.headers['strict-transport-security'], 'max-age=31536000')
  const unauthorized = await curl(['--cacert', pki.caPath, `${url}/v2/`])
  t.is(unauthorized.status, 401)
  t.is(unauthorized.headers['strict-transport-security'], 'max-age=31536000')
  const started = await curl(['--cacert', pki.caPath, '-u', CREDS, '-X', 'POST', `${url}/v2/hsts/blobs/uploads/`])
  t.is(started.status, 202)
  const tooBig = await curl(
    ['--cacert', pki.caPath, '-u', CREDS, '-X', 'PATCH', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', `${url}${started.headers.location}`],
    randomBytes(2 * LIMIT),
  )
  t.is(tooBig.status, 413)
  t.is(tooBig.headers['strict-transport-security'], 'max-age=31536000')
})

test.serial('a PATCH whose client stalls past the idle timeout: the chunk is cut back, the upload keeps its earlier bytes', async t => {
  const stalling = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: path.join(root, 'htpasswd'),
    maxBodyBytes: LIMIT,
    // Long enough that the status check below sees the stalled chunk's bytes before the cut, even on a loaded machine.
    idleTimeoutMs: 3000,
    logger: silentLogger,
    engine: app.serve,
  })
  t.teardown(() => stalling.close())
  const url = stalling.urls.local!
  const started = await curl(['-u', CREDS, '-X', 'POST', `${url}/v2/stall/blobs/uploads/`])
  t.is(started.status, 202)
  const location = `${url}${started.headers.location}`
  const first = randomBytes(64 * 1024)
  t.is(await patch(location, first), 202)
  const target = new URL(location)
  const closed = new Promise<void>(resolve => {
    const request = rawPatch(target, { 'transfer-encoding': 'chunked' })
    request.on('error', () => resolve())
    request.on('close', () => resolve())
    request.write(randomBytes(3 * 1024 * 1024))
    // …and then nothing: the edge's idle timeout closes the connection.
  })
  const during = await waitFor(
    'bytes of the stalled chunk to reach the upload',
    async () => {
      const bytes = await uploadedBytes(CREDS, location)
      return bytes > first.length && bytes
    },
    { intervalMs: 20 },
  ).catch(() => first.length)
  t.true(during > first.length, `during the stalled chunk the upload holds ${during} bytes`)
  await withDeadline(closed, 30_000, 'the idle timeout did not close the stalled PATCH')
  const sizes = await sizesUntil(location, first.length)
  t.log(`upload sizes seen after the idle timeout: ${sizes.join(', ')}`)
  t.is(sizes.at(-1), first.length, `upload sizes seen after the timeout: ${sizes.join(', ')}; it held ${first.length} before`)
  const put = await curl(['-u', CREDS, '-X', 'PUT', `${location}?digest=${sha256(first)}`])
  t.is(put.status, 201, put.body)
})
