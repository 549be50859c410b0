/**
 * The issue-21 bench cases' own parts, checked with the real tools: the static-file nginx serves
 * an image the way a registry does (skopeo pulls it and checks every digest), the start-up data
 * folder is a layout registry:2 serves, the static ceiling's verdict on `skopeo-pull`, and the
 * S3 store's own GET of a blob Berth stored there.
 */
import test from 'ava'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { startS3, uniquePrefix } from '../helpers/ceph.js'
import { startRegistry2 } from '../helpers/registry2.js'
import { curlPutBlob, skopeoPull, skopeoPush } from './clients.js'
import { writeImageLayout, writeRandomBlob } from './content.js'
import { makePki } from './pki.js'
import { evaluate } from './report.js'
import { copyToLocalLayout, startStaticNginx, judgeStaticCeiling } from './static-ceiling.js'
import { startBerth } from './stacks.js'
import { STARTUP_BLOBS, writeStartupFolder } from './startup.js'
import { curlGetFromStore } from './store-ceiling.js'
import { run } from './util.js'

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-cases-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

test('the static nginx serves an image stored in registry:2 layout as a registry would', async t => {
  const dir = await tempDir(t)
  const pki = await makePki(path.join(dir, 'pki'))
  const image = await writeImageLayout(path.join(dir, 'image'), [3000, 70_000])
  // The registry layout a push leaves: every blob under blobs/, the tag's current link.
  const storageRoot = path.join(dir, 'data')
  const v2 = path.join(storageRoot, 'docker', 'registry', 'v2')
  for (const blob of [...image.layers, image.config, image.manifest]) {
    const hex = blob.digest.slice('sha256:'.length)
    await mkdir(path.join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex), { recursive: true })
    await copyFile(path.join(image.dir, 'blobs', 'sha256', hex), path.join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'))
  }
  const repository = 'bench/static'
  const tagDir = path.join(v2, 'repositories', repository, '_manifests', 'tags', 'big', 'current')
  await mkdir(tagDir, { recursive: true })
  await writeFile(path.join(tagDir, 'link'), image.manifest.digest)

  const server = await startStaticNginx(path.join(dir, 'nginx'), pki, { storageRoot, repository, tag: 'big' })
  t.teardown(() => server.stop())
  const get = async (urlPath: string) => {
    const result = await run('curl', ['-sS', '--cacert', pki.caCert, '-D', '-', '-o', path.join(dir, 'body'), `https://${server.host}${urlPath}`])
    const headers = result.stdout.toLowerCase()
    return { status: Number(/^http\/[\d.]+ (\d+)/.exec(headers)?.[1]), headers, body: await readFile(path.join(dir, 'body')) }
  }
  t.is((await get('/v2/')).status, 200)
  const manifest = await get(`/v2/${repository}/manifests/big`)
  t.is(manifest.status, 200)
  t.regex(manifest.headers, /content-type: application\/vnd\.oci\.image\.manifest\.v1\+json/)
  t.true(manifest.headers.includes(`docker-content-digest: ${image.manifest.digest}`))
  t.deepEqual(manifest.body, await readFile(path.join(image.dir, 'blobs', 'sha256', image.manifest.digest.slice(7))))
  const layer = await get(`/v2/${repository}/blobs/${image.layers[1]!.digest}`)
  t.is(layer.status, 200)
  t.regex(layer.headers, /content-type: application\/octet-stream/)
  t.true(layer.headers.includes(`docker-content-digest: ${image.layers[1]!.digest}`))
  t.is(layer.body.length, image.layers[1]!.size)
  t.is((await get(`/v2/${repository}/blobs/sha256:${'0'.repeat(64)}`)).status, 404)
  t.is((await get(`/v2/other/manifests/big`)).status, 404)

  // skopeo, with the bench's credentials (never asked for), checks every digest it pulls.
  const dest = path.join(dir, 'pulled')
  await skopeoPull({ host: server.host, pki }, repository, 'big', dest)
  t.deepEqual(
    await readFile(path.join(dest, image.layers[0]!.digest.slice(7))),
    await readFile(path.join(image.dir, 'blobs', 'sha256', image.layers[0]!.digest.slice(7))),
  )
})

