/** Shared helpers for the registry handler tests: an app on 127.0.0.1:0 and push helpers. */
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { createRegistryApp, type RegistryApp, type RegistryAppOptions } from '../../src/registry/app.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { InMemoryDriver } from '../../src/storage/driver/in-memory.js'
import type { StorageDriver } from '../../src/storage/driver/storage-driver.js'
import { request, type HttpResponse } from '../helpers/http.js'
import { startS3, uniquePrefix, type S3Server } from '../helpers/ceph.js'

export interface Running {
  server: Server
  app: RegistryApp
  driver: StorageDriver
  /** Filesystem root (`<datadir>/data`) when the driver is a FilesystemDriver. */
  root?: string
}

// BERTH_TEST_DRIVER=s3: one Ceph RGW per test file (ava runs each file in its own process),
// started on first use; every app gets its own key prefix in the shared bucket.
let s3Server: Promise<S3Server> | undefined
if (process.env['BERTH_TEST_DRIVER'] === 's3') {
  test.after.always(async () => {
    if (s3Server !== undefined) await (await s3Server.catch(() => undefined))?.stop()
  })
}

async function testDriver(t: ExecutionContext): Promise<StorageDriver> {
  const kind = process.env['BERTH_TEST_DRIVER']
  if (kind === 'filesystem') return new FilesystemDriver(await tempRoot(t))
  if (kind === 's3') {
    // Loaded on first use: the other drivers' runs need no S3 client.
    const { s3DriverFor } = await import('../helpers/s3.js')
    return s3DriverFor(await (s3Server ??= startS3()), uniquePrefix('registry'))
  }
  return new InMemoryDriver()
}

/**
 * The app on 127.0.0.1:0. The driver defaults to in-memory; `BERTH_TEST_DRIVER=filesystem` runs
 * the same handler tests on a temporary folder instead, `BERTH_TEST_DRIVER=s3` on a real S3
 * server (Ceph RGW, test/helpers/ceph.ts).
 */
export async function startApp(t: ExecutionContext, options: Partial<RegistryAppOptions> = {}): Promise<Running> {
  const driver = options.driver ?? (await testDriver(t))
  const app = createRegistryApp({ ...options, driver })
  const server = createServer(app.handle)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
    await app.close()
  })
  return { server, app, driver }
}

export async function tempRoot(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-registry-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return join(dir, 'data')
}

export async function startFilesystemApp(t: ExecutionContext, root?: string, options: Partial<RegistryAppOptions> = {}): Promise<Running> {
  const dataRoot = root ?? (await tempRoot(t))
  const running = await startApp(t, { ...options, driver: new FilesystemDriver(dataRoot) })
  return { ...running, root: dataRoot }
}

export function sha256(content: Buffer | string): string {
  return `sha256:${createHash('sha256').update(content).digest('hex')}`
}

export function sha512(content: Buffer | string): string {
  return `sha512:${createHash('sha512').update(content).digest('hex')}`
}

/** Pushes a blob with POST + PUT (monolithic, two requests). */
export async function pushBlob(server: Server | string, name: string, content: Buffer | string): Promise<string> {
  const digest = sha256(content)
  const start = await request(server, `/v2/${name}/blobs/uploads/`, { method: 'POST' })
  if (start.status !== 202) throw new Error(`POST upload: ${start.status} ${start.body.toString()}`)
  // Reuse Location as given (registry:2 sends it absolute and with a `_state` query).
  const location = String(start.headers.location).replace(/^https?:\/\/[^/]+/, '')
  const done = await request(server, `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/octet-stream' },
    body: Buffer.from(content),
  })
  if (done.status !== 201) throw new Error(`PUT upload: ${done.status} ${done.body.toString()}`)
  return digest
}

export interface PushedImage {
  manifest: Buffer
  digest: string
  config: { digest: string; size: number }
  layers: { digest: string; size: number }[]
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'

/** Builds and pushes config + layers; returns the manifest bytes (not pushed yet). */
export async function imageManifest(
  server: Server | string,
  name: string,
  options: { mediaType?: string; layers?: number; extra?: Record<string, unknown>; configMediaType?: string } = {},
): Promise<PushedImage> {
  const mediaType = options.mediaType ?? OCI_MANIFEST
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(8).toString('hex') }),
  )
  const configDigest = await pushBlob(server, name, config)
  const layers = []
  for (let i = 0; i < (options.layers ?? 1); i++) {
    const layer = randomBytes(1000 + i)
    layers.push({ digest: await pushBlob(server, name, layer), size: layer.byteLength })
  }
  const docker = mediaType === DOCKER_MANIFEST
  const body = {
    schemaVersion: 2,
    mediaType,
    config: {
      mediaType: options.configMediaType ?? (docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json'),
      digest: configDigest,
      size: config.byteLength,
    },
    layers: layers.map(l => ({
      mediaType: docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: l.digest,
      size: l.size,
    })),
    ...options.extra,
  }
  const manifest = Buffer.from(JSON.stringify(body, null, 3))
  return { manifest, digest: sha256(manifest), config: { digest: configDigest, size: config.byteLength }, layers }
}

export async function putManifest(server: Server | string, name: string, reference: string, manifest: Buffer, contentType: string): Promise<HttpResponse> {
  return request(server, `/v2/${name}/manifests/${reference}`, { method: 'PUT', headers: { 'Content-Type': contentType }, body: manifest })
}

export function errorCode(response: HttpResponse): string | undefined {
  return response.json?.errors?.[0]?.code
}
