/**
 * Many clients at once (issue #21): a registry serves CI fleets. Per stack and round, started
 * together through the stack's front door (HTTPS, Basic credentials; skopeo takes Berth's Bearer
 * challenge): PULLS skopeo pulls of distinct images pushed beforehand (untimed) and PUSHES skopeo
 * pushes of fresh images, while a side client (a separate process) GETs a manifest at a fixed rate
 * and records each latency. Figures: all layer bytes moved ÷ wall time from the first start to the
 * last finish; the side client's p99; the stack's peak RSS; failed clients and side requests.
 *
 * With `--storage s3`, the Berth stack is two instances on one bucket prefix behind a TCP
 * round-robin balancer (many-clients-peer.ts): TLS passes through to the instances, so every
 * client still speaks HTTPS to Berth and the token realm Berth names stays `https://`. The seed
 * stays one nginx + registry:2 on S3, as the seed runs it.
 *
 * The harness's own cost is kept out of the stacks' way and shown: the side client and the
 * balancer are their own processes, the resource samplers run every 250 ms, and the CPU time of
 * the clients (skopeo, read from the harness's reaped-children counters), of the stack and of the
 * whole machine during the wall time are recorded for every run.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { cp, mkdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { skopeoPull, skopeoPush, type ClientContext } from './clients.js'
import { manifestMediaType, writeImageLayout, type ImageLayout } from './content.js'
import type { BenchPki } from './pki.js'
import { processTree, ResourceMonitor, type ResourceUsage } from './procs.js'
import type { CaseHooks } from './hooks.js'
import type { CaseDef } from './report.js'
import { startBerth, type Stack, type StackName } from './stacks.js'
import { fmt, formatBytes, median, MiB, stopChild } from './util.js'

export const MANY_CASE_IDS = ['many-aggregate', 'many-manifest-p99', 'many-rss', 'many-errors'] as const

/** Side-client requests per second. */
const PROBE_RATE = 20
/**
 * The niceness the clients run at. They share the machine's cores with the stack they load, where
 * in use they run elsewhere: at nice 0 forty skopeo processes (each several threads) would take
 * most of the CPU time from a server with one busy thread, and the figures would measure the
 * scheduler rather than the server. Both stacks get the same; the side client runs at 0.
 */
const CLIENT_NICE = 10
/** Concurrent untimed pushes while preparing the pull images. */
const PREP_CONCURRENCY = 4
const PROBE_PATH = '/v2/bench/many-probe/manifests/latest'
const peerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'many-clients-peer.ts')

export interface ManySizes {
  pulls: number
  pushes: number
  imageBytes: number
}

export function manySizes(quick: boolean): ManySizes {
  return quick ? { pulls: 8, pushes: 2, imageBytes: 16 * MiB } : { pulls: 32, pushes: 8, imageBytes: 64 * MiB }
}

export function manyClientCases(quick: boolean, storage: string): CaseDef[] {
  const { pulls, pushes, imageBytes } = manySizes(quick)
  const load = `${pulls} skopeo pulls + ${pushes} pushes of ${formatBytes(imageBytes)} images at once`
  const two = storage === 's3' ? ' (Berth: 2 instances behind a TCP balancer)' : ''
  return [
    { id: 'many-aggregate', label: `${load}, aggregate${two}`, unit: 'MB/s', better: 'higher', minAdvantage: 1.5 },
    { id: 'many-manifest-p99', label: `manifest GET p99 at ${PROBE_RATE}/s during that load`, unit: 'ms', better: 'lower', berthBound: 50 },
    {
      id: 'many-rss',
      label: `peak RSS during that load${storage === 's3' ? ' (Berth: the larger instance)' : ''}`,
      unit: 'MiB',
      better: 'lower',
      berthBound: 150,
    },
    { id: 'many-errors', label: 'failed clients + failed manifest GETs, all runs together', unit: 'count', better: 'lower', berthBound: 0 },
  ]
}

export interface ManyClientsOptions {
  stacks: Stack[]
  pki: BenchPki
  clientRoot: string
  /** Where a second Berth instance keeps its datadir (S3 only). */
  work: string
  /** How the bench runs Berth (for the second instance on S3). */
  berthCommand: string[]
  repoRoot: string
  /** `--storage`: filesystem or s3. */
  storage: string
  /** Deletes blobs from a stack's storage (never during a timed job). */
  purge(stack: Stack, digests: string[]): Promise<void>
}

/** What a run needs: run.ts's hooks and this module's options. */
type Context = CaseHooks & ManyClientsOptions

