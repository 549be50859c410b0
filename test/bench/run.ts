/**
 * `npm run bench [-- --quick] [-- --rounds N] ...`: Berth against the seed's stack (nginx +
 * registry:2 from Debian packages), side by side on this machine, issue #7.
 *
 * Every round runs each job on both stacks back to back (A B, then B A the next round, so neither
 * always goes first), with fresh random content for every push and `sync` before every timed job,
 * so one job's dirty pages are not written back during the next. Results: a table on stdout, and
 * `bench-results/<timestamp>/results.{md,json}` (+ stack logs, + CPU profiles with --cpu-prof).
 */
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { access, cp, mkdir, mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { measureCeilings, type Ceilings } from './ceilings.js'
import {
  abHead,
  curlGetBlob,
  curlPatchBlob,
  curlPutBlob,
  fetchToken,
  skopeoPull,
  skopeoPullTimed,
  skopeoPush,
  skopeoPushAnonymous,
  wrkGet,
  type ClientContext,
  type PullTiming,
} from './clients.js'
import { removeShaping, shapePort } from './link-shaper.js'
import { manifestMediaType, writeImageLayout, writeRandomBlob, type BlobRef } from './content.js'
import { manyClientCases, MANY_CASE_IDS, runManyClients } from './many-clients.js'
import { ensurePackages } from './packages.js'
import { makePki, type BenchPki } from './pki.js'
import { ResourceMonitor, type ResourceUsage } from './procs.js'
import { evaluate, markdownTable, table, textTable, type CaseDef, type CaseResult } from './report.js'
import { startBerth, startSeed, type S3Target, type Stack, type StackName } from './stacks.js'
import { startS3, type S3Server } from '../helpers/ceph.js'
import { startRegistry2 } from '../helpers/registry2.js'
import { runDockerPull } from './docker-pull.js'
import type { CaseHooks } from './hooks.js'
import { runStartup, STARTUP_CASES, startupCaseDefs } from './startup.js'
import { judgeStaticCeiling, runStaticPull } from './static-ceiling.js'
import { curlGetFromStore, noteStoreCeiling, STORE_CEILING_CASE, storeCeilingCaseDef } from './store-ceiling.js'
import { S3Driver } from '../../src/storage/driver/s3.js'
import { PathNotFoundError } from '../../src/storage/driver/storage-driver.js'
import { GiB, MiB, fmt, formatBytes, median, run, waitQuiet } from './util.js'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    stacks: { type: 'string', default: 'seed,berth' },
    cases: { type: 'string' },
    'berth-cmd': { type: 'string' },
    'no-build': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'skip-big': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    out: { type: 'string' },
    storage: { type: 'string', default: 'filesystem' },
    help: { type: 'boolean', default: false },
  },
})

if (flags.help) {
  process.stdout.write(`usage: npm run bench -- [options]
  --quick            small sizes (128 MiB, 20 small layers, 2 s rates), 2 rounds, no 5 GiB push; what CI runs
  --rounds N         rounds per case (default 5)
  --stacks LIST      seed,berth (default both; one alone gives figures without ratios); add
                     berth-metrics (Berth with --metrics-listen, scraped every 5 s) to compare
                     with berth: \`--stacks berth,berth-metrics\` is the metrics-cost check
  --cases LIST       only these case ids (see results.json), e.g. curl-put,rps-manifest-get;
                     the mirror's: mirror-pull-cached,mirror-pull-pushed,mirror-pull-cold,mirror-pull-upstream
                     (Berth only, filesystem storage)
                     issue 21's: skopeo-pull-static (ceiling for skopeo-pull), docker-pull (needs dockerd),
                     startup-berth,startup-binary,startup-registry2 (startup-binary needs npm run build:binary),
                     many-aggregate,many-manifest-p99,many-rss,many-errors (many clients at once; one run of all four)
  --berth-cmd CMD    how to run Berth (default: node dist/berth.cjs, built first)
  --no-build         do not run \`npm run build\` first
  --cpu-prof         run Berth under node --cpu-prof; profiles land in the results folder
  --skip-big         skip the 5 GiB push
  --keep             keep the temporary stacks' folders
  --out DIR          results folder (default bench-results/<timestamp>)
  --storage KIND     filesystem (default) or s3: both stacks store in a local Ceph RGW bucket
                     (registry:2's s3 driver, redirects off; Berth --storage s3)
`)
  process.exit(0)
}

const quick = flags.quick
const rounds = Number(flags.rounds ?? (quick ? 2 : 5))
const stackNames = flags.stacks.split(',').filter((s): s is StackName => s === 'seed' || s === 'berth' || s === 'berth-metrics')
const sizes = quick
  ? { big: 128 * MiB, smallCount: 20, small: 64 * 1024, rateSeconds: 2, huge: 0 }
  : { big: GiB, smallCount: 100, small: MiB, rateSeconds: 5, huge: flags['skip-big'] ? 0 : 5 * GiB }

