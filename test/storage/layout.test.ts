/**
 * Layout compatibility with Debian's docker-registry (distribution 2.8.2, what `registry:2` runs):
 * the same push gives the same files with the same contents, and each server serves the other's
 * data folder.
 */
import { randomBytes } from 'node:crypto'
import { access, readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import test from 'ava'
import { request } from '../helpers/http.js'
import { DOCKER_REGISTRY, startRegistry2 } from '../helpers/registry2.js'
import { DOCKER_MANIFEST, imageManifest, OCI_MANIFEST, pushBlob, putManifest, startFilesystemApp, tempRoot } from '../registry/fixtures.js'

const hasRegistry2 = await access(DOCKER_REGISTRY).then(
  () => true,
  () => false,
)
const maybe = hasRegistry2 ? test : test.skip

async function files(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name)
      if (entry.isDirectory()) await walk(full)
      else out.set(relative(root, full), (await readFile(full)).toString('latin1'))
    }
  }
  await walk(root)
  return out
}

maybe('the same push gives registry:2 and Berth identical trees, byte for byte', async t => {
  const berthRoot = await tempRoot(t)
  const registryRoot = await tempRoot(t)
  const berth = await startFilesystemApp(t, berthRoot)
  const registry = await startRegistry2({ rootDirectory: registryRoot })
  t.teardown(() => registry.stop())

  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }))
  const layers = [randomBytes(3000), randomBytes(70_000)]
  for (const target of [berth.server, registry.url] as const) {
    await pushBlob(target, 'library/app', config)
    for (const layer of layers) await pushBlob(target, 'library/app', layer)
  }
  const { createHash } = await import('node:crypto')
  const digest = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: digest(config), size: config.byteLength },
      layers: layers.map(l => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: digest(l), size: l.byteLength })),
    }),
  )
  for (const target of [berth.server, registry.url] as const) {
    const put = await putManifest(target, 'library/app', 'v1', manifest, DOCKER_MANIFEST)
    t.is(put.status, 201, put.body.toString())
    t.is((await putManifest(target, 'library/app', 'latest', manifest, DOCKER_MANIFEST)).status, 201)
  }
  const ours = await files(berthRoot)
  const theirs = await files(registryRoot)
  // registry:2 also writes hash states into uploads it then deletes; nothing below _uploads remains.
  t.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort())
  for (const [path, content] of theirs) t.is(ours.get(path), content, path)
  t.true(ours.has('docker/registry/v2/repositories/library/app/_manifests/tags/latest/current/link'))
  t.false(
    [...ours.values()].some(v => v.endsWith('\n') && v.startsWith('sha256:')),
    'link files hold no newline',
  )
})

maybe('registry:2 serves what Berth stored, and Berth serves what registry:2 stored', async t => {
  const berthRoot = await tempRoot(t)
  const registryRoot = await tempRoot(t)

  // Berth writes, registry:2 reads.
  const berth = await startFilesystemApp(t, berthRoot)
  const image = await imageManifest(berth.server, 'team/svc', { layers: 2 })
  t.is((await putManifest(berth.server, 'team/svc', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  const readerOfBerth = await startRegistry2({ rootDirectory: berthRoot })
  t.teardown(() => readerOfBerth.stop())
  const got = await request(readerOfBerth.url, '/v2/team/svc/manifests/v1', { headers: { Accept: OCI_MANIFEST } })
  t.is(got.status, 200)
  t.deepEqual(got.body, image.manifest)
  t.is(got.headers['docker-content-digest'], image.digest)
  for (const layer of image.layers) {
    t.is((await request(readerOfBerth.url, `/v2/team/svc/blobs/${layer.digest}`)).body.byteLength, layer.size)
  }
  t.deepEqual((await request(readerOfBerth.url, '/v2/_catalog')).json, { repositories: ['team/svc'] })
  t.deepEqual((await request(readerOfBerth.url, '/v2/team/svc/tags/list')).json, { name: 'team/svc', tags: ['v1'] })

  // registry:2 writes, Berth reads.
  const registry = await startRegistry2({ rootDirectory: registryRoot })
  t.teardown(() => registry.stop())
  const other = await imageManifest(registry.url, 'seed/app', { layers: 3 })
  t.is((await putManifest(registry.url, 'seed/app', 'stable', other.manifest, OCI_MANIFEST)).status, 201)
  const readerOfRegistry = await startFilesystemApp(t, registryRoot)
  const served = await request(readerOfRegistry.server, '/v2/seed/app/manifests/stable', { headers: { Accept: OCI_MANIFEST } })
  t.is(served.status, 200)
  t.deepEqual(served.body, other.manifest)
  for (const layer of other.layers) {
    t.is((await request(readerOfRegistry.server, `/v2/seed/app/blobs/${layer.digest}`)).body.byteLength, layer.size)
  }
  t.deepEqual((await request(readerOfRegistry.server, '/v2/_catalog')).json, { repositories: ['seed/app'] })
  // And Berth can keep pushing into the folder registry:2 made.
  const more = await imageManifest(readerOfRegistry.server, 'seed/app')
  t.is((await putManifest(readerOfRegistry.server, 'seed/app', 'next', more.manifest, OCI_MANIFEST)).status, 201)
  t.deepEqual((await request(registry.url, '/v2/seed/app/tags/list')).json.tags, ['next', 'stable'])
})

maybe('an upload started in registry:2 can be finished by Berth from the same folder', async t => {
  const root = await tempRoot(t)
  const registry = await startRegistry2({ rootDirectory: root })
  t.teardown(() => registry.stop())
  const start = await request(registry.url, '/v2/app/blobs/uploads/', { method: 'POST' })
  const blob = randomBytes(50_000)
  const uuid = String(start.headers['docker-upload-uuid'])
  const patch = await request(registry.url, String(start.headers.location).replace(/^https?:\/\/[^/]+/, ''), {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/octet-stream' },
    body: blob.subarray(0, 20_000),
  })
  t.is(patch.status, 202)
  await registry.stop()
  const berth = await startFilesystemApp(t, root)
  const location = `/v2/app/blobs/uploads/${uuid}`
  t.is((await request(berth.server, location)).headers.range, '0-19999')
  await request(berth.server, location, { method: 'PATCH', headers: { 'Content-Range': '20000-49999' }, body: blob.subarray(20_000) })
  const { createHash } = await import('node:crypto')
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`
  t.is((await request(berth.server, `${location}?digest=${digest}`, { method: 'PUT' })).status, 201)
})
