/**
 * Retention as a deployment sees it: `berth serve` as a child process on a datadir, images pushed
 * over HTTP, push times set afterwards on the tag links (fs.utimes: pushed-at is the link's
 * modification time), and the metadata index removed so that it is rebuilt from the links (which is
 * also the zot#4233 situation: a rebuild must take the links' times, never "now").
 *
 * 1. The test: 30 tags with controlled push times, an index whose children are untagged,
 *    a signature of a kept image, an old untagged image. A restart changes no push time;
 *    `berth retention --dry-run` lists exactly the expected tags and images; `berth retention` then
 *    `berth gc` (beside the serving process) free exactly those images' bytes by `berth du`; every
 *    kept image pulls byte for byte.
 * 2. The serve-time job: `--retention-interval 1s` holds while read-only (config file, SIGHUP to
 *    switch it off), then removes what the policy says, collects garbage (the blob files are gone),
 *    and sends the deletes to a webhook receiver with the user `retention`.
 *
 * `berth retention` from the CLI writes the audit log but sends no webhooks (neither does `berth rm`):
 * webhook deliveries are owned by a serving process (its lease on its queue folder), see the README.
 */
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import { readdir, rm, stat, utimes, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { runCli } from '../../src/cli/program.js'
import type { RetentionPlan, RetentionResult } from '../../src/storage/retention.js'
import type { UsageReport } from '../../src/storage/usage.js'
import { startBerth, type Berth } from '../helpers/berth.js'
import { request } from '../helpers/http.js'
import { makeTempDir, removeDir, waitFor } from '../helpers/procs.js'
import { startReceiver } from '../events/receiver.js'
import { OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256 } from '../registry/fixtures.js'

const HOUR = 3600_000
const DAY = 24 * HOUR
const REPOSITORY = 'ci/app'

/** An image as pushed: its manifest bytes and every blob it names (config and layers) with their bytes. */
interface Pushed {
  readonly digest: string
  readonly manifest: Buffer
  readonly mediaType: string
  readonly blobs: ReadonlyMap<string, Buffer>
}

/** Manifest, config and unique layer: what removing the image and collecting garbage frees (the base layer is shared). */
function ownBytes(image: Pushed, base: string): number {
  let total = image.manifest.byteLength
  for (const [digest, bytes] of image.blobs) if (digest !== base) total += bytes.byteLength
  return total
}

async function pushImage(url: string, reference: string, base: Buffer, extra: Record<string, unknown> = {}): Promise<Pushed> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(8).toString('hex') }),
  )
  const layer = randomBytes(4096 + Math.floor(Math.random() * 4096))
  const blobs = new Map<string, Buffer>()
  for (const blob of [config, base, layer]) blobs.set(await pushBlob(url, REPOSITORY, blob), blob)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.byteLength },
      layers: [base, layer].map(blob => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(blob), size: blob.byteLength })),
      ...extra,
    }),
  )
  const digest = sha256(manifest)
  const put = await putManifest(url, REPOSITORY, reference === '' ? digest : reference, manifest, OCI_MANIFEST)
  if (put.status !== 201) throw new Error(`PUT ${reference}: ${put.status} ${put.body.toString()}`)
  return { digest, manifest, mediaType: OCI_MANIFEST, blobs }
}

async function berthCli(datadir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', chunk => (out += String(chunk)))
  stderr.on('data', chunk => (err += String(chunk)))
  const code = await runCli(['node', 'berth', ...args, '--datadir', datadir], { stdout, stderr, stdin: new PassThrough(), env: {}, cwd: datadir })
  return { code, stdout: out, stderr: err }
}

async function json<T>(t: ExecutionContext, datadir: string, ...args: string[]): Promise<T> {
  const result = await berthCli(datadir, ...args, '--json')
  t.is(result.code, 0, `berth ${args.join(' ')}: ${result.stderr}`)
  return JSON.parse(result.stdout) as T
}

function manifestsDir(datadir: string): string {
  return path.join(datadir, 'data/docker/registry/v2/repositories', REPOSITORY, '_manifests')
}

function blobFile(datadir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length)
  return path.join(datadir, 'data/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data')
}

/**
 * Every file of the tree 400 days old (so GC's one-hour grace period keeps nothing), then each
 * tag's link at its push time, and the metadata index removed: the next start rebuilds it from the
 * links, as it would for data registry:2 wrote.
 */
