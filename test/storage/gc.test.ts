/**
 * Garbage collection against real pushes over HTTP (createRegistryApp on the filesystem driver),
 * as a user sees it: what goes, what stays and pulls byte-identical, re-pushes after GC, multi-arch
 * indexes with --delete-untagged, referrers, dangling layer links and interrupted runs.
 */
import { randomBytes } from 'node:crypto'
import { readdir, rename, stat, utimes, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { collectGarbage, GcBusyError, acquireGcLock } from '../../src/storage/gc.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { request } from '../helpers/http.js'
import {
  imageManifest,
  OCI_INDEX,
  OCI_MANIFEST,
  pushBlob,
  putManifest,
  sha256,
  startApp,
  startFilesystemApp,
  tempRoot,
  type PushedImage,
  type Running,
} from '../registry/fixtures.js'
import { assertPulls, deleteManifest, ociManifest, pushRetrying } from './gc-clients.js'

const HOUR = 3600_000

function sizes(blobs: readonly { digest: string; size: number }[]): string[] {
  return blobs.map(b => `${b.digest} ${b.size}`).sort()
}

function blobFile(root: string, digest: string): string {
  const hex = digest.slice('sha256:'.length)
  return join(root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data')
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  )
}

/** Every file under `dir` gets a modification time `ageMs` in the past (as if pushed long ago). */
async function age(dir: string, ageMs = 2 * HOUR): Promise<void> {
  const when = new Date(Date.now() - ageMs)
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) await utimes(join(entry.parentPath, entry.name), when, when)
  }
}

async function pushImage(running: Running, name: string, tag: string, layers = 2): Promise<PushedImage> {
  const image = await imageManifest(running.server, name, { layers })
  const put = await putManifest(running.server, name, tag, image.manifest, OCI_MANIFEST)
  if (put.status !== 201) throw new Error(`manifest PUT ${put.status} ${put.body.toString()}`)
  return image
}

test('GC frees exactly the unreferenced blobs; a dry run lists the same and deletes nothing; tagged images pull byte-identical', async t => {
  const running = await startFilesystemApp(t)
  const root = running.root!
  const kept = await pushImage(running, 'app', 'v1')
  // A second image sharing kept's first layer, pushed as another repository would mount it.
  const shared = kept.layers[0]!.digest
  await request(running.server, `/v2/other/blobs/uploads/?mount=${shared}&from=app`, { method: 'POST' })
  const doomed = await pushImage(running, 'other', 'v1')
  const withShared = JSON.parse(doomed.manifest.toString())
  withShared.layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: shared, size: kept.layers[0]!.size })
  const doomed2 = Buffer.from(JSON.stringify(withShared))
  t.is((await putManifest(running.server, 'other', 'v2', doomed2, OCI_MANIFEST)).status, 201)
  const orphan = await pushBlob(running.server, 'app', randomBytes(5000)) // uploaded, never referenced
  await deleteManifest(running, 'other', doomed.digest)
  await deleteManifest(running, 'other', sha256(doomed2))
  await age(root)

  const expected = new Map<string, number>([
    [doomed.digest, doomed.manifest.byteLength],
    [sha256(doomed2), doomed2.byteLength],
    [doomed.config.digest, doomed.config.size],
    ...doomed.layers.map(l => [l.digest, l.size] as [string, number]),
    [orphan, 5000],
  ])
  const dry = await collectGarbage(running.driver, { dryRun: true })
  t.deepEqual(sizes(dry.blobs), sizes([...expected].map(([digest, size]) => ({ digest, size }))))
  t.is(
    dry.bytesFreed,
    [...expected.values()].reduce((a, b) => a + b, 0),
  )
  for (const digest of expected.keys()) t.true(await exists(blobFile(root, digest)), 'dry run deletes nothing')

  const report = await collectGarbage(running.driver)
  t.deepEqual(sizes(report.blobs), sizes([...expected].map(([digest, size]) => ({ digest, size }))))
  t.is(report.bytesFreed, dry.bytesFreed)
  t.deepEqual(report.warnings, [])
  for (const digest of expected.keys()) {
    t.false(await exists(blobFile(root, digest)), `${digest} deleted`)
    t.false(await exists(join(blobFile(root, digest), '..')), 'its folder too')
  }
  // Dangling layer links of the swept blobs are gone; the shared layer's links stay.
  t.deepEqual(
    report.layerLinks.map(l => `${l.repository} ${l.digest}`).sort(),
    [...doomed.layers.map(l => `other ${l.digest}`), `other ${doomed.config.digest}`, `app ${orphan}`].sort(),
  )
  await assertPulls(t, running, 'app', 'v1')
  t.is((await request(running.server, `/v2/other/blobs/${shared}`, { method: 'HEAD' })).status, 200)
  for (const layer of doomed.layers) t.is((await request(running.server, `/v2/other/blobs/${layer.digest}`, { method: 'HEAD' })).status, 404)

  const again = await collectGarbage(running.driver)
  t.is(again.blobs.length, 0, 'a second run finds nothing')
})

