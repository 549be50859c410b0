/**
 * The metadata index (storage/metadata/) against pushes, deletes and GC through the real engine:
 * exact after each change, durable push times across a restart and a reindex, a registry:2 tree
 * reindexed, two instances on one store pushing one tag, pulls counted and summed.
 */
import { randomBytes } from 'node:crypto'
import { readdir, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { collectGarbage } from '../../src/storage/gc.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { INDEX_ROOT, tagCurrentLinkPath } from '../../src/storage/paths.js'
import { request } from '../helpers/http.js'
import { OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, startApp, tempRoot, type Running } from '../registry/fixtures.js'

interface Pushed {
  digest: string
  manifest: Buffer
  size: number
}

/** Pushes config (with `created` and labels) and layers, then the manifest under `reference`. */
async function pushImage(
  running: Running,
  name: string,
  reference: string,
  options: { labels?: Record<string, string>; created?: string; extra?: Record<string, unknown>; layers?: number } = {},
): Promise<Pushed> {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: options.created ?? '2024-05-01T12:00:00Z',
      config: { Labels: options.labels ?? { 'org.opencontainers.image.title': 'demo' } },
      rootfs: { type: 'layers', diff_ids: [] },
      nonce: randomBytes(8).toString('hex'),
    }),
  )
  const configDigest = await pushBlob(running.server, name, config)
  const layers: { digest: string; size: number }[] = []
  for (let i = 0; i < (options.layers ?? 2); i++) {
    const layer = randomBytes(500 + i * 100)
    layers.push({ digest: await pushBlob(running.server, name, layer), size: layer.byteLength })
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
      layers: layers.map(l => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
      ...options.extra,
    }),
  )
  const put = await putManifest(running.server, name, reference, manifest, OCI_MANIFEST)
  if (put.status !== 201) throw new Error(`PUT ${put.status} ${put.body.toString()}`)
  return { digest: sha256(manifest), manifest, size: config.byteLength + layers.reduce((sum, l) => sum + l.size, 0) }
}

async function pushIndex(
  running: Running,
  name: string,
  tag: string,
  children: { digest: string; manifest: Buffer; platform: object; attestation?: boolean }[],
) {
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: children.map(c => ({
        mediaType: OCI_MANIFEST,
        digest: c.digest,
        size: c.manifest.byteLength,
        platform: c.platform,
        ...(c.attestation ? { annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': children[0]!.digest } } : {}),
      })),
    }),
  )
  const put = await putManifest(running.server, name, tag, index, OCI_INDEX)
  if (put.status !== 201) throw new Error(`PUT index ${put.status} ${put.body.toString()}`)
  return sha256(index)
}

async function withIndex(t: import('ava').ExecutionContext, driver: StorageDriver = new InMemoryDriver()) {
  const index = new MetadataIndex(driver)
  const running = await startApp(t, { driver, observer: index })
  return { index, running, driver }
}

async function linkTime(driver: StorageDriver, name: string, tag: string): Promise<string> {
  return (await driver.stat(tagCurrentLinkPath(name, tag))).modTime.toISOString()
}

/** What a UI shows, without pull figures (which reindex cannot know). */
async function snapshot(index: MetadataIndex) {
  const repositories = await index.listRepositories()
  const tags: Record<string, unknown> = {}
  for (const repository of repositories.items) {
    tags[repository.name] = (await index.listTags(repository.name))?.map(({ lastPulledAt: _l, pullCount: _p, ...rest }) => rest)
  }
  return { repositories, tags }
}

test('a pushed image is indexed exactly: size, created, labels, pushed-at from the tag link', async t => {
  const { index, running, driver } = await withIndex(t)
  const image = await pushImage(running, 'team/app', 'v1', { labels: { 'org.opencontainers.image.source': 'https://example.test/app', a: 'b' } })
  const tags = await index.listTags('team/app')
  t.deepEqual(tags, [
    {
      tag: 'v1',
      digest: image.digest,
      mediaType: OCI_MANIFEST,
      size: image.size,
      platforms: [],
      created: '2024-05-01T12:00:00Z',
      pushedAt: await linkTime(driver, 'team/app', 'v1'),
      lastPulledAt: null,
      pullCount: 0,
    },
  ])
  const details = await index.image('team/app', image.digest)
  t.deepEqual(details?.labels, { a: 'b', 'org.opencontainers.image.source': 'https://example.test/app' })
  t.deepEqual(details?.tags, ['v1'])
  const list = await index.listRepositories()
  t.deepEqual(list, { total: 1, items: [{ name: 'team/app', tags: 1, lastPushed: tags![0]!.pushedAt, size: image.size }] })
})