const big = formatBytes(sizes.big)
/** Tags pushed per round in the webhook cases: each is a manifest PUT, so one event. */
const WEBHOOK_TAGS = 20
/** How much slower pushes may be with a hanging webhook than without (2 shared cores are noisy). */
const WEBHOOK_SLOWDOWN_BOUND = 1.25
/** The pull-through mirror's bounds (issue #17): a cached pull as fast as a pushed one, a cold pull within 10% of the upstream direct. */
const MIRROR_CACHED_BOUND = 1.1
const MIRROR_COLD_BOUND = 1.1
/** The upstream's link in the mirror's WAN cases: a fast internet connection (1 Gbit/s). */
const MIRROR_WAN_MBIT = 1000
const MIRROR_CASES = [
  'mirror-pull-cached',
  'mirror-pull-pushed',
  'mirror-pull-cold',
  'mirror-pull-upstream',
  'mirror-pull-cold-wan',
  'mirror-pull-upstream-wan',
] as const
const cases: CaseDef[] = [
  { id: 'skopeo-push', label: `skopeo push, ${big} image`, unit: 'MB/s', better: 'higher', minAdvantage: 1.5, ceiling: { key: 'diskFsyncWrite' } },
  { id: 'skopeo-pull', label: `skopeo pull, ${big} image`, unit: 'MB/s', better: 'higher', minAdvantage: 1.2, ceiling: { key: 'loopbackTls' } },
  {
    id: 'curl-put',
    label: `curl PUT (monolithic), ${big} blob`,
    unit: 'MB/s',
    better: 'higher',
    minAdvantage: 1.5,
    ceiling: { key: 'diskFsyncWrite', share: 0.8 },
  },
  {
    id: 'curl-patch',
    label: `curl PATCH (streamed) + PUT, ${big} blob`,
    unit: 'MB/s',
    better: 'higher',
    minAdvantage: 1.5,
    ceiling: { key: 'diskFsyncWrite', share: 0.8 },
  },
  {
    id: 'skopeo-pull-static',
    label: `skopeo pull, the same ${big} image as static files from nginx (the ceiling; Berth column)`,
    unit: 'MB/s',
    better: 'higher',
  },
  { id: 'curl-get', label: `curl GET, ${big} blob`, unit: 'MB/s', better: 'higher', minAdvantage: 1.2, ceiling: { key: 'loopbackTls' } },
  { id: 'small-push', label: `skopeo push, ${sizes.smallCount} × ${formatBytes(sizes.small)} layers`, unit: 's', better: 'lower', minAdvantage: 1.3 },
  { id: 'rps-manifest-get', label: `manifest GET, auth, ${16} conns (wrk)`, unit: 'req/s', better: 'higher', minAdvantage: 10 },
  {
    id: 'rps-manifest-get-bearer',
    label: `manifest GET, Bearer token (seed: Basic), ${16} conns (wrk)`,
    unit: 'req/s',
    better: 'higher',
    minAdvantage: 10,
  },
  {
    id: 'rps-manifest-get-anonymous',
    label: `manifest GET, anonymous, public/ (seed: Basic), ${16} conns (wrk)`,
    unit: 'req/s',
    better: 'higher',
    minAdvantage: 10,
  },
  { id: 'rps-manifest-head', label: `manifest HEAD, auth, ${16} conns (ab -k)`, unit: 'req/s', better: 'higher', minAdvantage: 10 },
  { id: 'rps-v2', label: 'GET /v2/, auth, 16 conns (wrk)', unit: 'req/s', better: 'higher', minAdvantage: 10 },
  { id: 'docker-pull', label: `docker pull, 3 × ${formatBytes(Math.floor(sizes.big / 3))} layers`, unit: 'MB/s', better: 'higher', minAdvantage: 1.2 },
  { id: 'push-rss', label: `peak RSS during the ${big} push`, unit: 'MiB', better: 'lower', berthBound: 150 },
  { id: 'push-cpu', label: `CPU time during the ${big} push`, unit: 's', better: 'lower' },
  { id: 'push-webhook-none', label: `skopeo push, 1 image × ${WEBHOOK_TAGS} tags, no webhook (Berth only)`, unit: 's', better: 'lower' },
  {
    id: 'push-webhook-hangs',
    label: `skopeo push, 1 image × ${WEBHOOK_TAGS} tags, webhook to a receiver that never answers (Berth only)`,
    unit: 's',
    better: 'lower',
  },
  { id: 'mirror-pull-cached', label: `skopeo pull, ${big} image cached by a mirror Berth (Berth only)`, unit: 's', better: 'lower' },
  { id: 'mirror-pull-pushed', label: `skopeo pull, the same ${big} image pushed to Berth (Berth only)`, unit: 's', better: 'lower' },
  {
    id: 'mirror-pull-cold',
    label: `skopeo pull, ${big} image not cached yet, through a mirror Berth of docker-registry (Berth only)`,
    unit: 's',
    better: 'lower',
  },
  { id: 'mirror-pull-upstream', label: `skopeo pull, the same ${big} image from docker-registry directly (HTTPS, no login)`, unit: 's', better: 'lower' },
  {
    id: 'mirror-pull-cold-wan',
    label: `skopeo pull, ${big} image not cached yet, through the mirror, upstream's link ${MIRROR_WAN_MBIT} Mbit/s (Berth only)`,
    unit: 's',
    better: 'lower',
  },
  {
    id: 'mirror-pull-upstream-wan',
    label: `skopeo pull, the same ${big} image from docker-registry directly at ${MIRROR_WAN_MBIT} Mbit/s`,
    unit: 's',
    better: 'lower',
  },
  ...startupCaseDefs(),
]
if (sizes.huge) {
  cases.push(
    {
      id: 'huge-push-rss',
      label: `peak RSS during a ${formatBytes(sizes.huge)} push (1 run, layer just under the limit)`,
      unit: 'MiB',
      better: 'lower',
      berthBound: 150,
    },
    { id: 'huge-push', label: `skopeo push, ${formatBytes(sizes.huge)} image (1 run)`, unit: 'MB/s', better: 'higher', ceiling: { key: 'diskFsyncWrite' } },
  )
}
cases.push(...manyClientCases(quick, flags.storage))
if (flags.storage === 's3') cases.push(storeCeilingCaseDef(big))
const selected = flags.cases ? new Set(flags.cases.split(',')) : undefined
const wants = (id: string) => !selected || selected.has(id)

const samples = new Map<string, Record<StackName, number[]>>()
const extra: Record<string, unknown[]> = { httpVersions: [], resources: [], samples: [] }
/** Share of the machine's CPU busy (with other work) just before the current job started. */
let busyBefore = 0
function record(caseId: string, stack: StackName, value: number): void {
  let entry = samples.get(caseId)
  if (!entry) samples.set(caseId, (entry = { seed: [], berth: [], 'berth-metrics': [] }))
  entry[stack].push(value)
  extra.samples!.push({ case: caseId, stack, value, machineBusyBefore: +busyBefore.toFixed(2) })
}

/** Notes the case modules leave for the report, by case id. */
const caseNotes = new Map<string, string[]>()
const hooks: CaseHooks = {
  quick,
  rounds,
  wants,
  record,
  settle,
  progress,
  fail: (job, name, error, round) => fail(job, { name }, error, round),
  note: (caseId, text) => caseNotes.set(caseId, [...(caseNotes.get(caseId) ?? []), text]),
  detail: (key, value) => (extra[key] ??= []).push(value),
}

/** Waits briefly for other work on the machine to settle, then flushes dirty pages. */
async function settle(): Promise<void> {
  const quiet = await waitQuiet(quick ? 0 : 5000)
  busyBefore = quiet.busy
  if (quiet.busy > 0.15) progress(`  (machine ${Math.round(quiet.busy * 100)}% busy with other work before this job)`)
  await run('sync', [])
}

const startedAt = new Date()
const t0 = Date.now()
function progress(text: string): void {
  const elapsed = Math.round((Date.now() - t0) / 1000)
  process.stderr.write(`[${String(Math.floor(elapsed / 60)).padStart(2, '0')}:${String(elapsed % 60).padStart(2, '0')}] ${text}\n`)
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  )
}

