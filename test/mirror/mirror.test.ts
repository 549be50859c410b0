/**
 * The pull-through mirror against an upstream in this process (fixtures.ts): bytes and digests as
 * the upstream's, one upstream download per blob for many clients, tag checks per TTL, stale
 * serving when the upstream is down or throttling, refusal of writes, `?ns=` and default routing,
 * upstream authentication (Basic, Bearer) and redirects, and upstreams that lie.
 */
import { createHash, randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import test from 'ava'
import { createLogger } from '../../src/log.js'
import { request } from '../helpers/http.js'
import { DOCKER_MANIFEST, errorCode, imageManifest, OCI_MANIFEST, pushBlob, putManifest, sha256 } from '../registry/fixtures.js'
import { startMirror, startUpstream, type FakeUpstream } from './fixtures.js'

const ACCEPT = { Accept: `${OCI_MANIFEST}, ${DOCKER_MANIFEST}` }

async function pushImage(upstream: FakeUpstream, name: string, tag: string, layerBytes?: number) {
  const image = await imageManifest(upstream.direct, name)
  let big: { digest: string; content: Buffer } | undefined
  if (layerBytes !== undefined) {
    const content = randomBytes(layerBytes)
    big = { digest: await pushBlob(upstream.direct, name, content), content }
    const body = JSON.parse(image.manifest.toString()) as { layers: unknown[] }
    body.layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: big.digest, size: layerBytes })
    image.manifest = Buffer.from(JSON.stringify(body, null, 3))
    image.digest = sha256(image.manifest)
  }
  const put = await putManifest(upstream.direct, name, tag, image.manifest, OCI_MANIFEST)
  if (put.status !== 201) throw new Error(`push: ${put.status}`)
  return { ...image, big }
}

test('manifests and blobs through the prefix are the upstream bytes, and a cached tag is served without asking again', async t => {
  const upstream = await startUpstream(t)
  const image = await pushImage(upstream, 'library/app', '1')
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] })

  const manifest = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.is(manifest.status, 200)
  t.deepEqual(manifest.body, image.manifest)
  t.is(manifest.headers['docker-content-digest'], image.digest)
  for (const blob of [image.config, ...image.layers]) {
    const got = await request(mirror.url, `/v2/up.test/library/app/blobs/${blob.digest}`)
    t.is(got.status, 200)
    t.is(sha256(got.body), blob.digest)
  }
  const before = new Map(upstream.counts)
  const again = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  const blobAgain = await request(mirror.url, `/v2/up.test/library/app/blobs/${image.config.digest}`)
  t.deepEqual(again.body, image.manifest)
  t.is(blobAgain.status, 200)
  t.deepEqual(upstream.counts, before, 'served from the cache')
  // Stored under the prefixed name in the normal layout, with the mirror marker.
  t.deepEqual(await mirror.app.store.catalog.list(), ['up.test/library/app'])
  const marker = JSON.parse((await mirror.driver.getContent('/docker/registry/v2/repositories/up.test/library/app/_mirror')).toString()) as Record<
    string,
    string
  >
  t.like(marker, { prefix: 'up.test', upstream: upstream.url, repository: 'library/app' })
  // By digest too, and a HEAD of a blob not fetched yet answers with the upstream's size.
  t.is((await request(mirror.url, `/v2/up.test/library/app/manifests/${image.digest}`, { method: 'HEAD' })).status, 200)
})

test('many clients of one uncached blob cause one upstream GET, a slow one included, and all get its bytes', async t => {
  const upstream = await startUpstream(t)
  const image = await pushImage(upstream, 'library/big', '1', 24 * 1024 * 1024)
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] })
  const path = `/v2/up.test/library/big/blobs/${image.big!.digest}`
  const fetchOne = (delayMs: number) =>
    new Promise<string>((resolve, reject) => {
      const hash = createHash('sha256')
      httpRequest(`${mirror.url}${path}`, { agent: false }, response => {
        if (response.statusCode !== 200) return reject(new Error(`status ${response.statusCode}`))
        // A slow client: stops reading for a while (falls behind by more than the queue).
        if (delayMs > 0) {
          response.pause()
          setTimeout(() => response.resume(), delayMs)
        }
        response.on('data', chunk => hash.update(chunk as Buffer))
        response.on('end', () => resolve(`sha256:${hash.digest('hex')}`))
        response.on('error', reject)
      })
        .on('error', reject)
        .end()
    })
  const digests = await Promise.all([fetchOne(600), ...Array.from({ length: 9 }, () => fetchOne(0))])
  for (const digest of digests) t.is(digest, image.big!.digest)
  t.is(upstream.count('GET blob'), 1)
  // Now stored: a range is served from storage.
  const range = await request(mirror.url, path, { headers: { Range: 'bytes=10-19' } })
  t.is(range.status, 206)
  t.deepEqual(range.body, image.big!.content.subarray(10, 20))
  t.is(upstream.count('GET blob'), 1)
})

