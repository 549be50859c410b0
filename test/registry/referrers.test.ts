import { request, type HttpResponse } from '../helpers/http.js'
import test from 'ava'
import { REFERRERS_PAGE_BYTES, REFERRERS_PAGE_ENTRIES } from '../../src/registry/handlers/referrers.js'
import { errorCode, imageManifest, OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, startApp } from './fixtures.js'

const EMPTY_CONFIG = 'application/vnd.oci.empty.v1+json'

/** The bytes of an artifact manifest whose config and layer are the empty blob `empty`. */
function artifactManifest(empty: string, subject: { digest: string; size: number }, artifactType: string, annotations?: Record<string, string>): Buffer {
  const body: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: EMPTY_CONFIG, digest: empty, size: 2 },
    layers: [{ mediaType: EMPTY_CONFIG, digest: empty, size: 2 }],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.size },
  }
  if (annotations) body['annotations'] = annotations
  return Buffer.from(JSON.stringify(body))
}

/** Pushes an artifact manifest (empty config) whose subject is `subject`. */
async function pushArtifact(
  server: Parameters<typeof request>[0],
  name: string,
  subject: { digest: string; size: number },
  artifactType: string,
  annotations?: Record<string, string>,
) {
  const empty = await pushBlob(server, name, '{}')
  const manifest = artifactManifest(empty, subject, artifactType, annotations)
  const put = await putManifest(server, name, sha256(manifest), manifest, OCI_MANIFEST)
  return { put, manifest, digest: sha256(manifest) }
}

test('a manifest with a subject gets OCI-Subject and is listed as a referrer', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const subject = { digest: image.digest, size: image.manifest.byteLength }
  const sig = await pushArtifact(server, 'app', subject, 'application/vnd.dev.cosign.signature', { 'org.example': 'yes' })
  t.is(sig.put.status, 201)
  t.is(sig.put.headers['oci-subject'], image.digest)
  const sbom = await pushArtifact(server, 'app', subject, 'application/spdx+json')

  const list = await request(server, `/v2/app/referrers/${image.digest}`)
  t.is(list.status, 200)
  t.is(list.headers['content-type'], OCI_INDEX)
  t.is(list.json.schemaVersion, 2)
  t.is(list.json.mediaType, OCI_INDEX)
  const byDigest = Object.fromEntries(list.json.manifests.map((m: { digest: string }) => [m.digest, m]))
  t.deepEqual(byDigest[sig.digest], {
    mediaType: OCI_MANIFEST,
    digest: sig.digest,
    size: sig.manifest.byteLength,
    artifactType: 'application/vnd.dev.cosign.signature',
    annotations: { 'org.example': 'yes' },
  })
  t.is(byDigest[sbom.digest].artifactType, 'application/spdx+json')
  t.is(list.json.manifests.length, 2)
})

test('the artifactType filter is applied and announced with OCI-Filters-Applied', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const subject = { digest: image.digest, size: image.manifest.byteLength }
  await pushArtifact(server, 'app', subject, 'application/a')
  const b = await pushArtifact(server, 'app', subject, 'application/b')
  const list = await request(server, `/v2/app/referrers/${image.digest}?artifactType=${encodeURIComponent('application/b')}`)
  t.is(list.headers['oci-filters-applied'], 'artifactType')
  t.deepEqual(
    list.json.manifests.map((m: { digest: string }) => m.digest),
    [b.digest],
  )
  t.is((await request(server, `/v2/app/referrers/${image.digest}`)).headers['oci-filters-applied'], undefined)
})

test('a subject need not exist; its referrers are listed anyway', async t => {
  const { server } = await startApp(t)
  const missing = { digest: sha256('not pushed'), size: 10 }
  const sig = await pushArtifact(server, 'app', missing, 'application/sig')
  t.is(sig.put.status, 201)
  const list = await request(server, `/v2/app/referrers/${missing.digest}`)
  t.deepEqual(
    list.json.manifests.map((m: { digest: string }) => m.digest),
    [sig.digest],
  )
})

