/**
 * Crash safety and memory, against the engine in its own process on a real filesystem:
 * - `kill -9` at random moments during concurrent pushes never leaves a half-visible blob,
 *   manifest or tag: every link points at stored bytes whose hash is their name.
 * - Streaming a large layer does not grow the process's memory with the layer's size.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import test from 'ava'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { PathNotFoundError } from '../../src/storage/driver/storage-driver.js'
import { listOrEmpty } from '../../src/storage/maintenance-scan.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { INDEX_ROOT, tagCurrentLinkPath, tagsPath } from '../../src/storage/paths.js'
import { checkStore, kill9, startChild, type Child } from '../helpers/engine-crash.js'
import { request } from '../helpers/http.js'
import { OCI_MANIFEST, putManifest, sha256, tempRoot } from '../registry/fixtures.js'

/** One push of an image: layers by chunked PATCH, config, manifest by tag. Errors (the kill) are swallowed. */
async function pushImage(url: string, name: string, tag: string): Promise<void> {
  try {
    const layers: { digest: string; size: number }[] = []
    for (let i = 0; i < 2; i++) {
      const layer = randomBytes(200_000 + Math.floor(Math.random() * 2_000_000))
      const start = await request(url, `/v2/${name}/blobs/uploads/`, { method: 'POST' })
      const location = String(start.headers.location)
      const half = Math.floor(layer.byteLength / 2)
      await request(url, location, { method: 'PATCH', headers: { 'Content-Range': `0-${half - 1}` }, body: layer.subarray(0, half) })
      const digest = sha256(layer)
      await request(url, `${location}?digest=${digest}`, {
        method: 'PUT',
        headers: { 'Content-Range': `${half}-${layer.byteLength - 1}` },
        body: layer.subarray(half),
      })
      layers.push({ digest, size: layer.byteLength })
    }
    const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] }, r: Math.random() }))
    const configDigest = sha256(config)
    await request(url, `/v2/${name}/blobs/uploads/?digest=${configDigest}`, { method: 'POST', body: config })
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
        layers: layers.map(l => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
      }),
    )
    await putManifest(url, name, tag, manifest, OCI_MANIFEST)
  } catch {
    // the process was killed under us: that is the point
  }
}

test('kill -9 during concurrent pushes leaves no half-visible blob, manifest or tag', async t => {
  t.timeout(170_000)
  const root = await tempRoot(t)
  const children: Child[] = []
  t.teardown(async () => {
    for (const child of children) await kill9(child)
  })
  for (let round = 0; round < 6; round++) {
    const child = await startChild(root)
    children.push(child)
    const pushes = Array.from({ length: 4 }, (_, i) => pushImage(child.url, `crash/r${i % 2}`, `t${round}-${i}`))
    await new Promise(resolve => setTimeout(resolve, 150 + Math.floor(Math.random() * 900)))
    await kill9(child)
    await Promise.all(pushes)
  }

  // The store's invariants (blob bytes hash to their name, every link points at a stored blob,
  // every tag at a complete revision): the checker test/hardening/crash.test.ts uses too.
  const store = await checkStore(root, new Map())
  t.log(`${store.blobs} blobs, ${store.links} links, ${store.tags} tags checked`)
  t.deepEqual(store.problems, [], 'the store holds nothing half-visible')
  t.true(store.blobs > 0)

  // A fresh process serves every tag that exists, with the right digest.
  const child = await startChild(root)
  children.push(child)
  for (const name of ['crash/r0', 'crash/r1']) {
    const tags = await request(child.url, `/v2/${name}/tags/list`)
    if (tags.status === 404) continue
    for (const tag of tags.json.tags as string[]) {
      const manifest = await request(child.url, `/v2/${name}/manifests/${tag}`)
      t.is(manifest.status, 200, `${name}:${tag}`)
      t.is(manifest.headers['docker-content-digest'], sha256(manifest.body))
      for (const layer of JSON.parse(manifest.body.toString()).layers as { digest: string }[]) {
        t.is((await request(child.url, `/v2/${name}/blobs/${layer.digest}`, { method: 'HEAD' })).status, 200)
      }
    }
  }
})

