import test from 'ava'
import { request } from '../helpers/http.js'
import { DOCKER_LIST, DOCKER_MANIFEST, errorCode, imageManifest, OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, sha512, startApp } from './fixtures.js'

test('PUT an OCI manifest by tag: 201, Location by digest, Docker-Content-Digest', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'library/app', { layers: 2 })
  const put = await putManifest(server, 'library/app', 'v1', image.manifest, OCI_MANIFEST)
  t.is(put.status, 201)
  t.is(put.headers.location, `/v2/library/app/manifests/${image.digest}`)
  t.is(put.headers['docker-content-digest'], image.digest)
})

test('GET returns the stored bytes byte for byte, with Content-Type and digest; HEAD the same headers', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'latest', image.manifest, OCI_MANIFEST)
  for (const reference of ['latest', image.digest]) {
    const get = await request(server, `/v2/app/manifests/${reference}`, { headers: { Accept: OCI_MANIFEST } })
    t.is(get.status, 200)
    t.deepEqual(get.body, image.manifest)
    t.is(get.headers['content-type'], OCI_MANIFEST)
    t.is(get.headers['docker-content-digest'], image.digest)
    t.is(get.headers['content-length'], String(image.manifest.byteLength))
    const head = await request(server, `/v2/app/manifests/${reference}`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })
    t.is(head.status, 200)
    t.is(head.headers['content-length'], String(image.manifest.byteLength))
    t.is(head.headers['docker-content-digest'], image.digest)
    t.is(head.body.byteLength, 0)
  }
})

test('PUT by digest stores without a tag', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const put = await putManifest(server, 'app', image.digest, image.manifest, OCI_MANIFEST)
  t.is(put.status, 201)
  t.deepEqual((await request(server, '/v2/app/tags/list')).json, { name: 'app', tags: [] })
  t.is((await request(server, `/v2/app/manifests/${image.digest}`)).status, 200)
})

test('PUT by a digest that does not match the body is DIGEST_INVALID', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const wrong = sha256('other')
  const put = await putManifest(server, 'app', wrong, image.manifest, OCI_MANIFEST)
  t.is(put.status, 400)
  t.is(errorCode(put), 'DIGEST_INVALID')
  t.is((await request(server, `/v2/app/manifests/${wrong}`)).status, 404)
})

test('PUT by a sha512 digest is accepted and answered with the sha512 digest', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const digest = sha512(image.manifest)
  const put = await putManifest(server, 'app', digest, image.manifest, OCI_MANIFEST)
  t.is(put.status, 201)
  t.is(put.headers['docker-content-digest'], digest)
  t.deepEqual((await request(server, `/v2/app/manifests/${digest}`)).body, image.manifest)
})

test('Docker schema 2 manifest and manifest list round-trip with their media types', async t => {
  const { server } = await startApp(t)
  const amd = await imageManifest(server, 'multi', { mediaType: DOCKER_MANIFEST })
  const arm = await imageManifest(server, 'multi', { mediaType: DOCKER_MANIFEST })
  t.is((await putManifest(server, 'multi', amd.digest, amd.manifest, DOCKER_MANIFEST)).status, 201)
  t.is((await putManifest(server, 'multi', arm.digest, arm.manifest, DOCKER_MANIFEST)).status, 201)
  const list = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_LIST,
      manifests: [
        { mediaType: DOCKER_MANIFEST, digest: amd.digest, size: amd.manifest.byteLength, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: DOCKER_MANIFEST, digest: arm.digest, size: arm.manifest.byteLength, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    }),
  )
  t.is((await putManifest(server, 'multi', 'latest', list, DOCKER_LIST)).status, 201)
  const accept = [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX].join(', ')
  const get = await request(server, '/v2/multi/manifests/latest', { headers: { Accept: accept } })
  t.is(get.headers['content-type'], DOCKER_LIST)
  t.deepEqual(get.body, list)
  // An old client that knows only schema 2 manifests gets the linux/amd64 entry, as from distribution.
  const old = await request(server, '/v2/multi/manifests/latest', { headers: { Accept: DOCKER_MANIFEST } })
  t.is(old.status, 200)
  t.is(old.headers['content-type'], DOCKER_MANIFEST)
  t.is(old.headers['docker-content-digest'], amd.digest)
})

test('OCI index children must exist; a missing child is MANIFEST_BLOB_UNKNOWN', async t => {
  const { server } = await startApp(t)
  const child = await imageManifest(server, 'idx')
  const index = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: child.digest, size: child.manifest.byteLength }] }),
  )
  const early = await putManifest(server, 'idx', 'v1', index, OCI_INDEX)
  t.is(early.status, 400)
  t.is(errorCode(early), 'MANIFEST_BLOB_UNKNOWN')
  await putManifest(server, 'idx', child.digest, child.manifest, OCI_MANIFEST)
  t.is((await putManifest(server, 'idx', 'v1', index, OCI_INDEX)).status, 201)
})