/** One timed run, as kept in results.json (`extra.manyClients`) and summed up in the notes. */
export interface ManyRun {
  round: number
  stack: StackName
  instances: number
  clients: number
  failedClients: number
  wallSeconds: number
  bytes: number
  aggregateMBps: number
  pullSeconds: { median: number; max: number }
  pushSeconds: { median: number; max: number }
  probes: number
  probeErrors: number
  probeMs: { p50: number; p99: number; max: number }
  /** Per instance (Berth on S3: two), or the whole stack's process tree. */
  peakRssMiB: number[]
  /** The highest RSS the 250 ms sampler saw (a lower bound of the peak), and the RSS when the clients started. */
  sampledPeakRssMiB: number[]
  startRssMiB: number[]
  stackCpuSeconds: number
  /** Time the stack's threads spent runnable but waiting for a core (summed over threads): CPU starvation, not work. */
  stackRunQueueWaitSeconds: number
  /** The stack's thread that ran longest during the wall time (Berth: its event loop, if that is the bound). */
  busiestThread: { thread: string; runSeconds: number; waitSeconds: number }
  clientCpuSeconds: number
  balancerCpuSeconds?: number
  /** CPU time the whole machine spent (all cores, everything) during the wall time, and what 2 cores × wall would be. */
  machineCpuSeconds: number
  machineCapacitySeconds: number
}

/** A front door and what is behind it: one stack, or two Berth instances behind a balancer. */
interface Door {
  stack: Stack
  /** Each instance's root processes (one entry for a single stack: its whole tree). */
  instances: Array<() => number[]>
  balancer?: ChildProcess
  stop(): Promise<void>
}