test('the grace period keeps recent unreferenced blobs (layers pushed before their manifest)', async t => {
  const running = await startFilesystemApp(t)
  const early = await pushBlob(running.server, 'app', randomBytes(100))
  const report = await collectGarbage(running.driver)
  t.is(report.blobs.length, 0)
  t.is(report.blobsRecent, 1)
  t.is((await request(running.server, `/v2/app/blobs/${early}`, { method: 'HEAD' })).status, 200)
})

test('an untagged manifest stays without --delete-untagged and goes with it', async t => {
  const running = await startFilesystemApp(t)
  const image = await pushImage(running, 'app', 'v1')
  await pushImage(running, 'app', 'v2')
  await deleteManifest(running, 'app', 'v1') // untag only: the revision stays
  await age(running.root!)
  const plain = await collectGarbage(running.driver)
  t.is(plain.blobs.length, 0)
  t.is((await request(running.server, `/v2/app/manifests/${image.digest}`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })).status, 200)

  const untagged = await collectGarbage(running.driver, { deleteUntagged: true })
  t.deepEqual(untagged.manifests, [{ repository: 'app', digest: image.digest }])
  t.deepEqual(untagged.blobs.map(b => b.digest).sort(), [image.digest, image.config.digest, ...image.layers.map(l => l.digest)].sort())
  t.is((await request(running.server, `/v2/app/manifests/${image.digest}`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })).status, 404)
  await assertPulls(t, running, 'app', 'v2')
})

test('after GC a swept blob is unknown: HEAD says 404 even with a stale layer link, and a manifest naming it is refused', async t => {
  const running = await startFilesystemApp(t)
  const image = await pushImage(running, 'app', 'v1')
  await deleteManifest(running, 'app', 'v1')
  await age(running.root!)
  const report = await collectGarbage(running.driver, { deleteUntagged: true })
  t.is(report.blobs.length, 2 + image.layers.length)
  // A stale `_layers` link, as registry:2's GC leaves them: the bytes are gone, so HEAD is 404.
  const layer = image.layers[0]!.digest
  const link = join(running.root!, 'docker/registry/v2/repositories/app/_layers/sha256', layer.slice(7))
  await mkdir(link, { recursive: true })
  await writeFile(join(link, 'link'), layer)
  for (const descriptor of [image.config, ...image.layers]) {
    t.is((await request(running.server, `/v2/app/blobs/${descriptor.digest}`, { method: 'HEAD' })).status, 404)
  }
  const put = await putManifest(running.server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  t.is(put.status, 400)
  t.is(put.json.errors[0].code, 'MANIFEST_BLOB_UNKNOWN')
})

test('deleted tag → GC → skopeo-like re-push of identical bytes → pull byte-identical', async t => {
  const running = await startFilesystemApp(t)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }))
  const layers = [randomBytes(3000), randomBytes(4000)]
  const push = async () => {
    for (const blob of [config, ...layers]) {
      const head = await request(running.server, `/v2/app/blobs/${sha256(blob)}`, { method: 'HEAD' })
      if (head.status !== 200) await pushBlob(running.server, 'app', blob)
    }
    const manifest = ociManifest(config, layers)
    const put = await putManifest(running.server, 'app', 'v1', manifest, OCI_MANIFEST)
    t.is(put.status, 201)
    return manifest
  }
  const manifest = await push()
  await deleteManifest(running, 'app', sha256(manifest))
  await age(running.root!)
  const report = await collectGarbage(running.driver)
  t.is(report.blobs.length, 4)
  t.is(report.bytesFreed, config.byteLength + 7000 + manifest.byteLength)
  await push()
  await assertPulls(t, running, 'app', 'v1')
  for (const layer of layers) t.deepEqual((await request(running.server, `/v2/app/blobs/${sha256(layer)}`)).body, layer)
})

