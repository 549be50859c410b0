/**
 * Quotas through the real engine (in memory, with the metadata index as serve wires it): pushes
 * under the limit pass, the one that crosses it is refused with DENIED and a message naming the
 * quota before anything is stored (no manifest, no tag created or moved; its blobs are left to GC),
 * re-tags and indexes add nothing, a repository at its limit refuses uploads at once, and a push
 * works again after an image is deleted. Then the config parsing and `berth du`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import test, { type ExecutionContext } from 'ava'
import { runCli } from '../../src/cli/program.js'
import { loadConfig } from '../../src/config/load.js'
import { parseQuotas } from '../../src/config/values.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { collectGarbage } from '../../src/storage/gc.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { RepositoryQuotas, type QuotaRefusal, type QuotaSetting } from '../../src/storage/quota.js'
import { request } from '../helpers/http.js'
import { OCI_INDEX, OCI_MANIFEST, errorCode, imageManifest, putManifest, startApp, tempRoot, type PushedImage } from '../registry/fixtures.js'

/** What a push of `image` adds: config and layers. */
function sizeOf(image: PushedImage): number {
  return image.config.size + image.layers.reduce((sum, layer) => sum + layer.size, 0)
}

async function setup(t: ExecutionContext, quotas: QuotaSetting[], driver?: StorageDriver) {
  const store = driver ?? new FilesystemDriver(await tempRoot(t))
  // As serve wires it: the index observes every change, and the quotas read it.
  const index = new MetadataIndex(store)
  const refusals: QuotaRefusal[] = [] // what serve counts in berth_quota_refusals_total
  const app = await startApp(t, {
    driver: store,
    observer: index,
    quota: new RepositoryQuotas(quotas, index, { onRefused: refusal => refusals.push(refusal) }),
  })
  const server = app.server
  const tagged = async (name: string, tag: string) => {
    const response = await request(server, `/v2/${name}/manifests/${tag}`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })
    return response.status === 200 ? String(response.headers['docker-content-digest']) : undefined
  }
  return { server, driver: store, index, tagged, refusals }
}

test('the push that crosses the quota is refused with DENIED, names the quota, and stores nothing', async t => {
  const { server, driver, tagged, refusals } = await setup(t, [
    { repositories: ['other/**'], maxSize: 1 },
    { repositories: ['ci/**', 'team/*'], maxSize: 5000 },
    { repositories: ['ci/app'], maxSize: 1 }, // never applies: the first match wins
  ])
  const name = 'ci/app'
  const first = await imageManifest(server, name, { layers: 2 })
  t.is((await putManifest(server, name, 'one', first.manifest, OCI_MANIFEST)).status, 201)
  const second = await imageManifest(server, name, { layers: 2 })
  t.is((await putManifest(server, name, 'two', second.manifest, OCI_MANIFEST)).status, 201)
  const used = sizeOf(first) + sizeOf(second)
  t.true(used <= 5000 && used > 2500, `two images fit (${used} bytes)`)

  // A third would take the repository past 5000: refused at the manifest PUT, by tag and by digest.
  const third = await imageManifest(server, name, { layers: 2 })
  const refused = await putManifest(server, name, 'three', third.manifest, OCI_MANIFEST)
  t.is(refused.status, 403)
  t.is(errorCode(refused), 'DENIED')
  const message = String(refused.json.errors[0].message)
  t.regex(message, /ci\/app would exceed its quota \("ci\/\*\*": 4\.88 KiB; used /)
  t.true(message.includes(`this push ${(sizeOf(third) / 1024).toFixed(2)} KiB`), message)
  t.deepEqual(refused.json.errors[0].detail, { repository: name, quota: 'ci/**', limit: 5000, usage: used, push: sizeOf(third) })
  t.is(await tagged(name, 'three'), undefined, 'no tag created')
  t.is(
    (await request(server, `/v2/${name}/manifests/${third.digest}`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })).status,
    404,
    'manifest not stored',
  )
  t.is(errorCode(await putManifest(server, name, third.digest, third.manifest, OCI_MANIFEST)), 'DENIED', 'by digest too')

  // Moving an existing tag to a new image counts the same: refused, the tag stays where it was.
  t.is(errorCode(await putManifest(server, name, 'one', third.manifest, OCI_MANIFEST)), 'DENIED')
  t.is(await tagged(name, 'one'), first.digest, 'tag not moved')
  t.deepEqual(refusals, Array(3).fill({ repository: name, quota: 'ci/**', stage: 'push' }), 'each refusal told (metrics)')

  // Pushes that add nothing pass even near the limit: a re-tag, and an index of stored images.
  t.is((await putManifest(server, name, 'again', second.manifest, OCI_MANIFEST)).status, 201)
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [first, second].map((image, i) => ({
        mediaType: OCI_MANIFEST,
        digest: image.digest,
        size: image.manifest.byteLength,
        platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' },
      })),
    }),
  )
  t.is((await putManifest(server, name, 'multi', index, OCI_INDEX)).status, 201)

  // Repositories the quota does not match are not limited.
  const free = await imageManifest(server, 'free/app', { layers: 3 })
  t.is((await putManifest(server, 'free/app', 'x', free.manifest, OCI_MANIFEST)).status, 201)

  // Nothing partial stays: the refused image's blobs are referenced by nothing, and GC removes them.
  const gc = await collectGarbage(driver, { gracePeriodMs: 0, now: new Date(Date.now() + 1000) })
  const swept = new Set(gc.blobs.map(blob => blob.digest))
  for (const digest of [third.config.digest, ...third.layers.map(layer => layer.digest)]) t.true(swept.has(digest), `GC removed ${digest}`)
  for (const digest of [first.config.digest, ...second.layers.map(layer => layer.digest)]) t.false(swept.has(digest), `GC kept ${digest}`)

  // Deleting an image (by digest: its bytes stop counting) makes room again.
  t.is((await request(server, `/v2/${name}/manifests/multi`, { method: 'DELETE' })).status, 202)
  t.is((await request(server, `/v2/${name}/manifests/${first.digest}`, { method: 'DELETE' })).status, 202)
  const retry = await imageManifest(server, name, { layers: 2 })
  t.is((await putManifest(server, name, 'three', retry.manifest, OCI_MANIFEST)).status, 201)
  t.is(await tagged(name, 'three'), retry.digest)
})

