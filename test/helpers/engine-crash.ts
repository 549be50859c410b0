/**
 * The engine in its own process, for the crash tests (test/storage/crash.test.ts,
 * test/hardening/crash.test.ts): start it on a data folder, kill it with SIGKILL, and check the
 * store's on-disk invariants afterwards. One checker, so both crash tests hold the store to the
 * same rules:
 * - every blob file's bytes hash to the digest it is stored under;
 * - every other visible file (outside `_uploads`, not a dot-named temp file) is a link holding a
 *   digest whose blob exists;
 * - every tag resolves to a complete manifest revision in its repository whose config, layers
 *   and child manifests exist there (no half-visible manifest or tag).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The engine alone (no edge) on a data folder given as its argument; it prints `port=N` once listening. */
const SERVER = fileURLToPath(new URL('../storage/fixtures/engine-server.ts', import.meta.url))

export interface Child {
  process: ChildProcess
  url: string
}

/** Starts the engine on `root` and resolves once it listens (rejects if it exits first). */
export async function startChild(root: string, options: { index?: boolean } = {}): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER, root, ...(options.index ? ['--index'] : [])], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', chunk => {
      out += String(chunk)
      const match = /port=(\d+)/.exec(out)
      if (match) resolve(Number(match[1]))
    })
    child.once('exit', code => reject(new Error(`engine exited early (${code})`)))
  })
  return { process: child, url: `http://127.0.0.1:${port}` }
}

/** SIGKILL, no chance to clean up; resolves once the process is gone (at once if it already is). */
export function kill9(child: Child): Promise<void> {
  return new Promise(resolve => {
    if (child.process.exitCode !== null || child.process.signalCode !== null) return resolve()
    child.process.once('exit', () => resolve())
    child.process.kill('SIGKILL')
  })
}

export async function walkFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const full = join(d, entry.name)
      if (entry.isDirectory()) await walk(full)
      else out.push(full)
    }
  }
  await walk(dir)
  return out
}

export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )

/**
 * The on-disk invariants; returns the problems found (empty when consistent). `hashed` (path →
 * mtime) remembers the blobs already hashed across calls: pass a new Map for a full check.
 */
export async function checkStore(root: string, hashed: Map<string, number>): Promise<{ problems: string[]; blobs: number; links: number; tags: number }> {
  const v2 = join(root, 'docker/registry/v2')
  const problems: string[] = []
  const blobData = (digest: string) => join(v2, 'blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data')
  let blobs = 0
  let links = 0
  let tags = 0
  const files = await walkFiles(v2)
  for (const path of files) {
    const rel = path.slice(v2.length + 1)
    const base = rel.split('/').at(-1)!
    if (rel.includes('/_uploads/')) continue // upload state may be partial by design
    if (base.startsWith('.')) continue // a temp file of an interrupted atomic write: invisible
    if (rel.startsWith('blobs/')) {
      blobs++
      const hex = rel.split('/')[3]!
      const info = await stat(path)
      // Blobs never change once written: hash each one once (by path and mtime) to keep rounds fast.
      if (hashed.get(path) === info.mtimeMs) continue
      const actual = await hashFile(path)
      if (actual !== hex) problems.push(`${rel}: content hashes to ${actual}`)
      else hashed.set(path, info.mtimeMs)
      continue
    }
    if (base !== 'link') {
      problems.push(`unexpected file ${rel}`)
      continue
    }
    links++
    const target = await readFile(path, 'utf8')
    if (!/^sha256:[a-f0-9]{64}$/.test(target)) {
      problems.push(`${rel}: holds ${JSON.stringify(target.slice(0, 80))}`)
      continue
    }
    if (!(await exists(blobData(target)))) problems.push(`${rel}: points at missing blob ${target}`)
  }
  // Tags: resolve to a complete revision in the same repository.
  for (const path of files) {
    const rel = path.slice(v2.length + 1)
    const match = /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/current\/link$/.exec(rel)
    const revision = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/([a-f0-9]{64})\/link$/.exec(rel)
    if (!match && !revision) continue
    const repo = (match ?? revision)![1]!
    const digest = match ? await readFile(path, 'utf8') : `sha256:${revision![2]}`
    if (match) {
      tags++
      if (!(await exists(join(v2, 'repositories', repo, '_manifests/revisions/sha256', digest.slice(7), 'link')))) {
        problems.push(`tag ${repo}:${match[2]} → ${digest}: no revision link (half-visible tag)`)
        continue
      }
    }
    let manifest: { config?: { digest: string }; layers?: { digest: string }[]; manifests?: { digest: string }[] }
    try {
      manifest = JSON.parse(await readFile(blobData(digest), 'utf8'))
    } catch (error) {
      problems.push(`${repo}@${digest}: manifest unreadable (${(error as Error).message})`)
      continue
    }
    for (const blob of [manifest.config, ...(manifest.layers ?? [])]) {
      if (!blob) continue
      if (!(await exists(join(v2, 'repositories', repo, '_layers/sha256', blob.digest.slice(7), 'link'))) || !(await exists(blobData(blob.digest)))) {
        problems.push(`${repo}@${digest}: blob ${blob.digest} not in the repository`)
      }
    }
    for (const child of manifest.manifests ?? []) {
      if (!(await exists(join(v2, 'repositories', repo, '_manifests/revisions/sha256', child.digest.slice(7), 'link')))) {
        problems.push(`${repo}@${digest}: child manifest ${child.digest} missing`)
      }
    }
  }
  return { problems, blobs, links, tags }
}
