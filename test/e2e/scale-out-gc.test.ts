/**
 * Garbage collection with several instances on one bucket (issue #9's GC clause), as a user runs
 * it: two `berth serve --local --storage s3 --gc-interval 1s` processes on a real Ceph RGW behind
 * a round-robin balancer, skopeo pushing and pulling through it, and `berth gc` / `berth du` run
 * from a shell with the same storage flags. What a user relies on:
 * - `berth du --storage s3` reports the bucket; `berth gc --storage s3` frees exactly the deleted
 *   image's blobs while skopeo pushes another image through the instances, and every image still
 *   tagged pulls byte for byte afterwards; du shows the difference;
 * - deleted tag → GC → the same image pushed again → it pulls;
 * - `serve --gc-interval` runs on S3 (not "ignored"), each tick on whichever instance holds the
 *   lock in the bucket, without taking anything a push needs.
 */
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import anyTest, { type TestFn } from 'ava'
import { MAIN, REPO_ROOT, startBerth, type Berth } from '../helpers/berth.js'
import { startS3, uniquePrefix, type S3Server } from '../helpers/ceph.js'
import { request } from '../helpers/http.js'
import { OciLayout } from '../helpers/images.js'
import { makeTempDir, removeDir, run } from '../helpers/procs.js'
import { plainHttp, pullChecker, s3StorageArgs, startBalancer, stopAfterAll, type Balancer } from '../helpers/scale-out.js'
import { copy } from '../helpers/skopeo.js'
import { S3Driver } from '../../src/storage/driver/s3.js'
import { GC_LOCK_PATH } from '../../src/storage/gc-lock.js'

const test = anyTest as TestFn
/** Stops whatever did start, newest first, also when the setup failed halfway. */
const cleanups = stopAfterAll(test)
let ctx: { s3: S3Server; work: string; storageArgs: string[]; berths: Berth[]; balancer: Balancer; source: OciLayout } | undefined

test.before(async () => {
  const s3 = await startS3()
  cleanups.push(() => s3.stop())
  const work = await makeTempDir('scale-out-gc')
  cleanups.push(() => removeDir(work))
  const storageArgs = s3StorageArgs(s3, uniquePrefix('scale-out-gc'))
  const berths = await Promise.all(
    [0, 1].map(async i => {
      const berth = await startBerth({
        datadir: path.join(work, `datadir-${i}`),
        args: [...storageArgs, '--gc-interval', '1s'],
        env: s3.env,
        timeoutMs: 90_000,
      })
      cleanups.push(() => berth.stop())
      return berth
    }),
  )
  const balancer = await startBalancer(berths)
  cleanups.push(() => balancer.close())
  ctx = { s3, work, storageArgs, berths, balancer, source: await OciLayout.create(path.join(work, 'source')) }
})

function env() {
  if (ctx === undefined) throw new Error('setup failed')
  return ctx
}

/** `berth <command> --storage s3 ...` from a shell (a third process on the bucket). */
async function berthCli(args: readonly string[]) {
  const { s3, storageArgs } = env()
  const cleanEnv: Record<string, string | undefined> = {}
  for (const key of Object.keys(process.env)) if (key.startsWith('BERTH_')) cleanEnv[key] = undefined
  return run(process.execPath, ['--import', 'tsx', MAIN, ...args, ...storageArgs], {
    cwd: REPO_ROOT,
    env: { ...cleanEnv, ...s3.env },
    timeoutMs: 120_000,
    allowFailure: true,
  })
}

const pullAndCheck = pullChecker(() => env().work)

interface UsageJson {
  blobs: number
  bytes: number
  repositories: { name: string; bytes: number }[]
}