test('labels are capped; a huge label set keeps what fits and says so', async t => {
  const { index, running } = await withIndex(t)
  const labels: Record<string, string> = {}
  for (let i = 0; i < 100; i++) labels[`label.${String(i).padStart(3, '0')}`] = 'x'.repeat(200)
  const image = await pushImage(running, 'big', 'v1', { labels })
  const details = await index.image('big', image.digest)
  t.true(details?.labelsTruncated)
  t.true(Buffer.byteLength(JSON.stringify(details?.labels)) <= 8 * 1024)
  t.true(Object.keys(details?.labels ?? {}).length > 10)
})

test('a multi-platform index: platforms without attestations, size the sum of stored children, created the latest', async t => {
  const { index, running } = await withIndex(t)
  const amd = await pushImage(running, 'multi', 'amd-tmp', { created: '2024-01-01T00:00:00Z' })
  const arm = await pushImage(running, 'multi', 'arm-tmp', { created: '2024-02-01T00:00:00Z' })
  const att = await pushImage(running, 'multi', 'att-tmp', { created: '2024-03-01T00:00:00Z' })
  for (const tag of ['amd-tmp', 'arm-tmp', 'att-tmp']) t.is((await request(running.server, `/v2/multi/manifests/${tag}`, { method: 'DELETE' })).status, 202)
  const digest = await pushIndex(running, 'multi', 'latest', [
    { ...amd, platform: { os: 'linux', architecture: 'amd64' } },
    { ...arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    { ...att, platform: { os: 'unknown', architecture: 'unknown' }, attestation: true },
  ])
  const [latest] = (await index.listTags('multi')) ?? []
  t.is(latest?.digest, digest)
  t.is(latest?.mediaType, OCI_INDEX)
  t.deepEqual(latest?.platforms, ['linux/amd64', 'linux/arm64/v8'])
  t.is(latest?.size, amd.size + arm.size + att.size)
  t.is(latest?.created, '2024-03-01T00:00:00Z')
  t.is((await index.image('multi', digest))?.created, '2024-03-01T00:00:00Z', "the image page's created agrees with the tag list's")
  // Deleting a child (registry:2 allows it) leaves the index smaller, not stale.
  t.is((await request(running.server, `/v2/multi/manifests/${arm.digest}`, { method: 'DELETE' })).status, 202)
  t.is((await index.listTags('multi'))?.[0]?.size, amd.size + att.size)
})

test('tag move, tag delete, manifest delete (its tags go too) and referrers keep the index exact', async t => {
  const { index, running, driver } = await withIndex(t)
  const one = await pushImage(running, 'app', 'v1')
  const two = await pushImage(running, 'app', 'latest')
  t.is((await putManifest(running.server, 'app', 'stable', two.manifest, OCI_MANIFEST)).status, 201)
  // move latest to one
  t.is((await putManifest(running.server, 'app', 'latest', one.manifest, OCI_MANIFEST)).status, 201)
  let tags = await index.listTags('app')
  t.deepEqual(
    tags?.map(x => [x.tag, x.digest]),
    [
      ['latest', one.digest],
      ['stable', two.digest],
      ['v1', one.digest],
    ],
  )
  t.is(tags?.find(x => x.tag === 'latest')?.pushedAt, await linkTime(driver, 'app', 'latest'))
  // a signature referring to `one`
  const signature = await pushImage(running, 'app', 'sig-tmp', {
    extra: {
      artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
      subject: { mediaType: OCI_MANIFEST, digest: one.digest, size: one.manifest.byteLength },
    },
  })
  t.is((await request(running.server, `/v2/app/manifests/sig-tmp`, { method: 'DELETE' })).status, 202)
  t.deepEqual((await index.image('app', one.digest))?.referrers, [
    { digest: signature.digest, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json' },
  ])
  // untag stable
  t.is((await request(running.server, '/v2/app/manifests/stable', { method: 'DELETE' })).status, 202)
  t.deepEqual(
    (await index.listTags('app'))?.map(x => x.tag),
    ['latest', 'v1'],
  )
  // delete `one` by digest: latest and v1 go with it, and so does its record
  t.is((await request(running.server, `/v2/app/manifests/${one.digest}`, { method: 'DELETE' })).status, 202)
  tags = await index.listTags('app')
  t.deepEqual(tags, [])
  t.is(await index.image('app', one.digest), undefined)
  t.truthy(await index.image('app', two.digest), 'the untagged manifest is still stored and indexed')
  t.deepEqual(
    (await index.listRepositories()).items.map(r => [r.name, r.tags]),
    [['app', 0]],
  )
})

test('gc --delete-untagged: the manifests it deletes leave the index; tagged ones stay', async t => {
  const root = await tempRoot(t)
  const { index, running, driver } = await withIndex(t, new FilesystemDriver(root))
  const kept = await pushImage(running, 'app', 'v1')
  const dropped = await pushImage(running, 'app', 'v2')
  await pushImage(running, 'app', 'v2') // v2 moves: `dropped` is untagged now
  const past = new Date(Date.now() - 3 * 3600_000)
  for (const entry of await readdir(join(root, 'docker'), { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) await utimes(join(entry.parentPath, entry.name), past, past)
  }
  t.truthy(await index.image('app', dropped.digest))
  const report = await collectGarbage(driver, { deleteUntagged: true })
  t.deepEqual(
    report.manifests.map(m => m.digest),
    [dropped.digest],
  )
  await index.manifestsCollected(report.manifests)
  t.is(await index.image('app', dropped.digest), undefined)
  t.truthy(await index.image('app', kept.digest))
  // And a fresh process (berth gc beside serve) agrees after its refresh.
  const other = new MetadataIndex(driver)
  t.is(await other.image('app', dropped.digest), undefined)
})

test('restart keeps push times; reindex after the records are deleted gives the same index', async t => {
  const root = await tempRoot(t)
  const { index, running, driver } = await withIndex(t, new FilesystemDriver(root))
  const a = await pushImage(running, 'a', 'v1')
  await pushImage(running, 'b/c', 'v1')
  await pushImage(running, 'b/c', 'v2')
  const amd = await pushImage(running, 'b', 'amd')
  await pushIndex(running, 'b', 'multi', [{ ...amd, platform: { os: 'linux', architecture: 'amd64' } }])
  t.is((await request(running.server, `/v2/a/manifests/${a.digest}`)).status, 200)
  await index.flushPulls()
  const live = await snapshot(index)

  await new Promise(resolve => setTimeout(resolve, 20))
  const restarted = new MetadataIndex(new FilesystemDriver(root))
  t.deepEqual(await snapshot(restarted), live, 'a restart reads the same records')
  t.is((await restarted.image('a', a.digest))?.pullCount, 1, 'pulls written by the other process are read')
  const again = await restarted.reindex()
  t.deepEqual(again, { repositories: 3, tagsWritten: 0, tagsDeleted: 0, manifestsWritten: 0, manifestsDeleted: 0 }, 'idempotent')
  t.deepEqual(await snapshot(restarted), live)

  await index.close()
  await restarted.close()
  await driver.delete(INDEX_ROOT)
  const rebuilt = new MetadataIndex(new FilesystemDriver(root))
  const report = await rebuilt.reindex()
  t.is(report.tagsWritten, 5)
  t.deepEqual(await snapshot(rebuilt), live, 'reindex from the tree alone equals the live index')
  t.is((await rebuilt.image('a', a.digest))?.pullCount, 0, 'pull counts cannot be rebuilt')
})

test('reindex on a tree written like registry:2: tags get their link times, unknown stays unknown', async t => {
  const seed = await withIndex(t)
  const image = await pushImage(seed.running, 'library/alpine', '3.19')
  // A copy of the registry tree only (no /berth), as registry:2 would have left it.
  const driver = new InMemoryDriver()
  await seed.driver.walk('/docker', async info => {
    if (!info.isDir) await driver.putContent(info.path, await seed.driver.getContent(info.path))
  })
  const index = new MetadataIndex(driver)
  t.deepEqual((await index.listRepositories()).total, 0)
  const report = await index.reindex()
  t.like(report, { repositories: 1, tagsWritten: 1, manifestsWritten: 1 })
  const [tag] = (await index.listTags('library/alpine')) ?? []
  t.like(tag, {
    tag: '3.19',
    digest: image.digest,
    size: image.size,
    created: '2024-05-01T12:00:00Z',
    pushedAt: await linkTime(driver, 'library/alpine', '3.19'),
  })
})

test('pulls: GET counts, HEAD does not; counted in memory, written per instance and summed', async t => {
  const driver = new InMemoryDriver()
  const first = await withIndex(t, driver)
  const image = await pushImage(first.running, 'app', 'v1')
  for (let i = 0; i < 3; i++) t.is((await request(first.running.server, '/v2/app/manifests/v1')).status, 200)
  t.is((await request(first.running.server, '/v2/app/manifests/v1', { method: 'HEAD' })).status, 200)
  let [tag] = (await first.index.listTags('app')) ?? []
  t.is(tag?.pullCount, 3, 'visible here before any flush')
  t.not(tag?.lastPulledAt, null)
  await first.index.flushPulls()
  const second = await withIndex(t, driver)
  t.is((await request(second.running.server, `/v2/app/manifests/${image.digest}`)).status, 200)
  await second.index.flushPulls()
  await first.index.refresh()
  ;[tag] = (await first.index.listTags('app')) ?? []
  t.is(tag?.pullCount, 4, "the other instance's pull arrives with the refresh")
})

test("two instances on one store: concurrent pushes of one tag end with the record equal to the tag's link; each sees the other's after refresh", async t => {
  const driver = new FilesystemDriver(await tempRoot(t))
  const a = await withIndex(t, driver)
  const b = await withIndex(t, driver)
  await a.index.ready()
  await b.index.ready()
  for (let round = 0; round < 5; round++) {
    const [x, y] = await Promise.all([pushImage(a.running, 'shared', 'latest'), pushImage(b.running, 'shared', 'latest')])
    const link = (await driver.getContent(tagCurrentLinkPath('shared', 'latest'))).toString()
    t.true([x.digest, y.digest].includes(link))
    const fresh = new MetadataIndex(driver)
    const [stored] = (await fresh.listTags('shared')) ?? []
    t.is(stored?.digest, link, `round ${round}: the stored record follows the link`)
    t.is(stored?.pushedAt, await linkTime(driver, 'shared', 'latest'))
    await a.index.refresh()
    await b.index.refresh()
    t.is((await a.index.listTags('shared'))?.[0]?.digest, link)
    t.is((await b.index.listTags('shared'))?.[0]?.digest, link)
  }
  t.is((await a.index.listRepositories()).items[0]?.tags, 1)
})

test('listing: prefix, search, sort by pushed and size, paging', async t => {
  const { index, running } = await withIndex(t)
  await pushImage(running, 'team/a', 'v1', { layers: 1 })
  await new Promise(resolve => setTimeout(resolve, 5))
  await pushImage(running, 'team/b', 'v1', { layers: 3 })
  await new Promise(resolve => setTimeout(resolve, 5))
  await pushImage(running, 'other', 'v1', { layers: 2 })
  t.deepEqual(
    (await index.listRepositories({ prefix: 'team/' })).items.map(r => r.name),
    ['team/a', 'team/b'],
  )
  t.deepEqual(
    (await index.listRepositories({ search: 'B' })).items.map(r => r.name),
    ['team/b'],
  )
  t.deepEqual(
    (await index.listRepositories({ sort: 'pushed' })).items.map(r => r.name),
    ['other', 'team/b', 'team/a'],
  )
  t.deepEqual(
    (await index.listRepositories({ sort: 'size' })).items.map(r => r.name),
    ['team/b', 'other', 'team/a'],
  )
  const page = await index.listRepositories({ offset: 1, limit: 1 })
  t.deepEqual(page.total, 3)
  t.deepEqual(
    page.items.map(r => r.name),
    ['team/a'],
  )
})