async function pushIndex(running: Running, name: string, options: { tag?: string } = {}) {
  const children = [await imageManifest(running.server, name), await imageManifest(running.server, name)]
  for (const child of children) t_ok(await putManifest(running.server, name, child.digest, child.manifest, OCI_MANIFEST))
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: children.map((c, i) => ({
        mediaType: OCI_MANIFEST,
        digest: c.digest,
        size: c.manifest.byteLength,
        platform: { architecture: ['amd64', 'arm64'][i], os: 'linux' },
      })),
    }),
  )
  t_ok(await putManifest(running.server, name, options.tag ?? sha256(index), index, OCI_INDEX))
  return { index, digest: sha256(index), children }
}

function t_ok(response: { status: number; body: Buffer }): void {
  if (response.status !== 201) throw new Error(`PUT: ${response.status} ${response.body.toString()}`)
}

test('a multi-arch index with untagged children survives --delete-untagged; its referrers stay unless asked', async t => {
  const running = await startFilesystemApp(t)
  const multi = await pushIndex(running, 'app', { tag: 'latest' })
  const stray = await imageManifest(running.server, 'app')
  t_ok(await putManifest(running.server, 'app', stray.digest, stray.manifest, OCI_MANIFEST)) // untagged, in no index
  // A signature-like referrer of the index: untagged, subject = the index.
  const sigConfig = Buffer.from('{}')
  const sigConfigDigest = await pushBlob(running.server, 'app', sigConfig)
  const signature = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example.signature',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sigConfigDigest, size: 2 },
      layers: [],
      subject: { mediaType: OCI_INDEX, digest: multi.digest, size: multi.index.byteLength },
    }),
  )
  t_ok(await putManifest(running.server, 'app', sha256(signature), signature, OCI_MANIFEST))
  await age(running.root!)

  const report = await collectGarbage(running.driver, { deleteUntagged: true })
  t.deepEqual(report.manifests, [{ repository: 'app', digest: stray.digest }])
  t.deepEqual(report.blobs.map(b => b.digest).sort(), [stray.digest, stray.config.digest, ...stray.layers.map(l => l.digest)].sort())
  await assertPulls(t, running, 'app', 'latest')
  for (const child of multi.children) await assertPulls(t, running, 'app', child.digest)
  const referrers = await request(running.server, `/v2/app/referrers/${multi.digest}`)
  t.deepEqual(
    referrers.json.manifests.map((m: { digest: string }) => m.digest),
    [sha256(signature)],
  )

  const dropReferrers = await collectGarbage(running.driver, { deleteUntagged: true, keepReferrers: false })
  t.deepEqual(dropReferrers.manifests, [{ repository: 'app', digest: sha256(signature) }])
  t.deepEqual((await request(running.server, `/v2/app/referrers/${multi.digest}`)).json.manifests, [])
  await assertPulls(t, running, 'app', 'latest')
})

