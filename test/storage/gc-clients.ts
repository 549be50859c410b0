/**
 * What the GC tests (gc.test.ts on the filesystem, gc-s3.test.ts on S3) do as a registry client
 * would: delete a manifest, pull an image and check every byte, and push the way docker does
 * while a collector runs. One copy, so both drivers are held to the same client behaviour.
 */
import type { Server } from 'node:http'
import type { ExecutionContext } from 'ava'
import { request } from '../helpers/http.js'
import { OCI_INDEX, OCI_MANIFEST, pushBlob, putManifest, sha256, type Running } from '../registry/fixtures.js'

/** DELETE a manifest; anything but 202 throws (the tests' setup must not fail silently). */
export async function deleteManifest(running: Running, name: string, reference: string): Promise<void> {
  const response = await request(running.server, `/v2/${name}/manifests/${reference}`, { method: 'DELETE' })
  if (response.status !== 202) throw new Error(`DELETE ${reference}: ${response.status}`)
}

/** Pulls `name:reference` like a client (an index: each child in turn) and checks every byte against its digest. */
export async function assertPulls(t: ExecutionContext, running: Running, name: string, reference: string): Promise<void> {
  const manifest = await request(running.server, `/v2/${name}/manifests/${reference}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } })
  t.is(manifest.status, 200, `${name}:${reference} manifest`)
  const body = JSON.parse(manifest.body.toString('utf8'))
  if (Array.isArray(body.manifests)) {
    for (const child of body.manifests) await assertPulls(t, running, name, child.digest)
    return
  }
  for (const descriptor of [body.config, ...body.layers]) {
    const blob = await request(running.server, `/v2/${name}/blobs/${descriptor.digest}`)
    t.is(blob.status, 200, `${name} blob ${descriptor.digest}`)
    t.is(sha256(blob.body), descriptor.digest)
  }
}

/** The OCI image manifest of `config` and `layers` (gzip layer media type), as a client builds it. */
export function ociManifest(config: Buffer, layers: readonly Buffer[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.byteLength },
      layers: layers.map(l => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(l), size: l.byteLength })),
    }),
  )
}

/**
 * A client's push: HEAD each blob, try a cross-repository mount for a missing one (as clients do
 * for a blob they pushed elsewhere), upload it if that is refused, then PUT the manifest; on
 * MANIFEST_BLOB_UNKNOWN (a collector took a blob meanwhile) all of it again, as docker does, up to
 * `attempts` times. `server()` is asked before each request (several instances take turns).
 * Returns how many retries it took; any other failure, or running out of attempts, throws.
 */
export async function pushRetrying(
  server: () => Server,
  name: string,
  tag: string,
  config: Buffer,
  layers: readonly Buffer[],
  attempts: number,
): Promise<number> {
  let retries = 0
  for (let attempt = 0; attempt < attempts; attempt++) {
    for (const blob of [config, ...layers]) {
      const head = await request(server(), `/v2/${name}/blobs/${sha256(blob)}`, { method: 'HEAD' })
      if (head.status !== 200) {
        const mount = await request(server(), `/v2/${name}/blobs/uploads/?mount=${sha256(blob)}`, { method: 'POST' })
        if (mount.status !== 201) {
          if (mount.status === 202) await request(server(), String(mount.headers.location), { method: 'DELETE' })
          await pushBlob(server(), name, blob)
        }
      }
    }
    const manifest = ociManifest(config, layers)
    const put = await putManifest(server(), name, tag, manifest, OCI_MANIFEST)
    if (put.status === 201) return retries
    if (put.json?.errors?.[0]?.code !== 'MANIFEST_BLOB_UNKNOWN') throw new Error(`PUT ${put.status} ${put.body.toString()}`)
    retries++
  }
  throw new Error('push kept failing')
}