export async function runManyClients(hooks: CaseHooks, options: ManyClientsOptions): Promise<void> {
  const ctx: Context = { ...hooks, ...options }
  const sizes = manySizes(ctx.quick)
  const doors: Door[] = []
  const runs: ManyRun[] = []
  try {
    for (const stack of ctx.stacks) doors.push(await openDoor(ctx, stack))
    const probe = await writeImageLayout(path.join(ctx.clientRoot, 'many-probe'), [1024])
    for (const door of doors) await skopeoPush(clientOf(ctx, door), probe.reference, 'bench/many-probe', 'latest')
    await rm(probe.dir, { recursive: true, force: true })

    for (let round = 0; round < ctx.rounds; round++) {
      const dir = path.join(ctx.clientRoot, 'many')
      ctx.progress(`r${round + 1}/${ctx.rounds} many clients: writing ${sizes.pulls + sizes.pushes} images of ${formatBytes(sizes.imageBytes)}`)
      const pulls: ImageLayout[] = []
      const pushes: ImageLayout[] = []
      for (let i = 0; i < sizes.pulls; i++) pulls.push(await writeImageLayout(path.join(dir, `pull-${i}`), [sizes.imageBytes]))
      for (let i = 0; i < sizes.pushes; i++) pushes.push(await writeImageLayout(path.join(dir, `push-${i}`), [sizes.imageBytes]))
      const repository = `bench/many-r${round + 1}-${Date.now().toString(36)}`
      try {
        for (const door of round % 2 === 0 ? doors : [...doors].reverse()) {
          try {
            await prepare(ctx, door, pulls, repository)
            await ctx.settle()
            runs.push(await timedRun(ctx, door, pulls, pushes, repository, round))
          } catch (error) {
            ctx.fail('many-clients', door.stack.name, error, round)
          } finally {
            const digests = [...pulls, ...pushes].flatMap(image => [...image.layers.map(l => l.digest), image.config.digest])
            await ctx.purge(door.stack, digests)
          }
        }
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    }
  } finally {
    for (const door of doors) await door.stop()
  }
  for (const stack of ctx.stacks) {
    const mine = runs.filter(r => r.stack === stack.name)
    if (mine.length > 0)
      ctx.record(
        'many-errors',
        stack.name,
        mine.reduce((sum, r) => sum + r.failedClients + r.probeErrors, 0),
      )
  }
  noteRuns(ctx, runs)
}

function clientOf(ctx: Context, door: Door): ClientContext {
  return { host: door.stack.host, pki: ctx.pki }
}

async function openDoor(ctx: Context, stack: Stack): Promise<Door> {
  if (stack.s3 === undefined || stack.name !== 'berth') return { stack, instances: [() => stack.pids()], stop: async () => {} }
  const dir = path.join(ctx.work, 'berth-many-second')
  await mkdir(dir, { recursive: true })
  ctx.progress('many clients: starting a second Berth on the same bucket prefix, and a TCP balancer in front of both')
  const second = await startBerth(dir, ctx.pki, { command: ctx.berthCommand, repoRoot: ctx.repoRoot, s3: stack.s3 })
  const ports = [stack.host, second.host].map(host => host.split(':')[1]).join(',')
  const balancer = spawn(process.execPath, ['--import', 'tsx', peerScript, 'balance', ports], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [line] = (await once(createInterface({ input: balancer.stdout! }), 'line')) as [string]
  const host = `127.0.0.1:${Number(line)}`
  return {
    stack: { ...stack, host, pids: () => [...stack.pids(), ...second.pids()] },
    instances: [() => stack.pids(), () => second.pids()],
    balancer,
    stop: async () => {
      await stopChild(balancer)
      await second.stop()
      // Beside the first instance's log in the results' logs/berth (the folder itself is temporary).
      const kept = path.join(ctx.work, 'berth-second.log')
      await cp(path.join(dir, 'berth.log'), kept).catch(() => {})
      stack.logs.push(kept)
    },
  }
}

/** Pushes the pull images, a few at a time (untimed). */
async function prepare(ctx: Context, door: Door, pulls: ImageLayout[], repository: string): Promise<void> {
  ctx.progress(`  ${door.stack.name}: pushing ${pulls.length} images to pull (untimed)`)
  let next = 0
  const worker = async () => {
    while (next < pulls.length) {
      const i = next++
      await skopeoPush(clientOf(ctx, door), pulls[i]!.reference, `${repository}/pull-${i}`, 'latest')
    }
  }
  await Promise.all(Array.from({ length: PREP_CONCURRENCY }, worker))
}

async function timedRun(ctx: Context, door: Door, pulls: ImageLayout[], pushes: ImageLayout[], repository: string, round: number): Promise<ManyRun> {
  const client = clientOf(ctx, door)
  const name = door.stack.name
  const prober = await startProber(ctx.pki, door.stack.host)
  const monitors = door.instances.map(pids => new ResourceMonitor(pids, 250))
  const balancerMonitor = door.balancer?.pid === undefined ? undefined : new ResourceMonitor(() => [door.balancer!.pid!], 250)
  const pullDirs = pulls.map((_, i) => path.join(ctx.clientRoot, `many-pulled-${i}`))
  let usages: ResourceUsage[] = []
  let balancerUsage: ResourceUsage | undefined
  let wallSeconds: number
  let outcomes: Array<PromiseSettledResult<number>>
  let clientCpu: number
  let machineCpu: number
  let sched: ThreadTimes
  try {
    for (const monitor of monitors) monitor.start()
    balancerMonitor?.start()
    const childCpuBefore = reapedChildrenCpuSeconds()
    const machineBefore = machineCpuSeconds()
    const schedBefore = schedTimes(door.stack.pids())
    prober.go()
    const started = process.hrtime.bigint()
    // Children take the niceness of the thread that spawns them, and every spawn below happens
    // synchronously (run() spawns before its first await).
    const niceness = os.getPriority()
    let clients: Array<Promise<number>>
    os.setPriority(CLIENT_NICE)
    try {
      clients = [
        ...pulls.map((_, i) => skopeoPull(client, `${repository}/pull-${i}`, 'latest', pullDirs[i]!)),
        ...pushes.map((image, i) => skopeoPush(client, image.reference, `${repository}/push-${i}`, 'latest')),
      ]
    } finally {
      os.setPriority(niceness)
    }
    outcomes = await Promise.allSettled(clients)
    wallSeconds = Number(process.hrtime.bigint() - started) / 1e9
    clientCpu = reapedChildrenCpuSeconds() - childCpuBefore
    machineCpu = machineCpuSeconds() - machineBefore
    sched = schedTimes(door.stack.pids(), schedBefore)
  } catch (error) {
    prober.kill()
    throw error
  } finally {
    usages = monitors.map(monitor => monitor.stop())
    balancerUsage = balancerMonitor?.stop()
    await Promise.all(pullDirs.map(dir => rm(dir, { recursive: true, force: true })))
  }
  const probed = await prober.stop()

  const bytes = [...pulls, ...pushes].reduce((sum, image) => sum + image.layerBytes, 0)
  const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')
  const seconds = (from: number, to: number) => outcomes.slice(from, to).flatMap(o => (o.status === 'fulfilled' ? [o.value] : []))
  const pullSeconds = seconds(0, pulls.length)
  const pushSeconds = seconds(pulls.length, outcomes.length)
  const latencies = [...probed.latenciesMs].sort((a, b) => a - b)
  const quantile = (q: number) => (latencies.length === 0 ? NaN : latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)]!)
  const entry: ManyRun = {
    round: round + 1,
    stack: name,
    instances: door.instances.length,
    clients: outcomes.length,
    failedClients: failed.length,
    wallSeconds: +wallSeconds.toFixed(3),
    bytes,
    aggregateMBps: +(bytes / wallSeconds / 1e6).toFixed(1),
    pullSeconds: { median: +median(pullSeconds).toFixed(2), max: +Math.max(...pullSeconds).toFixed(2) },
    pushSeconds: { median: +median(pushSeconds).toFixed(2), max: +Math.max(...pushSeconds).toFixed(2) },
    probes: latencies.length + probed.errors.length,
    probeErrors: probed.errors.length,
    probeMs: { p50: +quantile(0.5).toFixed(1), p99: +quantile(0.99).toFixed(1), max: +quantile(1).toFixed(1) },
    peakRssMiB: usages.map(u => +u.peakRssMiB.toFixed(1)),
    sampledPeakRssMiB: usages.map(u => +u.sampledPeakRssMiB.toFixed(1)),
    startRssMiB: usages.map(u => +u.startRssMiB.toFixed(1)),
    stackCpuSeconds: +usages.reduce((sum, u) => sum + u.cpuSeconds, 0).toFixed(2),
    stackRunQueueWaitSeconds: +sched.waitSeconds.toFixed(2),
    busiestThread: {
      thread: sched.busiest.thread,
      runSeconds: +sched.busiest.runSeconds.toFixed(2),
      waitSeconds: +sched.busiest.waitSeconds.toFixed(2),
    },
    clientCpuSeconds: +clientCpu.toFixed(2),
    ...(balancerUsage ? { balancerCpuSeconds: +balancerUsage.cpuSeconds.toFixed(2) } : {}),
    machineCpuSeconds: +machineCpu.toFixed(2),
    machineCapacitySeconds: +(wallSeconds * os.cpus().length).toFixed(2),
  }
  ctx.detail('manyClients', entry)
  if (failed.length === 0) ctx.record('many-aggregate', name, entry.aggregateMBps)
  if (latencies.length > 0) ctx.record('many-manifest-p99', name, entry.probeMs.p99)
  ctx.record('many-rss', name, Math.max(...entry.peakRssMiB))
  ctx.progress(
    `r${round + 1}/${ctx.rounds} ${name.padEnd(13)} many clients: ${fmt(entry.aggregateMBps)} MB/s (${formatBytes(bytes)} in ${fmt(wallSeconds)} s), ` +
      `manifest GET p50/p99/max ${fmt(entry.probeMs.p50)}/${fmt(entry.probeMs.p99)}/${fmt(entry.probeMs.max)} ms (${entry.probes}), ` +
      `peak RSS ${entry.peakRssMiB.map(fmt).join(' + ')} MiB (${entry.startRssMiB.map(fmt).join(' + ')} at start), CPU s: stack ${fmt(entry.stackCpuSeconds)} (+ ${fmt(entry.stackRunQueueWaitSeconds)} waiting for a core; busiest thread ${entry.busiestThread.thread} ran ${fmt(entry.busiestThread.runSeconds)}, waited ${fmt(entry.busiestThread.waitSeconds)}), skopeo ${fmt(entry.clientCpuSeconds)}` +
      `${entry.balancerCpuSeconds !== undefined ? `, balancer ${fmt(entry.balancerCpuSeconds)}` : ''}, machine ${fmt(entry.machineCpuSeconds)} of ${fmt(entry.machineCapacitySeconds)}`,
  )
  if (failed.length + probed.errors.length > 0) {
    const first = failed[0]?.reason ?? new Error(probed.errors[0])
    const message = first instanceof Error ? first.message : String(first)
    ctx.fail(
      'many-clients',
      name,
      new Error(`${failed.length} of ${outcomes.length} clients and ${probed.errors.length} manifest GETs failed; first: ${message}`),
      round,
    )
  }
  return entry
}

