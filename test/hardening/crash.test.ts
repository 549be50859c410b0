/**
 * Crash consistency (issue #8): several clients push (chunked and monolithic blobs, manifests,
 * tags) and delete (tags, manifests) against the engine in its own process while the test kills
 * it with SIGKILL at a random moment; then it restarts the engine, lets every interrupted client
 * retry, and checks the store's invariants on disk and over HTTP:
 *
 * - every blob file's bytes hash to the digest it is stored under;
 * - every link (layer, revision, tag, referrer) holds a digest whose blob exists;
 * - every tag resolves to a complete manifest revision in its repository whose config, layers
 *   and child manifests exist there (no half-visible manifest or tag);
 * - every interrupted operation completes when the client retries it.
 *
 * Quick mode (npm test): 10 rounds. Full mode (npm run test:hardening): 200 rounds (a fresh data
 * folder every 20, so the store check after each kill stays fast).
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import test from 'ava'
import { checkStore, kill9, startChild } from '../helpers/engine-crash.js'
import { request } from '../helpers/http.js'
import { OCI_MANIFEST, sha256, size, tempDir } from './common.js'

const ROUNDS = Number(process.env['BERTH_CRASH_ROUNDS'] ?? size(10, 200))
/** Rounds per data folder: a fresh one now and then keeps each round's full-store check fast. */
const EPOCH = 20
const CLIENTS = 5
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'

class Failed extends Error {}

function expect(status: number, allowed: number[], what: string, body: Buffer): void {
  if (!allowed.includes(status)) throw new Failed(`${what}: ${status} ${body.toString().slice(0, 200)}`)
}

/** A client's state: what it pushed (to tag, delete and re-use later). */
interface Client {
  id: number
  repo: string
  /** `pinned`: a child of an index this client pushed; deleting it would be the user's own dangling index. */
  pushed: { digest: string; tags: string[]; pinned?: boolean }[]
  counter: number
}

/** Chunked upload in 2-3 PATCHes with Content-Range, closed by PUT; resumes from the server's offset. */
async function uploadChunked(url: string, repo: string, content: Buffer): Promise<string> {
  const digest = sha256(content)
  const start = await request(url, `/v2/${repo}/blobs/uploads/`, { method: 'POST' })
  expect(start.status, [202], 'POST upload', start.body)
  const location = String(start.headers.location)
  let offset = 0
  const step = Math.ceil(content.byteLength / (2 + Math.floor(Math.random() * 2)))
  while (offset < content.byteLength) {
    const end = Math.min(content.byteLength, offset + step)
    const patch = await request(url, location, { method: 'PATCH', headers: { 'Content-Range': `${offset}-${end - 1}` }, body: content.subarray(offset, end) })
    expect(patch.status, [202], 'PATCH', patch.body)
    offset = end
  }
  const put = await request(url, `${location}?digest=${digest}`, { method: 'PUT' })
  expect(put.status, [201], 'PUT upload', put.body)
  return digest
}

async function uploadMonolithic(url: string, repo: string, content: Buffer): Promise<string> {
  const digest = sha256(content)
  const put = await request(url, `/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: content })
  expect(put.status, [201], 'POST monolithic', put.body)
  return digest
}

async function putManifest(url: string, repo: string, reference: string, body: Buffer, type: string): Promise<void> {
  const put = await request(url, `/v2/${repo}/manifests/${reference}`, { method: 'PUT', headers: { 'Content-Type': type }, body })
  expect(put.status, [201], `PUT manifest ${repo}:${reference}`, put.body)
}

/** One operation, chosen at random; throws when the server goes away under it. */
type Operation = { name: string; run: (url: string) => Promise<void> }

function nextOperation(client: Client): Operation {
  const roll = Math.random()
  const tag = () => `c${client.id}-${client.counter++}`
  if (client.pushed.length > 0 && roll < 0.15) {
    const target = client.pushed[Math.floor(Math.random() * client.pushed.length)]!
    const name = tag()
    return {
      name: `tag ${target.digest.slice(7, 15)} as ${name}`,
      run: async url => {
        const got = await request(url, `/v2/${client.repo}/manifests/${target.digest}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })
        if (got.status === 404) return // deleted meanwhile by this client (a retried delete)
        expect(got.status, [200], 'GET manifest to re-tag', got.body)
        await putManifest(url, client.repo, name, got.body, String(got.headers['content-type']))
        target.tags.push(name)
      },
    }
  }
  const deletable = client.pushed.filter(entry => !entry.pinned)
  if (deletable.length > 1 && roll < 0.25) {
    const target = deletable[Math.floor(Math.random() * deletable.length)]!
    const byTag = target.tags.length > 0 && Math.random() < 0.5
    const reference = byTag ? target.tags[0]! : target.digest
    return {
      name: `delete ${reference}`,
      run: async url => {
        const del = await request(url, `/v2/${client.repo}/manifests/${reference}`, { method: 'DELETE' })
        // 404 on a retry: the first attempt went through before the kill.
        expect(del.status, [202, 404], `DELETE ${reference}`, del.body)
        if (byTag) target.tags.shift()
        else client.pushed.splice(client.pushed.indexOf(target), 1)
      },
    }
  }
  if (client.pushed.length > 1 && roll < 0.32) {
    return {
      name: 'push index',
      run: async url => {
        const children = client.pushed.slice(-2)
        for (const child of children) child.pinned = true
        const index = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: OCI_INDEX,
            manifests: children.map((child, i) => ({
              mediaType: OCI_MANIFEST,
              digest: child.digest,
              size: 0,
              platform: { os: 'linux', architecture: i ? 'arm64' : 'amd64' },
            })),
          }),
        )
        // Sizes must be right: fetch each child.
        const parsed = JSON.parse(index.toString()) as { manifests: { digest: string; size: number }[] }
        for (const entry of parsed.manifests) {
          const got = await request(url, `/v2/${client.repo}/manifests/${entry.digest}`, { method: 'HEAD' })
          if (got.status === 404) return
          entry.size = Number(got.headers['content-length'])
        }
        const body = Buffer.from(JSON.stringify(parsed))
        const name = tag()
        await putManifest(url, client.repo, name, body, OCI_INDEX)
        client.pushed.push({ digest: sha256(body), tags: [name] })
      },
    }
  }
  // Default: push a whole image, one chunked layer, one monolithic, sometimes a layer shared by every client.
  const name = tag()
  return {
    name: `push image ${name}`,
    run: async url => {
      const layers = [randomBytes(20_000 + Math.floor(Math.random() * 600_000)), randomBytes(1000 + Math.floor(Math.random() * 50_000))]
      if (Math.random() < 0.3) layers.push(Buffer.alloc(300_000, 7)) // shared: same digest from every client
      const described = []
      for (const [i, layer] of layers.entries()) {
        const digest = i === 0 ? await uploadChunked(url, client.repo, layer) : await uploadMonolithic(url, client.repo, layer)
        described.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: layer.byteLength })
      }
      const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] }, n: name }))
      const configDigest = await uploadMonolithic(url, client.repo, config)
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
          layers: described,
        }),
      )
      await putManifest(url, client.repo, name, manifest, OCI_MANIFEST)
      client.pushed.push({ digest: sha256(manifest), tags: [name] })
    },
  }
}

