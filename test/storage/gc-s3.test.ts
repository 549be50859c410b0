/**
 * Garbage collection on S3 (a real single-node Ceph RGW, one per file), with registry engines
 * (createRegistryApp, each on its own S3Driver and client, as separate instances are) serving the
 * same bucket prefix while a collector on yet another driver runs. What a user relies on:
 * - GC frees exactly the unreferenced blobs; what is still tagged pulls byte-identical;
 * - the delete-intent rule (storage/gc-guard.ts): a touch that lands just before the collector's
 *   last look keeps the blob; one that lands between its last look and its delete waits, then
 *   learns the blob is gone (so the writer stores it again) instead of trusting a deleted blob;
 * - GC from one instance while others push, several rounds: nothing referenced is lost;
 * - two runs at once on one bucket: one refuses; a crashed run's lock is taken over;
 * - deleted tag → GC → re-push → pull works.
 * S3's LastModified has one-second resolution and cannot be set, so instead of ageing files as the
 * filesystem tests do, these wait past a second boundary and run with a grace period of 0.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import type { S3Driver } from '../../src/storage/driver/s3.js'
import { PathNotFoundError, type StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { collectGarbage, GcBusyError } from '../../src/storage/gc.js'
import { GC_LOCK_PATH } from '../../src/storage/gc-lock.js'
import { guardForGc, intentPath } from '../../src/storage/gc-guard.js'
import { blobDataPath } from '../../src/storage/paths.js'
import { diskUsage } from '../../src/storage/usage.js'
import { uniquePrefix } from '../helpers/ceph.js'
import { waitFor } from '../helpers/procs.js'
import { request } from '../helpers/http.js'
import { s3DriverFor as driverFor, s3ForFile } from '../helpers/s3.js'
import { imageManifest, OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, startApp, type Running } from '../registry/fixtures.js'
import { assertPulls, deleteManifest, ociManifest, pushRetrying } from './gc-clients.js'

const test = anyTest as TestFn
const started = s3ForFile(test)

/** A prefix, a collector's driver on it, and `instances` registry engines each on its own driver. */
async function setup(t: ExecutionContext, instances = 1): Promise<{ prefix: string; gcDriver: S3Driver; apps: Running[] }> {
  const s3 = await started
  const prefix = uniquePrefix('gc')
  const apps: Running[] = []
  for (let i = 0; i < instances; i++) apps.push(await startApp(t, { driver: driverFor(s3, prefix) }))
  return { prefix, gcDriver: driverFor(s3, prefix), apps }
}

/** Waits until the store's clock (one-second LastModified) has moved past everything written so far. */
async function pastSecond(): Promise<void> {
  await sleep(1100)
}

/** Waits (30 s deadline) until `path`'s modification time has moved past `before`: a touch has landed. */
async function touchLanded(driver: StorageDriver, path: string, before: number): Promise<void> {
  await waitFor(`the touch of ${path} to land`, async () => (await driver.stat(path)).modTime.getTime() > before, { intervalMs: 50 })
}

async function exists(driver: StorageDriver, path: string): Promise<boolean> {
  return driver.stat(path).then(
    () => true,
    (error: unknown) => {
      if (error instanceof PathNotFoundError) return false
      throw error
    },
  )
}