/** Removes the blobs a push left, so the disk does not fill over rounds (never during a timed job). */
async function purgeBlobs(stack: Stack, digests: string[]): Promise<void> {
  if (stack.s3 !== undefined) {
    const { endpoint, region, bucket, prefix, accessKeyId, secretAccessKey } = stack.s3
    const driver = new S3Driver({ endpoint, region, bucket, prefix, credentials: { accessKeyId, secretAccessKey } })
    for (const digest of digests) {
      const hex = digest.slice('sha256:'.length)
      await driver.delete(`/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}`).catch((error: unknown) => {
        if (!(error instanceof PathNotFoundError)) throw error
      })
    }
    return
  }
  for (const digest of digests) {
    const hex = digest.slice('sha256:'.length)
    await rm(path.join(stack.storageRoot, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex), { recursive: true, force: true })
  }
}

async function main(): Promise<void> {
  const outDir = path.resolve(repoRoot, flags.out ?? path.join('bench-results', startedAt.toISOString().replace(/[:.]/g, '-')))
  await mkdir(outDir, { recursive: true })
  progress(
    `bench: ${quick ? 'quick, ' : ''}${rounds} round(s), stacks ${stackNames.join(' + ')}, ${flags.storage} storage, results → ${path.relative(repoRoot, outDir)}`,
  )
  await ensurePackages(progress)

  const work = await mkdtemp(path.join(os.tmpdir(), 'berth-bench-'))
  // Client-side files (images to push, pulled copies) live in RAM when there is room, so the
  // clients' own disk traffic does not compete with the registries' writes.
  const shmFree = await statfs('/dev/shm').then(
    s => s.bavail * s.bsize,
    () => 0,
  )
  const clientRoot = shmFree > 3 * (sizes.huge || sizes.big) ? await mkdtemp('/dev/shm/berth-bench-') : path.join(work, 'client')
  await mkdir(clientRoot, { recursive: true })
  const stacks: Stack[] = []
  let s3: S3Server | undefined
  const cleanup = async () => {
    await removeShaping()
    await Promise.allSettled(stacks.map(stack => stack.stop()))
    await s3?.stop()
    for (const stack of stacks) {
      await mkdir(path.join(outDir, 'logs', stack.name), { recursive: true })
      for (const log of stack.logs) await cp(log, path.join(outDir, 'logs', stack.name, path.basename(log))).catch(() => {})
    }
    await rm(clientRoot, { recursive: true, force: true })
    if (!flags.keep) await rm(work, { recursive: true, force: true })
  }
  let interrupted = false
  // Ctrl-C, kill and a closed terminal all stop the stacks (nginx, registry:2, Berth, Ceph) first:
  // with SIGINT alone, a plain `kill` left them running.
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    process.once(signal, () => {
      if (interrupted) return
      interrupted = true
      progress(`interrupted (${signal}): stopping the stacks`)
      void cleanup().finally(() => process.exit(code))
    })
  }

  try {
    const pki = await makePki(path.join(work, 'pki'))
    progress('measuring the machine ceilings (sha256, AES-GCM, disk fsync, loopback TLS)')
    await settle()
    const busyAtCeilings = busyBefore
    const ceilings = await measureCeilings(pki, work, quick)
    progress(
      `ceilings: sha256 ${fmt(ceilings.sha256)} MB/s, AES-128-GCM ${fmt(ceilings.aes128gcm)} MB/s, ` +
        `AES-256-GCM ${fmt(ceilings.aes256gcm)} MB/s, disk+fsync ${fmt(ceilings.diskFsyncWrite)} MB/s, ` +
        `loopback TLS ${fmt(ceilings.loopbackTls)} MB/s`,
    )
    extra.ceilingsMachineBusyBefore = [busyAtCeilings]

    let berthCommand: string[] = []
    if (stackNames.some(name => name !== 'seed')) {
      if (flags['berth-cmd']) {
        berthCommand = flags['berth-cmd'].split(' ').filter(Boolean)
      } else {
        if (!flags['no-build']) {
          progress('building Berth (npm run build)')
          await run('npm', ['run', 'build'], { cwd: repoRoot })
        }
        const bundle = path.join(repoRoot, 'dist', 'berth.cjs')
        if (!(await exists(bundle))) throw new Error(`${bundle} is missing: run npm run build`)
        berthCommand = [process.execPath, bundle]
      }
      if (flags['cpu-prof']) {
        if (path.basename(berthCommand[0]!) !== 'node' && berthCommand[0] !== process.execPath) {
          throw new Error('--cpu-prof needs a node command in --berth-cmd')
        }
        berthCommand.splice(1, 0, '--cpu-prof', '--cpu-prof-dir', path.join(outDir, 'profiles'))
      }
    }
    if (flags.storage !== 'filesystem' && flags.storage !== 's3') throw new Error(`--storage ${flags.storage}: filesystem or s3`)
    if (flags.storage === 's3') {
      // A round holds both stacks' pushes of the big image and blob, with registry:2's upload
      // copies beside them, before the purge: 4 GiB filled up with 1 GiB sizes (the OSD aborted on
      // ENOSPC and the RGW hung). The bluestore file is sparse.
      const blockGb = Math.max(4, Math.ceil((12 * (sizes.huge || sizes.big)) / 1024 ** 3))
      progress(`starting Ceph RGW (bluestore, ${blockGb} GiB) for --storage s3`)
      s3 = await startS3({ store: 'bluestore', blockGb })
    }
    const targetFor = (name: StackName): S3Target | undefined =>
      s3 === undefined
        ? undefined
        : {
            endpoint: s3.endpoint,
            region: s3.region,
            bucket: s3.bucket,
            accessKeyId: s3.accessKeyId,
            secretAccessKey: s3.secretAccessKey,
            prefix: `bench-${name}`,
          }
    for (const name of stackNames) {
      const dir = path.join(work, name)
      await mkdir(dir, { recursive: true })
      progress(`starting ${name}${s3 !== undefined ? ' on S3' : ''}`)
      const target = targetFor(name)
      stacks.push(
        name === 'seed'
          ? await startSeed(dir, pki, target)
          : await startBerth(dir, pki, {
              command: berthCommand,
              repoRoot,
              ...(target !== undefined ? { s3: target } : {}),
              ...(name === 'berth-metrics' ? { metrics: { scrapeMs: 5000 } } : {}),
            }),
      )
    }

    await runRounds(stacks, pki, clientRoot, ceilings)
    if (MANY_CASE_IDS.some(wants)) {
      await runManyClients(hooks, { stacks, pki, clientRoot, work, berthCommand, repoRoot, storage: flags.storage, purge: purgeBlobs })
    }
    const berthStack = stacks.find(stack => stack.name === 'berth')
    if (berthStack !== undefined && berthStack.s3 === undefined && (wants('push-webhook-none') || wants('push-webhook-hangs'))) {
      await runWebhookHang(berthStack, pki, clientRoot, { dir: path.join(work, 'berth-webhook'), command: berthCommand })
    }
    if (berthStack !== undefined && berthStack.s3 === undefined && MIRROR_CASES.some(wants)) {
      await runMirror(berthStack, pki, clientRoot, { dir: path.join(work, 'berth-mirror'), command: berthCommand })
    }
    if (sizes.huge && (wants('huge-push') || wants('huge-push-rss'))) await runHugePush(stacks, pki, clientRoot)
    if (wants('docker-pull')) await runDockerPull(hooks, { stacks, pki, clientRoot, bytes: sizes.big })
    if (STARTUP_CASES.some(wants)) {
      await runStartup(hooks, { dir: path.join(work, 'startup'), berthCommand, binary: path.join(repoRoot, 'dist', 'berth') })
    }

    if (!quick) {
      // A ceiling is a maximum: measured again at the end, the better figure of the two is kept
      // (on a machine shared with other work, one measurement can land in a busy moment).
      progress('measuring the machine ceilings again')
      await settle()
      const again = await measureCeilings(pki, work, quick)
      extra.ceilingsMeasured = [{ ...ceilings }, again]
      for (const key of Object.keys(ceilings) as Array<keyof Ceilings>) ceilings[key] = Math.max(ceilings[key], again[key])
    }
    const results: CaseResult[] = cases
      .filter(def => samples.has(def.id) || caseNotes.has(def.id))
      .map(def => evaluate(def, samples.get(def.id) ?? {}, ceilings))
    for (const result of results) result.notes.push(...(caseNotes.get(result.id) ?? []))
    judgeStaticCeiling(results)
    noteStoreCeiling(results)
    // "No higher during the 5 GiB push": hold the big push's peak to the 1 GiB push's (+10% noise).
    const huge = results.find(r => r.id === 'huge-push-rss')
    const normal = results.find(r => r.id === 'push-rss')?.stacks.berth?.median
    if (huge?.stacks.berth && normal !== undefined) {
      const ok = huge.stacks.berth.median <= normal * 1.1
      huge.met = (huge.met ?? true) && ok
      if (!ok) huge.notes.push(`higher than during the ${big} push (${fmt(normal)} MiB)`)
    }
    const hanging = results.find(r => r.id === 'push-webhook-hangs')
    const without = results.find(r => r.id === 'push-webhook-none')?.stacks.berth?.median
    if (hanging?.stacks.berth && without !== undefined) {
      const ratio = hanging.stacks.berth.median / without
      hanging.met = ratio <= WEBHOOK_SLOWDOWN_BOUND
      hanging.notes.push(`${fmt(ratio)}× the time without a webhook (bound ${WEBHOOK_SLOWDOWN_BOUND}×)`)
    }
    for (const [slow, fast, bound] of [
      ['mirror-pull-cached', 'mirror-pull-pushed', MIRROR_CACHED_BOUND],
      ['mirror-pull-cold', 'mirror-pull-upstream', MIRROR_COLD_BOUND],
      ['mirror-pull-cold-wan', 'mirror-pull-upstream-wan', MIRROR_COLD_BOUND],
    ] as const) {
      const measured = results.find(r => r.id === slow)
      const reference = results.find(r => r.id === fast)?.stacks.berth?.median
      if (measured?.stacks.berth && reference !== undefined) {
        const ratio = measured.stacks.berth.median / reference
        measured.met = ratio <= bound
        measured.notes.push(`${fmt(ratio)}× the time of "${cases.find(c => c.id === fast)!.label}" (bound ${bound}×)`)
      }
      const cpuNote = mirrorCpuNote(
        slow,
        fast,
        slow === 'mirror-pull-cached' ? ['cached by the mirror', 'pushed to Berth'] : ['through the mirror', 'directly'],
      )
      if (measured !== undefined && cpuNote !== undefined) measured.notes.push(cpuNote)
    }
    const rows = table(results, ceilings)
    await stopAll(stacks)
    await writeResults(outDir, results, rows, ceilings, pki)
    process.stdout.write('\n' + textTable(rows) + '\n')
    for (const result of results) for (const note of result.notes) process.stdout.write(`note: ${result.label}: ${note}\n`)
    for (const failure of failures)
      process.stdout.write(`FAILED: ${failure.stack} ${failure.job}${failure.round ? ` (round ${failure.round})` : ''}: ${failure.error.split('\n')[0]}\n`)
    process.stdout.write(`\nresults: ${path.relative(process.cwd(), outDir)}/results.md, results.json\n`)
    if (failures.length > 0) process.exitCode = 1
  } finally {
    if (!interrupted) await cleanup()
  }
}

