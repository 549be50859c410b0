/**
 * Modes of what the filesystem driver stores, under the usual umask 022: files 0644 and folders 0755,
 * as Debian's docker-registry (distribution 2.8.2, what `registry:2` runs) writes them for the same
 * push, so a data folder moved between the two (or read by a backup user) needs no chmod.
 */
import { randomBytes } from 'node:crypto'
import { access, lstat, readdir } from 'node:fs/promises'
import type { Server } from 'node:http'
import { join, relative } from 'node:path'
import test from 'ava'
import { request } from '../helpers/http.js'
import { DOCKER_REGISTRY, startRegistry2 } from '../helpers/registry2.js'
import { imageManifest, OCI_MANIFEST, putManifest, startFilesystemApp, tempRoot } from '../registry/fixtures.js'

const hasRegistry2 = await access(DOCKER_REGISTRY).then(
  () => true,
  () => false,
)

/** Every entry below `root` (and `root` itself) → `file 644` or `folder 755`; upload ids become `<id>`. */
async function modes(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path)
    const kind = stats.isDirectory() ? 'folder' : stats.isFile() ? 'file' : 'other'
    out.set(relative(root, path).replace(/_uploads\/[^/]+/, '_uploads/<id>') || '.', `${kind} ${(stats.mode & 0o7777).toString(8)}`)
    if (stats.isDirectory()) for (const entry of await readdir(path)) await walk(join(path, entry))
  }
  await walk(root)
  return out
}

/** Entries whose mode is not 0644 for a file or 0755 for a folder. */
function wrongModes(tree: Map<string, string>): string[] {
  return [...tree].filter(([, mode]) => mode !== 'file 644' && mode !== 'folder 755').map(([path, mode]) => `${path}: ${mode}`)
}

function count(tree: Map<string, string>, kind: 'file' | 'folder'): number {
  return [...tree.values()].filter(mode => mode.startsWith(`${kind} `)).length
}

/** A tagged image, a second tag, and an upload left open after its first chunk (kept on disk). */
async function push(target: Server | string): Promise<void> {
  const image = await imageManifest(target, 'library/app', { layers: 2 })
  for (const tag of ['v1', 'latest']) {
    const put = await putManifest(target, 'library/app', tag, image.manifest, OCI_MANIFEST)
    if (put.status !== 201) throw new Error(`PUT manifest: ${put.status} ${put.body.toString()}`)
  }
  const start = await request(target, '/v2/library/app/blobs/uploads/', { method: 'POST' })
  const location = String(start.headers.location).replace(/^https?:\/\/[^/]+/, '')
  const patch = await request(target, location, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/octet-stream' },
    body: randomBytes(10_000),
  })
  if (patch.status !== 202) throw new Error(`PATCH upload: ${patch.status} ${patch.body.toString()}`)
}

test.serial('under umask 022 Berth stores files 0644 and folders 0755, as registry:2 does for the same push', async t => {
  const previous = process.umask(0o022)
  t.teardown(() => void process.umask(previous))

  const berthRoot = await tempRoot(t)
  const berth = await startFilesystemApp(t, berthRoot)
  await push(berth.server)
  const ours = await modes(berthRoot)

  const expected = [
    '.',
    'docker/registry/v2/repositories/library/app/_manifests/tags/latest/current/link',
    'docker/registry/v2/repositories/library/app/_uploads/<id>/data',
    'docker/registry/v2/repositories/library/app/_uploads/<id>/startedat',
  ]
  for (const path of expected) t.true(ours.has(path), `${path} stored`)
  t.true(
    [...ours.keys()].some(path => /^docker\/registry\/v2\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}\/data$/.test(path)),
    'blob data stored',
  )
  t.deepEqual(wrongModes(ours), [], 'Berth: every file 0644, every folder 0755')
  t.true(count(ours, 'file') >= 10 && count(ours, 'folder') >= 10, `${count(ours, 'file')} files and ${count(ours, 'folder')} folders checked`)

  if (!hasRegistry2) {
    t.log(`${DOCKER_REGISTRY} not installed: registry:2's modes not compared`)
    return
  }
  // The child inherits the umask set above.
  const registryRoot = await tempRoot(t)
  const registry = await startRegistry2({ rootDirectory: registryRoot })
  t.teardown(() => registry.stop())
  await push(registry.url)
  const theirs = await modes(registryRoot)
  t.deepEqual(wrongModes(theirs), [], 'registry:2: every file 0644, every folder 0755')
  // The same kinds of entries exist on both sides (digests differ: each push has its own random
  // layers), and each kind has the same mode on both.
  const kind = (path: string) =>
    path
      .replace(/[0-9a-f]{64}/g, '<hex>')
      .replace(/\/[0-9a-f]{2}\//g, '/<xx>/')
      .replace(/\/(v1|latest)\//, '/<tag>/')
  const ourKinds = new Map([...ours].map(([path, mode]) => [kind(path), mode]))
  const theirKinds = new Map([...theirs].map(([path, mode]) => [kind(path), mode]))
  let compared = 0
  for (const [path, mode] of ourKinds) {
    const theirMode = theirKinds.get(path)
    if (theirMode === undefined) continue
    compared++
    t.is(mode, theirMode, path)
  }
  for (const path of expected) t.true(theirKinds.has(kind(path)), `registry:2 stores ${path} too`)
  t.true(compared >= 20, `${compared} kinds of entries compared`)
})
