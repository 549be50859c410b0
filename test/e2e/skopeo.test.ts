/**
 * skopeo 1.9 (a real containers/image client) copies images into Berth and back out, byte for byte:
 * a multi-layer OCI image, a two-platform OCI index (`--all`), a Docker schema2 conversion, and a
 * registry-to-registry copy. Every copy uses `--preserve-digests`, so skopeo itself refuses any change
 * of a manifest; we then compare the bytes and re-hash every blob that came back.
 */
import test from 'ava'
import { access, readFile } from 'node:fs/promises'
import path from 'node:path'
import { startLocalBerth, type Berth } from '../helpers/berth.js'
import { fileDigest, OciLayout, sha256Digest, type BuiltImage, type Descriptor } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { copy, inspect, inspectRaw, listTags, type RegistryAccess } from '../helpers/skopeo.js'

const plainHttp: RegistryAccess = { tlsVerify: false }

let berth: Berth | undefined
let work: string | undefined
let source: OciLayout | undefined

test.before(async () => {
  work = await makeTempDir('e2e-skopeo')
  ;[berth, source] = await Promise.all([startLocalBerth({ datadir: path.join(work, 'datadir') }), OciLayout.create(path.join(work, 'source'))])
})

test.after.always(async () => {
  await berth?.stop()
  if (work) await removeDir(work)
})

function env(): { berth: Berth; work: string; source: OciLayout } {
  if (!berth || !work || !source) throw new Error('setup failed')
  return { berth, work, source }
}

let outCounter = 0
async function freshLayout(): Promise<OciLayout> {
  return OciLayout.create(path.join(env().work, `out-${++outCounter}`))
}

/** Every blob is in `layout` and its bytes hash to its digest. */
async function assertBlobs(t: import('ava').ExecutionContext, layout: OciLayout, blobs: readonly Descriptor[]): Promise<void> {
  for (const blob of blobs) {
    const file = layout.blobPath(blob.digest)
    await access(file)
    t.is(await fileDigest(file), blob.digest, `blob ${blob.digest} came back intact`)
  }
}

/** The manifest and every blob of `image` are in `layout`, identical. */
async function assertImage(t: import('ava').ExecutionContext, layout: OciLayout, image: BuiltImage): Promise<void> {
  t.true((await layout.readBlob(image.manifest.digest)).equals(image.manifestBytes), 'manifest bytes identical')
  await assertBlobs(t, layout, image.blobs)
}

test('a multi-layer OCI image goes in and comes back out byte-identical', async t => {
  const { berth, source } = env()
  const image = await source.addImage({ tag: 'multi', layers: [4 * 1024 * 1024, 300 * 1024, 1000, 0] })
  const remote = `docker://${berth.hostPort}/skopeo/multi`

  await copy(source.ref('multi'), `${remote}:v1`, { dest: plainHttp })

  const raw = await inspectRaw(`${remote}:v1`, plainHttp)
  t.true(raw.equals(image.manifestBytes), 'GET manifest by tag returns the pushed bytes')
  t.is(sha256Digest(raw), image.manifest.digest)
  const byDigest = await inspectRaw(`${remote}@${image.manifest.digest}`, plainHttp)
  t.true(byDigest.equals(image.manifestBytes), 'GET manifest by digest returns the pushed bytes')
  const info = await inspect(`${remote}:v1`, plainHttp)
  t.is(info.Digest, image.manifest.digest, 'Docker-Content-Digest matches')
  t.deepEqual(
    info.Layers,
    image.layers.map(layer => layer.digest),
  )

  const out = await freshLayout()
  await copy(`${remote}:v1`, out.ref('v1'), { src: plainHttp })
  await assertImage(t, out, image)
})