/**
 * A receiver that never answers is as slow as an endpoint gets (each attempt waits for Berth's
 * 10 s timeout). Pushes must not wait for it: one Berth with `--webhook` to it and the bench's own
 * Berth without, the same pushes (one small image under WEBHOOK_TAGS tags, so as many manifest PUTs
 * and events), order flipped each round. Filesystem storage only.
 */
async function runWebhookHang(plain: Stack, pki: BenchPki, clientRoot: string, second: { dir: string; command: string[] }): Promise<void> {
  const held: ServerResponse[] = []
  const receiver = createServer((request, response) => {
    request.resume()
    held.push(response)
  })
  await new Promise<void>(resolve => receiver.listen(0, '127.0.0.1', resolve))
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`
  await mkdir(second.dir, { recursive: true })
  progress(`starting a second Berth with --webhook ${hook} (never answers)`)
  const hooked = await startBerth(second.dir, pki, { command: second.command, repoRoot, args: ['--webhook', hook] })
  const ctx = (stack: Stack): ClientContext => ({ host: stack.host, pki })
  try {
    const jobs: Array<[string, Stack]> = [
      ['push-webhook-none', plain],
      ['push-webhook-hangs', hooked],
    ]
    for (let round = 0; round < rounds; round++) {
      const image = await writeImageLayout(path.join(clientRoot, `webhook-${round}`), [64 * 1024])
      const repository = `bench/webhook-r${round + 1}-${Date.now().toString(36)}`
      for (const [id, stack] of round % 2 === 0 ? jobs : [...jobs].reverse()) {
        await settle()
        try {
          let seconds = 0
          for (let i = 0; i < WEBHOOK_TAGS; i++) seconds += await skopeoPush(ctx(stack), image.reference, repository, `t${i}`)
          record(id, 'berth', seconds)
          progress(`r${round + 1}/${rounds} ${id}: ${WEBHOOK_TAGS} pushes in ${fmt(seconds)} s (receiver holds ${held.length} request(s))`)
        } catch (error) {
          fail(id, stack, error, round)
        }
      }
      await rm(image.dir, { recursive: true, force: true })
    }
    extra.webhookHang = [{ requestsHeld: held.length, tagsPerRound: WEBHOOK_TAGS }]
  } finally {
    await hooked.stop()
    for (const response of held) response.destroy()
    receiver.closeAllConnections()
    await new Promise(resolve => receiver.close(resolve))
  }
}

/**
 * The pull-through mirror (issue #17), Berth only, filesystem storage: Debian's docker-registry on
 * loopback (HTTPS with the bench's certificate, no login) is the upstream; a second Berth,
 * configured like the bench's own, mirrors it under the prefix `bench/` (which the bench user may
 * pull). Each round pushes two fresh images to the upstream and times, order flipped each round:
 * - a cold pull through the mirror against a pull from the upstream directly, on bare loopback,
 *   with every process's CPU time (on a machine with few cores these pulls are bound by CPU: the
 *   mirror hashes, stores and re-encrypts what the direct pull only decrypts);
 * - the same over a link like the internet's: the upstream's responses limited to MIRROR_WAN_MBIT
 *   by the kernel (link-shaper.ts; skipped with a note where tc cannot be used);
 * - a pull of the now cached image against a pull of the same image pushed to the bench's Berth.
 */
async function runMirror(plain: Stack, pki: BenchPki, clientRoot: string, second: { dir: string; command: string[] }): Promise<void> {
  const upstreamRoot = path.join(second.dir, 'upstream')
  await mkdir(second.dir, { recursive: true })
  const upstream = await startRegistry2({ rootDirectory: upstreamRoot, tls: { certificate: pki.serverChain, key: pki.serverKey } })
  progress(`starting a mirror Berth of docker-registry ${upstream.url} (--mirror bench=…)`)
  const mirror = await startBerth(path.join(second.dir, 'mirror'), pki, {
    command: second.command,
    repoRoot,
    args: ['--mirror', `bench=${upstream.url}`],
    env: { NODE_EXTRA_CA_CERTS: pki.caCert },
  })
  const upstreamCtx: ClientContext = { host: upstream.hostPort, pki }
  const ctx = (stack: Stack): ClientContext => ({ host: stack.host, pki })
  const cpu: Array<Record<string, unknown>> = []
  extra.mirrorCpu = cpu
  const timed = async (id: string, what: string, pull: (dest: string) => Promise<PullTiming>, round: number, bytes: number) => {
    await settle()
    const dest = path.join(clientRoot, `mirror-pull-${id}`)
    const servers = { mirror: new ResourceMonitor(() => mirror.pids()), upstream: new ResourceMonitor(() => [upstream.pid]) }
    servers.mirror.start()
    servers.upstream.start()
    let usage: { mirrorCpu: number; upstreamCpu: number } | undefined
    const stop = () => (usage ??= { mirrorCpu: servers.mirror.stop().cpuSeconds, upstreamCpu: servers.upstream.stop().cpuSeconds })
    try {
      const { seconds, cpuSeconds } = await pull(dest)
      const { mirrorCpu, upstreamCpu } = stop()
      record(id, 'berth', seconds)
      cpu.push({ round: round + 1, case: id, seconds, clientCpu: cpuSeconds, mirrorCpu, upstreamCpu })
      progress(
        `r${round + 1}/${rounds} ${id}: ${what} in ${fmt(seconds)} s (${fmt(bytes / seconds / 1e6)} MB/s); CPU s: skopeo ${fmt(cpuSeconds)}, ` +
          `mirror Berth ${fmt(mirrorCpu)}, docker-registry ${fmt(upstreamCpu)}`,
      )
    } catch (error) {
      fail(id, id === 'mirror-pull-pushed' ? plain : mirror, error, round)
    } finally {
      stop()
      await rm(dest, { recursive: true, force: true })
    }
  }
  const pair = async (round: number, jobs: Array<() => Promise<void>>) => {
    for (const job of round % 2 === 0 ? jobs : [...jobs].reverse()) await job()
  }
  const wan = wants('mirror-pull-cold-wan') || wants('mirror-pull-upstream-wan')
  try {
    for (let round = 0; round < rounds; round++) {
      const image = await writeImageLayout(path.join(clientRoot, `mirror-${round}`), [sizes.big])
      const stamp = Date.now().toString(36)
      const name = `library/r${round + 1}-${stamp}`
      const wanName = `library/r${round + 1}-${stamp}-wan`
      await skopeoPushAnonymous(image.reference, upstream.hostPort, name, 'latest')
      if (wan) await skopeoPushAnonymous(image.reference, upstream.hostPort, wanName, 'latest')
      await skopeoPush(ctx(plain), image.reference, `bench/mirror-${name}`, 'latest')
      await rm(image.dir, { recursive: true, force: true })
      const bytes = image.layerBytes
      await pair(round, [
        () =>
          timed(
            'mirror-pull-cold',
            `cold pull of ${big} through the mirror`,
            dest => skopeoPullTimed(ctx(mirror), `bench/${name}`, 'latest', dest),
            round,
            bytes,
          ),
        () =>
          timed('mirror-pull-upstream', `pull of ${big} from docker-registry`, dest => skopeoPullTimed(upstreamCtx, name, 'latest', dest, false), round, bytes),
      ])
      await pair(round, [
        () => timed('mirror-pull-cached', `cached pull of ${big}`, dest => skopeoPullTimed(ctx(mirror), `bench/${name}`, 'latest', dest), round, bytes),
        () =>
          timed(
            'mirror-pull-pushed',
            `pull of ${big} pushed to Berth`,
            dest => skopeoPullTimed(ctx(plain), `bench/mirror-${name}`, 'latest', dest),
            round,
            bytes,
          ),
      ])
      if (wan) {
        // The same layer under another name: the mirror has its blob now, so drop it to keep the pull cold
        // (after the cached pull above).
        await purgeBlobs(
          mirror,
          image.layers.map(layer => layer.digest),
        )
        const shaped = await shapePort(upstream.port, MIRROR_WAN_MBIT)
        if (typeof shaped === 'string') {
          if (round === 0) progress(`skipping the mirror's WAN cases: ${shaped}`)
        } else {
          try {
            await pair(round, [
              () =>
                timed(
                  'mirror-pull-cold-wan',
                  `cold pull of ${big} through the mirror, upstream at ${MIRROR_WAN_MBIT} Mbit/s`,
                  dest => skopeoPullTimed(ctx(mirror), `bench/${wanName}`, 'latest', dest),
                  round,
                  bytes,
                ),
              () =>
                timed(
                  'mirror-pull-upstream-wan',
                  `pull of ${big} from docker-registry at ${MIRROR_WAN_MBIT} Mbit/s`,
                  dest => skopeoPullTimed(upstreamCtx, wanName, 'latest', dest, false),
                  round,
                  bytes,
                ),
            ])
          } finally {
            await shaped.remove()
          }
        }
      }
      const digests = image.layers.map(layer => layer.digest)
      await purgeBlobs(plain, digests)
      await purgeBlobs(mirror, digests)
      for (const digest of digests) {
        const hex = digest.slice('sha256:'.length)
        await rm(path.join(upstreamRoot, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex), { recursive: true, force: true })
      }
    }
  } finally {
    await mirror.stop()
    await upstream.stop()
  }
}