test('artifactType falls back to the config media type for images', async t => {
  const { server } = await startApp(t)
  const base = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', base.manifest, OCI_MANIFEST)
  const referrer = await imageManifest(server, 'app', {
    configMediaType: 'application/vnd.example.config+json',
    extra: { subject: { mediaType: OCI_MANIFEST, digest: base.digest, size: base.manifest.byteLength } },
  })
  await putManifest(server, 'app', referrer.digest, referrer.manifest, OCI_MANIFEST)
  const list = await request(server, `/v2/app/referrers/${base.digest}`)
  t.is(list.json.manifests[0].artifactType, 'application/vnd.example.config+json')
})

test('referrers of an unknown subject or repository is an empty index, never 404', async t => {
  const { server } = await startApp(t)
  const list = await request(server, `/v2/nothing/referrers/${sha256('x')}`)
  t.is(list.status, 200)
  t.deepEqual(list.json, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] })
})

test('referrers with a bad digest is 400 DIGEST_INVALID', async t => {
  const { server } = await startApp(t)
  const list = await request(server, '/v2/app/referrers/sha256:nope')
  t.is(list.status, 400)
  t.is(errorCode(list), 'DIGEST_INVALID')
})

test('deleting a referrer removes it from the list', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const sig = await pushArtifact(server, 'app', { digest: image.digest, size: image.manifest.byteLength }, 'application/sig')
  t.is((await request(server, `/v2/app/manifests/${sig.digest}`, { method: 'DELETE' })).status, 202)
  t.deepEqual((await request(server, `/v2/app/referrers/${image.digest}`)).json.manifests, [])
})

test('manifests listed under a tag-schema fallback tag count as referrers', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const old = await imageManifest(server, 'app', { configMediaType: 'application/vnd.old.sig' })
  await putManifest(server, 'app', old.digest, old.manifest, OCI_MANIFEST)
  const fallback = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: old.digest, size: old.manifest.byteLength, artifactType: 'application/vnd.old.sig' }],
    }),
  )
  const tag = image.digest.replace(':', '-')
  t.is((await putManifest(server, 'app', tag, fallback, OCI_INDEX)).status, 201)
  const list = await request(server, `/v2/app/referrers/${image.digest}`)
  t.deepEqual(
    list.json.manifests.map((m: { digest: string }) => m.digest),
    [old.digest],
  )
})

/** Runs `task` over `items`, `width` at a time. */
async function inParallel<T>(items: readonly T[], width: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await task(items[next++] as T)
    }),
  )
}

/** Pushes `count` artifacts referring to `subject` (one empty blob shared); returns their digests. */
async function pushManyArtifacts(
  server: Parameters<typeof request>[0],
  name: string,
  subject: { digest: string; size: number },
  count: number,
  describe: (i: number) => { artifactType: string; annotations: Record<string, string> },
): Promise<string[]> {
  const empty = await pushBlob(server, name, '{}')
  const digests: string[] = []
  await inParallel(
    Array.from({ length: count }, (_, i) => i),
    16,
    async i => {
      const { artifactType, annotations } = describe(i)
      const manifest = artifactManifest(empty, subject, artifactType, annotations)
      const put = await putManifest(server, name, sha256(manifest), manifest, OCI_MANIFEST)
      if (put.status !== 201) throw new Error(`PUT referrer ${i}: ${put.status} ${put.body.toString()}`)
      digests.push(sha256(manifest))
    },
  )
  return digests.sort()
}

/** GETs `path` and every page its Link headers lead to, as a client does. */
async function allPages(server: Parameters<typeof request>[0], path: string): Promise<HttpResponse[]> {
  const pages: HttpResponse[] = []
  for (let next: string | undefined = path; next !== undefined;) {
    const page = await request(server, next)
    if (page.status !== 200) throw new Error(`GET ${next}: ${page.status}`)
    pages.push(page)
    const link = page.headers.link as string | undefined
    next = link === undefined ? undefined : /^<([^>]+)>; rel="next"$/.exec(link)?.[1]
    if (link !== undefined && next === undefined) throw new Error(`unreadable Link: ${link}`)
    if (pages.length > 50) throw new Error('pagination does not end')
  }
  return pages
}

function digestsOf(pages: readonly HttpResponse[]): string[] {
  return pages.flatMap(page => page.json.manifests.map((m: { digest: string }) => m.digest))
}