test('a tag is checked with one HEAD per TTL and follows the upstream when it moves', async t => {
  const upstream = await startUpstream(t)
  await pushImage(upstream, 'library/app', 'latest')
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }], tagTtlMs: 60_000 })
  const get = () => request(mirror.url, '/v2/up.test/library/app/manifests/latest', { headers: ACCEPT })
  await get()
  t.is(upstream.count('HEAD manifest'), 1)
  t.is(upstream.count('GET manifest'), 1)
  mirror.clock += 59_000
  await get()
  await get()
  t.is(upstream.count('HEAD manifest'), 1, 'within the TTL: no upstream request')
  mirror.clock += 2_000
  await get()
  t.is(upstream.count('HEAD manifest'), 2)
  t.is(upstream.count('GET manifest'), 1, 'unchanged: not downloaded again')
  const moved = await pushImage(upstream, 'library/app', 'latest')
  mirror.clock += 61_000
  const after = await get()
  t.is(after.headers['docker-content-digest'], moved.digest)
  t.is(upstream.count('GET manifest'), 2)
})

for (const mode of ['reset', '503'] as const) {
  test(`upstream down (${mode}): cached tags are served, misses fail with 502 naming the upstream`, async t => {
    const upstream = await startUpstream(t)
    const image = await pushImage(upstream, 'library/app', '1')
    await pushImage(upstream, 'library/app', '2')
    const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] })
    await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
    await request(mirror.url, `/v2/up.test/library/app/blobs/${image.layers[0]!.digest}`)
    upstream.mode = mode
    mirror.clock += 3_600_000
    const stale = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
    t.is(stale.status, 200)
    t.deepEqual(stale.body, image.manifest)
    t.is((await request(mirror.url, `/v2/up.test/library/app/blobs/${image.layers[0]!.digest}`)).status, 200)
    const heads = upstream.count('HEAD manifest')
    await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
    t.is(upstream.count('HEAD manifest'), heads, 'not asked again on every pull while it is down')
    const miss = await request(mirror.url, '/v2/up.test/library/app/manifests/2', { headers: ACCEPT })
    t.is(miss.status, 502)
    t.is(errorCode(miss), 'UNAVAILABLE')
    t.regex(miss.json.errors[0].message, new RegExp(`upstream ${upstream.url} is unreachable or failed.*not cached here`))
    const blobMiss = await request(mirror.url, `/v2/up.test/library/app/blobs/${image.config.digest}`)
    t.is(blobMiss.status, 502)
  })
}

test('upstream answering 429: cached content is served, a miss is 429 with its Retry-After', async t => {
  const upstream = await startUpstream(t)
  await pushImage(upstream, 'library/app', '1')
  await pushImage(upstream, 'library/app', '2')
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] })
  await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  upstream.mode = '429'
  mirror.clock += 3_600_000
  t.is((await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })).status, 200)
  const miss = await request(mirror.url, '/v2/up.test/library/app/manifests/2', { headers: ACCEPT })
  t.is(miss.status, 429)
  t.is(errorCode(miss), 'TOOMANYREQUESTS')
  t.is(miss.headers['retry-after'], '7')
})

test('pushes and deletes into a mirror prefix are refused with 405 UNSUPPORTED; local names are not', async t => {
  const upstream = await startUpstream(t)
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }], defaultPrefix: 'up.test' })
  for (const [method, path] of [
    ['POST', '/v2/up.test/library/app/blobs/uploads/'],
    ['PUT', '/v2/up.test/library/app/manifests/1'],
    ['DELETE', '/v2/up.test/library/app/manifests/1'],
    ['DELETE', `/v2/up.test/library/app/blobs/${sha256('x')}`],
    ['POST', '/v2/library/app/blobs/uploads/?ns=up.test'],
  ] as const) {
    const refused = await request(mirror.url, path, { method, body: method === 'PUT' ? '{}' : undefined })
    t.is(refused.status, 405, `${method} ${path}`)
    t.is(errorCode(refused), 'UNSUPPORTED')
    t.regex(refused.json.errors[0].message, /up\.test\/ is a read-only mirror of http:\/\/127\.0\.0\.1:\d+/)
  }
  // A new local name is pushed normally even with a default mirror.
  const local = await imageManifest(mirror.url, 'mine/app')
  t.is((await putManifest(mirror.url, 'mine/app', 'v1', local.manifest, OCI_MANIFEST)).status, 201)
  t.is(upstream.count('GET manifest') + upstream.count('HEAD manifest'), 0)
})

test("containerd's ?ns= and the default prefix route to the upstream; local repositories win over the default", async t => {
  const upstream = await startUpstream(t)
  const image = await pushImage(upstream, 'library/app', '1')
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }], defaultPrefix: 'up.test' })
  const byNs = await request(mirror.url, '/v2/library/app/manifests/1?ns=up.test', { headers: ACCEPT })
  t.is(byNs.status, 200)
  t.deepEqual(byNs.body, image.manifest)
  t.is((await request(mirror.url, `/v2/library/app/blobs/${image.config.digest}?ns=up.test`)).status, 200)
  t.deepEqual(await mirror.app.store.catalog.list(), ['up.test/library/app'])
  const byDefault = await request(mirror.url, '/v2/library/app/manifests/1', { headers: ACCEPT })
  t.is(byDefault.headers['docker-content-digest'], image.digest)
  // An unknown ns is no mirror: the name is local.
  t.is((await request(mirror.url, '/v2/library/app/manifests/1?ns=elsewhere.test', { headers: ACCEPT })).status, 200)
  const local = await imageManifest(mirror.url, 'library/app')
  await putManifest(mirror.url, 'library/app', '1', local.manifest, OCI_MANIFEST)
  const mine = await request(mirror.url, '/v2/library/app/manifests/1', { headers: ACCEPT })
  t.is(mine.headers['docker-content-digest'], local.digest)
})