test('kill -9 mid-push with the metadata index: no record is wrong, and reindex equals an index rebuilt from nothing', async t => {
  t.timeout(170_000)
  const root = await tempRoot(t)
  const children: Child[] = []
  t.teardown(async () => {
    for (const child of children) await kill9(child)
  })
  for (let round = 0; round < 4; round++) {
    const child = await startChild(root, { index: true })
    children.push(child)
    // Some tags move (same tag name each round), some are new.
    const pushes = Array.from({ length: 4 }, (_, i) => pushImage(child.url, `crash/r${i % 2}`, i < 2 ? 'moving' : `t${round}-${i}`))
    await new Promise(resolve => setTimeout(resolve, 150 + Math.floor(Math.random() * 900)))
    await kill9(child)
    await Promise.all(pushes)
  }
  const driver = new FilesystemDriver(root)
  const links = new Map<string, string>()
  for (const name of ['crash/r0', 'crash/r1']) {
    for (const tag of await listOrEmpty(driver, tagsPath(name))) {
      const tagName = tag.slice(tag.lastIndexOf('/') + 1)
      // A kill between a tag's folder and its link leaves the folder alone: no tag, and no record.
      const link = await driver.getContent(tagCurrentLinkPath(name, tagName)).catch((error: unknown) => {
        if (error instanceof PathNotFoundError) return undefined
        throw error
      })
      if (link !== undefined) links.set(`${name}:${tagName}`, link.toString('utf8'))
    }
  }
  t.true(links.size > 0, 'some pushes completed before a kill')

  // As the killed processes left it: a record may be missing (killed before its hook ran), never wrong.
  const left = await indexSnapshot(new MetadataIndex(driver))
  for (const [tag, digest] of Object.entries(left)) t.is(digest, links.get(tag), `${tag}: the record left behind agrees with the link`)

  // berth reindex on that (what berth serve also does at start) ...
  const live = new MetadataIndex(driver)
  await live.reindex()
  const reindexed = await indexSnapshot(live, true)
  t.deepEqual(await indexSnapshot(live), Object.fromEntries(links), 'every tag in the tree, with its link')
  // ... equals an index rebuilt from nothing (same times, sizes, platforms, created).
  await live.close() // its change feed is written in the background
  await rm(join(root, INDEX_ROOT), { recursive: true, force: true })
  const fresh = new MetadataIndex(driver)
  await fresh.reindex()
  t.deepEqual(reindexed, await indexSnapshot(fresh, true))
  t.log(`${links.size} tags after 4 kills; ${Object.keys(left).length} had records before reindex`)
})

/** Tag → digest (or, with `full`, every field a UI shows but pull figures) over every repository. */
async function indexSnapshot(index: MetadataIndex, full = false): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const repository of (await index.listRepositories()).items) {
    for (const { lastPulledAt: _l, pullCount: _p, ...tag } of (await index.listTags(repository.name)) ?? []) {
      out[`${repository.name}:${tag.tag}`] = full ? { ...tag, image: await index.image(repository.name, tag.digest) } : tag.digest
    }
  }
  return out
}

function peakRssKiB(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then(text => Number(/VmHWM:\s+(\d+)/.exec(text)?.[1] ?? 0))
}

test('memory does not grow with the size of a layer (512 MiB streamed through PATCH)', async t => {
  t.timeout(170_000)
  const root = await tempRoot(t)
  const child = await startChild(root)
  t.teardown(() => kill9(child))
  // Warm up so the baseline includes the code paths.
  const small = randomBytes(1024 * 1024)
  const warm = await request(child.url, '/v2/mem/blobs/uploads/', { method: 'POST' })
  await request(child.url, `${String(warm.headers.location)}?digest=${sha256(small)}`, { method: 'PUT', body: small })
  const before = await peakRssKiB(child.process.pid!)

  const chunk = randomBytes(1024 * 1024)
  const total = 512
  const hash = createHash('sha256')
  for (let i = 0; i < total; i++) hash.update(chunk)
  const digest = `sha256:${hash.digest('hex')}`
  const started = Date.now()
  const start = await request(child.url, '/v2/mem/blobs/uploads/', { method: 'POST' })
  const location = String(start.headers.location)
  let sent = 0
  const body = new Readable({
    read() {
      if (sent++ < total) this.push(chunk)
      else this.push(null)
    },
  })
  const patch = await request(child.url, location, { method: 'PATCH', body })
  t.is(patch.status, 202)
  const put = await request(child.url, `${location}?digest=${digest}`, { method: 'PUT' })
  t.is(put.status, 201)
  const seconds = (Date.now() - started) / 1000
  const after = await peakRssKiB(child.process.pid!)
  t.log(`512 MiB in ${seconds.toFixed(1)} s (${(512 / seconds).toFixed(0)} MiB/s); peak RSS ${Math.round(before / 1024)} → ${Math.round(after / 1024)} MiB`)
  t.true(after - before < 64 * 1024, `peak RSS grew by ${Math.round((after - before) / 1024)} MiB`)
  const head = await request(child.url, `/v2/mem/blobs/${digest}`, { method: 'HEAD' })
  t.is(head.headers['content-length'], String(total * 1024 * 1024))
})