interface Prober {
  go(): void
  kill(): void
  stop(): Promise<{ latenciesMs: number[]; errors: string[] }>
}

/** The side client (many-clients-peer.ts probe), warmed up and waiting for `go`. */
async function startProber(pki: BenchPki, host: string): Promise<Prober> {
  const auth = 'Basic ' + Buffer.from(`${pki.user}:${pki.password}`).toString('base64')
  const child = spawn(process.execPath, ['--import', 'tsx', peerScript, 'probe', host, pki.caCert, PROBE_PATH, manifestMediaType, String(PROBE_RATE)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, BENCH_PROBE_AUTH: auth },
  })
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const next = async (): Promise<string> => {
    const line = await lines.next()
    if (line.done) throw new Error(`the manifest GET client exited (${child.exitCode ?? child.signalCode})`)
    return line.value
  }
  try {
    const ready = await next()
    if (ready !== 'ready') throw new Error(`the manifest GET client said ${ready}`)
  } catch (error) {
    child.kill()
    throw error
  }
  return {
    go: () => child.stdin!.write('go\n'),
    kill: () => child.kill(),
    stop: async () => {
      child.stdin!.write('stop\n')
      try {
        return JSON.parse(await next()) as { latenciesMs: number[]; errors: string[] }
      } finally {
        await stopChild(child)
      }
    },
  }
}

