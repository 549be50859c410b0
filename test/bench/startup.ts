/**
 * Start-up time (issue 21): from exec to the first answer (200 or 401) on `GET /v2/`, on a data
 * folder holding STARTUP_BLOBS blobs in distribution's layout, for `berth serve --local` run from
 * the built bundle (`node dist/berth.cjs`, as `npm start` runs it), for the single binary when
 * dist/berth exists, and for registry:2 (`docker-registry serve`, the registry:2 image's default
 * config) on the same folder. The folder is written once per run, so every start finds it in the
 * page cache; each round starts each server once, order rotated.
 */
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { access, mkdir, stat, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import type { CaseHooks } from './hooks.js'
import type { CaseDef } from './report.js'
import { registry2ImageConfig } from './stacks.js'
import { fmt, freePort, sleep, stopChild } from './util.js'

/** How many blobs the folder holds: STARTUP_REPOSITORIES × (1 manifest + 1 config + layers). */
export const STARTUP_BLOBS = 10_000
const STARTUP_REPOSITORIES = 100
const LAYER_BYTES = 1024
/** How often the prober tries to connect. */
const POLL_MS = 5
/** Berth's target (issue 21): ready within this many ms of exec. */
export const STARTUP_BOUND_MS = 300

export const STARTUP_CASES = ['startup-berth', 'startup-binary', 'startup-registry2'] as const
export type StartupCaseId = (typeof STARTUP_CASES)[number]

/** The table rows: Berth's two held to STARTUP_BOUND_MS, registry:2's beside them in the seed column. */
export function startupCaseDefs(): CaseDef[] {
  const label = (what: string) => `start-up, exec to /v2/ answered, ${STARTUP_BLOBS} blobs: ${what}`
  return [
    { id: 'startup-berth', label: label('node dist/berth.cjs serve --local'), unit: 'ms', better: 'lower', berthBound: STARTUP_BOUND_MS },
    { id: 'startup-binary', label: label('single binary dist/berth'), unit: 'ms', better: 'lower', berthBound: STARTUP_BOUND_MS },
    { id: 'startup-registry2', label: label('registry:2 (seed column)'), unit: 'ms', better: 'lower' },
  ]
}

export interface StartupFolder {
  /** The datadir Berth is given (`<datadir>/data` is the storage root). */
  datadir: string
  storageRoot: string
  blobs: number
  repositories: number
}

function sha256(bytes: Buffer | string): string {
  return crypto.createHash('sha256').update(bytes).digest('hex')
}

/**
 * Writes STARTUP_BLOBS blobs as registry:2 lays them out: each of STARTUP_REPOSITORIES
 * repositories holds one image (a schema 2 manifest, its config and small random layers, every
 * blob linked from the repository's `_layers` or `_manifests/revisions`) tagged `latest` and `v1`.
 */
export async function writeStartupFolder(datadir: string): Promise<StartupFolder> {
  const storageRoot = path.join(datadir, 'data')
  const v2 = path.join(storageRoot, 'docker', 'registry', 'v2')
  const layersPerImage = STARTUP_BLOBS / STARTUP_REPOSITORIES - 2
  const pending: Promise<void>[] = []
  const put = (file: string, content: Buffer | string) => {
    pending.push(mkdir(path.dirname(file), { recursive: true }).then(() => writeFile(file, content)))
  }
  const putBlob = (hex: string, content: Buffer | string) => put(path.join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'), content)
  for (let r = 0; r < STARTUP_REPOSITORIES; r++) {
    const name = `team-${r % 10}/app-${r}`
    const repo = path.join(v2, 'repositories', name)
    const layers: Array<{ hex: string; size: number }> = []
    for (let l = 0; l < layersPerImage; l++) {
      const bytes = crypto.randomBytes(LAYER_BYTES)
      const hex = sha256(bytes)
      putBlob(hex, bytes)
      put(path.join(repo, '_layers', 'sha256', hex, 'link'), `sha256:${hex}`)
      layers.push({ hex, size: bytes.length })
    }
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: new Date(Date.UTC(2026, 0, 1) + r * 60_000).toISOString(),
      rootfs: { type: 'layers', diff_ids: layers.map(() => `sha256:${sha256(crypto.randomBytes(16))}`) },
      config: {},
    })
    const configHex = sha256(config)
    putBlob(configHex, config)
    put(path.join(repo, '_layers', 'sha256', configHex, 'link'), `sha256:${configHex}`)
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: Buffer.byteLength(config), digest: `sha256:${configHex}` },
      layers: layers.map(layer => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.size, digest: `sha256:${layer.hex}` })),
    })
    const manifestHex = sha256(manifest)
    putBlob(manifestHex, manifest)
    put(path.join(repo, '_manifests', 'revisions', 'sha256', manifestHex, 'link'), `sha256:${manifestHex}`)
    for (const tag of ['latest', 'v1']) {
      put(path.join(repo, '_manifests', 'tags', tag, 'current', 'link'), `sha256:${manifestHex}`)
      put(path.join(repo, '_manifests', 'tags', tag, 'index', 'sha256', manifestHex, 'link'), `sha256:${manifestHex}`)
    }
    await Promise.all(pending.splice(0))
  }
  return { datadir, storageRoot, blobs: STARTUP_REPOSITORIES * (layersPerImage + 2), repositories: STARTUP_REPOSITORIES }
}

/**
 * One try: the status code the server on `port` answers to `GET /v2/`, or undefined when the
 * connection is refused or closed first. Raw TCP, so no client library's start-up is on the clock.
 */
