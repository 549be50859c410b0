/**
 * `berth gc` and `berth du` as a user runs them: separate processes on the datadir of a running
 * `berth serve`, with skopeo pushing and pulling; and on a datadir written by registry:2 (Debian's
 * docker-registry 2.8.2), which registry:2 serves again afterwards.
 */
import test, { type ExecutionContext } from 'ava'
import path from 'node:path'
import { readdir, utimes } from 'node:fs/promises'
import { MAIN, REPO_ROOT, startLocalBerth } from '../helpers/berth.js'
import { fileDigest, OciLayout, type BuiltImage } from '../helpers/images.js'
import { makeTempDir, removeDir, run, type RunResult } from '../helpers/procs.js'
import { startRegistry2 } from '../helpers/registry2.js'
import { copy, inspectRaw, type RegistryAccess } from '../helpers/skopeo.js'
import type { UsageReport } from '../../src/storage/usage.js'

const plainHttp: RegistryAccess = { tlsVerify: false }
const MiB = 1024 * 1024

function berthCli(args: string[], options: { allowFailure?: boolean } = {}): Promise<RunResult> {
  return run(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: REPO_ROOT, timeoutMs: 120_000, ...options })
}

async function usage(datadir: string): Promise<UsageReport> {
  return JSON.parse((await berthCli(['du', '--datadir', datadir, '--json'])).stdout) as UsageReport
}

async function workdir(t: ExecutionContext, label: string): Promise<string> {
  const dir = await makeTempDir(label)
  t.teardown(() => removeDir(dir))
  return dir
}

async function assertPulled(t: ExecutionContext, reference: string, image: BuiltImage, out: OciLayout, tag: string): Promise<void> {
  await copy(reference, out.ref(tag), { src: plainHttp })
  t.true((await out.readBlob(image.manifest.digest)).equals(image.manifestBytes), `${reference}: manifest identical`)
  for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest, `${reference}: blob intact`)
}

async function deleteByDigest(base: string, repository: string, digest: string): Promise<void> {
  const response = await fetch(`${base}/v2/${repository}/manifests/${digest}`, { method: 'DELETE' })
  if (response.status !== 202) throw new Error(`DELETE ${repository}@${digest}: ${response.status} ${await response.text()}`)
}

test('berth gc beside a running berth serve: deleted image freed, kept images and a multi-arch index pull identical, re-push works', async t => {
  const work = await workdir(t, 'e2e-gc')
  const datadir = path.join(work, 'datadir')
  const berth = await startLocalBerth({ datadir })
  t.teardown(() => berth.stop())
  const source = await OciLayout.create(path.join(work, 'source'))
  const doomed = await source.addImage({ tag: 'doomed', layers: [3 * MiB, 512 * 1024] })
  const kept = await source.addImage({ tag: 'kept', layers: [2 * MiB] })
  const multi = await source.addIndex({
    tag: 'multi',
    platforms: [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ],
    layers: [MiB],
  })
  const remote = `docker://${berth.hostPort}/team/app`
  await copy(source.ref('doomed'), `${remote}:doomed`, { dest: plainHttp })
  await copy(source.ref('kept'), `${remote}:kept`, { dest: plainHttp })
  await copy(source.ref('multi'), `docker://${berth.hostPort}/team/multi:latest`, { all: true, dest: plainHttp })

  const before = await usage(datadir)
  await deleteByDigest(berth.url, 'team/app', doomed.manifest.digest)

  const deleted = await usage(datadir)
  const dry = await berthCli(['gc', '--datadir', datadir, '--dry-run', '--grace', '0'])
  t.regex(dry.stdout, new RegExp(`would delete blob ${doomed.layers[0]!.digest} \\(3\\.00 MiB\\)`))
  t.deepEqual(await usage(datadir), deleted, 'a dry run changes nothing')

  const gc = await berthCli(['gc', '--datadir', datadir, '--grace', '0', '--delete-untagged'])
  t.regex(gc.stdout, /deleted 4 blobs \(3\.50 MiB\), 0 manifests/)
  const after = await usage(datadir)
  const doomedBytes = doomed.blobs.reduce((sum, b) => sum + b.size, 0) + doomed.manifestBytes.byteLength
  t.is(before.bytes - after.bytes, doomedBytes, 'exactly the deleted image is freed')
  t.log(`datadir before GC: ${before.bytes} bytes in ${before.blobs} blobs; after: ${after.bytes} bytes in ${after.blobs} blobs`)
  t.log(gc.stdout.trim())

  // The multi-arch children are untagged (pushed by digest) and survived --delete-untagged.
  const out = await OciLayout.create(path.join(work, 'out'))
  await assertPulled(t, `${remote}:kept`, kept, out, 'kept')
  await copy(`docker://${berth.hostPort}/team/multi:latest`, out.ref('multi'), { all: true, src: plainHttp })
  t.true((await out.readBlob(multi.index.digest)).equals(multi.indexBytes))
  for (const image of multi.images) for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest)
  await t.throwsAsync(inspectRaw(`${remote}@${doomed.manifest.digest}`, plainHttp))

  // Re-push the deleted image: skopeo sees its blobs missing, uploads them again; the pull works.
  await copy(source.ref('doomed'), `${remote}:doomed`, { dest: plainHttp })
  await assertPulled(t, `${remote}:doomed`, doomed, out, 'doomed-again')
  t.is((await usage(datadir)).bytes, before.bytes)
})