test('a manifest whose config or layer is not in the repository is MANIFEST_BLOB_UNKNOWN', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'elsewhere')
  const put = await putManifest(server, 'here', 'v1', image.manifest, OCI_MANIFEST)
  t.is(put.status, 400)
  t.is(errorCode(put), 'MANIFEST_BLOB_UNKNOWN')
  t.is((await request(server, '/v2/here/manifests/v1')).status, 404)
})

test('foreign layers with urls need not be pushed', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'win', {
    mediaType: DOCKER_MANIFEST,
    extra: {},
  })
  const body = JSON.parse(image.manifest.toString())
  body.layers.push({
    mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
    digest: sha256('foreign'),
    size: 7,
    urls: ['https://example.invalid/layer'],
  })
  const manifest = Buffer.from(JSON.stringify(body))
  t.is((await putManifest(server, 'win', 'v1', manifest, DOCKER_MANIFEST)).status, 201)
})

const invalidBodies: [string, string, string?][] = [
  ['not json', '{not json'],
  ['an array', '[]'],
  ['schema version 1', JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] })],
  ['no schema version', JSON.stringify({ mediaType: OCI_MANIFEST, config: {}, layers: [] })],
  ['an unknown media type', JSON.stringify({ schemaVersion: 2, mediaType: 'application/x-mine', config: {}, layers: [] }), 'application/x-mine'],
  [
    'an unknown Content-Type and no mediaType',
    JSON.stringify({ schemaVersion: 2, config: { mediaType: 'x', size: 1, digest: sha256('a') }, layers: [] }),
    'application/x-mine',
  ],
  ['mediaType disagreeing with Content-Type', JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: {}, layers: [] })],
  ['a config without digest', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', size: 1 }, layers: [] })],
  ['a negative size', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', size: -1, digest: sha256('a') }, layers: [] })],
  ['layers not an array', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', size: 1, digest: sha256('a') }, layers: {} })],
  [
    'a bad layer digest',
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'x', size: 1, digest: sha256('a') },
      layers: [{ mediaType: 'x', size: 1, digest: 'sha256:zz' }],
    }),
  ],
  ['an index without manifests', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX }), OCI_INDEX],
]
for (const [label, body, contentType] of invalidBodies) {
  test(`a manifest with ${label} is MANIFEST_INVALID and nothing is stored`, async t => {
    const { server } = await startApp(t)
    const put = await putManifest(server, 'bad', 'v1', Buffer.from(body), contentType ?? OCI_MANIFEST)
    t.is(put.status, 400)
    t.is(errorCode(put), 'MANIFEST_INVALID')
    t.is((await request(server, '/v2/bad/manifests/v1')).status, 404)
    t.is((await request(server, `/v2/bad/manifests/${sha256(body)}`)).status, 404)
  })
}

test('a generic Content-Type defers to the mediaType in the body', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  t.is((await putManifest(server, 'app', 'json', image.manifest, 'application/json')).status, 201)
  t.is((await request(server, '/v2/app/manifests/json')).headers['content-type'], OCI_MANIFEST)
})

test('a manifest over the size limit is refused with 413', async t => {
  const { server } = await startApp(t, { maxManifestBytes: 1024 })
  const image = await imageManifest(server, 'big', { extra: { annotations: { padding: 'x'.repeat(2000) } } })
  const put = await putManifest(server, 'big', 'v1', image.manifest, OCI_MANIFEST)
  t.is(put.status, 413)
  t.is(errorCode(put), 'SIZE_INVALID')
  t.is((await request(server, '/v2/')).status, 200)
  const small = await imageManifest(server, 'big')
  t.is((await putManifest(server, 'big', 'v2', small.manifest, OCI_MANIFEST)).status, 201)
})

test('the default size limit accepts a 4 MB manifest and refuses one over 4 MiB', async t => {
  const { server } = await startApp(t)
  const ok = await imageManifest(server, 'big', { extra: { annotations: { padding: 'x'.repeat(4_000_000) } } })
  t.is((await putManifest(server, 'big', 'ok', ok.manifest, OCI_MANIFEST)).status, 201)
  const tooBig = await imageManifest(server, 'big', { extra: { annotations: { padding: 'x'.repeat(4 * 1024 * 1024) } } })
  t.is((await putManifest(server, 'big', 'no', tooBig.manifest, OCI_MANIFEST)).status, 413)
})