async function stopAll(stacks: Stack[]): Promise<void> {
  await Promise.allSettled(stacks.map(stack => stack.stop()))
}

const failures: Array<{ round?: number; stack: StackName; job: string; error: string }> = []

function fail(job: string, stack: Pick<Stack, 'name'>, error: unknown, round?: number): void {
  const message = error instanceof Error ? error.message : String(error)
  failures.push({ ...(round === undefined ? {} : { round: round + 1 }), stack: stack.name, job, error: message })
  progress(`FAILED ${stack.name} ${job}: ${message.split('\n').slice(0, 4).join(' / ')}`)
}

/**
 * Runs `job` on each stack in turn (order flipped on odd rounds), after `settle`. A failure is
 * recorded and reported, not fatal: the other stack and the other cases still run.
 */
async function eachStack(stacks: Stack[], round: number, label: string, job: (stack: Stack) => Promise<void>): Promise<void> {
  const ordered = round % 2 === 0 ? stacks : [...stacks].reverse()
  for (const stack of ordered) {
    await settle()
    try {
      await job(stack)
    } catch (error) {
      fail(label, stack, error, round)
    }
  }
}

async function runRounds(stacks: Stack[], pki: BenchPki, clientRoot: string, _ceilings: Ceilings): Promise<void> {
  const ctx = (stack: Stack): ClientContext => ({ host: stack.host, pki })
  const tag = (stack: Stack) => `${stack.name.padEnd(13)}`

  // A small image for the request-rate cases (reads: fresh content is not needed there), and the
  // same image under public/ on Berth for anonymous pulls (the seed cannot serve anonymously with
  // auth on, so its anonymous-case figure is Basic on bench/tiny).
  const tiny = await writeImageLayout(path.join(clientRoot, 'tiny'), [1024])
  for (const stack of stacks) {
    await skopeoPush(ctx(stack), tiny.reference, 'bench/tiny', 'latest')
    if (stack.tokenService !== undefined && wants('rps-manifest-get-anonymous')) await skopeoPush(ctx(stack), tiny.reference, 'public/tiny', 'latest')
  }
  await rm(tiny.dir, { recursive: true, force: true })

  for (let round = 0; round < rounds; round++) {
    const r = `r${round + 1}/${rounds}`
    const toPurge = new Map<Stack, string[]>(stacks.map(stack => [stack, []]))
    const repository = `bench/r${round + 1}-${Date.now().toString(36)}`

    if (wants('skopeo-push') || wants('skopeo-pull') || wants('skopeo-pull-static') || wants('push-rss') || wants('push-cpu')) {
      const images = new Map<Stack, Awaited<ReturnType<typeof writeImageLayout>>>()
      for (const stack of stacks) images.set(stack, await writeImageLayout(path.join(clientRoot, `image-${stack.name}`), [sizes.big]))
      await eachStack(stacks, round, 'skopeo-push', async stack => {
        const image = images.get(stack)!
        const monitor = new ResourceMonitor(() => stack.pids())
        monitor.start()
        let seconds: number
        let usage: ResourceUsage
        try {
          seconds = await skopeoPush(ctx(stack), image.reference, repository, 'big')
        } finally {
          usage = monitor.stop()
        }
        const rate = image.layerBytes / seconds / 1e6
        record('skopeo-push', stack.name, rate)
        record('push-rss', stack.name, usage.peakRssMiB)
        record('push-cpu', stack.name, usage.cpuSeconds)
        extra.resources!.push({ round: round + 1, stack: stack.name, job: 'skopeo-push', ...usage })
        progress(
          `${r} ${tag(stack)} skopeo push ${big}: ${fmt(rate)} MB/s (${fmt(seconds)} s), peak RSS ` +
            `${fmt(usage.peakRssMiB)} MiB (sampled ${fmt(usage.sampledPeakRssMiB)}, ${fmt(usage.startRssMiB)} at start), CPU ${fmt(usage.cpuSeconds)} s`,
        )
        toPurge.get(stack)!.push(...image.layers.map(l => l.digest))
      })
      for (const image of images.values()) await rm(image.dir, { recursive: true, force: true })
      // The static-file ceiling pulls the same image (Berth's copy) before the stacks on odd rounds, after on even.
      const pullStatic = async () => {
        if (wants('skopeo-pull-static'))
          await runStaticPull(hooks, { stacks, pki, clientRoot, repository, tag: 'big', bytes: (s: Stack) => images.get(s)!.layerBytes, round })
      }
      if (round % 2 === 1) await pullStatic()
      if (wants('skopeo-pull')) {
        await eachStack(stacks, round, 'skopeo-pull', async stack => {
          const dest = path.join(clientRoot, `pull-${stack.name}`)
          const seconds = await skopeoPull(ctx(stack), repository, 'big', dest)
          const rate = images.get(stack)!.layerBytes / seconds / 1e6
          record('skopeo-pull', stack.name, rate)
          progress(`${r} ${tag(stack)} skopeo pull ${big}: ${fmt(rate)} MB/s (${fmt(seconds)} s)`)
          await rm(dest, { recursive: true, force: true })
        })
      }
      if (round % 2 === 0) await pullStatic()
    }

    if (wants('curl-put') || wants('curl-get')) {
      const blobs = new Map<Stack, BlobRef>()
      for (const stack of stacks) blobs.set(stack, await writeRandomBlob(path.join(clientRoot, `blob-${stack.name}`), sizes.big))
      await eachStack(stacks, round, 'curl-put', async stack => {
        const blob = blobs.get(stack)!
        const result = await curlPutBlob(ctx(stack), repository, path.join(clientRoot, `blob-${stack.name}`), blob)
        const rate = blob.size / result.seconds / 1e6
        record('curl-put', stack.name, rate)
        extra.httpVersions!.push({ stack: stack.name, job: 'curl-put', http: result.httpVersion })
        progress(`${r} ${tag(stack)} curl PUT ${big} (HTTP/${result.httpVersion}): ${fmt(rate)} MB/s (${fmt(result.seconds)} s)`)
        toPurge.get(stack)!.push(blob.digest)
        await rm(path.join(clientRoot, `blob-${stack.name}`), { force: true })
      })
      if (wants('curl-get')) {
        await eachStack(stacks, round, 'curl-get', async stack => {
          const blob = blobs.get(stack)!
          const result = await curlGetBlob(ctx(stack), repository, blob)
          const rate = blob.size / result.seconds / 1e6
          record('curl-get', stack.name, rate)
          extra.httpVersions!.push({ stack: stack.name, job: 'curl-get', http: result.httpVersion })
          progress(`${r} ${tag(stack)} curl GET ${big} (HTTP/${result.httpVersion}): ${fmt(rate)} MB/s (${fmt(result.seconds)} s)`)
        })
        // On S3, the store's own GET of Berth's copy of the blob, in the same round.
        const berth = stacks.find(stack => stack.name === 'berth')
        if (berth?.s3 !== undefined && wants(STORE_CEILING_CASE)) {
          const blob = blobs.get(berth)!
          await settle()
          try {
            const seconds = await curlGetFromStore(berth.s3, blob)
            const rate = blob.size / seconds / 1e6
            record(STORE_CEILING_CASE, 'berth', rate)
            progress(`${r} the store's own GET of the ${big} blob (plain HTTP): ${fmt(rate)} MB/s (${fmt(seconds)} s)`)
          } catch (error) {
            fail(STORE_CEILING_CASE, berth, error, round)
          }
        }
      }
    }

    if (wants('curl-patch')) {
      const blobs = new Map<Stack, BlobRef>()
      for (const stack of stacks) blobs.set(stack, await writeRandomBlob(path.join(clientRoot, `blob-${stack.name}`), sizes.big))
      await eachStack(stacks, round, 'curl-patch', async stack => {
        const blob = blobs.get(stack)!
        const result = await curlPatchBlob(ctx(stack), repository, path.join(clientRoot, `blob-${stack.name}`), blob)
        const rate = blob.size / result.seconds / 1e6
        record('curl-patch', stack.name, rate)
        extra.httpVersions!.push({ stack: stack.name, job: 'curl-patch', http: result.httpVersion })
        progress(`${r} ${tag(stack)} curl PATCH+PUT ${big} (HTTP/${result.httpVersion}): ${fmt(rate)} MB/s (${fmt(result.seconds)} s)`)
        toPurge.get(stack)!.push(blob.digest)
        await rm(path.join(clientRoot, `blob-${stack.name}`), { force: true })
      })
    }

    if (wants('small-push')) {
      const images = new Map<Stack, Awaited<ReturnType<typeof writeImageLayout>>>()
      const layerSizes = Array.from({ length: sizes.smallCount }, () => sizes.small)
      for (const stack of stacks) images.set(stack, await writeImageLayout(path.join(clientRoot, `small-${stack.name}`), layerSizes))
      await eachStack(stacks, round, 'small-push', async stack => {
        const seconds = await skopeoPush(ctx(stack), images.get(stack)!.reference, repository, 'small')
        record('small-push', stack.name, seconds)
        progress(`${r} ${tag(stack)} skopeo push ${sizes.smallCount} × ${formatBytes(sizes.small)}: ${fmt(seconds)} s`)
      })
      for (const image of images.values()) await rm(image.dir, { recursive: true, force: true })
    }

    const manifestPath = '/v2/bench/tiny/manifests/latest'
    const rates: Array<[string, (stack: Stack) => string, (stack: Stack) => Promise<number>]> = [
      ['rps-manifest-get', () => 'manifest GET', s => wrkGet(ctx(s), manifestPath, sizes.rateSeconds, manifestMediaType)],
      [
        'rps-manifest-get-bearer',
        s => (s.tokenService !== undefined ? 'manifest GET, Bearer' : 'manifest GET, Basic'),
        async s => {
          if (s.tokenService === undefined) return wrkGet(ctx(s), manifestPath, sizes.rateSeconds, manifestMediaType)
          // A fresh token for every job (they live 5 minutes), fetched before wrk starts timing.
          const token = await fetchToken(ctx(s), s.tokenService, 'repository:bench/tiny:pull')
          return wrkGet(ctx(s), manifestPath, sizes.rateSeconds, manifestMediaType, { kind: 'bearer', token })
        },
      ],
      [
        'rps-manifest-get-anonymous',
        s => (s.tokenService !== undefined ? 'manifest GET, anonymous, public/tiny' : 'manifest GET, Basic'),
        s =>
          s.tokenService !== undefined
            ? wrkGet(ctx(s), '/v2/public/tiny/manifests/latest', sizes.rateSeconds, manifestMediaType, { kind: 'anonymous' })
            : wrkGet(ctx(s), manifestPath, sizes.rateSeconds, manifestMediaType),
      ],
      ['rps-manifest-head', () => 'manifest HEAD', s => abHead(ctx(s), manifestPath, sizes.rateSeconds, manifestMediaType)],
      ['rps-v2', () => 'GET /v2/', s => wrkGet(ctx(s), '/v2/', sizes.rateSeconds)],
    ]
    for (const [id, label, job] of rates) {
      if (!wants(id)) continue
      await eachStack(stacks, round, id, async stack => {
        const rps = await job(stack)
        record(id, stack.name, rps)
        progress(`${r} ${tag(stack)} ${label(stack)}: ${fmt(rps)} req/s`)
      })
    }

    for (const [stack, digests] of toPurge) await purgeBlobs(stack, digests)
  }
}

