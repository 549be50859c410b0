/**
 * Builds OCI image layouts on disk, offline, for real clients: `skopeo copy oci:<dir>:<tag> docker://…`.
 *
 * Layers are real gzip'd tar archives (one file of random bytes each, so podman and docker can unpack
 * them and no two layers are alike: clients skip blobs a registry already has). They are streamed to
 * disk and hashed while they stream, so a layer of any size costs no memory.
 *
 * Layout (image-spec `image-layout.md`): `oci-layout`, `index.json` (one entry per tag, named by the
 * `org.opencontainers.image.ref.name` annotation) and `blobs/sha256/<hex>`.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip'
const REF_NAME = 'org.opencontainers.image.ref.name'

export interface Platform {
  architecture: string
  os: string
  variant?: string
}

export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  platform?: Platform
  annotations?: Record<string, string>
}

export interface LayerDescriptor extends Descriptor {
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: string
}

export interface BuiltImage {
  manifest: Descriptor
  /** The manifest exactly as stored; its sha256 is manifest.digest. */
  manifestBytes: Buffer
  config: Descriptor
  layers: LayerDescriptor[]
  /** config + layers: every blob the manifest references. */
  blobs: Descriptor[]
}

export interface BuiltIndex {
  index: Descriptor
  indexBytes: Buffer
  images: BuiltImage[]
  /** Every blob of every child image. */
  blobs: Descriptor[]
}

export function sha256Digest(bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex')
}

/** sha256 digest of a file, streamed. */
export async function fileDigest(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return 'sha256:' + hash.digest('hex')
}

/** A ustar header for one regular file (name ≤ 100 bytes). */
function tarHeader(name: string, size: number, mtime: number): Buffer {
  const header = Buffer.alloc(512, 0)
  const put = (text: string, offset: number, length: number) => header.write(text, offset, length, 'ascii')
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, '0') + '\0'
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8)
  put(octal(0, 8), 116, 8)
  put(octal(size, 12), 124, 12)
  put(octal(mtime, 12), 136, 12)
  put('        ', 148, 8) // checksum is computed with its own field as spaces
  put('0', 156, 1)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  put('root', 265, 32)
  put('root', 297, 32)
  let sum = 0
  for (const byte of header) sum += byte
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  return header
}

async function* randomTar(fileName: string, size: number): AsyncGenerator<Buffer> {
  yield tarHeader(fileName, size, Math.floor(Date.now() / 1000))
  const chunk = 256 * 1024
  for (let left = size; left > 0; left -= chunk) yield randomBytes(Math.min(chunk, left))
  const padding = (512 - (size % 512)) % 512
  if (padding) yield Buffer.alloc(padding)
  yield Buffer.alloc(1024) // end-of-archive marker
}

function hashing(hash: ReturnType<typeof createHash>, counter: { bytes: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      counter.bytes += chunk.length
      callback(null, chunk)
    },
  })
}

/** An OCI image layout folder that images and indexes are added to. */
export class OciLayout {
  readonly dir: string
  private readonly tags: Descriptor[] = []
  private counter = 0
  private indexWrites: Promise<void> = Promise.resolve()

  private constructor(dir: string) {
    this.dir = dir
  }