test('registry:2-written datadir: berth du reports it, berth gc frees the deleted image, registry:2 serves the rest afterwards', async t => {
  const work = await workdir(t, 'e2e-gc-r2')
  const datadir = path.join(work, 'datadir')
  const root = path.join(datadir, 'data')
  const source = await OciLayout.create(path.join(work, 'source'))
  const shared = await source.addImage({ tag: 'one', layers: [MiB] })
  const other = await source.addImage({ tag: 'two', layers: [2 * MiB, 1000] })

  let registry = await startRegistry2({ rootDirectory: root })
  t.teardown(() => registry.stop())
  await copy(source.ref('one'), `docker://${registry.hostPort}/a:one`, { dest: plainHttp })
  await copy(source.ref('one'), `docker://${registry.hostPort}/b:one`, { dest: plainHttp }) // same blobs in two repositories
  await copy(source.ref('two'), `docker://${registry.hostPort}/a:two`, { dest: plainHttp })
  await deleteByDigest(registry.url, 'a', other.manifest.digest)
  await registry.stop()

  const before = await usage(datadir)
  const a = before.repositories.find(r => r.name === 'a')!
  const b = before.repositories.find(r => r.name === 'b')!
  const sharedBytes = shared.blobs.reduce((sum, x) => sum + x.size, 0) + shared.manifestBytes.byteLength
  t.is(b.sharedBytes, sharedBytes, 'b shares all of image one with a')
  t.is(b.uniqueBytes, 0)
  t.is(a.sharedBytes, sharedBytes)
  const table = (await berthCli(['du', '--datadir', datadir])).stdout
  t.regex(table, /^REPOSITORY\s+MANIFESTS\s+BLOBS\s+UNIQUE\s+SHARED\s+TOTAL\s+UPLOADS$/m)
  t.log(table.trim())

  const gc = await berthCli(['gc', '--datadir', datadir, '--grace', '0'])
  t.log(gc.stdout.trim())
  const after = await usage(datadir)
  t.is(before.bytes - after.bytes, other.blobs.reduce((sum, x) => sum + x.size, 0) + other.manifestBytes.byteLength)
  t.is(after.unreferencedBytes, 0)

  registry = await startRegistry2({ rootDirectory: root })
  const out = await OciLayout.create(path.join(work, 'out'))
  await assertPulled(t, `docker://${registry.hostPort}/a:one`, shared, out, 'a')
  await assertPulled(t, `docker://${registry.hostPort}/b:one`, shared, out, 'b')
  await t.throwsAsync(inspectRaw(`docker://${registry.hostPort}/a@${other.manifest.digest}`, plainHttp))
  // registry:2 takes the deleted image again (its blob cache is empty after a restart).
  await copy(source.ref('two'), `docker://${registry.hostPort}/a:two`, { dest: plainHttp })
  await assertPulled(t, `docker://${registry.hostPort}/a:two`, other, out, 'two')
})