/** One push of a very large image per stack, for peak memory (the same content for both stacks). */
async function runHugePush(stacks: Stack[], pki: BenchPki, clientRoot: string): Promise<void> {
  progress(`writing a ${formatBytes(sizes.huge)} image`)
  // The layer must fit the 5 GiB body limit both stacks enforce (the seed's client_max_body_size
  // 5G): leave room for the tar and gzip framing.
  const image = await writeImageLayout(path.join(clientRoot, 'huge'), [sizes.huge - 4 * MiB])
  try {
    for (const stack of stacks) {
      await settle()
      const monitor = new ResourceMonitor(() => stack.pids())
      monitor.start()
      let seconds: number
      let usage: ResourceUsage
      try {
        seconds = await skopeoPush({ host: stack.host, pki }, image.reference, 'bench/huge', 'latest')
      } catch (error) {
        fail('huge-push', stack, error)
        continue
      } finally {
        usage = monitor.stop()
      }
      const rate = image.layerBytes / seconds / 1e6
      record('huge-push', stack.name, rate)
      record('huge-push-rss', stack.name, usage.peakRssMiB)
      extra.resources!.push({ stack: stack.name, job: 'huge-push', ...usage })
      progress(
        `${stack.name.padEnd(5)} skopeo push ${formatBytes(sizes.huge)}: ${fmt(rate)} MB/s, peak RSS ${fmt(usage.peakRssMiB)} MiB ` +
          `(sampled ${fmt(usage.sampledPeakRssMiB)}, ${fmt(usage.startRssMiB)} at start), CPU ${fmt(usage.cpuSeconds)} s`,
      )
      await purgeBlobs(
        stack,
        image.layers.map(l => l.digest),
      )
    }
  } finally {
    await rm(image.dir, { recursive: true, force: true })
  }
}

