/**
 * What a manifest PUT checks of the blobs and child manifests it names: the per-manifest
 * descriptor limit, one check per distinct reference, a bounded number at once, and sparse
 * manifests (opt-in) that name layers or children that are not stored.
 */
import { randomBytes } from 'node:crypto'
import test from 'ava'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { MAX_DESCRIPTORS } from '../../src/storage/manifest.js'
import { createRegistryStore } from '../../src/storage/registry-store.js'
import { collectGarbage } from '../../src/storage/gc.js'
import { request } from '../helpers/http.js'
import { errorCode, imageManifest, OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, startApp, startFilesystemApp } from './fixtures.js'

const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip'

/** An OCI manifest whose config is `config` and whose layers are `layers` (digests, repeats allowed). */
function manifestOf(config: { digest: string; size: number }, layers: readonly string[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map(digest => ({ mediaType: LAYER, digest, size: 1000 })),
    }),
  )
}

function indexOf(children: readonly string[]): Buffer {
  return Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children.map(digest => ({ mediaType: OCI_MANIFEST, digest, size: 500 })) }),
  )
}

/**
 * A driver that counts the calls made through it and the most `stat`/`touch` calls in flight at
 * once (composition: every call goes to the wrapped driver).
 */
function countingDriver(inner: StorageDriver): { driver: StorageDriver; calls: Map<string, number>; maxInFlight: () => number; reset: () => void } {
  const calls = new Map<string, number>()
  let inFlight = 0
  let max = 0
  const driver = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver)
      if (typeof value !== 'function') return value
      return (...args: unknown[]) => {
        const name = String(property)
        calls.set(name, (calls.get(name) ?? 0) + 1)
        if (name !== 'stat' && name !== 'touch') return value.apply(target, args)
        inFlight++
        max = Math.max(max, inFlight)
        return (value.apply(target, args) as Promise<unknown>).finally(() => inFlight--)
      }
    },
  })
  return {
    driver,
    calls,
    maxInFlight: () => max,
    reset: () => {
      calls.clear()
      max = 0
    },
  }
}

test(`a manifest with ${MAX_DESCRIPTORS} layers is accepted, one more is MANIFEST_INVALID`, async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'many')
  const layer = image.layers[0]!.digest
  const at = manifestOf(
    image.config,
    Array.from({ length: MAX_DESCRIPTORS }, () => layer),
  )
  t.is((await putManifest(server, 'many', 'at', at, OCI_MANIFEST)).status, 201)
  const over = manifestOf(
    image.config,
    Array.from({ length: MAX_DESCRIPTORS + 1 }, () => layer),
  )
  const put = await putManifest(server, 'many', 'over', over, OCI_MANIFEST)
  t.is(put.status, 400)
  t.is(errorCode(put), 'MANIFEST_INVALID')
  t.regex(put.json.errors[0].detail.reason, /at most 10000/)
  t.is((await request(server, '/v2/many/manifests/over')).status, 404)
})

test(`an index with more than ${MAX_DESCRIPTORS} children is MANIFEST_INVALID`, async t => {
  const { server } = await startApp(t)
  const child = await imageManifest(server, 'idx')
  await putManifest(server, 'idx', child.digest, child.manifest, OCI_MANIFEST)
  t.is((await putManifest(server, 'idx', 'at', indexOf(Array.from({ length: MAX_DESCRIPTORS }, () => child.digest)), OCI_INDEX)).status, 201)
  const over = await putManifest(server, 'idx', 'over', indexOf(Array.from({ length: MAX_DESCRIPTORS + 1 }, () => child.digest)), OCI_INDEX)
  t.is(over.status, 400)
  t.is(errorCode(over), 'MANIFEST_INVALID')
})

test('each distinct blob and child is checked once, however often the manifest names it', async t => {
  const counting = countingDriver(new InMemoryDriver())
  const store = createRegistryStore(counting.driver)
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}')
  const layer = randomBytes(1000)
  for (const blob of [config, layer]) {
    const digest = sha256(blob)
    await counting.driver.putContent(`/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`, blob)
    await store.blobs.link('dup', digest)
  }
  const manifest = manifestOf(
    { digest: sha256(config), size: config.byteLength },
    Array.from({ length: 5000 }, () => sha256(layer)),
  )
  counting.reset()
  await store.manifests.put('dup', 'v1', manifest)
  // Two distinct blobs (config, layer): a link stat, a touch and a stat each; then the writes' own.
  t.true((counting.calls.get('stat') ?? 0) + (counting.calls.get('touch') ?? 0) <= 12, JSON.stringify([...counting.calls]))

  const index = indexOf(Array.from({ length: 5000 }, () => sha256(manifest)))
  counting.reset()
  await store.manifests.put('dup', 'index', index)
  t.true((counting.calls.get('touch') ?? 0) <= 3, JSON.stringify([...counting.calls]))
})

