/**
 * --mirror-max-size (mirror/cache-eviction.ts): what the cache holds and what it shares with pushed
 * images, the least-recently-pulled order, the minimum age, whole images (an index with its
 * children) evicted, and garbage collection afterwards freeing the evicted bytes while keeping a
 * layer a pushed image shares. Upstream and mirror are Berth engines in this process (fixtures.ts);
 * pulls are recorded by a real metadata index.
 */
import { randomBytes } from 'node:crypto'
import test from 'ava'
import { evictImages, planEviction, scanCache, type CacheScan, type CachedImage } from '../../src/mirror/cache-eviction.js'
import { collectGarbage } from '../../src/storage/gc.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { parseDigest } from '../../src/storage/digest.js'
import { diskUsage } from '../../src/storage/usage.js'
import { request } from '../helpers/http.js'
import { OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256 } from '../registry/fixtures.js'
import { startMirror, startUpstream } from './fixtures.js'

const ACCEPT = { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` }

/** Pushes an image of these layers (and a small config) to `server`; returns its manifest digest and total bytes. */
async function pushImage(server: string, name: string, tag: string, layers: Buffer[]): Promise<{ digest: string; bytes: number; layers: string[] }> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', n: randomBytes(8).toString('hex') }))
  const configDigest = await pushBlob(server, name, config)
  const layerDigests: string[] = []
  for (const layer of layers) layerDigests.push(await pushBlob(server, name, layer))
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
      layers: layers.map((layer, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigests[i], size: layer.byteLength })),
    }),
  )
  const put = await putManifest(server, name, tag, manifest, OCI_MANIFEST)
  if (put.status !== 201) throw new Error(`push ${name}:${tag}: ${put.status}`)
  return { digest: sha256(manifest), bytes: manifest.byteLength + config.byteLength + layers.reduce((sum, l) => sum + l.byteLength, 0), layers: layerDigests }
}

/** Pulls a whole image through the mirror (manifest, config, layers), as a client does. */
async function pull(mirror: string, name: string, tag: string): Promise<void> {
  const manifest = await request(mirror, `/v2/${name}/manifests/${tag}`, { headers: ACCEPT })
  if (manifest.status !== 200) throw new Error(`pull ${name}:${tag}: ${manifest.status}`)
  const body = manifest.json as { config: { digest: string }; layers: { digest: string }[] }
  for (const blob of [body.config, ...body.layers]) {
    const got = await request(mirror, `/v2/${name}/blobs/${blob.digest}`)
    if (got.status !== 200 || sha256(got.body) !== blob.digest) throw new Error(`blob ${blob.digest}: ${got.status}`)
  }
}

test('over the cap, the least recently pulled cached images go; GC frees their bytes and keeps a layer a pushed image shares', async t => {
  const upstream = await startUpstream(t)
  const shared = randomBytes(300_000)
  const a = await pushImage(upstream.direct, 'library/a', '1', [randomBytes(200_000)])
  const b = await pushImage(upstream.direct, 'library/b', '1', [randomBytes(200_000)])
  const c = await pushImage(upstream.direct, 'library/c', '1', [shared, randomBytes(100_000)])
  const driver = new InMemoryDriver()
  const index = new MetadataIndex(driver)
  const mirror = await startMirror(t, { upstreams: [{ prefix: 'up.test', url: upstream.url }] }, { driver, observer: index })
  // A pushed image with the same layer as library/c.
  const mine = await pushImage(mirror.url, 'team/app', '1', [shared])

  // Pulled in the order c, a, b: a is least recently used after c… then c is pulled again last but one.
  for (const name of ['a', 'c', 'b']) {
    await pull(mirror.url, `up.test/library/${name}`, '1')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  await pull(mirror.url, 'up.test/library/c', '1')
  await new Promise(resolve => setTimeout(resolve, 20))
  await pull(mirror.url, 'up.test/library/b', '1')
  await index.flushPulls()
  const lastPulled = async (name: string) => {
    const records = await index.readRepository(name)
    return (digest: string) => records.pullsOf(digest, undefined).last
  }

  // du: the shared layer counts as pushed (shared with the cache), not as cached.
  const usage = await diskUsage(driver)
  t.is(usage.cachedBytes, a.bytes + b.bytes + c.bytes - shared.byteLength)
  t.is(usage.sharedWithCacheBytes, shared.byteLength)
  t.is(usage.pushedBytes, mine.bytes)
  t.deepEqual(
    usage.repositories.map(r => [r.name, r.cached]),
    [
      ['team/app', false],
      ['up.test/library/a', true],
      ['up.test/library/b', true],
      ['up.test/library/c', true],
    ],
  )

  const scan = await scanCache(driver, mirror.app.store, lastPulled)
  t.deepEqual(
    scan.images.map(image => [image.repository, image.digest, image.tags]),
    [
      ['up.test/library/a', a.digest, ['1']],
      ['up.test/library/b', b.digest, ['1']],
      ['up.test/library/c', c.digest, ['1']],
    ],
  )
  // Within the minimum age nothing goes, whatever the cap.
  const young = planEviction(scan, 0, Date.now(), 60_000)
  t.is(young.evict.length, 0)
  t.true(young.overCap)
  // A cap that b and c fit in: only a (least recently pulled) goes.
  const later = Date.now() + 120_000
  const plan = planEviction(scan, b.bytes + c.bytes - shared.byteLength, later, 60_000)
  t.is(plan.bytes, usage.cachedBytes)
  t.deepEqual(
    plan.evict.map(image => image.repository),
    ['up.test/library/a'],
  )
  // A cap only b fits in: a, then c (pulled before b).
  const tight = planEviction(scan, b.bytes, later, 60_000)
  t.deepEqual(
    tight.evict.map(image => image.repository),
    ['up.test/library/a', 'up.test/library/c'],
  )
  t.is(tight.bytesAfter, b.bytes)
  const result = await evictImages(mirror.app.store, scan, tight)
  t.like(result, { images: 2, manifests: 2, tags: 2, bytes: a.bytes + c.bytes - shared.byteLength })
  for (const [name, digest] of [
    ['a', a.digest],
    ['c', c.digest],
  ] as const) {
    t.false(await mirror.app.store.manifests.hasRevision(`up.test/library/${name}`, parseDigest(digest)), `${name} evicted`)
    t.is((await request(mirror.url, `/v2/up.test/library/${name}/tags/list`)).status, 404, 'no tags left')
  }
  t.deepEqual((await mirror.app.store.tags.list('up.test/library/b')).sort(), ['1'])
  const gc = await collectGarbage(driver, { gracePeriodMs: 0 })
  const freed = new Set(gc.blobs.map(blob => blob.digest))
  for (const layer of [a.layers[0]!, c.layers[1]!]) t.true(freed.has(layer), `evicted layer ${layer} freed`)
  t.false(freed.has(c.layers[0]!), 'the layer team/app shares stays')
  t.false(freed.has(b.layers[0]!))
  const kept = await request(mirror.url, `/v2/team/app/blobs/${mine.layers[0]!}`)
  t.is(sha256(kept.body), mine.layers[0]!)
  t.is((await request(mirror.url, '/v2/team/app/manifests/1', { method: 'HEAD', headers: ACCEPT })).status, 200)
  const after = await diskUsage(driver)
  t.is(after.cachedBytes, b.bytes)
  t.is(after.unreferencedBytes, 0)
  // Pulling an evicted image again works: a miss, fetched from the upstream.
  const gets = upstream.count('GET blob')
  await pull(mirror.url, 'up.test/library/a', '1')
  t.true(upstream.count('GET blob') > gets)
})

test('plan: a blob two cached images share counts once and is freed with the last; pushed blobs never count', t => {
  const image = (repository: string, lastUsed: number, blobs: string[]): CachedImage => ({
    repository,
    digest: `sha256:${repository}`,
    tags: ['1'],
    manifests: [`sha256:${repository}`],
    blobs,
    lastUsed,
  })
  const scan: CacheScan = {
    images: [image('x', 1, ['m1', 'shared', 'x1']), image('y', 2, ['m2', 'shared', 'y1']), image('z', 3, ['m3', 'pushed'])],
    sizes: new Map([
      ['m1', 1],
      ['m2', 1],
      ['m3', 1],
      ['shared', 100],
      ['x1', 10],
      ['y1', 20],
      ['pushed', 1000],
    ]),
    pushed: new Set(['pushed']),
  }
  const none = planEviction(scan, 1000, 10_000, 0)
  t.is(none.bytes, 1 + 1 + 1 + 100 + 10 + 20)
  t.is(none.evict.length, 0)
  const one = planEviction(scan, 130, 10_000, 0)
  t.deepEqual(
    one.evict.map(i => i.repository),
    ['x'],
  )
  t.is(one.bytesAfter, 133 - 11, 'x freed its own bytes only: the shared blob is still y’s')
  const two = planEviction(scan, 5, 10_000, 0)
  t.deepEqual(
    two.evict.map(i => i.repository),
    ['x', 'y'],
  )
  t.is(two.bytesAfter, 1)
})