test('a repository at its quota refuses uploads before any byte is sent', async t => {
  const root = await tempRoot(t)
  const { server } = await setup(t, [{ repositories: ['**'], maxSize: 1000 }], new FilesystemDriver(root))
  const small = await imageManifest(server, 'tight/app', { layers: 0 })
  t.true(sizeOf(small) < 1000)
  t.is((await putManifest(server, 'tight/app', 'small', small.manifest, OCI_MANIFEST)).status, 201)
  // Under the limit an upload may start (its manifest is checked later); over it, none may.
  t.is((await request(server, '/v2/tight/app/blobs/uploads/', { method: 'POST' })).status, 202)
  const big = await imageManifest(server, 'tight/app', { layers: 1 })
  t.is(errorCode(await putManifest(server, 'tight/app', 'big', big.manifest, OCI_MANIFEST)), 'DENIED')
  const { server: strict, refusals } = await setup(t, [{ repositories: ['**'], maxSize: sizeOf(small) }], new FilesystemDriver(root))
  const upload = await request(strict, '/v2/tight/app/blobs/uploads/', { method: 'POST' })
  t.is(upload.status, 403)
  t.is(errorCode(upload), 'DENIED')
  t.regex(String(upload.json.errors[0].message), /upload refused: tight\/app is at its quota \("\*\*"/)
  t.deepEqual(refusals, [{ repository: 'tight/app', quota: '**', stage: 'upload' }])
  t.is((await request(strict, '/v2/other/app/blobs/uploads/', { method: 'POST' })).status, 202, 'the limit is per repository, not shared by all ** matches')
})

test('config: quotas parse from the file; mistakes are one line naming the quota', async t => {
  t.deepEqual(
    parseQuotas([
      { repositories: ['ci/**'], maxSize: '10g' },
      { repositories: 'team/*', maxSize: 1024 },
    ]),
    [
      { repositories: ['ci/**'], maxSize: 10 * 1024 ** 3 },
      { repositories: ['team/*'], maxSize: 1024 },
    ],
  )
  t.deepEqual(parseQuotas('{"repositories":["**"],"maxSize":"512m"}'), [{ repositories: ['**'], maxSize: 512 * 1024 ** 2 }])
  // serve's start-up line: every quota in order
  const quotas = new RepositoryQuotas(
    parseQuotas([
      { repositories: ['ci/**', 'team/*'], maxSize: '10g' },
      { repositories: ['**'], maxSize: '512m' },
    ]),
    new MetadataIndex(new FilesystemDriver(await tempRoot(t))),
  )
  t.is(quotas.describe(), 'ci/**, team/*: 10.0 GiB; **: 512.0 MiB')
  t.throws(() => parseQuotas([{ repositories: ['ci/**'], maxSize: 'lots' }]), { message: /maxSize: a size such as 10g .*\(quota 1\)/ })
  t.throws(() => parseQuotas([{ repositories: ['ci/**'] }]), { message: /maxSize: a size/ })
  t.throws(
    () =>
      parseQuotas([
        { repositories: ['ci/**'], maxSize: '1g' },
        { repositories: ['CI'], maxSize: '1g' },
      ]),
    { message: /uppercase.*\(quota 2\)/ },
  )
  t.throws(() => parseQuotas([{ repositories: [], maxSize: '1g' }]), { message: /repositories: a list of repository globs/ })
  t.throws(() => parseQuotas([{ repositories: ['**'], maxsize: '1g' }]), { message: /only repositories, maxSize in a quota \(not maxsize\)/ })
  t.throws(() => parseQuotas('{not json'), { message: /a list of quotas/ })

  const dir = await mkdtemp(join(tmpdir(), 'berth-quota-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'berth.yml'), 'local: true\nquotas:\n  - repositories: ["ci/**"]\n    maxSize: 10g\n')
  t.deepEqual((await loadConfig({ cwd: dir, configFile: 'berth.yml' })).quotas, [{ repositories: ['ci/**'], maxSize: 10 * 1024 ** 3 }])
  t.deepEqual((await loadConfig({ cwd: dir, flags: { local: true } })).quotas, [])
  await writeFile(join(dir, 'bad.yml'), 'local: true\nquotas:\n  - repositories: ["ci/**"]\n    maxSize: -1\n')
  await t.throwsAsync(loadConfig({ cwd: dir, configFile: 'bad.yml' }), { message: /quota/ })
})

test('berth du shows usage against quota per repository', async t => {
  const root = await tempRoot(t)
  const datadir = join(root, '..')
  const { server } = await setup(t, [{ repositories: ['ci/**'], maxSize: 10_000 }], new FilesystemDriver(root))
  const image = await imageManifest(server, 'ci/app', { layers: 2 })
  t.is((await putManifest(server, 'ci/app', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  const other = await imageManifest(server, 'team/app', { layers: 1 })
  t.is((await putManifest(server, 'team/app', 'v1', other.manifest, OCI_MANIFEST)).status, 201)
  await writeFile(join(datadir, 'berth.yml'), 'quotas:\n  - repositories: ["ci/**"]\n    maxSize: 10000\n')

  const stdout = new PassThrough()
  let out = ''
  stdout.on('data', chunk => (out += String(chunk)))
  const du = (...args: string[]) =>
    runCli(['node', 'berth', 'du', '--datadir', datadir, ...args], { stdout, stderr: new PassThrough(), stdin: new PassThrough(), env: {}, cwd: datadir })
  t.is(await du('--config', 'berth.yml', '--bytes'), 0)
  const used = sizeOf(image)
  t.regex(out, /REPOSITORY .* QUOTA\n/)
  t.regex(out, new RegExp(`ci/app .* ${used} / 10000 \\(${Math.floor(used / 100)}%\\)\\n`))
  t.regex(out, /team\/app .* -\n/)
  out = ''
  t.is(await du('--config', 'berth.yml', '--json'), 0)
  const report = JSON.parse(out) as { repositories: { name: string; quota?: unknown }[] }
  t.deepEqual(report.repositories.find(r => r.name === 'ci/app')?.quota, { glob: 'ci/**', limit: 10000, usage: used })
  t.is(report.repositories.find(r => r.name === 'team/app')?.quota, undefined)
  out = ''
  t.is(await du('--bytes'), 0)
  t.notRegex(out, /QUOTA/, 'no quota column without quotas')
})
