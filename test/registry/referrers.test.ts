import { request } from '../helpers/http.js'
import test from 'ava'
import { errorCode, imageManifest, OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, startApp } from './fixtures.js'

const EMPTY_CONFIG = 'application/vnd.oci.empty.v1+json'

/** Pushes an artifact manifest (empty config) whose subject is `subject`. */
async function pushArtifact(
  server: Parameters<typeof request>[0],
  name: string,
  subject: { digest: string; size: number },
  artifactType: string,
  annotations?: Record<string, string>,
) {
  const empty = await pushBlob(server, name, '{}')
  const body: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: EMPTY_CONFIG, digest: empty, size: 2 },
    layers: [{ mediaType: EMPTY_CONFIG, digest: empty, size: 2 }],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.size },
  }
  if (annotations) body['annotations'] = annotations
  const manifest = Buffer.from(JSON.stringify(body))
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
  t.deepEqual(list.json.manifests.map((m: { digest: string }) => m.digest), [b.digest])
  t.is((await request(server, `/v2/app/referrers/${image.digest}`)).headers['oci-filters-applied'], undefined)
})

test('a subject need not exist; its referrers are listed anyway', async t => {
  const { server } = await startApp(t)
  const missing = { digest: sha256('not pushed'), size: 10 }
  const sig = await pushArtifact(server, 'app', missing, 'application/sig')
  t.is(sig.put.status, 201)
  const list = await request(server, `/v2/app/referrers/${missing.digest}`)
  t.deepEqual(list.json.manifests.map((m: { digest: string }) => m.digest), [sig.digest])
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
  t.deepEqual(list.json.manifests.map((m: { digest: string }) => m.digest), [old.digest])
})
