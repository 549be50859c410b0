/**
 * Hostile input against the engine on a real filesystem (issue #8, "Property-based tests"):
 * repository names, references, digests, Range, Content-Range, query parameters and manifest JSON
 * drawn by fast-check. Every answer is a 2xx/3xx or the right 4xx with the spec's JSON error body;
 * never a 5xx, never a crash, and never a file outside the data folder (the folder sits inside a
 * sandbox that must hold nothing else afterwards).
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import { createRegistryApp } from '../../src/registry/app.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { request, type HttpResponse } from '../helpers/http.js'
import { OCI_MANIFEST, pushBlob, pushImage, sha256, size, tempDir } from './common.js'

const RUNS = size(1, 8) // multiplier on each property's run count

interface Sandbox {
  url: string
  sandbox: string
  data: string
}

/** The engine over <sandbox>/data, plus a canary file beside data/ that must stay the only other entry. */
async function startSandboxed(t: ExecutionContext): Promise<Sandbox> {
  const sandbox = await tempDir(t, 'berth-props-')
  const data = join(sandbox, 'data')
  await mkdir(data)
  await writeFile(join(sandbox, 'canary'), 'must not change')
  const app = createRegistryApp({ driver: new FilesystemDriver(data) })
  const server = createServer({ requestTimeout: 0 }, app.handle)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
    await app.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sandbox, data }
}

async function assertContained(t: ExecutionContext, box: Sandbox): Promise<void> {
  const entries = (await readdir(box.sandbox)).sort()
  t.deepEqual(entries, ['canary', 'data'], 'something was written beside the data folder')
  const top = await readdir(box.data)
  t.true(
    top.every(entry => entry === 'docker'),
    `unexpected entries in data/: ${top.join(',')}`,
  )
}

/** A 4xx must carry the OCI error JSON (HEAD has no body). */
function wellFormed(t: ExecutionContext, response: HttpResponse, method: string, what: string): boolean {
  if (response.status >= 500 || response.status === 0) {
    t.fail(`${what} → ${response.status} ${response.body.toString().slice(0, 300)}`)
    return false
  }
  if (response.status >= 400 && method !== 'HEAD' && response.status !== 416) {
    const code = response.json?.errors?.[0]?.code
    if (typeof code !== 'string') {
      t.fail(`${what} → ${response.status} without an OCI error body: ${response.body.toString().slice(0, 200)}`)
      return false
    }
  }
  return true
}

// Printable ASCII without space: what an HTTP request line may carry.
const urlChar = fc.constantFrom(..."abcz019-._/:%@+~!$&'()*,;=?#[]ABZ".split(''))
const hostileSegment = fc.oneof(
  fc.constantFrom(
    '..',
    '.',
    '%2e%2e',
    '%2E%2E',
    '..%2f',
    '%2f',
    '%2F..%2F',
    '%00',
    'a%00b',
    '.%2e',
    '~',
    '_uploads',
    '_layers',
    '_manifests',
    'docker',
    'registry',
    'v2',
    'data',
    'blobs',
    'sha256',
  ),
  fc.string({ unit: urlChar, maxLength: 12 }),
  fc.stringMatching(/^[a-z0-9]+([._-][a-z0-9]+)*$/),
)
const hostileName = fc.array(hostileSegment, { minLength: 1, maxLength: 5 }).map(parts => parts.join('/'))
const hostileReference = fc.oneof(
  fc.stringMatching(/^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,130}$/),
  fc.constantFrom(
    '..',
    '.',
    '%2e%2e',
    'sha256:',
    'sha256:..',
    'sha256:' + 'a'.repeat(63),
    'sha256:' + 'A'.repeat(64),
    'sha512:' + 'a'.repeat(128),
    'md5:abc',
    'sha256:' + '0'.repeat(64),
    ':',
    '-x',
    '.x',
    'x'.repeat(129),
  ),
  fc.string({ unit: urlChar, maxLength: 20 }).filter(s => !s.includes('/') && !s.includes('?') && !s.includes('#')),
)