/** Over HTTP, from a fresh process: every tag serves its manifest, every layer its exact bytes. */
async function verifyOverHttp(t: import('ava').ExecutionContext, url: string): Promise<number> {
  let served = 0
  for (const repo of ['crash/c0', 'crash/c1', 'crash/c2']) {
    const list = await request(url, `/v2/${repo}/tags/list`)
    if (list.status === 404) continue
    for (const tag of list.json.tags as string[]) {
      const manifest = await request(url, `/v2/${repo}/manifests/${tag}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })
      t.is(manifest.status, 200, `${repo}:${tag}`)
      t.is(manifest.headers['docker-content-digest'], sha256(manifest.body))
      const parsed = JSON.parse(manifest.body.toString()) as { layers?: { digest: string; size: number }[] }
      for (const layer of parsed.layers ?? []) {
        const blob = await request(url, `/v2/${repo}/blobs/${layer.digest}`)
        t.is(blob.status, 200)
        t.is(sha256(blob.body), layer.digest)
      }
      served++
    }
  }
  return served
}

test(`kill -9 at random moments under ${CLIENTS} pushing/deleting clients: ${ROUNDS} rounds, nothing half-visible, every retry completes`, async t => {
  t.timeout(Math.max(170_000, ROUNDS * 6000))
  const dir = await tempDir(t, 'berth-crash-')
  let child = await startChild(join(dir, 'data0'))
  t.teardown(() => kill9(child))
  const clients: Client[] = Array.from({ length: CLIENTS }, (_, id) => ({ id, repo: `crash/c${id % 3}`, pushed: [], counter: 0 }))
  const hashed = new Map<string, number>()
  let operations = 0
  let interrupted = 0
  let retries = 0
  let root = join(dir, 'data0')
  let blobs = 0
  let links = 0
  let tags = 0
  let served = 0
  const finishEpoch = async () => {
    const store = await checkStore(root, new Map())
    t.deepEqual(store.problems, [])
    blobs += store.blobs
    links += store.links
    tags += store.tags
    served += await verifyOverHttp(t, child.url)
  }
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0 && round % EPOCH === 0) {
      await finishEpoch()
      await kill9(child)
      root = join(dir, `data${round / EPOCH}`)
      child = await startChild(root)
      for (const client of clients) client.pushed = []
      hashed.clear()
    }
    const url = child.url
    let killed = false
    const pending = new Map<number, Operation>()
    const loops = clients.map(async client => {
      while (!killed) {
        const operation = nextOperation(client)
        pending.set(client.id, operation)
        try {
          await operation.run(url)
          operations++
          pending.delete(client.id)
        } catch (error) {
          if (error instanceof Failed && !killed) throw error // a real failure, not the kill
          return
        }
      }
    })
    const failure = Promise.all(loops).then(
      () => undefined,
      (error: unknown) => error,
    )
    await Promise.race([new Promise(resolve => setTimeout(resolve, 50 + Math.floor(Math.random() * 1200))), failure])
    killed = true
    await kill9(child)
    const error = await failure
    if (error) throw error
    child = await startChild(root)
    // Every operation the kill interrupted completes on retry (a fresh attempt, as docker does).
    interrupted += pending.size
    for (const [id, operation] of pending) {
      try {
        await operation.run(child.url)
        retries++
      } catch (error) {
        t.fail(`round ${round}: client ${id} could not complete "${operation.name}" after the restart: ${(error as Error).message}`)
      }
    }
    const { problems } = await checkStore(root, hashed)
    if (problems.length > 0) t.fail(`round ${round}:\n${problems.slice(0, 20).join('\n')}`)
  }
  await finishEpoch()
  t.log(
    `${ROUNDS} kills, ${operations} operations completed, ${interrupted} interrupted and ${retries} completed on retry; store: ${blobs} blobs, ${links} links, ${tags} tags, ${served} tags pulled over HTTP; lost: 0`,
  )
  t.is(retries, interrupted)
})