  /** Creates (or adopts an empty) layout folder. */
  static async create(dir: string): Promise<OciLayout> {
    await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true })
    await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
    const layout = new OciLayout(dir)
    await layout.writeIndex()
    return layout
  }

  /** skopeo / podman reference of a tag in this layout. */
  ref(tag: string): string {
    return `oci:${this.dir}:${tag}`
  }

  blobPath(digest: string): string {
    const [algorithm, hex] = digest.split(':')
    return path.join(this.dir, 'blobs', algorithm!, hex!)
  }

  async readBlob(digest: string): Promise<Buffer> {
    return readFile(this.blobPath(digest))
  }

  /** Stores bytes as a blob; returns its descriptor. */
  async addBlob(mediaType: string, bytes: Uint8Array): Promise<Descriptor> {
    const digest = sha256Digest(bytes)
    await writeFile(this.blobPath(digest), bytes)
    return { mediaType, digest, size: bytes.length }
  }

  /** A gzip'd tar holding one file of `size` random bytes. */
  async addLayer(size: number): Promise<LayerDescriptor> {
    const temp = path.join(this.dir, 'blobs', `.layer-${process.pid}-${++this.counter}`)
    const diff = createHash('sha256')
    const compressed = createHash('sha256')
    const diffCount = { bytes: 0 }
    const compressedCount = { bytes: 0 }
    await pipeline(
      Readable.from(randomTar(`layer-${randomBytes(6).toString('hex')}.bin`, size)),
      hashing(diff, diffCount),
      createGzip({ level: 1 }),
      hashing(compressed, compressedCount),
      createWriteStream(temp),
    )
    const digest = 'sha256:' + compressed.digest('hex')
    await rename(temp, this.blobPath(digest))
    return { mediaType: OCI_LAYER_GZIP, digest, size: compressedCount.bytes, diffId: 'sha256:' + diff.digest('hex') }
  }

  /**
   * An image manifest with one layer per entry of `layers` (payload sizes in bytes). Tagged `tag` in
   * index.json when given.
   */
  async addImage(options: { tag?: string; layers: readonly number[]; platform?: Platform; annotations?: Record<string, string> }): Promise<BuiltImage> {
    const platform = options.platform ?? { architecture: 'amd64', os: 'linux' }
    const layers: LayerDescriptor[] = []
    for (const size of options.layers) layers.push(await this.addLayer(size))
    const configJson = {
      created: new Date().toISOString(),
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Cmd: ['/hello'], Labels: { 'org.berth.test': randomBytes(8).toString('hex') } },
      rootfs: { type: 'layers', diff_ids: layers.map(layer => layer.diffId) },
      history: layers.map(() => ({ created_by: 'berth test kit' })),
    }
    const config = await this.addBlob(OCI_CONFIG, Buffer.from(JSON.stringify(configJson)))
    const manifestJson = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config,
      layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
      ...(options.annotations ? { annotations: options.annotations } : {}),
    }
    const manifestBytes = Buffer.from(JSON.stringify(manifestJson, null, 2))
    const manifest = await this.addBlob(OCI_MANIFEST, manifestBytes)
    if (options.tag) await this.tag(options.tag, manifest)
    return { manifest, manifestBytes, config, layers, blobs: [config, ...layers] }
  }

  /** An image index with one image per platform (each with its own fresh layers), tagged `tag`. */
  async addIndex(options: { tag?: string; platforms: readonly Platform[]; layers: readonly number[] }): Promise<BuiltIndex> {
    const images: BuiltImage[] = []
    for (const platform of options.platforms) images.push(await this.addImage({ layers: options.layers, platform }))
    const indexJson = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: images.map((image, i) => ({ ...image.manifest, platform: options.platforms[i] })),
    }
    const indexBytes = Buffer.from(JSON.stringify(indexJson, null, 2))
    const index = await this.addBlob(OCI_INDEX, indexBytes)
    if (options.tag) await this.tag(options.tag, index)
    return { index, indexBytes, images, blobs: images.flatMap(image => image.blobs) }
  }

  /** Points `tag` at a manifest or index already in the layout. */
  async tag(tag: string, descriptor: Descriptor): Promise<void> {
    const existing = this.tags.findIndex(entry => entry.annotations?.[REF_NAME] === tag)
    if (existing >= 0) this.tags.splice(existing, 1)
    this.tags.push({ mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size, annotations: { [REF_NAME]: tag } })
    await this.writeIndex()
  }

  /** Writes index.json atomically; writes are queued so concurrent tests adding tags never race. */
  private writeIndex(): Promise<void> {
    const write = async () => {
      const file = path.join(this.dir, 'index.json')
      const temp = `${file}.${process.pid}-${++this.counter}.tmp`
      await writeFile(temp, JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: this.tags }, null, 2))
      await rename(temp, file)
    }
    this.indexWrites = this.indexWrites.then(write, write)
    return this.indexWrites
  }
}