test(`more than ${REFERRERS_PAGE_ENTRIES} referrers come in pages linked by Link rel="next", each a valid index, none repeated`, async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const subject = { digest: image.digest, size: image.manifest.byteLength }
  const count = REFERRERS_PAGE_ENTRIES + 10
  const digests = await pushManyArtifacts(server, 'app', subject, count, i => ({ artifactType: 'application/sig', annotations: { n: String(i) } }))

  const pages = await allPages(server, `/v2/app/referrers/${image.digest}`)
  t.is(pages.length, 2)
  const [first, second] = pages as [HttpResponse, HttpResponse]
  t.is(first.json.manifests.length, REFERRERS_PAGE_ENTRIES)
  t.is(first.headers.link, `</v2/app/referrers/${image.digest}?last=${encodeURIComponent(digests[REFERRERS_PAGE_ENTRIES - 1] as string)}>; rel="next"`)
  t.is(second.json.manifests.length, 10)
  t.is(second.headers.link, undefined)
  for (const page of pages) {
    t.is(page.headers['content-type'], OCI_INDEX)
    t.is(page.json.schemaVersion, 2)
    t.is(page.json.mediaType, OCI_INDEX)
    t.is(page.headers['oci-filters-applied'], undefined)
  }
  // Every referrer exactly once, in digest order, across the pages.
  t.deepEqual(digestsOf(pages), digests)
})

test('pages stay under the byte bound however large the annotations, and the artifactType filter holds on every page', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const subject = { digest: image.digest, size: image.manifest.byteLength }
  // 240 referrers with 10 KiB of annotations each (2.4 MiB of descriptors), types a and b alternating.
  const big = 'x'.repeat(10 * 1024)
  const digests = await pushManyArtifacts(server, 'app', subject, 240, i => ({
    artifactType: i % 2 === 0 ? 'application/a' : 'application/b',
    annotations: { 'org.example.big': big, 'org.example.i': String(i) },
  }))

  const pages = await allPages(server, `/v2/app/referrers/${image.digest}`)
  t.is(pages.length, 3)
  for (const page of pages) t.true(page.body.byteLength <= REFERRERS_PAGE_BYTES + 100, `page of ${page.body.byteLength} bytes`)
  t.deepEqual(digestsOf(pages), digests)

  const filtered = await allPages(server, `/v2/app/referrers/${image.digest}?artifactType=${encodeURIComponent('application/a')}`)
  t.is(filtered.length, 2)
  for (const page of filtered) {
    t.is(page.headers['oci-filters-applied'], 'artifactType')
    t.true(page.json.manifests.length > 0)
    t.true(page.json.manifests.every((m: { artifactType: string }) => m.artifactType === 'application/a'))
  }
  t.true(String(filtered[0]?.headers.link).includes('artifactType=application%2Fa'))
  t.is(digestsOf(filtered).length, 120)
  const typeA = pages.flatMap(page => page.json.manifests).filter((m: { artifactType: string }) => m.artifactType === 'application/a')
  t.deepEqual(
    digestsOf(filtered),
    typeA.map((m: { digest: string }) => m.digest),
  )
})

test('a referrer whose descriptor alone is over the byte bound still comes, on a page of its own', async t => {
  const { server } = await startApp(t)
  const image = await imageManifest(server, 'app')
  await putManifest(server, 'app', 'v1', image.manifest, OCI_MANIFEST)
  const subject = { digest: image.digest, size: image.manifest.byteLength }
  const huge = 'y'.repeat(REFERRERS_PAGE_BYTES + 1024)
  const digests = await pushManyArtifacts(server, 'app', subject, 3, i => ({
    artifactType: 'application/sig',
    annotations: i === 1 ? { 'org.example.huge': huge } : ({ 'org.example.i': String(i) } as Record<string, string>),
  }))
  const pages = await allPages(server, `/v2/app/referrers/${image.digest}`)
  t.deepEqual(digestsOf(pages), digests)
  const hugePage = pages.find(page => page.body.byteLength > REFERRERS_PAGE_BYTES)
  t.is(hugePage?.json.manifests.length, 1)
})
