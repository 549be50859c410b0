/**
 * Fresh random content for every push: raw blobs for curl and OCI image layouts for skopeo.
 *
 * Layers are real `tar+gzip` streams, but gzip in "stored" (uncompressed) deflate blocks: random
 * data does not compress anyway, so this is what an already-compressed layer looks like on the
 * wire, and it is written at memory speed instead of the ~400 MB/s zlib manages at level 0.
 * Digests of both the blob and the uncompressed tar (the config's diff_id) are exact.
 */
import crypto from 'node:crypto'
import { mkdir, open, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import zlib from 'node:zlib'

const CHUNK = 1 << 20

export interface BlobRef {
  digest: string
  size: number
}

/** Yields `size` fresh random bytes in 1 MiB buffers (the buffer is reused: consume before next). */
function* randomChunks(size: number): Generator<Buffer> {
  const buffer = Buffer.allocUnsafe(CHUNK)
  for (let left = size; left > 0; left -= CHUNK) {
    const n = Math.min(CHUNK, left)
    crypto.randomFillSync(buffer, 0, n)
    yield n === CHUNK ? buffer : buffer.subarray(0, n)
  }
}

function tarHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(512)
  const put = (value: string, offset: number, length: number) => header.write(value, offset, length, 'ascii')
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, '0') + '\0'
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8)
  put(octal(0, 8), 116, 8)
  put(octal(size, 12), 124, 12) // 11 octal digits: up to 8 GiB, enough for the 5 GiB case
  put(octal(Math.floor(Date.now() / 1000), 12), 136, 12)
  put('        ', 148, 8)
  put('0', 156, 1)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  let sum = 0
  for (const byte of header) sum += byte
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  return header
}

/** A tar archive holding one file of `size` random bytes. */
function* tarOfRandomFile(size: number): Generator<Buffer> {
  yield tarHeader('random.bin', size)
  yield* randomChunks(size)
  const pad = (512 - (size % 512)) % 512
  yield Buffer.alloc(pad + 1024) // padding, then the two zero blocks that end an archive
}

/** Wraps a byte stream in gzip using stored deflate blocks (RFC 1951 §3.2.4, RFC 1952). */
function* gzipStored(input: Iterable<Buffer>): Generator<Buffer> {
  yield Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff])
  let crc = 0
  let total = 0
  for (const chunk of input) {
    crc = zlib.crc32(chunk, crc)
    total += chunk.length
    const blocks = Math.ceil(chunk.length / 65535)
    const out = Buffer.allocUnsafe(chunk.length + blocks * 5)
    let o = 0
    for (let i = 0; i < chunk.length; i += 65535) {
      const n = Math.min(65535, chunk.length - i)
      out[o] = 0x00 // BFINAL=0, BTYPE=00 (stored); the final block is the empty one below
      out.writeUInt16LE(n, o + 1)
      out.writeUInt16LE(n ^ 0xffff, o + 3)
      chunk.copy(out, o + 5, i, i + n)
      o += 5 + n
    }
    yield out
  }
  const trailer = Buffer.alloc(13)
  trailer.set([0x01, 0x00, 0x00, 0xff, 0xff]) // empty final stored block
  trailer.writeUInt32LE(crc >>> 0, 5)
  trailer.writeUInt32LE(total % 2 ** 32, 9)
  yield trailer
}

/** Writes chunks to `file`, returning the sha256 digest and size of what was written. */
async function writeChunks(file: string, chunks: Iterable<Buffer>, onChunk?: (chunk: Buffer) => void): Promise<BlobRef> {
  const hash = crypto.createHash('sha256')
  const handle = await open(file, 'w')
  let size = 0
  try {
    for (const chunk of chunks) {
      onChunk?.(chunk)
      hash.update(chunk)
      size += chunk.length
      let written = 0
      while (written < chunk.length) written += (await handle.write(chunk, written)).bytesWritten
    }
  } finally {
    await handle.close()
  }
  return { digest: 'sha256:' + hash.digest('hex'), size }
}

/** A raw blob of fresh random bytes, for curl uploads. */
export function writeRandomBlob(file: string, size: number): Promise<BlobRef> {
  return writeChunks(file, randomChunks(size))
}

export interface ImageLayout {
  dir: string
  /** Reference for skopeo: `oci:<dir>:latest`. */
  reference: string
  layers: BlobRef[]
  config: BlobRef
  manifest: BlobRef
  /** Sum of layer sizes: the bytes a push or pull moves. */
  layerBytes: number
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const manifestMediaType = OCI_MANIFEST

/** An OCI image layout with one fresh random `tar+gzip` layer per entry of `layerSizes`. */
export async function writeImageLayout(dir: string, layerSizes: readonly number[]): Promise<ImageLayout> {
  const blobs = path.join(dir, 'blobs', 'sha256')
  await mkdir(blobs, { recursive: true })
  const layers: BlobRef[] = []
  const diffIds: string[] = []
  for (const [index, size] of layerSizes.entries()) {
    const temp = path.join(blobs, `.layer-${index}`)
    const tarHash = crypto.createHash('sha256')
    // gzipStored yields the tar chunks it wraps; hash them before they are wrapped via a tee.
    const tee = function* (): Generator<Buffer> {
      for (const chunk of tarOfRandomFile(size)) {
        tarHash.update(chunk)
        yield chunk
      }
    }
    const ref = await writeChunks(temp, gzipStored(tee()))
    await rename(temp, path.join(blobs, ref.digest.slice(7)))
    layers.push(ref)
    diffIds.push('sha256:' + tarHash.digest('hex'))
  }
  const putJson = async (value: unknown): Promise<BlobRef> => {
    const bytes = Buffer.from(JSON.stringify(value))
    const digest = 'sha256:' + crypto.createHash('sha256').update(bytes).digest('hex')
    await writeFile(path.join(blobs, digest.slice(7)), bytes)
    return { digest, size: bytes.length }
  }
  const config = await putJson({
    created: new Date().toISOString(),
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: diffIds },
  })
  const manifest = await putJson({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map(layer => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer })),
  })
  await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  await writeFile(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: OCI_MANIFEST, ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  )
  return {
    dir,
    reference: `oci:${dir}:latest`,
    layers,
    config,
    manifest,
    layerBytes: layers.reduce((sum, layer) => sum + layer.size, 0),
  }
}