test('the start-up folder holds 10,000 blobs in a layout registry:2 serves', async t => {
  const dir = await tempDir(t)
  const folder = await writeStartupFolder(path.join(dir, 'datadir'))
  t.is(folder.blobs, STARTUP_BLOBS)
  const blobsDir = path.join(folder.storageRoot, 'docker', 'registry', 'v2', 'blobs', 'sha256')
  let count = 0
  for (const prefix of await readdir(blobsDir)) count += (await readdir(path.join(blobsDir, prefix))).length
  t.is(count, STARTUP_BLOBS)

  const registry = await startRegistry2({ rootDirectory: folder.storageRoot })
  t.teardown(() => registry.stop())
  const catalog = (await (await fetch(`${registry.url}/v2/_catalog?n=1000`)).json()) as { repositories: string[] }
  t.is(catalog.repositories.length, folder.repositories)
  const name = catalog.repositories[0]!
  const tags = (await (await fetch(`${registry.url}/v2/${name}/tags/list`)).json()) as { tags: string[] }
  t.deepEqual(tags.tags.sort(), ['latest', 'v1'])
  const response = await fetch(`${registry.url}/v2/${name}/manifests/latest`, { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } })
  t.is(response.status, 200)
  const manifest = (await response.json()) as { layers: Array<{ digest: string }> }
  t.is(manifest.layers.length, STARTUP_BLOBS / folder.repositories - 2)
  const blob = await fetch(`${registry.url}/v2/${name}/blobs/${manifest.layers[0]!.digest}`)
  t.is(blob.status, 200)
  t.is((await blob.arrayBuffer()).byteLength, 1024)
})

test('skopeo-pull is held to 0.95× the static-nginx ceiling on top of its own target', t => {
  const def = { id: 'skopeo-pull', label: 'pull', unit: 'MB/s', better: 'higher', minAdvantage: 1.2 } as const
  const ceiling = evaluate({ id: 'skopeo-pull-static', label: 'static', unit: 'MB/s', better: 'higher' }, { berth: [500, 520, 480] })

  const close = [evaluate(def, { seed: [300], berth: [480] }), ceiling]
  judgeStaticCeiling(close)
  t.true(close[0]!.met, '480 is 1.6× the seed and 0.96× the ceiling')
  t.regex(close[0]!.notes[0]!, /Berth at 0\.96× the static-nginx ceiling \(500 MB\/s; target ≥ 0\.95×: met\), the seed at 0\.6×/)

  const below = [evaluate(def, { seed: [300], berth: [450] }), ceiling]
  judgeStaticCeiling(below)
  t.false(below[0]!.met, '450 is 1.5× the seed but 0.9× the ceiling')

  const alone = [evaluate(def, { seed: [300], berth: [450] })]
  judgeStaticCeiling(alone)
  t.true(alone[0]!.met, 'without the ceiling case only the ratio to the seed counts')
  t.deepEqual(alone[0]!.notes, [])
})

test('on S3, the store ceiling GETs the object Berth stored a blob in, and the static ceiling serves a copy', async t => {
  const dir = await tempDir(t)
  const pki = await makePki(path.join(dir, 'pki'))
  const s3 = await startS3()
  t.teardown(() => s3.stop())
  const target = {
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    prefix: uniquePrefix('store-ceiling'),
  }
  const repoRoot = path.resolve(import.meta.dirname, '..', '..')
  const berth = await startBerth(path.join(dir, 'berth'), pki, {
    command: [process.execPath, '--import', 'tsx', path.join(repoRoot, 'src/main.ts')],
    repoRoot,
    s3: target,
  })
  t.teardown(() => berth.stop())
  const file = path.join(dir, 'blob')
  const blob = await writeRandomBlob(file, 3 * 1024 * 1024 + 17)
  await curlPutBlob({ host: berth.host, pki }, 'bench/ceiling', file, blob)

  const seconds = await curlGetFromStore(target, blob) // checks status 200 and the byte count
  t.true(seconds > 0)
  const missing = { ...blob, digest: `sha256:${'0'.repeat(64)}` }
  await t.throwsAsync(curlGetFromStore(target, missing), { message: /expected HTTP 200, got 404/ })

  // The static ceiling on S3: a local copy of the image Berth stored, served by nginx, pulled by skopeo.
  const image = await writeImageLayout(path.join(dir, 'image'), [5000, 80_000])
  await skopeoPush({ host: berth.host, pki }, image.reference, 'bench/static', 'big')
  const root = await copyToLocalLayout({ host: berth.host, pki }, 'bench/static', 'big', path.join(dir, 'static', 'copy')) // a folder that does not exist yet, as in the bench
  const nginx = await startStaticNginx(path.join(dir, 'nginx'), pki, { storageRoot: root, repository: 'bench/static', tag: 'big' })
  t.teardown(() => nginx.stop())
  const pulled = path.join(dir, 'pulled')
  await skopeoPull({ host: nginx.host, pki }, 'bench/static', 'big', pulled) // skopeo checks every digest
  for (const layer of image.layers) t.true((await readdir(pulled)).includes(layer.digest.slice('sha256:'.length)))
})