test('the existence checks of one manifest run a few at a time', async t => {
  const counting = countingDriver(new InMemoryDriver())
  const store = createRegistryStore(counting.driver)
  const config = Buffer.from('{}')
  const layers = Array.from({ length: 200 }, () => randomBytes(100))
  for (const blob of [config, ...layers]) {
    const digest = sha256(blob)
    await counting.driver.putContent(`/docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`, blob)
    await store.blobs.link('wide', digest)
  }
  counting.reset()
  await store.manifests.put(
    'wide',
    'v1',
    manifestOf(
      { digest: sha256(config), size: 2 },
      layers.map(l => sha256(l)),
    ),
  )
  t.true(counting.maxInFlight() <= 8, `at most 8 at once, saw ${counting.maxInFlight()}`)
  // A missing layer stops the checks early: far fewer calls than one per layer.
  counting.reset()
  const missing = [sha256('not stored'), ...layers.map(l => sha256(l))]
  const error = await t.throwsAsync(store.manifests.put('wide', 'v2', manifestOf({ digest: sha256(config), size: 2 }, missing)))
  t.is(error?.name, 'ManifestBlobUnknownError')
  t.true((counting.calls.get('stat') ?? 0) < 100, JSON.stringify([...counting.calls]))
})

test('sparse manifests are refused by default and accepted with allowSparseManifests; the config must still be stored', async t => {
  const strict = await startApp(t)
  const sparse = await startApp(t, { allowSparseManifests: true })
  for (const { server } of [strict, sparse]) {
    const child = await imageManifest(server, 'multi')
    t.is((await putManifest(server, 'multi', child.digest, child.manifest, OCI_MANIFEST)).status, 201)
    const absentChild = sha256('arm64 manifest not copied')
    const index = indexOf([child.digest, absentChild])
    const put = await putManifest(server, 'multi', 'v1', index, OCI_INDEX)
    const layerless = manifestOf(child.config, [child.layers[0]!.digest, sha256('layer not copied')])
    const putLayerless = await putManifest(server, 'multi', 'layerless', layerless, OCI_MANIFEST)
    const configless = manifestOf({ digest: sha256('config not copied'), size: 10 }, [child.layers[0]!.digest])
    const putConfigless = await putManifest(server, 'multi', 'configless', configless, OCI_MANIFEST)
    t.is(errorCode(putConfigless), 'MANIFEST_BLOB_UNKNOWN', 'the config is always required')
    if (server === strict.server) {
      t.is(errorCode(put), 'MANIFEST_BLOB_UNKNOWN')
      t.is(errorCode(putLayerless), 'MANIFEST_BLOB_UNKNOWN')
      continue
    }
    t.is(put.status, 201)
    t.is(putLayerless.status, 201)
    t.deepEqual((await request(server, '/v2/multi/manifests/v1', { headers: { Accept: OCI_INDEX } })).body, index)
    t.is((await request(server, `/v2/multi/manifests/${child.digest}`)).status, 200)
    t.is(errorCode(await request(server, `/v2/multi/manifests/${absentChild}`)), 'MANIFEST_UNKNOWN')
    t.is((await request(server, `/v2/multi/blobs/${sha256('layer not copied')}`)).status, 404)
  }
})

test('GC treats the absent parts of a sparse index and manifest as absent: no warnings, the present parts kept', async t => {
  const running = await startFilesystemApp(t, undefined, { allowSparseManifests: true })
  const { server } = running
  const child = await imageManifest(server, 'multi', { layers: 2 })
  t.is((await putManifest(server, 'multi', child.digest, child.manifest, OCI_MANIFEST)).status, 201)
  const index = indexOf([child.digest, sha256('absent child')])
  t.is((await putManifest(server, 'multi', 'v1', index, OCI_INDEX)).status, 201)
  const layerless = manifestOf(child.config, [child.layers[0]!.digest, sha256('absent layer')])
  t.is((await putManifest(server, 'multi', 'layerless', layerless, OCI_MANIFEST)).status, 201)
  const orphan = await pushBlob(server, 'multi', randomBytes(3000))

  for (const deleteUntagged of [false, true]) {
    const report = await collectGarbage(running.driver, { gracePeriodMs: 0, deleteUntagged })
    t.deepEqual(report.warnings, [], `deleteUntagged ${deleteUntagged}`)
    t.deepEqual(
      report.blobs.map(b => b.digest),
      deleteUntagged ? [] : [orphan],
    )
  }
  for (const digest of [child.config.digest, ...child.layers.map(l => l.digest)]) {
    t.is((await request(server, `/v2/multi/blobs/${digest}`, { method: 'HEAD' })).status, 200)
  }
  t.is((await request(server, '/v2/multi/manifests/v1', { headers: { Accept: OCI_INDEX } })).status, 200)
  t.is((await request(server, '/v2/multi/manifests/layerless', { headers: { Accept: OCI_MANIFEST } })).status, 200)
})