test('a two-platform OCI index goes in with --all and comes back out byte-identical', async t => {
  const { berth, source } = env()
  const built = await source.addIndex({
    tag: 'two-platforms',
    platforms: [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ],
    layers: [512 * 1024, 2048],
  })
  const remote = `docker://${berth.hostPort}/skopeo/index`

  await copy(source.ref('two-platforms'), `${remote}:latest`, { all: true, dest: plainHttp })

  const raw = await inspectRaw(`${remote}:latest`, plainHttp)
  t.true(raw.equals(built.indexBytes), 'the index bytes are stored as pushed')
  for (const image of built.images) {
    const child = await inspectRaw(`${remote}@${image.manifest.digest}`, plainHttp)
    t.true(child.equals(image.manifestBytes), `child manifest ${image.manifest.digest} as pushed`)
  }

  const out = await freshLayout()
  await copy(`${remote}:latest`, out.ref('latest'), { all: true, src: plainHttp })
  t.true((await out.readBlob(built.index.digest)).equals(built.indexBytes))
  for (const image of built.images) await assertImage(t, out, image)
  const outIndex = JSON.parse(await readFile(path.join(out.dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] }
  t.is(outIndex.manifests[0]?.digest, built.index.digest)
})

test('a Docker schema2 image (skopeo --format v2s2) is served with its Docker media type', async t => {
  const { berth, source } = env()
  const image = await source.addImage({ tag: 'for-v2s2', layers: [100 * 1024, 10] })
  const remote = `docker://${berth.hostPort}/skopeo/docker-format`

  await copy(source.ref('for-v2s2'), `${remote}:v2s2`, { format: 'v2s2', preserveDigests: false, dest: plainHttp })

  const raw = await inspectRaw(`${remote}:v2s2`, plainHttp)
  const manifest = JSON.parse(raw.toString('utf8')) as { mediaType: string; config: Descriptor; layers: Descriptor[] }
  t.is(manifest.mediaType, 'application/vnd.docker.distribution.manifest.v2+json')
  t.is(manifest.config.mediaType, 'application/vnd.docker.container.image.v1+json')
  t.deepEqual(
    manifest.layers.map(layer => layer.digest),
    image.layers.map(layer => layer.digest),
    'same layer blobs',
  )
  const info = await inspect(`${remote}:v2s2`, plainHttp)
  t.is(info.Digest, sha256Digest(raw))

  const out = await freshLayout()
  await copy(`${remote}:v2s2`, `dir:${path.join(out.dir, 'dir-copy')}`, { src: plainHttp })
  const copied = await readFile(path.join(out.dir, 'dir-copy', 'manifest.json'))
  t.true(copied.equals(raw), 'pulled manifest is the stored one')
})

test('registry to registry: copy between repositories of Berth, then list the tags', async t => {
  const { berth, source } = env()
  const image = await source.addImage({ tag: 'r2r', layers: [200 * 1024] })
  const from = `docker://${berth.hostPort}/skopeo/r2r-from`
  const to = `docker://${berth.hostPort}/skopeo/r2r-to`
  await copy(source.ref('r2r'), `${from}:one`, { dest: plainHttp })
  await copy(source.ref('r2r'), `${from}:two`, { dest: plainHttp })
  await copy(`${from}:one`, `${to}:copied`, { src: plainHttp, dest: plainHttp })

  t.true((await inspectRaw(`${to}:copied`, plainHttp)).equals(image.manifestBytes))
  t.deepEqual((await listTags(from, plainHttp)).sort(), ['one', 'two'])
  t.deepEqual(await listTags(to, plainHttp), ['copied'])
})

test('three clients pushing the same new image at once all succeed, and the image is intact', async t => {
  const { berth, source } = env()
  const image = await source.addImage({ tag: 'race', layers: [2 * 1024 * 1024, 512 * 1024, 10] })
  const remote = `docker://${berth.hostPort}/skopeo/race`
  // Same blobs uploaded in parallel, same manifest and tag written in parallel, plus a second repository.
  await Promise.all([
    copy(source.ref('race'), `${remote}:latest`, { dest: plainHttp }),
    copy(source.ref('race'), `${remote}:latest`, { dest: plainHttp }),
    copy(source.ref('race'), `docker://${berth.hostPort}/skopeo/race-other:latest`, { dest: plainHttp }),
  ])
  t.true((await inspectRaw(`${remote}:latest`, plainHttp)).equals(image.manifestBytes))
  t.true((await inspectRaw(`docker://${berth.hostPort}/skopeo/race-other:latest`, plainHttp)).equals(image.manifestBytes))
  const out = await freshLayout()
  await copy(`${remote}:latest`, out.ref('race'), { src: plainHttp })
  await assertImage(t, out, image)
})

test('a manifest that does not exist is reported as unknown, not as a server error', async t => {
  const { berth } = env()
  const error = await t.throwsAsync(inspectRaw(`docker://${berth.hostPort}/skopeo/nothing-here:latest`, plainHttp))
  t.regex(error?.message ?? '', /manifest unknown|not found|name unknown/i)
  t.notRegex(error?.message ?? '', /500|internal server error/i)
})