test('invalid tags are refused', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  for (const tag of ['-dash', '.dot', 'a'.repeat(129), 'sp%20ace']) {
    const put = await putManifest(server, 'app', tag, image.manifest, OCI_MANIFEST)
    t.is(put.status, 400, tag)
  }
})

test('unknown manifests are 404 MANIFEST_UNKNOWN, by tag and by digest', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  for (const reference of ['v2', sha256('nope')]) {
    const get = await request(server, `/v2/app/manifests/${reference}`)
    t.is(get.status, 404)
    t.is(errorCode(get), 'MANIFEST_UNKNOWN')
  }
  // A manifest of another repository is not visible here.
  t.is((await request(server, `/v2/other/manifests/${image.digest}`)).status, 404)
})

test('by tag, an OCI manifest is MANIFEST_UNKNOWN to a client that does not accept OCI (as distribution)', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const dockerOnly = await request(server, '/v2/app/manifests/v1', { headers: { Accept: DOCKER_MANIFEST } })
  t.is(dockerOnly.status, 404)
  t.is(errorCode(dockerOnly), 'MANIFEST_UNKNOWN')
  const docker = await request(server, '/v2/app/manifests/v1', {
    headers: { Accept: `${DOCKER_MANIFEST}, ${DOCKER_LIST}, ${OCI_INDEX}, ${OCI_MANIFEST};q=0.9` },
  })
  t.is(docker.status, 200)
  t.is((await request(server, '/v2/app/manifests/v1', { headers: { Accept: '*/*' } })).status, 200)
  t.is((await request(server, '/v2/app/manifests/v1')).status, 200)
  t.is((await request(server, `/v2/app/manifests/${image.digest}`, { headers: { Accept: DOCKER_MANIFEST } })).status, 200)
})

test('If-None-Match with the digest ETag gives 304', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const get = await request(server, '/v2/app/manifests/v1', { headers: { 'If-None-Match': `"${image.digest}"` } })
  t.is(get.status, 304)
})

test('DELETE by tag removes that tag only', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  await putManifest(server, 'app', 'v2', image.manifest, OCI_MANIFEST)
  const del = await request(server, '/v2/app/manifests/v1', { method: 'DELETE' })
  t.is(del.status, 202)
  t.is((await request(server, '/v2/app/manifests/v1')).status, 404)
  t.is((await request(server, '/v2/app/manifests/v2')).status, 200)
  t.is((await request(server, `/v2/app/manifests/${image.digest}`)).status, 200)
  t.deepEqual((await request(server, '/v2/app/tags/list')).json.tags, ['v2'])
  const again = await request(server, '/v2/app/manifests/v1', { method: 'DELETE' })
  t.is(again.status, 404)
  t.is(errorCode(again), 'MANIFEST_UNKNOWN')
})

test('DELETE by digest removes the manifest and every tag pointing at it', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const other = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  await putManifest(server, 'app', 'v2', image.manifest, OCI_MANIFEST)
  await putManifest(server, 'app', 'keep', other.manifest, OCI_MANIFEST)
  const del = await request(server, `/v2/app/manifests/${image.digest}`, { method: 'DELETE' })
  t.is(del.status, 202)
  t.is((await request(server, `/v2/app/manifests/${image.digest}`)).status, 404)
  t.is((await request(server, '/v2/app/manifests/v1')).status, 404)
  t.is((await request(server, '/v2/app/manifests/v2')).status, 404)
  t.deepEqual((await request(server, '/v2/app/tags/list')).json.tags, ['keep'])
  t.is((await request(server, `/v2/app/manifests/${image.digest}`, { method: 'DELETE' })).status, 404)
})

test('re-pushing a tag moves it', async t => {
  const { server } = await startApp(t)
  const first = await imageManifest(server, 'app')
  const second = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'latest', first.manifest, OCI_MANIFEST)
  await putManifest(server, 'app', 'latest', second.manifest, OCI_MANIFEST)
  t.is((await request(server, '/v2/app/manifests/latest')).headers['docker-content-digest'], second.digest)
})

test('two clients pushing the same image at once both succeed', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'race')
  const results = await Promise.all(Array.from({ length: 6 }, () => putManifest(server, 'race', 'latest', image.manifest, OCI_MANIFEST)))
  t.deepEqual(
    results.map(r => r.status),
    [201, 201, 201, 201, 201, 201],
  )
  t.deepEqual((await request(server, '/v2/race/manifests/latest')).body, image.manifest)
})