function probeOnce(port: number): Promise<number | undefined> {
  return new Promise(resolve => {
    const socket = net.connect({ host: '127.0.0.1', port })
    let answer = ''
    socket.setNoDelay(true)
    socket.setEncoding('latin1')
    socket.on('connect', () => socket.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'))
    socket.on('data', (chunk: string) => {
      answer += chunk
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(answer)
      if (match) {
        socket.destroy()
        resolve(Number(match[1]))
      }
    })
    socket.on('error', () => resolve(undefined))
    socket.on('close', () => resolve(undefined))
  })
}

/** CPU time (user + system, all threads) a live process has used so far, ms; 10 ms steps. */
function cpuMsOf(pid: number | undefined): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10 // USER_HZ = 100
  } catch {
    return NaN
  }
}

export interface StartupTime {
  /** Exec to the first status line, ms. */
  ms: number
  /** CPU the server had used when it answered, ms: less sensitive than `ms` to other work on the machine. */
  cpuMs: number
}

/**
 * Spawns `command args` (which must serve plain HTTP on 127.0.0.1:`port`), times the spawn to the
 * first 200 or 401 on `/v2/`, trying every POLL_MS, then stops the process. Throws if it exits
 * first, answers anything else, or takes longer than `timeoutMs`.
 */
export async function timeStartup(command: string, args: readonly string[], port: number, logFile: string, timeoutMs = 30_000): Promise<StartupTime> {
  const fd = openSync(logFile, 'a')
  const started = process.hrtime.bigint()
  const child = spawn(command, args, { stdio: ['ignore', fd, fd] })
  closeSync(fd) // the child holds its own copy
  try {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${command} exited (${child.exitCode ?? child.signalCode}) while starting; log: ${logFile}`)
      }
      const status = await probeOnce(port)
      if (status !== undefined) {
        const ms = Number(process.hrtime.bigint() - started) / 1e6
        const cpuMs = cpuMsOf(child.pid)
        if (status !== 200 && status !== 401) throw new Error(`${command}: GET /v2/ answered ${status}, expected 200 or 401`)
        return { ms, cpuMs }
      }
      await sleep(POLL_MS)
    }
    throw new Error(`${command} did not answer /v2/ within ${timeoutMs} ms; log: ${logFile}`)
  } finally {
    await stopChild(child, 10_000)
  }
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  )
}

export interface StartupOptions {
  /** A folder of its own for the data folder, configs and logs. */
  dir: string
  /** How the bench runs Berth's bundle, e.g. [node, dist/berth.cjs] (with --cpu-prof flags when asked). */
  berthCommand: readonly string[]
  /** The single binary (dist/berth): measured when the file exists. */
  binary: string
}

/**
 * The three start-up cases, each round starting each server once (order rotated), Berth's in the
 * `berth` column and registry:2's in the `seed` column of its own case.
 */
export async function runStartup(hooks: CaseHooks, options: StartupOptions): Promise<void> {
  await mkdir(options.dir, { recursive: true })
  hooks.progress(`start-up: writing ${STARTUP_BLOBS} blobs in registry:2's layout`)
  const folder = await writeStartupFolder(path.join(options.dir, 'datadir'))
  const jobs: Array<{ id: StartupCaseId; column: 'berth' | 'seed'; spawn(port: number): Promise<{ command: string; args: string[] }> }> = []
  const berthArgs = (port: number) => ['serve', '--local', '--host', '127.0.0.1', '--port', String(port), '--datadir', folder.datadir]
  if (hooks.wants('startup-berth') && options.berthCommand.length > 0) {
    jobs.push({
      id: 'startup-berth',
      column: 'berth',
      spawn: async port => ({ command: options.berthCommand[0]!, args: [...options.berthCommand.slice(1), ...berthArgs(port)] }),
    })
  }
  if (hooks.wants('startup-binary') && options.berthCommand.length > 0) {
    if (await exists(options.binary)) {
      const built = await stat(options.binary)
      hooks.progress(`start-up: single binary ${options.binary} (built ${built.mtime.toISOString()})`)
      jobs.push({ id: 'startup-binary', column: 'berth', spawn: async port => ({ command: options.binary, args: berthArgs(port) }) })
    } else {
      hooks.note('startup-binary', `not measured: ${options.binary} is missing (npm run build:binary makes it)`)
      hooks.progress(`start-up: ${options.binary} is missing, the single binary is not measured (npm run build:binary)`)
    }
  }
  if (hooks.wants('startup-registry2')) {
    jobs.push({
      id: 'startup-registry2',
      column: 'seed',
      spawn: async port => {
        const config = path.join(options.dir, `registry-${port}.yml`)
        await writeFile(config, registry2ImageConfig({ port, storage: { root: folder.storageRoot } }))
        return { command: '/usr/bin/docker-registry', args: ['serve', config] }
      },
    })
  }
  for (let round = 0; round < hooks.rounds; round++) {
    const shift = round % jobs.length
    for (const job of [...jobs.slice(shift), ...jobs.slice(0, shift)]) {
      await hooks.settle()
      try {
        const port = await freePort()
        const { command, args } = await job.spawn(port)
        const { ms, cpuMs } = await timeStartup(command, args, port, path.join(options.dir, `${job.id}.log`))
        hooks.record(job.id, job.column, ms)
        hooks.detail('startup', { round: round + 1, case: job.id, ms: +ms.toFixed(1), cpuMs })
        hooks.progress(`r${round + 1}/${hooks.rounds} ${job.id}: /v2/ answered ${fmt(ms)} ms after exec, ${fmt(cpuMs)} ms CPU (${folder.blobs} blobs)`)
      } catch (error) {
        hooks.fail(job.id, job.column, error, round)
      }
    }
  }
}
