/**
 * On-disk compatibility both ways with Debian's docker-registry (distribution 2.8.2, the registry:2 the
 * seed runs): a user points Berth at the `datadir/data` their registry:2 filled and keeps every image,
 * and can go back. Images are pushed with skopeo (OCI image, two-platform index, Docker schema2), the
 * server is swapped on the same folder, and everything is pulled back byte-identical.
 */
import test, { type ExecutionContext } from 'ava'
import path from 'node:path'
import { startLocalBerth, type Berth } from '../helpers/berth.js'
import { fileDigest, OciLayout, sha256Digest, type BuiltImage, type BuiltIndex } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { startRegistry2, type Registry2 } from '../helpers/registry2.js'
import { copy, inspectRaw, listTags, type RegistryAccess } from '../helpers/skopeo.js'

const plainHttp: RegistryAccess = { tlsVerify: false }

let work: string | undefined
const running = new Set<{ stop(): Promise<void> }>()

test.before(async () => {
  work = await makeTempDir('e2e-registry2')
})

test.after.always(async () => {
  await Promise.allSettled([...running].map(server => server.stop()))
  if (work) await removeDir(work)
})

function workDir(): string {
  if (!work) throw new Error('setup failed')
  return work
}

async function withServer<T extends { stop(): Promise<void> }>(start: Promise<T>, use: (server: T) => Promise<void>): Promise<void> {
  const server = await start
  running.add(server)
  try {
    await use(server)
  } finally {
    await server.stop()
    running.delete(server)
  }
}

/** What was pushed, to check against whichever server serves the folder next. */
interface Pushed {
  images: { repository: string; tag: string; image: BuiltImage }[]
  indexes: { repository: string; tag: string; index: BuiltIndex }[]
  /** Manifests converted by skopeo (v2s2): we only know the bytes after the push. */
  converted: { repository: string; tag: string; bytes: Buffer }[]
}

async function pushSet(server: { hostPort: string }, layout: OciLayout, prefix: string): Promise<Pushed> {
  const image = await layout.addImage({ tag: `${prefix}-image`, layers: [1024 * 1024, 64 * 1024, 10] })
  const index = await layout.addIndex({
    tag: `${prefix}-index`,
    platforms: [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ],
    layers: [128 * 1024],
  })
  await layout.addImage({ tag: `${prefix}-docker`, layers: [32 * 1024, 5] })
  const registry = `docker://${server.hostPort}`
  await copy(layout.ref(`${prefix}-image`), `${registry}/${prefix}/image:v1`, { dest: plainHttp })
  await copy(layout.ref(`${prefix}-image`), `${registry}/${prefix}/image:also`, { dest: plainHttp })
  await copy(layout.ref(`${prefix}-index`), `${registry}/${prefix}/multi-arch:latest`, { all: true, dest: plainHttp })
  await copy(layout.ref(`${prefix}-docker`), `${registry}/${prefix}/docker:v2s2`, { format: 'v2s2', preserveDigests: false, dest: plainHttp })
  const convertedBytes = await inspectRaw(`${registry}/${prefix}/docker:v2s2`, plainHttp)
  return {
    images: [
      { repository: `${prefix}/image`, tag: 'v1', image },
      { repository: `${prefix}/image`, tag: 'also', image },
    ],
    indexes: [{ repository: `${prefix}/multi-arch`, tag: 'latest', index }],
    converted: [{ repository: `${prefix}/docker`, tag: 'v2s2', bytes: convertedBytes }],
  }
}

