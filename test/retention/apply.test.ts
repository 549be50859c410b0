/**
 * Retention through the real engine on the filesystem driver: push times set on the tag links
 * (fs.utimes; pushed-at is the link's modification time), `berth retention --dry-run` equals what
 * `berth retention` then removes, a restart and a full rebuild of the index plan the same
 * (zot#4233), a push between plan and apply wins, and gc frees the removed images' blobs while
 * kept images still pull.
 */
import { readdir, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import test from 'ava'
import { runCli } from '../../src/cli/program.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { collectGarbage } from '../../src/storage/gc.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { INDEX_ROOT } from '../../src/storage/paths.js'
import { applyRetention, compilePolicies, planFromStore, type RetentionPlan, type RetentionResult } from '../../src/storage/retention.js'
import { parseRetention } from '../../src/config/values.js'
import type { RegistryEvent } from '../../src/events/events.js'
import { request } from '../helpers/http.js'
import { OCI_INDEX, OCI_MANIFEST, imageManifest, putManifest, sha256, startApp, tempRoot } from '../registry/fixtures.js'

const DAY = 86_400_000
const POLICY = `retention:
  - repositories: ["ci/**"]
    keep: { last: 2, tags: ["^v\\\\d+\\\\.\\\\d+\\\\.\\\\d+$"], pulledWithin: 30d }
    untagged: { olderThan: 7d }
`

async function berth(datadir: string, ...args: string[]) {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', chunk => (out += String(chunk)))
  stderr.on('data', chunk => (err += String(chunk)))
  const code = await runCli(['node', 'berth', ...args, '--datadir', datadir], { stdout, stderr, stdin: new PassThrough(), env: {}, cwd: join(datadir, '..') })
  return { code, stdout: out, stderr: err }
}

async function setup(t: import('ava').ExecutionContext) {
  const root = await tempRoot(t)
  const datadir = join(root, '..')
  const driver = new FilesystemDriver(root)
  const index = new MetadataIndex(driver)
  const running = await startApp(t, { driver, observer: index })
  // Teardowns run last-registered first: the index's last change records are written before the
  // temporary folder goes (else its removal can race a write: ENOTEMPTY).
  t.teardown(() => index.close())
  const repoDir = (name: string) => join(root, 'docker/registry/v2/repositories', name, '_manifests')
  const setTime = (path: string, daysAgo: number) => utimes(path, new Date(Date.now() - daysAgo * DAY), new Date(Date.now() - daysAgo * DAY))
  const push = async (name: string, reference: string, extra?: Record<string, unknown>) => {
    const image = await imageManifest(running.server, name, { layers: 2, ...(extra ? { extra } : {}) })
    const put = await putManifest(running.server, name, reference === '' ? image.digest : reference, image.manifest, OCI_MANIFEST)
    t.is(put.status, 201, put.body.toString())
    return image
  }
  await writeFile(join(datadir, 'berth.yml'), POLICY)
  return { root, datadir, driver, index, running, push, repoDir, setTime }
}

test('dry run equals the applied result; restart and rebuilt index plan the same; gc frees; kept images pull', async t => {
  const { root, datadir, driver, running, push, repoDir, setTime } = await setup(t)
  const name = 'ci/app'
  const images: Record<string, Awaited<ReturnType<typeof push>>> = {}
  for (const tag of ['ci-1', 'ci-2', 'ci-3', 'ci-4', 'ci-5', 'v1.0.0']) images[tag] = await push(name, tag)
  const amd = await push(name, '')
  const arm = await push(name, '')
  const indexBody = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [amd, arm].map((child, i) => ({
        mediaType: OCI_MANIFEST,
        digest: child.digest,
        size: child.manifest.byteLength,
        platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' },
      })),
    }),
  )
  t.is((await putManifest(running.server, name, 'multi', indexBody, OCI_INDEX)).status, 201)
  const multi = sha256(indexBody)
  const subject = (digest: string, size: number) => ({ subject: { mediaType: OCI_MANIFEST, digest, size }, artifactType: 'application/vnd.example.sig' })
  const keptSig = await push(name, '', subject(images['v1.0.0']!.digest, images['v1.0.0']!.manifest.byteLength))
  const goneSig = await push(name, '', subject(images['ci-3']!.digest, images['ci-3']!.manifest.byteLength))
  const orphan = await push(name, '')
  const fresh = await push(name, '')
  const other = await push('team/app', 'old')

  // Everything old (blobs too, so gc may free them), then the push times this test wants.
  for (const entry of await readdir(join(root, 'docker'), { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) await setTime(join(entry.parentPath, entry.name), 400)
  }
  const days: Record<string, number> = { 'ci-1': 50, 'ci-2': 45, 'ci-3': 40, 'ci-4': 2, 'ci-5': 1, 'v1.0.0': 100, multi: 60 }
  for (const [tag, age] of Object.entries(days)) await setTime(join(repoDir(name), 'tags', tag, 'current/link'), age)
  const revision = (digest: string) => join(repoDir(name), 'revisions/sha256', digest.slice(7), 'link')
  await setTime(revision(orphan.digest), 10)
  await setTime(revision(fresh.digest), 1)
  t.is((await request(running.server, `/v2/${name}/manifests/ci-1`)).status, 200, 'ci-1 pulled now: kept by pulledWithin')

  // The index as registry:2 data would have it: rebuilt from the tree (times from the links).
  await running.app.close()
  await driver.delete(INDEX_ROOT)
  t.is((await berth(datadir, 'reindex')).code, 0)
  // (the pull above was counted by the closed app's index only in memory; count it from here)
  const live = new MetadataIndex(driver)
  live.manifestPulled(name, images['ci-1']!.digest)
  await live.flushPulls()

  const dry = await berth(datadir, 'retention', '--config', join(datadir, 'berth.yml'), '--dry-run', '--json')
  t.is(dry.code, 0, dry.stderr)
  const plan = JSON.parse(dry.stdout) as RetentionPlan
  const shown = (items: RetentionPlan['items']) => items.map(item => `${item.tag ?? item.digest}${item.deletesManifest ? '+' : ''}`)
  t.deepEqual(
    shown(plan.items),
    ['multi+', 'ci-2+', 'ci-3+', orphan.digest + '+', amd.digest + '+', arm.digest + '+', goneSig.digest + '+'].sort(byPlanOrder(plan)),
  )
  t.is(plan.repositories, 1, 'team/app matches no policy')
  const expectedBytes = [images['ci-2']!, images['ci-3']!, orphan, amd, arm, goneSig].reduce(
    (sum, i) => sum + i.config.size + i.layers.reduce((s, l) => s + l.size, 0),
    0,
  )
  t.is(plan.bytes, expectedBytes)

  const text = await berth(datadir, 'retention', '--config', join(datadir, 'berth.yml'), '--dry-run')
  t.regex(text.stdout, /^REPOSITORY +TAG +DIGEST +PUSHED +LAST PULLED +SIZE +WHY\n/)
  t.regex(
    text.stdout,
    /^ci\/app +ci-2 +sha256:[0-9a-f]{64} +\d{4}-\d\d-\d\dT[\d:]+Z +never +[\d.]+ KiB +policy 1: not among the newest 2, matches no kept tag pattern, not pulled within 30d$/m,
  )
  t.regex(text.stdout, /dry run: would remove 3 tags and 7 images \([\d.]+ KiB\) in 1 repository a policy matches/)
  t.log(text.stdout)

  // zot#4233: a restart (fresh index) and a full rebuild plan exactly the same.
  const policies = compilePolicies(
    parseRetention([{ repositories: ['ci/**'], keep: { last: 2, tags: ['^v\\d+\\.\\d+\\.\\d+$'], pulledWithin: '30d' }, untagged: { olderThan: '7d' } }]),
  )
  const again = await planFromStore(driver, new MetadataIndex(driver), policies, new Date())
  t.deepEqual(again.items, plan.items, 'restart: same plan')
  await driver.delete(`${INDEX_ROOT}/repositories`)
  t.is((await berth(datadir, 'reindex')).code, 0)
  // Pull times live only in the index (a rebuild cannot know them): the pull is counted again.
  live.manifestPulled(name, images['ci-1']!.digest)
  await live.flushPulls()
  const rebuilt = await planFromStore(driver, new MetadataIndex(driver), policies, new Date())
  t.deepEqual(
    rebuilt.items.map(({ lastPulled: _l, ...rest }) => rest),
    plan.items.map(({ lastPulled: _l, ...rest }) => rest),
    'rebuilt from the tree: same plan',
  )

  const applied = await berth(datadir, 'retention', '--config', join(datadir, 'berth.yml'), '--json')
  t.is(applied.code, 0, applied.stderr)
  const result = JSON.parse(applied.stdout) as RetentionResult
  t.deepEqual(result.removed, plan.items, 'what went is exactly what the dry run listed')
  t.deepEqual(result.skipped, [])

  const app2 = await startApp(t, { driver })
  const status = async (ref: string, repo = name) => (await request(app2.server, `/v2/${repo}/manifests/${ref}`)).status
  for (const tag of ['ci-1', 'ci-4', 'ci-5', 'v1.0.0']) t.is(await status(tag), 200, `${tag} kept`)
  for (const tag of ['ci-2', 'ci-3', 'multi']) t.is(await status(tag), 404, `${tag} removed`)
  for (const digest of [multi, amd.digest, arm.digest, orphan.digest, goneSig.digest, images['ci-2']!.digest]) t.is(await status(digest), 404)
  t.is(await status(keptSig.digest), 200, 'the signature of a kept image stays')
  t.is(await status(fresh.digest), 200, 'an untagged manifest younger than 7d stays')
  t.is(await status('old', 'team/app'), 200, 'unmatched repository untouched')

  const report = await collectGarbage(driver, {})
  const freed = new Set(report.blobs.map(blob => blob.digest))
  for (const image of [images['ci-2']!, orphan, amd]) for (const layer of image.layers) t.true(freed.has(layer.digest), 'removed layers freed')
  for (const layer of [...images['v1.0.0']!.layers, ...other.layers]) {
    t.false(freed.has(layer.digest))
    t.is((await request(app2.server, `/v2/${layer === other.layers[0] || layer === other.layers[1] ? 'team/app' : name}/blobs/${layer.digest}`)).status, 200)
  }
})