test('a blob pushed as a manifest can be read through the blobs endpoint', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  t.deepEqual((await request(server, `/v2/app/blobs/${image.digest}`)).body, image.manifest)
  t.is((await pushBlob(server, 'app', 'x')).startsWith('sha256:'), true)
})

test('GET and HEAD by a malformed tag are 404 MANIFEST_UNKNOWN (as registry:2); a PUT by it stays 400 TAG_INVALID', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'a/b')
  await putManifest(server, 'a/b', 'v1', image.manifest, OCI_MANIFEST)
  for (const tag of ['.INVALID', '-dash', 'a'.repeat(129)]) {
    const get = await request(server, `/v2/a/b/manifests/${tag}`)
    t.is(get.status, 404, tag)
    t.is(errorCode(get), 'MANIFEST_UNKNOWN', tag)
    t.is((await request(server, `/v2/a/b/manifests/${tag}`, { method: 'HEAD' })).status, 404, tag)
    const put = await putManifest(server, 'a/b', tag, image.manifest, OCI_MANIFEST)
    t.is(put.status, 400, tag)
    t.is(errorCode(put), 'TAG_INVALID', tag)
  }
})

/** The values of every `OCI-Tag` line of a response, in order. */
function ociTagLines(response: { rawHeaders: string[] }): string[] {
  const values: string[] = []
  for (let i = 0; i < response.rawHeaders.length; i += 2) {
    if (response.rawHeaders[i]!.toLowerCase() === 'oci-tag') values.push(response.rawHeaders[i + 1]!)
  }
  return values
}

test('PUT by digest with ?tag= tags it in the same request: one OCI-Tag line per tag, each once (sha512 too)', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const digest = sha512(image.manifest)
  const put = await putManifest(server, 'app', `${digest}?tag=1.2.3&tag=latest&tag=1.2.3`, image.manifest, OCI_MANIFEST)
  t.is(put.status, 201)
  t.is(put.headers['docker-content-digest'], digest)
  t.deepEqual(ociTagLines(put), ['1.2.3', 'latest'])
  t.deepEqual((await request(server, '/v2/app/tags/list')).json, { name: 'app', tags: ['1.2.3', 'latest'] })
  for (const tag of ['1.2.3', 'latest']) {
    const get = await request(server, `/v2/app/manifests/${tag}`, { headers: { Accept: OCI_MANIFEST } })
    t.is(get.status, 200)
    t.is(get.headers['docker-content-digest'], digest)
    t.deepEqual(get.body, image.manifest)
  }
  // Without tag parameters: no OCI-Tag at all.
  const plain = await putManifest(server, 'app', image.digest, image.manifest, OCI_MANIFEST)
  t.is(plain.status, 201)
  t.deepEqual(ociTagLines(plain), [])
})

test('an invalid ?tag= refuses the whole push with 400 TAG_INVALID and stores nothing', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const put = await putManifest(server, 'app', `${image.digest}?tag=good&tag=.bad`, image.manifest, OCI_MANIFEST)
  t.is(put.status, 400)
  t.is(errorCode(put), 'TAG_INVALID')
  t.is((await request(server, `/v2/app/manifests/${image.digest}`)).status, 404)
  t.is((await request(server, '/v2/app/manifests/good')).status, 404)
  const empty = await putManifest(server, 'app', `${image.digest}?tag=`, image.manifest, OCI_MANIFEST)
  t.is(errorCode(empty), 'TAG_INVALID')
})

test('?tag= on a PUT by tag is ignored: no OCI-Tag header, no extra tag', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const put = await putManifest(server, 'app', 'v1?tag=other', image.manifest, OCI_MANIFEST)
  t.is(put.status, 201)
  t.deepEqual(ociTagLines(put), [])
  t.deepEqual((await request(server, '/v2/app/tags/list')).json, { name: 'app', tags: ['v1'] })
})

test('up to 100 ?tag= parameters are applied; more is 414 and stores nothing', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  const tags = Array.from({ length: 101 }, (_, i) => `t${i}`)
  const over = await putManifest(server, 'app', `${image.digest}?${tags.map(tag => `tag=${tag}`).join('&')}`, image.manifest, OCI_MANIFEST)
  t.is(over.status, 414)
  t.is((await request(server, `/v2/app/manifests/${image.digest}`)).status, 404)
  const at = await putManifest(
    server,
    'app',
    `${image.digest}?${tags
      .slice(0, 100)
      .map(tag => `tag=${tag}`)
      .join('&')}`,
    image.manifest,
    OCI_MANIFEST,
  )
  t.is(at.status, 201)
  t.is(ociTagLines(at).length, 100)
  t.is((await request(server, '/v2/app/tags/list')).json.tags.length, 100)
})