/** Everything in `pushed` is served by `server` as it was pushed, and pulls back intact. */
async function assertServed(t: ExecutionContext, server: { hostPort: string; url: string }, pushed: Pushed, who: string): Promise<void> {
  const registry = `docker://${server.hostPort}`
  const out = await OciLayout.create(path.join(workDir(), `out-${Math.random().toString(16).slice(2)}`))
  for (const { repository, tag, image } of pushed.images) {
    const raw = await inspectRaw(`${registry}/${repository}:${tag}`, plainHttp)
    t.true(raw.equals(image.manifestBytes), `${who}: ${repository}:${tag} manifest bytes`)
    await copy(`${registry}/${repository}@${image.manifest.digest}`, out.ref(`${repository}-${tag}`.replace(/\//g, '-')), { src: plainHttp })
    for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest, `${who}: blob ${blob.digest}`)
  }
  for (const { repository, tag, index } of pushed.indexes) {
    const raw = await inspectRaw(`${registry}/${repository}:${tag}`, plainHttp)
    t.true(raw.equals(index.indexBytes), `${who}: ${repository}:${tag} index bytes`)
    await copy(`${registry}/${repository}:${tag}`, out.ref(`${repository}-${tag}`.replace(/\//g, '-')), { all: true, src: plainHttp })
    for (const image of index.images) {
      t.true((await out.readBlob(image.manifest.digest)).equals(image.manifestBytes), `${who}: child ${image.manifest.digest}`)
      for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest)
    }
  }
  for (const { repository, tag, bytes } of pushed.converted) {
    const raw = await inspectRaw(`${registry}/${repository}:${tag}`, plainHttp)
    t.true(raw.equals(bytes), `${who}: ${repository}:${tag} (Docker schema2) bytes`)
    const byDigest = await inspectRaw(`${registry}/${repository}@${sha256Digest(bytes)}`, plainHttp)
    t.true(byDigest.equals(bytes))
  }
  const tagsOf = new Map<string, string[]>()
  for (const { repository, tag } of [...pushed.images, ...pushed.indexes, ...pushed.converted]) {
    tagsOf.set(repository, [...(tagsOf.get(repository) ?? []), tag])
  }
  for (const [repository, tags] of tagsOf) {
    t.deepEqual((await listTags(`${registry}/${repository}`, plainHttp)).sort(), tags.sort(), `${who}: tags of ${repository}`)
  }
  const catalog = (await (await fetch(`${server.url}/v2/_catalog`)).json()) as { repositories: string[] }
  for (const repository of tagsOf.keys()) t.true(catalog.repositories.includes(repository), `${who}: ${repository} in the catalog`)
}

test.serial('images that registry:2 stored are served by Berth from the same datadir, and back again', async t => {
  const datadir = path.join(workDir(), 'from-registry2')
  const layout = await OciLayout.create(path.join(workDir(), 'layout-a'))
  let first: Pushed | undefined
  let second: Pushed | undefined

  await withServer(startRegistry2({ rootDirectory: path.join(datadir, 'data') }), async registry => {
    first = await pushSet(registry, layout, 'seed')
    await assertServed(t, registry, first, 'registry:2 itself')
  })
  await withServer(startLocalBerth({ datadir }), async (berth: Berth) => {
    await assertServed(t, berth, first!, 'Berth on registry:2 data')
    // Berth adds to the same folder …
    second = await pushSet(berth, layout, 'later')
  })
  // … and registry:2 still serves all of it.
  await withServer(startRegistry2({ rootDirectory: path.join(datadir, 'data') }), async (registry: Registry2) => {
    await assertServed(t, registry, first!, 'registry:2 after Berth')
    await assertServed(t, registry, second!, 'registry:2 on what Berth added')
  })
})

test.serial('images that Berth stored are served by registry:2 from the same datadir', async t => {
  const datadir = path.join(workDir(), 'from-berth')
  const layout = await OciLayout.create(path.join(workDir(), 'layout-b'))
  let pushed: Pushed | undefined
  await withServer(startLocalBerth({ datadir }), async (berth: Berth) => {
    pushed = await pushSet(berth, layout, 'berth')
    await assertServed(t, berth, pushed, 'Berth itself')
  })
  await withServer(startRegistry2({ rootDirectory: path.join(datadir, 'data') }), async registry => {
    await assertServed(t, registry, pushed!, 'registry:2 on Berth data')
  })
})