test('GC racing pushes of the same and other layers, many rounds: nothing referenced is lost', async t => {
  const running = await startFilesystemApp(t)
  const root = running.root!
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
  const base = randomBytes(20_000) // shared by every image, kept by the tagged ones
  const tagged: { name: string; tag: string }[] = []
  let retries = 0
  let restored = 0
  let gcRuns = 0

  /** A client's push (gc-clients.ts): retried on MANIFEST_BLOB_UNKNOWN as docker does, up to 5 times. */
  const push = async (name: string, tag: string, layers: Buffer[]) => {
    retries += await pushRetrying(() => running.server, name, tag, config, [base, ...layers], 5)
  }

  const rounds = 30
  for (let round = 0; round < rounds; round++) {
    // Garbage that the pushes below re-use: an image pushed and deleted "long ago".
    const reused = [randomBytes(5000), randomBytes(6000)]
    await push('old', 'gone', reused)
    await deleteManifest(running, 'old', 'gone')
    await request(running.server, `/v2/old/manifests/${sha256(Buffer.from('x'))}`) // noise
    const revisions = join(root, 'docker/registry/v2/repositories/old/_manifests/revisions/sha256')
    for (const hex of await readdir(revisions).catch(() => [])) {
      await request(running.server, `/v2/old/manifests/sha256:${hex}`, { method: 'DELETE' })
    }
    await age(root)
    const fresh = randomBytes(7000)
    const name = `r${round % 3}`
    const tag = `t${round}`
    // Back-to-back GC runs for as long as the pushes take, so runs overlap every step of them.
    let pushing = true
    const gc = (async () => {
      await new Promise(resolve => setTimeout(resolve, round % 4))
      let runs = 0
      while (pushing || runs === 0) {
        const report = await collectGarbage(running.driver, { deleteUntagged: round % 2 === 0 })
        restored += report.restored
        runs++
      }
      gcRuns += runs
    })()
    const pushes = Promise.all([push(name, tag, [...reused, fresh]), push('other', tag, [reused[0]!]), push(`m${round}`, 'x', [reused[1]!])]).finally(() => {
      pushing = false
    })
    await Promise.all([gc, pushes])
    tagged.push({ name: `m${round}`, tag: 'x' })
    tagged.push({ name, tag }, { name: 'other', tag })
    for (const image of tagged) await assertPulls(t, running, image.name, image.tag)
  }
  t.log(
    `${rounds} rounds, ${gcRuns} GC runs during pushes: ${retries} pushes retried after MANIFEST_BLOB_UNKNOWN, ${restored} blobs/links put back after a push touched them`,
  )
  const final = await collectGarbage(running.driver, { deleteUntagged: true, gracePeriodMs: 0 })
  t.deepEqual(final.warnings, [])
  for (const image of tagged) await assertPulls(t, running, image.name, image.tag)
})

test('blobs and revisions re-used between mark and sweep are kept: upload of a stored blob, mount, manifest naming stored layers, index naming an old child', async t => {
  const running = await startFilesystemApp(t)
  const garbage = await pushImage(running, 'old', 'gone', 3)
  const child = await imageManifest(running.server, 'multi')
  t_ok(await putManifest(running.server, 'multi', child.digest, child.manifest, OCI_MANIFEST)) // untagged child, pushed long ago
  const known = randomBytes(3000)
  const knownDigest = await pushBlob(running.server, 'old', known) // an orphan: uploaded, never referenced
  await deleteManifest(running, 'old', garbage.digest)
  await age(running.root!)
  const report = await collectGarbage(running.driver, {
    deleteUntagged: true,
    beforeSweep: async phase => {
      if (phase === 'untagged') {
        // After marking: GC saw the child as an untagged manifest to delete.
        const index = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_INDEX,
            manifests: [{ mediaType: OCI_MANIFEST, digest: child.digest, size: child.manifest.byteLength }],
          }),
        )
        t_ok(await putManifest(running.server, 'multi', 'latest', index, OCI_INDEX))
        return
      }
      // After the blobs were listed: GC has every blob below on its list of old garbage.
      const [l0, l1, l2] = garbage.layers as [PushedImage['layers'][0], PushedImage['layers'][0], PushedImage['layers'][0]]
      // (a) a mount of a stored blob into another repository
      t.is((await request(running.server, `/v2/y/blobs/uploads/?mount=${l0.digest}&from=old`, { method: 'POST' })).status, 201)
      // (b) a manifest in `old` naming its config and layers, still linked there (a client's HEAD said 200)
      const manifest = JSON.parse(garbage.manifest.toString())
      manifest.annotations = { again: 'yes' }
      const again = Buffer.from(JSON.stringify(manifest))
      t_ok(await putManifest(running.server, 'old', 'again', again, OCI_MANIFEST))
      // (c) an upload of bytes already stored (the upload commit finds the blob and re-uses it)
      t.is(await pushBlob(running.server, 'z', known), knownDigest)
      t.truthy(l1 && l2)
    },
  })
  // The child's revision link, the old config and 3 layers named by the new manifest, the re-uploaded orphan.
  t.is(report.restored, 6)
  t.deepEqual(
    report.blobs.map(b => b.digest),
    [garbage.digest],
    'only the old manifest bytes go',
  )
  t.deepEqual(report.manifests, [], 'the old child is re-used by the new index')
  await assertPulls(t, running, 'old', 'again')
  await assertPulls(t, running, 'multi', 'latest')
  t.is((await request(running.server, `/v2/y/blobs/${garbage.layers[0]!.digest}`, { method: 'HEAD' })).status, 200)
  t.deepEqual((await request(running.server, `/v2/z/blobs/${knownDigest}`)).body, known)
})