test('GC on S3 frees exactly the unreferenced blobs; a dry run lists the same; tagged images pull byte-identical', async t => {
  const { gcDriver, apps } = await setup(t)
  const app = apps[0]!
  const keep = await imageManifest(app.server, 'keep', { layers: 2 })
  t.is((await putManifest(app.server, 'keep', 'v1', keep.manifest, OCI_MANIFEST)).status, 201)
  const drop = await imageManifest(app.server, 'drop', { layers: 3 })
  t.is((await putManifest(app.server, 'drop', 'v1', drop.manifest, OCI_MANIFEST)).status, 201)
  await deleteManifest(app, 'drop', drop.digest)
  await pastSecond()
  const before = await diskUsage(gcDriver)
  const expected = [drop.config, ...drop.layers, { digest: drop.digest, size: drop.manifest.byteLength }].map(b => `${b.digest} ${b.size}`).sort()

  const dry = await collectGarbage(gcDriver, { dryRun: true, gracePeriodMs: 0 })
  t.deepEqual(dry.blobs.map(b => `${b.digest} ${b.size}`).sort(), expected)
  for (const blob of dry.blobs) t.true(await exists(gcDriver, blobDataPath(blob.digest)))

  const report = await collectGarbage(gcDriver, { gracePeriodMs: 0 })
  t.deepEqual(report.blobs.map(b => `${b.digest} ${b.size}`).sort(), expected)
  t.deepEqual(report.warnings, [])
  for (const blob of report.blobs) t.false(await exists(gcDriver, blobDataPath(blob.digest)))
  t.false(await exists(gcDriver, '/berth/gc/intents'), 'no intent left behind')
  t.false(await exists(gcDriver, GC_LOCK_PATH), 'lock released')
  await assertPulls(t, app, 'keep', 'v1')
  const after = await diskUsage(gcDriver)
  t.is(after.unreferencedBytes, 0)
  t.is(before.bytes - after.bytes, report.bytesFreed)
  t.log(
    `bucket before: ${before.bytes} B in ${before.blobs} blobs (${before.unreferencedBytes} B unreferenced); after: ${after.bytes} B in ${after.blobs} blobs; freed ${report.bytesFreed} B`,
  )
})

/**
 * A driver for the collector that runs `hook` when it is about to do a given step on `target`
 * (the intent write, g1, or the delete, g3), to place a writer's touch exactly there.
 */
function hooked(inner: S3Driver, target: string, at: 'intent' | 'delete', hook: () => Promise<void>): StorageDriver {
  let fired = false
  return new Proxy(inner, {
    get(object, property, receiver) {
      const value = Reflect.get(object, property, receiver)
      if (property === 'putContent' && at === 'intent') {
        return async (path: string, content: Uint8Array) => {
          await object.putContent(path, content)
          if (path === intentPath(target) && !fired) {
            fired = true
            await hook()
          }
        }
      }
      if (property === 'delete' && at === 'delete') {
        return async (path: string) => {
          if (path === target && !fired) {
            fired = true
            await hook()
          }
          return object.delete(path)
        }
      }
      return typeof value === 'function' ? value.bind(object) : value
    },
  })
}

test('delete intents: a touch just before the last look keeps the blob; a touch between the last look and the delete waits and then reports it gone', async t => {
  const s3 = await started
  const { prefix, gcDriver } = await setup(t, 0)
  const writer = guardForGc(driverFor(s3, prefix)) // another instance's store, as registry-store.ts wraps it
  const early = blobDataPath(sha256('early'))
  const late = blobDataPath(sha256('late'))
  await gcDriver.putContent(early, Buffer.from('early'))
  await gcDriver.putContent(late, Buffer.from('late'))
  await pastSecond()

  // Touch after the intent is written, before the collector's last look: the collector sees the new
  // time and keeps the blob; the writer, having seen the intent, waits for it to go and then succeeds.
  let earlyTouch: Promise<void> | undefined
  const first = await collectGarbage(
    hooked(gcDriver, early, 'intent', async () => {
      const before = (await gcDriver.stat(early)).modTime.getTime()
      earlyTouch = writer.touch(early)
      // The writer's touch lands (then it finds the intent and waits).
      await touchLanded(gcDriver, early, before)
    }),
    { gracePeriodMs: 0 },
  )
  await t.notThrowsAsync(earlyTouch!)
  t.true(await exists(gcDriver, early), 'touched blob kept')
  t.is(first.restored, 1)
  t.false(await exists(gcDriver, late), 'the untouched one went')

  // Touch after the last look, before the delete: a plain stat-then-delete would lose it. The
  // writer's touch succeeds on S3, finds the intent, waits, and then reports the blob missing.
  await gcDriver.putContent(late, Buffer.from('late'))
  await pastSecond()
  let lateTouch: Promise<unknown> | undefined
  let deleteSent = 0
  let touchSettled = 0
  const second = await collectGarbage(
    hooked(gcDriver, early, 'delete', async () => {
      const before = (await gcDriver.stat(early)).modTime.getTime()
      lateTouch = writer.touch(early).then(
        () => {
          touchSettled = performance.now()
          return 'resolved'
        },
        (error: unknown) => {
          touchSettled = performance.now()
          return error
        },
      )
      await touchLanded(gcDriver, early, before)
      deleteSent = performance.now()
    }),
    { gracePeriodMs: 0 },
  )
  t.true(deleteSent > 0)
  t.true(second.blobs.some(b => b.digest === sha256('early')))
  const outcome = await lateTouch!
  t.true(touchSettled > deleteSent, 'the touch waited for the collector to finish with the blob')
  if (outcome === 'resolved') {
    // Only possible when the touch's server-side copy was in flight across the delete and wrote
    // the object again: then the blob the writer relies on is really there.
    t.true(await exists(gcDriver, early), 'a touch that succeeded left the blob in place')
  } else {
    t.true(outcome instanceof PathNotFoundError, `the writer learns it is gone, so it stores the bytes again (got ${String(outcome)})`)
    t.false(await exists(gcDriver, early))
  }
})