test('a push between plan and apply wins: a moved tag stays, a re-tagged image stays; events say retention', async t => {
  const { driver, index, running, push } = await setup(t)
  const name = 'ci/app'
  const first = await push(name, 'ci-1')
  const second = await push(name, 'ci-2')
  await push(name, 'ci-3')
  const policies = compilePolicies([{ repositories: ['ci/*'], keep: { last: 1 } }])
  // Push times from the links are milliseconds apart: ci-3 is newest.
  const plan = await planFromStore(driver, index, policies, new Date())
  t.deepEqual(
    plan.items.map(item => item.tag),
    ['ci-1', 'ci-2'],
  )
  const moved = await push(name, 'ci-1') // ci-1 now names a new image
  t.is((await putManifest(running.server, name, 'pinned', second.manifest, OCI_MANIFEST)).status, 201) // ci-2's image tagged again
  const events: { event: RegistryEvent; user: string | undefined }[] = []
  const result = await applyRetention(running.app.store, plan, { events: { emit: (event, actor) => events.push({ event, user: actor?.user }) } })
  t.is((await request(running.server, `/v2/${name}/manifests/ci-1`)).headers['docker-content-digest'], moved.digest, 'the pushed tag is untouched')
  t.is((await request(running.server, `/v2/${name}/manifests/ci-2`)).status, 404, 'ci-2 still went')
  t.is((await request(running.server, `/v2/${name}/manifests/pinned`)).status, 200, 'its image stays: tagged again meanwhile')
  t.is((await request(running.server, `/v2/${name}/manifests/${first.digest}`)).status, 404, 'the image ci-1 named before the push went (untagged now)')
  t.deepEqual(
    result.skipped.map(s => [s.item.tag, s.why]),
    [['ci-1', `a push moved the tag to ${moved.digest}`]],
  )
  t.deepEqual(
    result.removed.map(item => [item.tag, item.deletesManifest]),
    [
      [null, true],
      ['ci-2', false],
    ],
  )
  t.deepEqual(
    events.map(e => [e.event.action, 'target' in e.event ? e.event.target : '', e.user]),
    [
      ['delete', 'tag', 'retention'],
      ['delete', 'manifest', 'retention'],
    ],
  )
})

/** The plan's own order (tags oldest first, then untagged, then parts) for the expected list. */
function byPlanOrder(plan: RetentionPlan) {
  const order = plan.items.map(item => `${item.tag ?? item.digest}${item.deletesManifest ? '+' : ''}`)
  return (a: string, b: string) => order.indexOf(a) - order.indexOf(b)
}