/**
 * What the two pulls of a mirror pair cost in CPU, summed over skopeo, the mirror Berth and
 * docker-registry (medians): divided by the cores, the shortest wall time the machine allows.
 */
function mirrorCpuNote(slow: string, fast: string, [slowLabel, fastLabel]: readonly [string, string]): string | undefined {
  const runs = (extra.mirrorCpu ?? []) as Array<{ case: string; clientCpu: number; mirrorCpu: number; upstreamCpu: number }>
  const describe = (id: string): string | undefined => {
    const mine = runs.filter(r => r.case === id)
    if (mine.length === 0) return undefined
    const [client, berth, upstream] = [median(mine.map(r => r.clientCpu)), median(mine.map(r => r.mirrorCpu)), median(mine.map(r => r.upstreamCpu))]
    const total = client + berth + upstream
    return `${fmt(total)} s (skopeo ${fmt(client)}, mirror Berth ${fmt(berth)}, docker-registry ${fmt(upstream)}; ≥ ${fmt(total / os.cpus().length)} s on ${os.cpus().length} cores)`
  }
  const [a, b] = [describe(slow), describe(fast)]
  if (a === undefined || b === undefined) return undefined
  return `CPU time per pull, medians: ${slowLabel} ${a}; ${fastLabel} ${b}`
}

