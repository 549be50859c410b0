/**
 * A real S3 server for tests: single-node Ceph RGW (Debian's ceph-mon, ceph-osd, radosgw,
 * ceph-common), started by `test/helpers/ceph/ceph-up.sh DIR` in a temp folder on free loopback
 * ports and stopped by `ceph-down.sh DIR --purge` (copies of the project's shared S3 test tools,
 * so CI needs nothing outside the repository). `npm test`'s pretest installs the packages
 * (test/setup/ensure-packages.mjs looks for "ceph-up" in the tests).
 *
 * One cluster per test file (ava runs each file in its own process): memstore by default, which
 * starts in about 1.5 s instead of 5 s and is plenty for the small objects of these tests.
 * Tests share the cluster's bucket and keep apart by key prefix (see `uniquePrefix`).
 *
 * `BERTH_TEST_S3_ENV=/path/to/s3.env` uses a server that is already running (the KEY=VALUE file
 * ceph-up.sh writes) instead: quicker when iterating on the driver.
 */
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeTempDir, removeDir, run } from './procs.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const CEPH_UP = path.join(HERE, 'ceph', 'ceph-up.sh')
export const CEPH_DOWN = path.join(HERE, 'ceph', 'ceph-down.sh')

export interface S3Server {
  readonly endpoint: string
  readonly region: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly bucket: string
  /** The cluster's folder (undefined for an external server). */
  readonly dir: string | undefined
  /** What a Berth child process needs: AWS_* credentials. */
  readonly env: Record<string, string>
  /** Stops and deletes the cluster (no-op for an external server). Idempotent. */
  stop(): Promise<void>
}

function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim())
    if (m) out[m[1] as string] = m[2] as string
  }
  return out
}

function toServer(values: Record<string, string>, dir: string | undefined, stop: () => Promise<void>): S3Server {
  const need = (key: string): string => {
    const value = values[key]
    if (value === undefined) throw new Error(`S3 settings lack ${key}`)
    return value
  }
  const accessKeyId = need('S3_ACCESS_KEY_ID')
  const secretAccessKey = need('S3_SECRET_ACCESS_KEY')
  return {
    endpoint: need('S3_ENDPOINT'),
    region: values['S3_REGION'] ?? 'us-east-1',
    accessKeyId,
    secretAccessKey,
    bucket: need('S3_BUCKET'),
    dir,
    env: { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey },
    stop,
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const server = net.createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/** A base B with B, B+1 (mon) and B+10..B+99 (daemons) likely free, plus a free radosgw port. */
async function pickPorts(): Promise<{ base: number; s3: number }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + 100 * Math.floor(Math.random() * 300)
    const s3 = base + 99 // daemons bind upward from B+10; one OSD and one radosgw never get near B+99
    const probes = [base, base + 1, base + 10, base + 20, base + 30]
    const results = await Promise.all(probes.map(portFree))
    if (results.every(Boolean) && (await portFree(s3))) return { base, s3 }
  }
  throw new Error('no free port range for Ceph')
}

const liveClusters = new Set<string>()
let hookInstalled = false

/** A worker that exits without its teardown must not leave Ceph daemons behind (they are re-parented to init). */
function installExitHook(): void {
  if (hookInstalled) return
  hookInstalled = true
  const cleanup = () => {
    for (const dir of liveClusters) spawnSync('bash', [CEPH_DOWN, dir, '--purge'], { stdio: 'ignore' })
    liveClusters.clear()
  }
  process.on('exit', cleanup)
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.prependOnceListener(signal, cleanup)
  }
}

/**
 * Starts a fresh single-node Ceph RGW (or connects to BERTH_TEST_S3_ENV). `blockGb` (default 4)
 * sizes its store: the OSD aborts on ENOSPC, after which every request to the RGW hangs.
 */
export async function startS3(options: { store?: 'memstore' | 'bluestore'; blockGb?: number } = {}): Promise<S3Server> {
  const external = process.env['BERTH_TEST_S3_ENV']
  if (external) return toServer(parseEnv(await readFile(external, 'utf8')), undefined, async () => {})
  installExitHook()
  const dir = await makeTempDir('ceph')
  const { base, s3 } = await pickPorts()
  liveClusters.add(dir)
  let stopped: Promise<void> | undefined
  const stop = () =>
    (stopped ??= (async () => {
      await run('bash', [CEPH_DOWN, dir, '--purge'], { allowFailure: true, timeoutMs: 60_000 })
      liveClusters.delete(dir)
      await removeDir(dir)
    })())
  try {
    const result = await run('bash', [CEPH_UP, dir], {
      env: { CEPH_PORT_BASE: String(base), S3_PORT: String(s3), CEPH_STORE: options.store ?? 'memstore', CEPH_BLOCK_GB: String(options.blockGb ?? 4) },
      timeoutMs: 120_000,
    })
    return toServer(parseEnv(result.stdout), dir, stop)
  } catch (error) {
    await stop()
    throw error
  }
}

/** A key prefix no other test uses, so tests can share one bucket. */
export function uniquePrefix(label: string): string {
  return `${label}-${randomUUID().slice(0, 8)}`
}