test.serial(
  'berth gc --storage s3 frees exactly the deleted image while skopeo pushes through both instances; du shows it; the re-pushed image pulls',
  async t => {
    const { balancer, source, berths } = env()
    const keep = await source.addImage({ tag: 'keep', layers: [300 * 1024, 2000] })
    const drop = await source.addImage({ tag: 'drop', layers: [6 * 1024 * 1024 + 5, 400 * 1024] })
    const during = await source.addImage({ tag: 'during', layers: [2 * 1024 * 1024, 3000] })
    await copy(source.ref('keep'), `docker://${balancer.hostPort}/gc/keep:v1`, { dest: plainHttp })
    await copy(source.ref('drop'), `docker://${balancer.hostPort}/gc/drop:v1`, { dest: plainHttp })
    const deleted = await request(balancer.url, `/v2/gc/drop/manifests/${drop.manifest.digest}`, { method: 'DELETE' })
    t.is(deleted.status, 202)
    // The grace period is 5 s: let it pass for the deleted image, then push another one during the run.
    await sleep(6000)

    const duBefore = await berthCli(['du', '--json'])
    t.is(duBefore.exitCode, 0, duBefore.stderr)
    const before = JSON.parse(duBefore.stdout) as UsageJson
    const dry = await berthCli(['gc', '--dry-run', '--grace', '5s'])
    t.is(dry.exitCode, 0, dry.stderr)
    const expected = [drop.manifest, ...drop.blobs]
    for (const blob of expected) t.true(dry.stdout.includes(`would delete blob ${blob.digest}`), `dry run lists ${blob.digest}`)

    const [gc] = await Promise.all([
      berthCli(['gc', '--grace', '5s', '--wait', '2m', '--json']),
      copy(source.ref('during'), `docker://${balancer.hostPort}/gc/during:v1`, { dest: plainHttp }),
    ])
    t.is(gc.exitCode, 0, gc.stderr)
    const report = JSON.parse(gc.stdout).gc as { blobs: { digest: string; size: number }[]; bytesFreed: number; warnings: string[] }
    t.deepEqual(report.blobs.map(b => b.digest).sort(), expected.map(b => b.digest).sort())
    t.is(
      report.bytesFreed,
      expected.reduce((sum, b) => sum + b.size, 0),
    )
    t.deepEqual(report.warnings, [])
    for (const blob of drop.blobs) t.is((await request(balancer.url, `/v2/gc/drop/blobs/${blob.digest}`, { method: 'HEAD' })).status, 404)

    await pullAndCheck(t, `docker://${balancer.hostPort}/gc/keep:v1`, keep)
    await pullAndCheck(t, `docker://${balancer.hostPort}/gc/during:v1`, during)
    const after = JSON.parse((await berthCli(['du', '--json'])).stdout) as UsageJson
    // `during` was pushed meanwhile: what went is the dropped image, what came is `during`.
    t.is(before.bytes - report.bytesFreed + during.blobs.reduce((sum, b) => sum + b.size, during.manifest.size), after.bytes)
    t.log(
      `bucket: ${before.bytes} B in ${before.blobs} blobs before; berth gc freed ${report.bytesFreed} B in ${report.blobs.length} blobs while \`during\` was pushed; ${after.bytes} B in ${after.blobs} blobs after`,
    )

    // Deleted tag → GC → the same image again: every swept blob is stored again and the image pulls.
    await copy(source.ref('drop'), `docker://${balancer.hostPort}/gc/drop:v1`, { dest: plainHttp })
    await pullAndCheck(t, `docker://${balancer.hostPort}/gc/drop:v1`, drop)

    // The instances' own timers collected on S3 all along, one at a time through the bucket lock.
    const logs = berths.map(b => b.output()).join('\n')
    t.notRegex(logs, /--gc-interval is ignored/)
    t.regex(logs, /garbage collection done/)
    t.notRegex(logs, /garbage collection failed/)
  },
)

test.serial(
  'berth gc refuses at once while another run holds the bucket (exit 1, says who) and waits for it with --wait; bad settings are one-line errors',
  async t => {
    const { s3, storageArgs } = env()
    const prefix = storageArgs[storageArgs.indexOf('--s3-prefix') + 1]!
    const driver = new S3Driver({
      endpoint: s3.endpoint,
      region: s3.region,
      bucket: s3.bucket,
      prefix,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    })
    // Another machine's run holds the lock (its heartbeat is recent). An instance's timer run that
    // held it just now sees it is no longer its own and stops (logged as skipped).
    const record = { nonce: 'elsewhere-run', host: 'elsewhere', pid: 1, created: Date.now(), updated: Date.now() }
    await driver.putContent(GC_LOCK_PATH, Buffer.from(JSON.stringify(record)))
    const busy = await berthCli(['gc'])
    t.is(busy.exitCode, 1)
    t.regex(busy.stderr, /another garbage collection is running on this store \(elsewhere, pid 1, since /)
    const waiting = berthCli(['gc', '--wait', '1m', '--json'])
    await sleep(3000)
    await driver.delete(GC_LOCK_PATH) // the other run finishes
    const waited = await waiting
    t.is(waited.exitCode, 0, waited.stderr)
    t.deepEqual(JSON.parse(waited.stdout).gc.warnings, [])

    const noBucket = await run(process.execPath, ['--import', 'tsx', MAIN, 'gc', '--storage', 's3'], {
      cwd: REPO_ROOT,
      env: s3.env,
      allowFailure: true,
      timeoutMs: 60_000,
    })
    t.is(noBucket.exitCode, 2)
    t.regex(noBucket.stderr, /--storage s3 needs --s3-bucket/)
    const unreachable = await run(
      process.execPath,
      ['--import', 'tsx', MAIN, 'du', '--storage', 's3', '--s3-bucket', 'x', '--s3-endpoint', 'http://127.0.0.1:1'],
      { cwd: REPO_ROOT, env: s3.env, allowFailure: true, timeoutMs: 60_000 },
    )
    t.is(unreachable.exitCode, 2)
    t.regex(unreachable.stderr, /cannot reach bucket "x" at http:\/\/127\.0\.0\.1:1: ECONNREFUSED/)
  },
)