function safePath(path: string): string {
  // node:http refuses request paths with bytes it cannot send; fast-check strings here are ASCII already.
  return path.replace(/[#\s]/g, '_')
}

test('names, references and digests in every route: never a 5xx, nothing outside the data folder', async t => {
  t.timeout(170_000)
  const box = await startSandboxed(t)
  const known = await pushImage(box.url, 'known/repo', 'v1', [randomBytes(2000)])
  let sent = 0
  await fc.assert(
    fc.asyncProperty(
      hostileName,
      hostileReference,
      fc.constantFrom('manifests', 'blobs', 'tags/list', 'blobs/uploads/', 'blobs/uploads', 'referrers'),
      fc.constantFrom('GET', 'HEAD', 'PUT', 'DELETE', 'POST', 'PATCH'),
      async (name, reference, kind, method) => {
        const path = safePath(
          kind.startsWith('tags') || kind.startsWith('blobs/uploads')
            ? `/v2/${name}/${kind}${kind === 'blobs/uploads' ? `/${reference}` : ''}`
            : `/v2/${name}/${kind}/${reference}`,
        )
        const body = ['PUT', 'POST', 'PATCH'].includes(method) ? '{"schemaVersion":2}' : undefined
        const response = await request(box.url, path, { method, body, headers: body ? { 'Content-Type': OCI_MANIFEST } : {} })
        sent++
        return wellFormed(t, response, method, `${method} ${path}`)
      },
    ),
    { numRuns: 400 * RUNS },
  )
  await assertContained(t, box)
  t.is((await request(box.url, `/v2/known/repo/manifests/${known.digest}`)).status, 200)
  t.log(`${sent} requests, no 5xx, nothing written outside data/`)
})

test('Range and If-Range on blob GET: 200, 206 with the exact bytes, or 416 (never a 5xx)', async t => {
  t.timeout(120_000)
  const box = await startSandboxed(t)
  const content = randomBytes(5000)
  const digest = await pushBlob(box.url, 'ranges', content)
  const rangeValue = fc.oneof(
    fc.tuple(fc.option(fc.integer({ min: -5, max: 6000 })), fc.option(fc.integer({ min: -5, max: 6000 }))).map(([a, b]) => `bytes=${a ?? ''}-${b ?? ''}`),
    fc.constantFrom(
      'bytes=0-0,5-9',
      'bytes=-0',
      'bytes=',
      'bytes=--1',
      'items=0-1',
      'bytes=99999999999999999999-',
      'bytes=0-99999999999999999999',
      'bytes = 0-1',
      'BYTES=0-1',
      'bytes=0x10-20',
    ),
    fc.string({ unit: fc.constantFrom(...'bytes=0123456789-, '.split('')), maxLength: 20 }),
  )
  await fc.assert(
    fc.asyncProperty(
      rangeValue,
      fc.constantFrom(undefined, `"${digest}"`, '"other"', 'W/"x"'),
      fc.constantFrom('GET', 'HEAD'),
      async (range, ifRange, method) => {
        const headers: Record<string, string> = {}
        if (/^[\x21-\x7e][\x20-\x7e]*$/.test(range)) headers['Range'] = range
        if (ifRange !== undefined) headers['If-Range'] = ifRange
        const response = await request(box.url, `/v2/ranges/blobs/${digest}`, { method, headers })
        if (!wellFormed(t, response, method, `${method} Range ${range}`)) return false
        if (response.status === 206) {
          const match = /^bytes (\d+)-(\d+)\/5000$/.exec(String(response.headers['content-range']))
          if (!match) return t.fail(`206 with Content-Range ${response.headers['content-range']}`) ?? false
          const start = Number(match[1])
          const end = Number(match[2])
          if (method === 'GET' && !response.body.equals(content.subarray(start, end + 1))) return t.fail(`wrong bytes for ${range}`) ?? false
        } else if (response.status === 200 && method === 'GET' && !response.body.equals(content)) {
          return t.fail(`wrong body for ${range}`) ?? false
        } else if (![200, 206, 416].includes(response.status)) {
          return t.fail(`${response.status} for Range ${range}`) ?? false
        }
        return true
      },
    ),
    { numRuns: 300 * RUNS },
  )
  await assertContained(t, box)
})

test('uploads: random Content-Range, Content-Length, digest, mount and from parameters never give a 5xx; the blob store stays exact', async t => {
  t.timeout(170_000)
  const box = await startSandboxed(t)
  const existing = randomBytes(3000)
  const existingDigest = await pushBlob(box.url, 'source/repo', existing)
  const queryValue = fc.oneof(
    fc.constantFrom(
      existingDigest,
      sha256('x'),
      'sha256:',
      'sha256:zz',
      'sha512:' + 'a'.repeat(128),
      '',
      '..',
      '../../etc/passwd',
      '%2e%2e%2fetc',
      'source/repo',
      'source/../source/repo',
      'nope',
      'a'.repeat(300),
    ),
    fc.string({ unit: urlChar, maxLength: 16 }),
  )
  const queryKey = fc.constantFrom('digest', 'mount', 'from', 'n', 'last', '_state', 'digest[]')
  const query = fc.array(fc.tuple(queryKey, queryValue), { maxLength: 4 })
  await fc.assert(
    fc.asyncProperty(
      query,
      query,
      fc.option(fc.string({ unit: fc.constantFrom(...'0123456789-/* bytes'.split('')), maxLength: 14 })),
      fc.uint8Array({ maxLength: 64 }),
      fc.boolean(),
      async (startQuery, finishQuery, contentRange, bytes, chunked) => {
        const qs = (pairs: [string, string][]) => pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')
        const start = await request(box.url, `/v2/target/repo/blobs/uploads/?${qs(startQuery)}`, { method: 'POST' })
        if (!wellFormed(t, start, 'POST', `POST ?${qs(startQuery)}`)) return false
        if (start.status !== 202) return true
        const location = String(start.headers.location)
        const headers: Record<string, string> = {}
        if (contentRange !== null && /^[\x21-\x7e][\x20-\x7e]*$/.test(contentRange)) headers['Content-Range'] = contentRange
        const body = Buffer.from(bytes)
        const patch = await request(box.url, location, { method: 'PATCH', headers, body: chunked ? (await import('node:stream')).Readable.from([body]) : body })
        if (!wellFormed(t, patch, 'PATCH', `PATCH ${JSON.stringify(headers)}`)) return false
        const put = await request(box.url, `${location}${location.includes('?') ? '&' : '?'}${qs(finishQuery)}`, { method: 'PUT' })
        if (!wellFormed(t, put, 'PUT', `PUT ?${qs(finishQuery)}`)) return false
        if (put.status === 201) {
          // Whatever was accepted must be served with exactly the digest it was stored under.
          const digest = String(put.headers['docker-content-digest'])
          const got = await request(box.url, `/v2/target/repo/blobs/${digest}`)
          if (got.status !== 200 || sha256(got.body) !== digest) return t.fail(`accepted ${digest} but serves ${got.status} ${sha256(got.body)}`) ?? false
        }
        return true
      },
    ),
    { numRuns: 200 * RUNS },
  )
  for (const q of ['n=-1', 'n=abc', 'n=99999999999999999999', 'last=%00', 'last=../..', 'n=0', 'n=1&last=zzz']) {
    for (const path of [`/v2/_catalog?${q}`, `/v2/source/repo/tags/list?${q}`]) {
      wellFormed(t, await request(box.url, path), 'GET', path)
    }
  }
  await assertContained(t, box)
})

/** Mutations of a valid manifest, plus arbitrary JSON and non-JSON. */
test('manifest JSON: arbitrary and mutated manifests get 201 or a 4xx; anything accepted is served byte for byte', async t => {
  t.timeout(170_000)
  const box = await startSandboxed(t)
  const config = Buffer.from('{"architecture":"amd64","os":"linux"}')
  const configDigest = await pushBlob(box.url, 'mani/fest', config)
  const layer = randomBytes(100)
  const layerDigest = await pushBlob(box.url, 'mani/fest', layer)
  const valid = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.byteLength },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.byteLength }],
  }
  const weird = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.constantFrom(null, -1, 1e308, '', '../../x', 'sha256:' + 'f'.repeat(64), [], {}, { __proto__: { a: 1 } }, 'sha256:..', 2 ** 53 + 1),
  )
  const mutate = fc.tuple(
    fc.constantFrom(
      'schemaVersion',
      'mediaType',
      'config',
      'layers',
      'subject',
      'manifests',
      'config.digest',
      'config.size',
      'config.mediaType',
      'layers.0.digest',
      'layers.0.size',
      'layers.0.urls',
      'annotations',
      'artifactType',
    ),
    weird,
  )
  const manifestBody = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.array(mutate, { minLength: 1, maxLength: 3 }).map(changes => {
        const copy = structuredClone(valid) as Record<string, any>
        for (const [path, value] of changes) {
          const keys = path.split('.')
          let target: any = copy
          for (const key of keys.slice(0, -1)) {
            if (target[key] === null || typeof target[key] !== 'object') target[key] = {}
            target = target[key]
          }
          // A copy: fc.constantFrom hands out the same object every time, so setting `config` to {} and then
          // `config.size` to {} would make that object contain itself (and leak into later runs).
          target[keys.at(-1)!] = structuredClone(value)
        }
        return Buffer.from(JSON.stringify(copy))
      }),
    },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map(v => Buffer.from(JSON.stringify(v) ?? 'null')) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map(b => Buffer.from(b)) },
  )
  const contentType = fc.constantFrom(
    OCI_MANIFEST,
    'application/vnd.oci.image.index.v1+json',
    'application/vnd.docker.distribution.manifest.v2+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/json',
    'text/plain',
    'application/vnd.docker.distribution.manifest.v1+prettyjws',
    '',
  )
  let accepted = 0
  await fc.assert(
    fc.asyncProperty(manifestBody, contentType, fc.boolean(), async (body, type, byDigest) => {
      const reference = byDigest ? sha256(body) : 'tag'
      const response = await request(box.url, `/v2/mani/fest/manifests/${reference}`, { method: 'PUT', headers: type ? { 'Content-Type': type } : {}, body })
      if (!wellFormed(t, response, 'PUT', `PUT manifest ${type} ${body.toString().slice(0, 120)}`)) return false
      if (response.status === 201) {
        accepted++
        const got = await request(box.url, `/v2/mani/fest/manifests/${sha256(body)}`)
        if (got.status !== 200 || !got.body.equals(body)) return t.fail(`accepted manifest served as ${got.status}`) ?? false
      } else if (response.status >= 300 && (response.status < 400 || response.status > 415)) {
        return t.fail(`unexpected ${response.status}`) ?? false
      }
      return true
    }),
    { numRuns: 300 * RUNS },
  )
  await assertContained(t, box)
  t.log(`${accepted} manifests accepted, the rest refused with 4xx`)
})