test('an upstream that corrupts a manifest or a blob: 502 or a cut body, and nothing is stored', async t => {
  const upstream = await startUpstream(t)
  const image = await pushImage(upstream, 'library/app', '1', 256 * 1024)
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] })
  upstream.corrupt = kind => kind === 'GET manifest'
  const manifest = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.is(manifest.status, 502)
  t.regex(manifest.json.errors[0].message, /hashes to sha256:[0-9a-f]{64}, not sha256/)
  upstream.corrupt = kind => kind === 'GET blob'
  const blobPath = `/v2/up.test/library/app/blobs/${image.big!.digest}`
  await t.throwsAsync(request(mirror.url, blobPath), undefined, 'the body is cut before its last byte')
  t.is(await mirror.app.store.blobs.statGlobal(image.big!.digest), undefined)
  upstream.corrupt = undefined
  const good = await request(mirror.url, blobPath)
  t.is(sha256(good.body), image.big!.digest)
})

test('a manifest over the size limit is refused without reading it whole', async t => {
  const upstream = await startUpstream(t)
  await pushImage(upstream, 'library/app', '1')
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }], maxManifestBytes: 100 })
  const response = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.is(response.status, 502)
  t.regex(response.json.errors[0].message, /at most 100 are accepted/)
})

test('Basic credentials are sent to an upstream that asks for them; without them the pull is DENIED', async t => {
  const upstream = await startUpstream(t)
  const image = await pushImage(upstream, 'library/app', '1')
  upstream.auth = { kind: 'basic', user: 'mirror', password: 's3cret' }
  const anonymous = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] })
  const denied = await request(anonymous.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.is(denied.status, 403)
  t.is(errorCode(denied), 'DENIED')
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url, username: 'mirror', password: 's3cret' }] })
  const ok = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.deepEqual(ok.body, image.manifest)
  const wrong = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url, username: 'mirror', password: 'nope' }] })
  const refused = await request(wrong.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.is(refused.status, 403)
  t.regex(refused.json.errors[0].message, /refused the mirror's credentials \(user mirror; its Basic login answered 401\)/)
  t.is(sha256((await request(mirror.url, `/v2/up.test/library/app/blobs/${image.config.digest}`)).body), image.config.digest)
})

test('the Bearer token flow: one token per scope while it is valid, blobs redirected to another origin get no Authorization', async t => {
  const upstream = await startUpstream(t)
  const image = await pushImage(upstream, 'library/app', '1')
  upstream.auth = { kind: 'bearer', user: 'mirror', password: 's3cret' }
  upstream.redirectBlobs = true
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url, username: 'mirror', password: 's3cret' }] })
  const manifest = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.deepEqual(manifest.body, image.manifest)
  for (const blob of [image.config, ...image.layers]) {
    t.is(sha256((await request(mirror.url, `/v2/up.test/library/app/blobs/${blob.digest}`)).body), blob.digest)
  }
  t.is(upstream.count('token'), 1, 'the token of repository:library/app:pull is reused')
  t.is(upstream.cdnAuthorizations.length, 2)
  t.deepEqual(upstream.cdnAuthorizations, [undefined, undefined])
  // Wrong realm credentials: the realm refuses, the mirror says its credentials were refused.
  const wrong = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url, username: 'mirror', password: 'nope' }] })
  const failed = await request(wrong.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  t.is(failed.status, 403)
  t.is(errorCode(failed), 'DENIED')
  t.regex(failed.json.errors[0].message, /refused the mirror's credentials \(user mirror; its token realm .* answered 401\): check/)
})

test("the log line of a cached tag served while the upstream is down carries the request's id", async t => {
  const upstream = await startUpstream(t)
  await pushImage(upstream, 'library/app', '1')
  const lines: string[] = []
  const logger = createLogger({ format: 'json', write: line => lines.push(line) })
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] }, { logger })
  await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: ACCEPT })
  upstream.mode = '503'
  mirror.clock += 3_600_000
  const served = await request(mirror.url, '/v2/up.test/library/app/manifests/1', { headers: { ...ACCEPT, 'X-Request-Id': 'pull-42' } })
  t.is(served.status, 200)
  const warning = lines
    .map(line => JSON.parse(line) as Record<string, unknown>)
    .find(entry => entry.msg === 'mirror: upstream unavailable, serving the cached tag')
  t.like(warning, { level: 'warn', repository: 'up.test/library/app', tag: '1', id: 'pull-42' })
})
