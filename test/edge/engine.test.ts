/**
 * Berth's internal door on a 0600 unix socket, with a second edge in front of it (`--upstream
 * unix:…`): the door asks for the same login, a body cut off by the limit or by the client leaves no
 * partial data in the upload (aborts cross the proxy), and skopeo pushes through with credentials.
 */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startEdge } from '../../src/edge/edge.js'
import type { Edge } from '../../src/edge/edge.js'
import type { Exchange } from '../../src/http/exchange.js'
import { LOCAL_TEST_EDGE } from '../helpers/edge.js'
import { hashPassword } from '../../src/edge/auth/htpasswd.js'
import { createRegistryApp } from '../../src/registry/app.js'
import type { RegistryApp } from '../../src/registry/app.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { OciLayout } from '../helpers/images.js'
import { copy, inspect } from '../helpers/skopeo.js'
import { curl, startUpload, uploadedBytes } from './curl.js'
import { waitFor, withDeadline } from '../helpers/procs.js'

const CREDS = 'ci:ci-password'
const LIMIT = 1024 * 1024

let root: string
let socketPath: string
let app: RegistryApp
let inner: Edge
let edge: Edge
let base: string
/** PATCH exchanges the engine is serving now. */
const patching = new Set<http.ServerResponse>()

test.before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'berth-edge-engine-'))
  app = createRegistryApp({ driver: new FilesystemDriver(path.join(root, 'data')) })
  const htpasswd = path.join(root, 'htpasswd')
  await writeFile(htpasswd, `ci:${hashPassword('ci-password', 5)}\n`)
  socketPath = path.join(root, 'engine.sock')
  const engine = (exchange: Exchange): Promise<void> => {
    if (exchange.req.method === 'PATCH') {
      patching.add(exchange.res)
      exchange.res.once('close', () => patching.delete(exchange.res))
    }
    return app.serve(exchange)
  }
  // A Berth whose internal door is a unix socket, and a second edge in front of it (--upstream unix:...).
  inner = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: htpasswd,
    maxBodyBytes: LIMIT,
    engine,
    internalListen: { port: socketPath, host: undefined },
  })
  await chmod(socketPath, 0o600)
  edge = await startEdge({
    ...LOCAL_TEST_EDGE,
    htpasswdPath: htpasswd,
    maxBodyBytes: LIMIT,
    upstream: { url: `unix:${socketPath}` },
  })
  base = edge.urls.local!
})

test.after.always(async () => {
  await edge?.close()
  await inner?.close()
  await app?.close()
  if (root) await rm(root, { recursive: true, force: true })
})

test.serial('the internal door asks for the same login as the public one', async t => {
  const direct = await curl(['--unix-socket', socketPath, 'http://engine/v2/'])
  t.is(direct.status, 401, `direct status ${direct.status}`)
  const forged = await curl(['--unix-socket', socketPath, '-H', 'x-berth-internal: guess', 'http://engine/v2/'])
  t.is(forged.status, 401)
  t.is((await curl(['--unix-socket', socketPath, '-u', CREDS, 'http://engine/v2/'])).status, 200)
  t.is((await curl(['-u', CREDS, `${base}/v2/`])).status, 200)
})

test.serial('a chunked PATCH cut off by the body limit gets 413 and leaves nothing in the upload', async t => {
  const location = await startUpload(base, CREDS, 'cut')
  const body = randomBytes(3 * LIMIT)
  const result = await curl(
    ['-u', CREDS, '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', location],
    body,
  )
  t.is(result.status, 413)
  // The engine cuts the chunk back once its read fails, which may finish just after the 413.
  const kept = await waitFor(
    'the cut chunk to be dropped from the upload',
    async () => {
      const bytes = await uploadedBytes(CREDS, location)
      return bytes <= 0 && { bytes }
    },
    { intervalMs: 50 },
  )
  t.true(kept.bytes <= 0, `the upload holds ${kept.bytes} bytes after the cut`)
  const digest = 'sha256:' + createHash('sha256').update(body).digest('hex')
  t.is((await curl(['-u', CREDS, '-I', `${base}/v2/cut/blobs/${digest}`])).status, 404, 'no blob was committed')
})

test.serial('a client that disconnects mid-PATCH leaves nothing in the upload and no socket to the engine', async t => {
  const location = await startUpload(base, CREDS, 'cut')
  const count = (): number => patching.size
  const before = count()
  const target = new URL(location)
  const request = http.request({
    host: target.hostname,
    port: target.port,
    path: target.pathname + target.search,
    method: 'PATCH',
    agent: false,
    headers: { authorization: 'Basic ' + Buffer.from(CREDS).toString('base64'), 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
  })
  const arrived = waitFor('the PATCH to reach the engine', async () => patching.size > before, { intervalMs: 20 })
  request.on('error', () => {})
  request.write(randomBytes(256 * 1024))
  await withDeadline(arrived, 30_000, 'the PATCH did not reach the engine')
  const during = count()
  request.destroy()
  const after = await waitFor(
    "the aborted exchange's engine socket to close",
    async () => {
      const now = count()
      return now < during && { now }
    },
    { intervalMs: 50 },
  ).then(
    ({ now }) => now,
    () => during,
  )
  t.true(after < during, `engine PATCH exchanges: ${before} before, ${during} during, ${after} after the abort`)
  t.true(after <= before)
  const busy = await curl(['-u', CREDS, location])
  t.is(busy.status, 204, 'the upload session itself still answers')
  t.true((await uploadedBytes(CREDS, location)) <= 0, 'no partial chunk was kept')
})

test.serial('skopeo pushes through the edge to the engine with credentials (local mode, plain HTTP)', async t => {
  const layout = await OciLayout.create(path.join(root, 'layout'))
  const image = await layout.addImage({ tag: 'v1', layers: [512 * 1024] })
  const hostPort = base.replace('http://', '')
  await copy(layout.ref('v1'), `docker://${hostPort}/team/app:v1`, { dest: { tlsVerify: false, creds: CREDS } })
  t.is((await inspect(`docker://${hostPort}/team/app:v1`, { tlsVerify: false, creds: CREDS })).Digest, image.manifest.digest)
  await t.throwsAsync(inspect(`docker://${hostPort}/team/app:v1`, { tlsVerify: false }))
})