/** A filesystem driver that lets a test act right after GC renamed something away. */
class PausingDriver extends FilesystemDriver {
  onMove: ((source: string, dest: string) => Promise<void>) | undefined
  override async move(source: string, dest: string): Promise<void> {
    await super.move(source, dest)
    const hook = this.onMove
    if (hook !== undefined) await hook(source, dest)
  }
}

test('a push that comes after GC renamed a blob away finds it missing: the manifest is refused, the upload stores it again, the retry works', async t => {
  const dir = await tempRoot(t)
  const driver = new PausingDriver(dir)
  const running = await startApp(t, { driver })
  const base = await pushImage(running, 'app', 'v1')
  const orphan = randomBytes(4000)
  const orphanDigest = await pushBlob(running.server, 'app', orphan)
  await age(dir)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: base.config.digest, size: base.config.size },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: orphanDigest, size: orphan.byteLength }],
    }),
  )
  let acted = false
  driver.onMove = async (_source, dest) => {
    if (acted || !dest.endsWith(`${orphanDigest.slice(7)}/.gc-data`)) return
    acted = true
    t.is((await request(running.server, `/v2/app/blobs/${orphanDigest}`, { method: 'HEAD' })).status, 404, 'HEAD: gone')
    const refused = await putManifest(running.server, 'app', 'v2', manifest, OCI_MANIFEST)
    t.is(refused.json?.errors?.[0]?.code, 'MANIFEST_BLOB_UNKNOWN', 'a manifest naming it is refused')
    t.is(await pushBlob(running.server, 'app', orphan), orphanDigest, 'the client uploads it again')
    t.is((await putManifest(running.server, 'app', 'v2', manifest, OCI_MANIFEST)).status, 201, 'and the retry is accepted')
  }
  const report = await collectGarbage(driver)
  t.true(acted)
  t.deepEqual(
    report.blobs.map(b => b.digest),
    [orphanDigest],
    'the old copy was deleted...',
  )
  t.deepEqual(report.layerLinks, [], '...but not the link, since the blob is stored again')
  await assertPulls(t, running, 'app', 'v2')
  await assertPulls(t, running, 'app', 'v1')
})

test('a run killed after renaming a blob away is repaired by the next run', async t => {
  const running = await startFilesystemApp(t)
  const image = await pushImage(running, 'app', 'v1')
  const layer = blobFile(running.root!, image.layers[0]!.digest)
  await rename(layer, join(layer, '..', '.gc-data')) // what a killed run leaves
  t.is((await request(running.server, `/v2/app/blobs/${image.layers[0]!.digest}`, { method: 'HEAD' })).status, 404)
  const report = await collectGarbage(running.driver)
  t.is(report.recovered, 1)
  t.is(report.blobs.length, 0)
  await assertPulls(t, running, 'app', 'v1')
})

test('two runs on one datadir exclude each other; dry runs need no lock', async t => {
  const running = await startFilesystemApp(t)
  const release = await acquireGcLock(running.driver)
  await t.throwsAsync(collectGarbage(running.driver), { instanceOf: GcBusyError })
  await t.notThrowsAsync(collectGarbage(running.driver, { dryRun: true }))
  await release()
  await t.notThrowsAsync(collectGarbage(running.driver))
  // A lock file left by a dead process is taken over.
  await writeFile(join(running.root!, '.berth-gc.lock'), '999999999\n')
  await t.notThrowsAsync(collectGarbage(running.driver))
})

test('works on the in-memory driver too (no folders to clean)', async t => {
  const driver: StorageDriver = new InMemoryDriver()
  const running = await startApp(t, { driver })
  const image = await pushImage(running, 'app', 'v1')
  await deleteManifest(running, 'app', image.digest)
  const report = await collectGarbage(driver, { gracePeriodMs: 0, now: new Date(Date.now() + 1000) })
  t.is(report.blobs.length, 2 + image.layers.length)
  t.is((await request(running.server, `/v2/app/blobs/${image.config.digest}`, { method: 'HEAD' })).status, 404)
})