/** How much other work shared the machine: benchmarks on a busy machine read lower and noisier. */
function busyNote(): string {
  const seen = (extra.samples as Array<{ machineBusyBefore: number }>).map(s => s.machineBusyBefore)
  const busy = seen.filter(b => b > 0.15).length
  return (
    `Other work on the machine: ${busy} of ${seen.length} jobs started with the CPU more than 15% busy ` +
    `(median ${Math.round(median(seen) * 100)}% busy just before a job; per-sample figures in results.json).`
  )
}

async function versionOf(command: string, args: string[]): Promise<string> {
  const result = await run(command, args, { allowFailure: true })
  return (result.stdout + result.stderr).trim().split('\n')[0] ?? ''
}

async function machine(dir: string): Promise<Record<string, unknown>> {
  const df = await run('df', ['-T', dir], { allowFailure: true })
  return {
    cpu: os.cpus()[0]?.model,
    cores: os.cpus().length,
    memoryGiB: +(os.totalmem() / GiB).toFixed(1),
    kernel: os.release(),
    node: process.version,
    filesystem: df.stdout.trim().split('\n')[1]?.split(/\s+/).slice(0, 2).join(' '),
    nginx: await versionOf('nginx', ['-v']),
    registry: await versionOf('docker-registry', ['--version']),
    skopeo: await versionOf('skopeo', ['--version']),
    curl: await versionOf('curl', ['--version']),
    wrk: (await versionOf('wrk', ['-v'])).split(' [')[0],
    ab: await versionOf('ab', ['-V']),
  }
}

async function writeResults(outDir: string, results: CaseResult[], rows: string[][], ceilings: Ceilings, _pki: BenchPki): Promise<void> {
  const host = await machine(os.tmpdir())
  const command = `npm run bench${process.argv.slice(2).length ? ' -- ' + process.argv.slice(2).join(' ') : ''}`
  const json = {
    command,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    quick,
    rounds,
    storage: flags.storage,
    sizes,
    machine: host,
    ceilingsMBps: ceilings,
    cases: results,
    failures,
    extra,
  }
  await writeFile(path.join(outDir, 'results.json'), JSON.stringify(json, null, 2) + '\n')
  const profiles = await readdir(path.join(outDir, 'profiles')).catch(() => [] as string[])
  const md = [
    `# Berth vs nginx + registry:2 (${startedAt.toISOString()})${flags.storage === 's3' ? ', both on S3 (Ceph RGW)' : ''}`,
    '',
    `Command: \`${command}\`; ${rounds} round(s), stacks alternated A B / B A, fresh random content for every push.`,
    `Machine: ${host.cpu}, ${host.cores} cores, ${host.memoryGiB} GiB RAM, Linux ${host.kernel}, Node ${host.node}, ` + `storage on ${host.filesystem}.`,
    `Seed stack: ${host.nginx} + ${host.registry}. Clients: ${host.skopeo}; ${String(host.curl).split(' (')[0]}; ${host.wrk}; ab.`,
    'Berth runs with access rules on (`--access`: the bench user may do everything on `bench/**` and `public/**`, everyone may pull ' +
      '`public/**`), so it answers Bearer challenges and serves tokens at `/token`; "auth" without more means Basic credentials on every request. ' +
      'The seed stack has no token service and cannot serve anonymously with auth on: in the Bearer and anonymous cases its figure is Basic auth.',
    '',
    `Ceilings measured in this run (MB/s${quick ? '' : ', best of a measurement at the start and one at the end'}): sha256 ${fmt(ceilings.sha256)} (1 core), AES-128-GCM ${fmt(ceilings.aes128gcm)}, ` +
      `AES-256-GCM ${fmt(ceilings.aes256gcm)}, fresh-file write + fsync ${fmt(ceilings.diskFsyncWrite)}, ` +
      `loopback TLS Node→Node ${fmt(ceilings.loopbackTls)}.`,
    '',
    markdownTable(rows),
    '',
    'Cells: median [min–max]. MB/s = 10^6 bytes/s. "Berth vs seed": ratio of medians, oriented so that > 1 means Berth is better.',
    "Peak RSS: sum of VmHWM over each stack's processes (nginx master + workers + registry; Berth's one process), reset before the push.",
    busyNote(),
    `HTTP versions the clients negotiated: ${[...new Set((extra.httpVersions as Array<{ stack: string; http: string }>).map(v => `${v.stack} HTTP/${v.http}`))].join(', ') || 'n/a'}.`,
    ...results.flatMap(r => r.notes.map(note => `- ${r.label}: ${note}`)),
    ...(failures.length
      ? [
          '',
          "**Failures** (the job's sample is missing from the table):",
          ...failures.map(f => `- ${f.stack} ${f.job}${f.round ? ` (round ${f.round})` : ''}: ${f.error.split('\n').join(' ').slice(0, 400)}`),
        ]
      : []),
    ...(profiles.length ? ['', `CPU profiles of Berth: ${profiles.map(p => `profiles/${p}`).join(', ')}`] : []),
    '',
  ].join('\n')
  await writeFile(path.join(outDir, 'results.md'), md)
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n` + "(the stacks' logs are in the results folder, logs/)\n")
  process.exitCode = 1
})