test("two GC runs at once on one bucket: exactly one runs, the other refuses; a crashed run's stale lock is taken over", async t => {
  const s3 = await started
  const { prefix, gcDriver, apps } = await setup(t)
  const image = await imageManifest(apps[0]!.server, 'app', { layers: 2 })
  t.is((await putManifest(apps[0]!.server, 'app', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  await deleteManifest(apps[0]!, 'app', image.digest)
  await pastSecond()
  // Two collectors on two drivers (two clients, as two machines would be).
  const results = await Promise.allSettled([collectGarbage(gcDriver, { gracePeriodMs: 0 }), collectGarbage(driverFor(s3, prefix), { gracePeriodMs: 0 })])
  const ok = results.filter(r => r.status === 'fulfilled')
  const busy = results.filter(r => r.status === 'rejected' && r.reason instanceof GcBusyError)
  t.is(ok.length, 1, JSON.stringify(results.map(r => (r.status === 'rejected' ? String(r.reason) : 'ok'))))
  t.is(busy.length, 1)
  t.is((ok[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof collectGarbage>>>).value.blobs.length, 4)

  // A held lock (another run's heartbeat is recent): refused with who holds it.
  const held = { nonce: 'other', host: 'elsewhere', pid: 1, created: Date.now(), updated: Date.now() }
  await gcDriver.putContent(GC_LOCK_PATH, Buffer.from(JSON.stringify(held)))
  const refused = await t.throwsAsync(collectGarbage(gcDriver, { gracePeriodMs: 0 }), { instanceOf: GcBusyError })
  t.regex(refused!.message, /elsewhere, pid 1/)
  // Its holder crashed: no heartbeat for longer than the stale period; the next run takes over.
  await gcDriver.putContent(GC_LOCK_PATH, Buffer.from(JSON.stringify({ ...held, updated: Date.now() - 120_000 })))
  const report = await collectGarbage(gcDriver, { gracePeriodMs: 0 })
  t.deepEqual(report.warnings, [])
  t.false(await exists(gcDriver, GC_LOCK_PATH))
})

/**
 * The collector's driver with both windows of the rule held open a while (after the intent is
 * written, before the last look; after the last look, before the delete), so that concurrent
 * pushes land in them often rather than by luck.
 */
function slowSweep(inner: S3Driver, ms: number): StorageDriver {
  return new Proxy(inner, {
    get(object, property, receiver) {
      const value = Reflect.get(object, property, receiver)
      if (property === 'putContent') {
        return async (path: string, content: Uint8Array) => {
          await object.putContent(path, content)
          if (path.startsWith('/berth/gc/intents/')) await sleep(ms)
        }
      }
      if (property === 'delete') {
        return async (path: string) => {
          if (!path.startsWith('/berth/')) await sleep(ms)
          return object.delete(path)
        }
      }
      return typeof value === 'function' ? value.bind(object) : value
    },
  })
}

const GRACE_MS = 5000

test('GC from one instance while two others push, several rounds: nothing referenced is lost', async t => {
  const { gcDriver: plainGcDriver, apps } = await setup(t, 2)
  const gcDriver = slowSweep(plainGcDriver, 60)
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
  const base = randomBytes(20_000)
  const tagged: { name: string; tag: string }[] = []
  let retries = 0
  let restored = 0
  let freed = 0
  let gcRuns = 0
  let turn = 0
  /** Requests alternate between the two instances, as behind a round-robin balancer. */
  const next = () => apps[turn++ % apps.length]!.server

  /** A client's push (gc-clients.ts): retried on MANIFEST_BLOB_UNKNOWN as docker does, up to 6 times. */
  const push = async (name: string, tag: string, layers: Buffer[]) => {
    retries += await pushRetrying(next, name, tag, config, [base, ...layers], 6)
  }

  const rounds = 6
  for (let round = 0; round < rounds; round++) {
    // Garbage the pushes below re-use: an image pushed and deleted before this round's GC starts.
    const reused = [randomBytes(5000), randomBytes(6000)]
    await push('old', 'gone', reused)
    const old = await request(next(), '/v2/old/manifests/gone', { headers: { Accept: OCI_MANIFEST } })
    await deleteManifest(apps[0]!, 'old', sha256(old.body))
    // A grace period (not 0): a manifest PUT that touched its layers just before a run started must
    // still find them (see the rule in gc-guard.ts: a push's touch-to-commit must take less than the
    // grace). 5 s, not 1 s: S3's one-second times can eat a second of it, and a loaded machine took
    // more than the rest between a push's touch and its manifest (one refused push). So the garbage
    // waits the grace and a second.
    await sleep(GRACE_MS + 1100)
    const fresh = randomBytes(7000)
    const name = `r${round % 3}`
    const tag = `t${round}`
    let pushing = true
    let pushes: Promise<unknown> | undefined
    // The pushes start when the first run reaches its blob sweep (so they re-use the very blobs it
    // is deleting), and runs follow each other until they are done.
    const startPushes = () =>
      (pushes ??= Promise.all([
        push(name, tag, [...reused, fresh]),
        push('other', tag, [reused[0]!]),
        push(`m${round}`, 'x', [reused[1]!]),
        push(`n${round}`, 'x', reused),
      ]).finally(() => {
        pushing = false
      }))
    const gc = (async () => {
      let runs = 0
      while (pushing || runs === 0) {
        const report = await collectGarbage(gcDriver, {
          gracePeriodMs: GRACE_MS,
          deleteUntagged: round % 2 === 0,
          beforeSweep: async phase => {
            if (phase === 'blobs') void startPushes().catch(() => {})
          },
        })
        restored += report.restored
        freed += report.bytesFreed
        runs++
      }
      gcRuns += runs
    })()
    await gc
    await startPushes()
    tagged.push({ name: `m${round}`, tag: 'x' }, { name: `n${round}`, tag: 'x' }, { name, tag }, { name: 'other', tag })
    for (const image of tagged) await assertPulls(t, apps[round % 2]!, image.name, image.tag)
  }
  t.log(
    `${rounds} rounds, ${gcRuns} GC runs during pushes: ${retries} pushes retried after MANIFEST_BLOB_UNKNOWN, ${restored} kept because a push touched them mid-run, ${freed} bytes freed`,
  )
  // No push was even refused: a mount whose touch lands between the collector's last look and its
  // delete waits and is told the blob is gone, so the client uploads it. With the writers' guard
  // switched off, the mount links a blob that is then deleted and the manifest is refused (2 and 7
  // refusals in two runs of this test).
  t.is(retries, 0)
  await pastSecond()
  const final = await collectGarbage(gcDriver, { deleteUntagged: true, gracePeriodMs: 0 })
  t.deepEqual(final.warnings, [])
  for (const image of tagged) await assertPulls(t, apps[1]!, image.name, image.tag)
  t.true(gcRuns >= rounds)
})

test('deleted tag → GC on S3 → re-push of identical bytes → pull byte-identical (no "layer already exists" for a swept blob)', async t => {
  const { gcDriver, apps } = await setup(t, 2)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }))
  const layers = [randomBytes(3000), randomBytes(4000)]
  let uploads = 0
  const push = async (via: Running) => {
    for (const blob of [config, ...layers]) {
      const head = await request(via.server, `/v2/app/blobs/${sha256(blob)}`, { method: 'HEAD' })
      if (head.status !== 200) {
        await pushBlob(via.server, 'app', blob)
        uploads++
      }
    }
    const manifest = ociManifest(config, layers)
    t.is((await putManifest(via.server, 'app', 'v1', manifest, OCI_MANIFEST)).status, 201)
    return manifest
  }
  const manifest = await push(apps[0]!)
  await deleteManifest(apps[1]!, 'app', sha256(manifest))
  await pastSecond()
  const report = await collectGarbage(gcDriver, { gracePeriodMs: 0 })
  t.is(report.blobs.length, 4)
  t.is(report.bytesFreed, config.byteLength + 7000 + manifest.byteLength)
  uploads = 0
  await push(apps[1]!)
  t.is(uploads, 3, 'every swept blob is pushed again (HEAD says 404)')
  await assertPulls(t, apps[0]!, 'app', 'v1')
  for (const layer of layers) t.deepEqual((await request(apps[0]!.server, `/v2/app/blobs/${sha256(layer)}`)).body, layer)
})

test('a run whose lock is taken over stops before deleting anything more', async t => {
  const { gcDriver, apps } = await setup(t)
  const image = await imageManifest(apps[0]!.server, 'app', { layers: 3 })
  t.is((await putManifest(apps[0]!.server, 'app', 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  await deleteManifest(apps[0]!, 'app', image.digest)
  await pastSecond()
  const error = await t.throwsAsync(
    collectGarbage(gcDriver, {
      gracePeriodMs: 0,
      beforeSweep: async phase => {
        // Another run judged this one dead and took the lock (as after a long pause).
        if (phase === 'blobs')
          await gcDriver.putContent(
            GC_LOCK_PATH,
            Buffer.from(JSON.stringify({ nonce: 'thief', host: 'elsewhere', pid: 2, created: Date.now(), updated: Date.now() })),
          )
      },
    }),
    { instanceOf: GcBusyError },
  )
  t.regex(error!.message, /taken over/)
  for (const blob of [image.config, ...image.layers]) t.true(await exists(gcDriver, blobDataPath(blob.digest)), 'nothing deleted after the lock was lost')
  t.is(JSON.parse((await gcDriver.getContent(GC_LOCK_PATH)).toString()).nonce, 'thief', "the other run's lock is left alone")
})

test('--delete-untagged on S3: a tagged multi-arch index keeps its untagged children; an untagged image goes', async t => {
  const { gcDriver, apps } = await setup(t)
  const app = apps[0]!
  const children = [await imageManifest(app.server, 'multi'), await imageManifest(app.server, 'multi')]
  for (const child of children) t.is((await putManifest(app.server, 'multi', child.digest, child.manifest, OCI_MANIFEST)).status, 201)
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
  t.is((await putManifest(app.server, 'multi', 'latest', index, OCI_INDEX)).status, 201)
  const untagged = await imageManifest(app.server, 'multi')
  t.is((await putManifest(app.server, 'multi', untagged.digest, untagged.manifest, OCI_MANIFEST)).status, 201)
  await pastSecond()
  const report = await collectGarbage(gcDriver, { gracePeriodMs: 0, deleteUntagged: true })
  t.deepEqual(
    report.manifests.map(m => m.digest),
    [untagged.digest],
  )
  t.deepEqual(report.blobs.map(b => b.digest).sort(), [untagged.digest, untagged.config.digest, ...untagged.layers.map(l => l.digest)].sort())
  for (const child of children) await assertPulls(t, app, 'multi', child.digest)
  t.is((await request(app.server, `/v2/multi/manifests/${untagged.digest}`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })).status, 404)
})