/**
 * Every file under `dir` looks written two hours ago (older than the default 1 h grace period).
 * Berth is running: a file listed may be gone (a temporary file renamed into place) by its turn.
 */
async function age(dir: string): Promise<void> {
  const when = new Date(Date.now() - 2 * 3600_000)
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    await utimes(path.join(entry.parentPath, entry.name), when, when).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error
    })
  }
}

test('berth gc processes racing skopeo pushes that re-use old garbage layers, several rounds: every tagged image still pulls', async t => {
  const work = await workdir(t, 'e2e-gc-race')
  const datadir = path.join(work, 'datadir')
  const berth = await startLocalBerth({ datadir })
  t.teardown(() => berth.stop())
  const source = await OciLayout.create(path.join(work, 'source'))
  const out = await OciLayout.create(path.join(work, 'out'))
  const tagged: { reference: string; image: BuiltImage }[] = []
  const rounds = 6
  for (let round = 0; round < rounds; round++) {
    // An image pushed and deleted "long ago": its blobs are garbage until someone re-uses them.
    const old = await source.addImage({ tag: `old${round}`, layers: [MiB, 200 * 1024] })
    const junk = await source.addImage({ tag: `junk${round}`, layers: [400 * 1024] }) // garbage nobody re-uses
    const fresh = await source.addImage({ tag: `fresh${round}`, layers: [300 * 1024] })
    await copy(source.ref(`old${round}`), `docker://${berth.hostPort}/race/old:gone`, { dest: plainHttp })
    await copy(source.ref(`junk${round}`), `docker://${berth.hostPort}/race/old:junk`, { dest: plainHttp })
    await deleteByDigest(berth.url, 'race/old', old.manifest.digest)
    await deleteByDigest(berth.url, 'race/old', junk.manifest.digest)
    await age(path.join(datadir, 'data'))
    // Concurrently: a GC process (deleting untagged manifests too), a re-push of the old image
    // into another repository (blobs found by mount or HEAD, only touched), and a new image.
    const gc = berthCli(['gc', '--datadir', datadir, '--delete-untagged', '--quiet'])
    // The pushes start at a different point of the GC process's life each round (it takes ~1-2 s to start).
    await new Promise(resolve => setTimeout(resolve, round * 400))
    const pushes = Promise.all([
      copy(source.ref(`old${round}`), `docker://${berth.hostPort}/race/again:r${round}`, { dest: plainHttp }),
      copy(source.ref(`fresh${round}`), `docker://${berth.hostPort}/race/fresh:r${round}`, { dest: plainHttp }),
    ])
    const [report] = await Promise.all([gc, pushes])
    t.log(`round ${round} (pushes after ${round * 400} ms): ${report.stdout.split('\n')[0]}`)
    t.regex(report.stdout, /^deleted [1-9]/, 'the GC had work to do: at least the junk image')
    tagged.push(
      { reference: `docker://${berth.hostPort}/race/again:r${round}`, image: old },
      { reference: `docker://${berth.hostPort}/race/fresh:r${round}`, image: fresh },
    )
    for (const [i, { reference, image }] of tagged.entries()) await assertPulled(t, reference, image, out, `r${round}-${i}`)
  }
  // A last run with nothing in flight and no grace: still nothing referenced goes.
  await berthCli(['gc', '--datadir', datadir, '--delete-untagged', '--grace', '0'])
  for (const [i, { reference, image }] of tagged.entries()) await assertPulled(t, reference, image, out, `final-${i}`)
})