/** CPU seconds of this process's children that exited and were reaped so far (cutime + cstime). */
function reapedChildrenCpuSeconds(): number {
  const text = readFileSync('/proc/self/stat', 'utf8')
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[13]) + Number(fields[14])) / 100
}

interface ThreadTimes {
  /** Per thread: [ns running, ns runnable but waiting for a core] (/proc/<pid>/task/<tid>/schedstat). */
  byThread: Map<string, [number, number]>
  /** Since the times passed to schedTimes: the waiting summed over threads, and the busiest thread's running and waiting. */
  waitSeconds: number
  busiest: { thread: string; runSeconds: number; waitSeconds: number }
}

/** The scheduler's times of every thread of the trees under `roots`, and what was added `since`. */
function schedTimes(roots: number[], since?: ThreadTimes): ThreadTimes {
  const byThread = new Map<string, [number, number]>()
  let waited = 0
  let busiest = { thread: '', runSeconds: 0, waitSeconds: 0 }
  for (const { pid } of processTree(roots)) {
    let tids: string[] = []
    try {
      tids = readdirSync(`/proc/${pid}/task`)
    } catch {
      continue // exited
    }
    for (const tid of tids) {
      try {
        const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ').map(Number) as [number, number]
        byThread.set(tid, [run, wait])
        const [run0, wait0] = since?.byThread.get(tid) ?? [0, 0]
        waited += wait - wait0
        if ((run - run0) / 1e9 > busiest.runSeconds) {
          const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
          busiest = {
            thread: `${comm} (${pid}${tid === String(pid) ? ', main' : `/${tid}`})`,
            runSeconds: (run - run0) / 1e9,
            waitSeconds: (wait - wait0) / 1e9,
          }
        }
      } catch {
        // the thread ended
      }
    }
  }
  return { byThread, waitSeconds: waited / 1e9, busiest }
}

/** CPU seconds the whole machine has spent busy (all cores), from /proc/stat. */
function machineCpuSeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const busy = fields.slice(0, 8).reduce((sum, n) => sum + n, 0) - fields[3]! - (fields[4] ?? 0)
  return busy / 100
}

/** Notes what the figures alone do not say: who used the CPU, and how the Berth stack was run. */
function noteRuns(ctx: Context, runs: ManyRun[]): void {
  for (const name of ['seed', 'berth', 'berth-metrics'] as const) {
    const mine = runs.filter(r => r.stack === name)
    if (mine.length === 0) continue
    const m = (pick: (r: ManyRun) => number) => fmt(median(mine.map(pick)))
    ctx.note(
      'many-aggregate',
      `${name}${mine[0]!.instances > 1 ? ` (${mine[0]!.instances} instances)` : ''}: medians over ${mine.length} run(s): wall ${m(r => r.wallSeconds)} s, ` +
        `CPU s: stack ${m(r => r.stackCpuSeconds)} (+ ${m(r => r.stackRunQueueWaitSeconds)} runnable, waiting for a core; its busiest thread ran ` +
        `${m(r => r.busiestThread.runSeconds)}, waited ${m(r => r.busiestThread.waitSeconds)}), skopeo clients (nice ${CLIENT_NICE}) ${m(r => r.clientCpuSeconds)}` +
        `${mine[0]!.balancerCpuSeconds !== undefined ? `, balancer ${m(r => r.balancerCpuSeconds ?? 0)}` : ''}, ` +
        `whole machine ${m(r => r.machineCpuSeconds)} of ${m(r => r.machineCapacitySeconds)} available; ` +
        `pull ${m(r => r.pullSeconds.median)} s median / ${m(r => r.pullSeconds.max)} s slowest, push ${m(r => r.pushSeconds.median)} / ${m(r => r.pushSeconds.max)} s`,
    )
  }
  if (ctx.storage === 's3') {
    ctx.note(
      'many-aggregate',
      'on S3 the Berth figure is two instances on one bucket prefix behind a TCP round-robin balancer (TLS passes through), the seed one nginx + registry:2',
    )
  }
}