async function setPushTimes(datadir: string, agesMs: ReadonlyMap<string, number>, now: number): Promise<void> {
  const old = new Date(now - 400 * DAY)
  const tree = path.join(datadir, 'data/docker')
  for (const entry of await readdir(tree, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) await utimes(path.join(entry.parentPath, entry.name), old, old)
  }
  for (const [tag, age] of agesMs) {
    const when = new Date(now - age)
    await utimes(path.join(manifestsDir(datadir), 'tags', tag, 'current/link'), when, when)
  }
  await rm(path.join(datadir, 'data/berth/index'), { recursive: true, force: true })
}

type TagList = { tags: { tag: string; digest: string; pushedAt: string | null }[] }

/** Tag → pushed-at as the serving process's metadata index has it, once it lists `count` tags. */
async function pushTimes(t: ExecutionContext, datadir: string, count: number): Promise<Map<string, string | null>> {
  let listed: TagList | undefined
  await waitFor(
    `the metadata index to list ${count} tags`,
    async () => {
      const result = await berthCli(datadir, 'tags', REPOSITORY, '--json')
      if (result.code !== 0) return false
      listed = JSON.parse(result.stdout) as TagList
      return listed.tags.length === count
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  )
  t.is(listed!.tags.length, count)
  return new Map(listed!.tags.map(tag => [tag.tag, tag.pushedAt]))
}

/** The manifest and every blob of `image`, byte for byte, through the registry API. */
async function assertPullsIdentical(t: ExecutionContext, berth: Berth, reference: string, image: Pushed): Promise<void> {
  const manifest = await request(berth.url, `/v2/${REPOSITORY}/manifests/${reference}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })
  t.is(manifest.status, 200, `${reference}: manifest`)
  t.true(manifest.body.equals(image.manifest), `${reference}: the manifest bytes as pushed`)
  for (const [digest, bytes] of image.blobs) {
    const blob = await request(berth.url, `/v2/${REPOSITORY}/blobs/${digest}`)
    t.is(blob.status, 200, `${reference}: blob ${digest}`)
    t.true(blob.body.equals(bytes), `${reference}: blob ${digest} as pushed`)
  }
}

async function manifestStatus(berth: Berth, reference: string): Promise<number> {
  return (await request(berth.url, `/v2/${REPOSITORY}/manifests/${reference}`, { method: 'HEAD', headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })).status
}

const POLICY = `retention:
  - repositories: ["ci/**"]
    keep: { last: 5, tags: ["^v\\\\d+\\\\.\\\\d+\\\\.\\\\d+$", "^latest$"], pushedWithin: 10d }
    untagged: { olderThan: 7d }
`

test('30 tags with controlled push times: restart keeps them, dry run lists exactly, apply + gc free exactly, kept images pull identical', async t => {
  const work = await makeTempDir('e2e-retention')
  t.teardown(() => removeDir(work))
  const datadir = path.join(work, 'datadir')
  const config = path.join(work, 'berth.yml')
  await writeFile(config, POLICY)
  let berth = await startBerth({ datadir })
  t.teardown(() => berth.stop())

  // build-01 … build-27 (build-k pushed 28−k days and an hour ago), v1.0.0 (an image with a
  // signature), v1.1.0 (an index of two untagged children), latest (build-10's image): 30 tags.
  const base = randomBytes(16 * 1024)
  const builds = new Map<string, Pushed>()
  const ages = new Map<string, number>()
  for (let k = 1; k <= 27; k++) {
    const tag = `build-${String(k).padStart(2, '0')}`
    builds.set(tag, await pushImage(berth.url, tag, base))
    ages.set(tag, (28 - k) * DAY + HOUR)
  }
  const release = await pushImage(berth.url, 'v1.0.0', base)
  ages.set('v1.0.0', 200 * DAY)
  const signature = await pushImage(berth.url, '', base, {
    artifactType: 'application/vnd.example.signature',
    subject: { mediaType: OCI_MANIFEST, digest: release.digest, size: release.manifest.byteLength },
  })
  const children = [await pushImage(berth.url, '', base), await pushImage(berth.url, '', base)]
  const indexBody = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: children.map((child, i) => ({
        mediaType: OCI_MANIFEST,
        digest: child.digest,
        size: child.manifest.byteLength,
        platform: { os: 'linux', architecture: i === 0 ? 'amd64' : 'arm64' },
      })),
    }),
  )
  t.is((await putManifest(berth.url, REPOSITORY, 'v1.1.0', indexBody, OCI_INDEX)).status, 201)
  ages.set('v1.1.0', 100 * DAY)
  t.is((await putManifest(berth.url, REPOSITORY, 'latest', builds.get('build-10')!.manifest, OCI_MANIFEST)).status, 201)
  ages.set('latest', 8 * DAY + 12 * HOUR)
  const orphan = await pushImage(berth.url, '', base) // untagged, 400 days old below: expires
  t.is(ages.size, 30)

  await berth.stop()
  const now = Date.now()
  await setPushTimes(datadir, ages, now)

  // The rebuilt index takes the links' times; a restart changes none of them.
  berth = await startBerth({ datadir, port: berth.port })
  const rebuilt = await pushTimes(t, datadir, 30)
  for (const [tag, age] of ages) {
    const recorded = rebuilt.get(tag)
    t.true(
      recorded !== null && recorded !== undefined && Math.abs(Date.parse(recorded) - (now - age)) < 1000,
      `${tag}: pushed ${recorded}, set ${age / DAY} days ago`,
    )
  }
  await berth.stop()
  berth = await startBerth({ datadir, port: berth.port })
  await new Promise(resolve => setTimeout(resolve, 1000)) // the start-up reconcile with the tree
  t.deepEqual(await pushTimes(t, datadir, 30), rebuilt, 'a restart changes no push time')

  // Kept: the newest 5 (build-23 … 27), pushed within 10 days (build-19 … 22), v1.0.0, v1.1.0,
  // latest. Removed: build-01 … build-18; their images except build-10's (latest names it);
  // the orphan. The children of v1.1.0 and the signature of v1.0.0 stay.
  const removedTags = [...builds.keys()].slice(0, 18)
  const removedImages = [...removedTags.filter(tag => tag !== 'build-10').map(tag => builds.get(tag)!), orphan]
  const plan = await json<RetentionPlan>(t, datadir, 'retention', '--config', config, '--dry-run')
  t.deepEqual(
    plan.items.filter(item => item.tag !== null).map(item => [item.tag, item.deletesManifest]),
    removedTags.map(tag => [tag, tag !== 'build-10']),
    'the 18 tags outside every keep rule, oldest first; build-10 untagged but its image stays',
  )
  t.deepEqual(
    plan.items.filter(item => item.tag === null).map(item => item.digest),
    [orphan.digest],
    'the one untagged image older than 7 days (the index children and the signature are kept)',
  )
  t.is(plan.tags, 18)
  t.is(plan.manifests, 18)
  t.log(`dry run: ${plan.tags} tags, ${plan.manifests} images, ${plan.bytes} bytes of images (the shared base layer counted in each)`)

  const before = await json<UsageReport>(t, datadir, 'du', '--bytes')
  const applied = await json<RetentionResult>(t, datadir, 'retention', '--config', config)
  // (in the order of removal: a tag whose image stays when it is untagged, the others with their image)
  const byKey = (a: { tag: string | null; digest: string }, b: { tag: string | null; digest: string }) =>
    `${a.tag ?? ''}${a.digest}`.localeCompare(`${b.tag ?? ''}${b.digest}`)
  t.deepEqual([...applied.removed].sort(byKey), [...plan.items].sort(byKey), 'applied exactly what the dry run listed')
  t.deepEqual(applied.skipped, [])
  const gc = await berthCli(datadir, 'gc', '--quiet')
  t.is(gc.code, 0, gc.stderr)
  const after = await json<UsageReport>(t, datadir, 'du', '--bytes')
  const expected = removedImages.reduce((sum, image) => sum + ownBytes(image, sha256(base)), 0)
  t.is(before.bytes - after.bytes, expected, 'gc freed the removed images: manifests, configs, unique layers')
  t.is(before.blobs - after.blobs, removedImages.length * 3, 'manifest, config and layer of each removed image')
  t.is(after.unreferencedBytes, 0)
  t.log(`berth du: ${before.bytes} → ${after.bytes} bytes (${before.blobs} → ${after.blobs} blobs), expected ${expected} freed`)

  for (const tag of removedTags) t.is(await manifestStatus(berth, tag), 404, `${tag} removed`)
  for (const image of removedImages) t.is(await manifestStatus(berth, image.digest), 404, 'removed image')
  for (const [tag, image] of builds) if (!removedTags.includes(tag)) await assertPullsIdentical(t, berth, tag, image)
  await assertPullsIdentical(t, berth, 'latest', builds.get('build-10')!)
  await assertPullsIdentical(t, berth, 'v1.0.0', release)
  await assertPullsIdentical(t, berth, signature.digest, signature)
  await assertPullsIdentical(t, berth, 'v1.1.0', { digest: sha256(indexBody), manifest: indexBody, mediaType: OCI_INDEX, blobs: new Map() })
  for (const child of children) await assertPullsIdentical(t, berth, child.digest, child)
  const referrers = await request(berth.url, `/v2/${REPOSITORY}/referrers/${release.digest}`)
  t.deepEqual(
    (referrers.json as { manifests: { digest: string }[] }).manifests.map(m => m.digest),
    [signature.digest],
  )
})

test('serve --retention-interval: held while read-only; then removes, collects garbage and tells webhooks', async t => {
  const work = await makeTempDir('e2e-retention-serve')
  t.teardown(() => removeDir(work))
  const datadir = path.join(work, 'datadir')
  const config = path.join(work, 'berth.yml')
  const receiver = await startReceiver(t)
  let berth = await startBerth({ datadir })
  t.teardown(() => berth.stop())
  const base = randomBytes(16 * 1024)
  const images = new Map<string, Pushed>()
  const ages = new Map<string, number>()
  for (const [tag, days] of [
    ['ci-1', 50],
    ['ci-2', 40],
    ['ci-3', 30],
    ['ci-4', 2],
    ['ci-5', 1],
    ['v1.0.0', 100],
  ] as const) {
    images.set(tag, await pushImage(berth.url, tag, base))
    ages.set(tag, days * DAY)
  }
  await berth.stop()
  await setPushTimes(datadir, ages, Date.now())

  const settings = (readOnly: boolean) =>
    `read-only: ${readOnly}\nwebhooks: ["${receiver.url}"]\nquotas: [{ repositories: ["ci/**"], maxSize: 1g }]\n${POLICY.replace('last: 5', 'last: 2').replace(', pushedWithin: 10d', '')}`
  await writeFile(config, settings(true))
  berth = await startBerth({ datadir, port: berth.port, args: ['--config', config, '--retention-interval', '1s'] })
  await pushTimes(t, datadir, 6)
  t.regex(berth.output(), /quotas on quotas="ci\/\*\*: 1\.00 GiB"/, 'the quotas in force, logged at start')
  const removed = ['ci-1', 'ci-2', 'ci-3'].map(tag => images.get(tag)!)
  const files = removed.flatMap(image => [image.digest, ...[...image.blobs.keys()].filter(digest => digest !== sha256(base))])
  // Several intervals pass read-only: nothing removed, nothing sent.
  await new Promise(resolve => setTimeout(resolve, 4000))
  t.notRegex(berth.output(), /retention done/, 'no run while read-only')
  for (const tag of images.keys()) t.is(await manifestStatus(berth, tag), 200, `${tag} still there while read-only`)
  t.is(receiver.received.length, 0)

  const usedBefore = (await json<UsageReport>(t, datadir, 'du', '--bytes')).bytes
  await writeFile(config, settings(false))
  process.kill(berth.pid!, 'SIGHUP')
  await waitFor('retention, then garbage collection', async () => /retention done[\s\S]*garbage collection done/.test(berth.output()), {
    timeoutMs: 30_000,
    intervalMs: 100,
  })
  t.regex(berth.output(), /read-only mode off/)
  for (const tag of ['ci-1', 'ci-2', 'ci-3']) t.is(await manifestStatus(berth, tag), 404, `${tag} removed`)
  for (const tag of ['ci-4', 'ci-5', 'v1.0.0']) await assertPullsIdentical(t, berth, tag, images.get(tag)!)
  for (const digest of files) {
    const gone = await stat(blobFile(datadir, digest)).then(
      () => false,
      () => true,
    )
    t.true(gone, `blob file of ${digest} deleted by gc`)
  }
  const expected = removed.reduce((sum, image) => sum + ownBytes(image, sha256(base)), 0)
  const usedAfter = (await json<UsageReport>(t, datadir, 'du', '--bytes')).bytes
  t.is(usedBefore - usedAfter, expected, 'berth du: the removed images freed')
  t.log(`serve retention + gc: ${usedBefore} → ${usedAfter} bytes`)

  // Webhooks: a delete per tag and per image, user `retention`, oldest first (tags, then images).
  await receiver.waitFor(6, 20_000)
  await new Promise(resolve => setTimeout(resolve, 1000))
  type Event = { action: string; target: { repository: string; tag?: string; digest?: string }; actor: { name: string } }
  const events = receiver.received.map(delivery => (delivery.json as { events: Event[] }).events[0]!)
  t.deepEqual(
    events.map(event => [event.action, event.target.repository, event.target.tag ?? event.target.digest, event.actor.name]),
    [
      ...['ci-1', 'ci-2', 'ci-3'].map(tag => ['delete', REPOSITORY, tag, 'retention']),
      ...removed.map(image => ['delete', REPOSITORY, image.digest, 'retention']),
    ],
  )
})
