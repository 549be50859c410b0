/**
 * StorageDriver on any S3-compatible object store (AWS S3, Ceph RGW, MinIO, R2, ...).
 *
 * Keys: the driver path `/docker/registry/v2/...` is the key `<prefix>/docker/registry/v2/...`
 * (no leading slash), which is what distribution's s3 driver writes with `rootdirectory: /<prefix>`,
 * so a bucket written by registry:2 is served as is and the other way round. Directories do not
 * exist on S3: a "directory" is there while some key lies below it (as in the in-memory driver).
 *
 * Consistency: S3 (AWS since 2020, Ceph RGW, MinIO) gives strong read-after-write and
 * list-after-write for PUT, GET, HEAD and LIST, and a PUT or a completed multipart upload replaces
 * a key atomically; those are the only guarantees relied on here. Nothing is cached between
 * calls, so any number of processes can share the bucket.
 *
 * Writers: bytes are gathered into parts of `partSize` (≥ 5 MiB, S3's minimum for every part but
 * the last) and streamed through a multipart upload, at most two parts in memory per writer, so a
 * multi-GiB blob never sits in memory. Nothing is visible at the key until the upload completes.
 * An append writer continues an existing object by making it the first part(s) of a new multipart
 * upload with a server-side UploadPartCopy (guarded by the ETag seen at open, so a concurrent
 * change fails instead of being mixed in); an object under 5 MiB cannot be a non-final part, so
 * its bytes are read back (at most 5 MiB) and sent again. `close()` and `commit()` both complete
 * the upload: after either, the key holds every byte so far and another process can continue it.
 * `cancel()` aborts the multipart upload, which leaves the object as it was at open.
 * Like distribution's driver, an upload sent in many small chunks therefore costs a server-side
 * copy of what is already there per chunk; the usual clients (docker, skopeo, podman) send one.
 *
 * Server quirks handled (see the Ceph/Swift notes the tests were built with): request and
 * response checksums only "when required" (stream bodies with the SDK's default aws-chunked
 * trailers fail on Ceph and Swift), Content-MD5 on DeleteObjects (Swift requires it), ETags
 * compared without quotes, an empty ETag from CompleteMultipartUpload is never used, GetObject
 * `PartNumber` is never used, and a 304 is not an error.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import {
  assertValidPath,
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type LockOptions,
  type StorageDriver,
  type StoreLock,
} from './storage-driver.js'
import { s3Get, S3GetError } from './s3-get.js'
import { takeStoreLock } from './store-lock.js'

/** S3's smallest allowed part (every part but the last). */
export const MIN_PART_SIZE = 5 * 1024 * 1024
/** S3's largest single copy (CopyObject, and one UploadPartCopy range). */
const MAX_COPY_SIZE = 5 * 1024 * 1024 * 1024
/** Ranges for copying large objects in parts: well under the 5 GiB limit, few requests. */
const COPY_PART_SIZE = 1024 * 1024 * 1024
/** S3's limit on the number of parts of one multipart upload. */
const MAX_PARTS = 10_000
/** Keys per DeleteObjects request (the S3 maximum). */
const DELETE_BATCH = 1000

export interface S3DriverOptions {
  /** The bucket (must exist). */
  bucket: string
  /** Folder inside the bucket, as distribution's `rootdirectory`; '' or '/' for the bucket root. */
  prefix?: string
  /** `https://s3.example.com`; omitted for AWS itself. A custom endpoint uses path-style addressing. */
  endpoint?: string
  region?: string
  /** Omitted: the AWS SDK's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, roles ...). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /** Defaults to true when `endpoint` is set (Ceph, MinIO and most self-hosted servers need it). */
  forcePathStyle?: boolean
  /**
   * Multipart part size in bytes, ≥ 5 MiB; default 8 MiB (80 GiB per object at 10 000 parts). A
   * writer holds at most two parts (one filling, one in flight), so this bounds memory per upload.
   */
  partSize?: number
  /**
   * How long one request may wait for the store to start answering (connecting, sending and
   * the response headers; a download's body may then take as long as it needs). Default 120 s.
   * Without it a store that accepts a request and never answers (a Ceph RGW whose OSD died on a
   * full disk did) holds the request and its client forever; with it the SDK retries (3 attempts
   * in all) and the client then gets an error.
   */
  requestTimeoutMs?: number
  /** A ready client (tests); the connection options above are then ignored. */
  client?: S3Client
  /**
   * Answer blob GETs with a redirect to a presigned URL (distribution's default for S3), so the
   * bytes go from the store to the client without passing through Berth. Clients must be able to
   * reach the endpoint. Default false.
   */
  redirect?: boolean
  /**
   * Stream `reader()` downloads over the driver's own sockets into pooled buffers (s3-get.ts)
   * instead of through the SDK's HTTP stack: far less garbage and parsing per byte. Default true.
   */
  directReads?: boolean
}

/** How long a presigned URL works: distribution's 20 minutes, long enough to start a big download. */
const REDIRECT_EXPIRY_SECONDS = 20 * 60

/** See S3DriverOptions.requestTimeoutMs. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000

/** The client settings real S3 servers need (see the module comment). */
export function createS3Client(options: S3DriverOptions): S3Client {
  // The SDK warns on Node 20 that *future* releases need Node 22; we pin this release on purpose
  // (package.json), so the warning would only alarm operators. An explicit setting wins.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true'
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  const client = new S3Client({
    region: options.region ?? process.env['AWS_REGION'] ?? process.env['AWS_DEFAULT_REGION'] ?? 'us-east-1',
    ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
    forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
    ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
    // The SDK's default (since 3.729) sends stream bodies as aws-chunked with a checksum trailer,
    // which Ceph RGW (411) and Swift (501) refuse.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: Math.min(10_000, requestTimeoutMs),
      requestTimeout: requestTimeoutMs,
      // Without it the SDK only logs a warning when requestTimeout passes, and goes on waiting.
      throwOnRequestTimeout: true,
    },
  })
  client.middlewareStack.add(
    (next, context) => async args => {
      // Only DeleteObjects gets it: Swift's s3api requires Content-MD5 there; AWS and Ceph accept it.
      const request = (args as { request?: { headers?: Record<string, string>; body?: unknown } }).request
      if (
        context.commandName === 'DeleteObjectsCommand' &&
        request?.headers !== undefined &&
        (typeof request.body === 'string' || request.body instanceof Uint8Array)
      ) {
        request.headers['content-md5'] = createHash('md5').update(request.body).digest('base64')
      }
      return next(args)
    },
    { step: 'build', name: 'berthDeleteObjectsContentMd5' },
  )
  return client
}

interface S3ErrorShape {
  name?: string
  Code?: string
  $metadata?: { httpStatusCode?: number }
}

function httpStatus(error: unknown): number | undefined {
  return (error as S3ErrorShape | undefined)?.$metadata?.httpStatusCode
}

function isNotFound(error: unknown): boolean {
  const e = error as S3ErrorShape | undefined
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.Code === 'NoSuchKey' || httpStatus(error) === 404
}

/** ETags arrive quoted from AWS and unquoted from some Ceph calls; compare them bare. */
export function bareEtag(etag: string | undefined): string | undefined {
  return etag?.replace(/^W\//, '').replace(/^"|"$/g, '')
}

export class S3Driver implements StorageDriver {
  readonly name = 's3'
  /** A copy and a delete, no rename (the copy is a new object, modified now); any number of instances on any machines share a bucket. */
  readonly capabilities = { atomicRename: false, sharedAcrossHosts: true, moveRefreshesModTime: true }
  readonly client: S3Client
  readonly bucket: string
  readonly prefix: string
  readonly partSize: number
  readonly endpoint: string | undefined
  readonly redirect: boolean
  readonly #directReads: boolean
  readonly #requestTimeoutMs: number

  constructor(options: S3DriverOptions) {
    if (!options.bucket) throw new TypeError('S3 driver: a bucket is required')
    this.bucket = options.bucket
    this.prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '')
    this.partSize = options.partSize ?? 8 * 1024 * 1024
    if (!Number.isSafeInteger(this.partSize) || this.partSize < MIN_PART_SIZE) {
      throw new TypeError(`S3 driver: partSize must be at least ${MIN_PART_SIZE} bytes`)
    }
    this.endpoint = options.endpoint
    this.redirect = options.redirect === true
    this.#directReads = options.directReads !== false
    this.#requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
    this.client = options.client ?? createS3Client(options)
  }

  /**
   * One cheap request (a 1-key listing under the prefix) that proves the endpoint, bucket and
   * credentials work; rejects with a StorageDriverError that says what to fix.
   */
  async check(): Promise<void> {
    const where = `bucket ${JSON.stringify(this.bucket)}${this.endpoint !== undefined ? ` at ${this.endpoint}` : ''}`
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.#dirPrefix('/'), MaxKeys: 1 }))
    } catch (error) {
      const e = error as S3ErrorShape & { code?: string; message?: string }
      const name = e?.Code ?? e?.name ?? ''
      let reason: string
      if (name === 'CredentialsProviderError') reason = 'no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile/role)'
      else if (name === 'NoSuchBucket') reason = `${where} does not exist; create it first`
      else if (['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'Forbidden'].includes(name) || httpStatus(error) === 403) {
        reason = `access to ${where} denied (${name || 'HTTP 403'}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy`
      } else if (e?.code !== undefined && /^E[A-Z]+$/.test(e.code)) reason = `cannot reach ${where}: ${e.code}`
      else reason = `${where}: ${name || 'error'}${e?.message ? ` (${e.message})` : ''}`
      throw new StorageDriverError('IO_ERROR', reason, { cause: error })
    }
  }

  /** The object key of a driver path (validated). `/` is the prefix itself (or ''). */
  key(path: string): string {
    assertValidPath(path)
    const rest = path === '/' ? '' : path.slice(1)
    if (this.prefix === '') return rest
    return rest === '' ? this.prefix : `${this.prefix}/${rest}`
  }

  /** The key prefix under which a path's children live (`<key>/`, or '' / `<prefix>/` at the root). */
  #dirPrefix(path: string): string {
    const key = this.key(path)
    return key === '' ? '' : `${key}/`
  }

  #pathOf(key: string): string {
    return this.prefix === '' ? `/${key}` : `/${key.slice(this.prefix.length + 1)}`
  }

  #wrap(path: string, error: unknown): Error {
    if (error instanceof StorageDriverError) return error
    if (isNotFound(error)) return new PathNotFoundError(path, { cause: error })
    const e = error as S3ErrorShape & { message?: string }
    const what = e?.Code ?? e?.name ?? 'error'
    const status = httpStatus(error)
    return new StorageDriverError('IO_ERROR', `${this.name}: ${what}${status !== undefined ? ` (HTTP ${status})` : ''} on ${path}`, { cause: error })
  }

  async #head(path: string): Promise<{ size: number; modTime: Date; etag: string | undefined } | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(path) }))
      return { size: out.ContentLength ?? 0, modTime: out.LastModified ?? new Date(0), etag: bareEtag(out.ETag) }
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw this.#wrap(path, error)
    }
  }

  async #hasChildren(path: string): Promise<boolean> {
    try {
      const out = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.#dirPrefix(path), MaxKeys: 1 }))
      return (out.KeyCount ?? out.Contents?.length ?? 0) > 0
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  async getContent(path: string): Promise<Buffer> {
    const key = this.key(path)
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))
      if (out.Body === undefined) return Buffer.alloc(0)
      return Buffer.from(await out.Body.transformToByteArray())
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  /** One PUT: S3 replaces the object atomically, so readers see the old bytes or the new ones. */
  async putContent(path: string, content: Uint8Array): Promise<void> {
    const key = this.key(path)
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: content, ContentLength: content.byteLength }))
    } catch (error) {
      throw this.#wrap(path, error)
    }
  }

  lock(path: string, options?: LockOptions): Promise<StoreLock> {
    return takeStoreLock(this, path, options)
  }

  /** A bucket has no folders of its own. */
  async removeEmptyDirectory(): Promise<void> {}

  /**
   * Creates the object only if no object is at `path` (`If-None-Match: *`, supported by AWS S3
   * since 2024, Ceph RGW and MinIO). Resolves false when one already is: the building block for
   * locks and create-once records shared by several instances. Servers without conditional
   * writes (Swift's s3api answers 501) reject with a StorageDriverError, never a silent overwrite.
   */
  async putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> {
    const key = this.key(path)
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: content, ContentLength: content.byteLength, IfNoneMatch: '*' }))
      return true
    } catch (error) {
      const status = httpStatus(error)
      // 412: the key exists. 409: a concurrent conditional write to the same key is in progress (AWS).
      if (status === 412 || status === 409) return false
      throw this.#wrap(path, error)
    }
  }

  async reader(path: string, offset = 0, length?: number): Promise<Readable> {
    const key = this.key(path)
    if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidOffsetError(path, offset)
    if (length !== undefined && length <= 0) {
      const info = await this.#head(path)
      if (info === undefined) throw new PathNotFoundError(path)
      if (offset > info.size) throw new InvalidOffsetError(path, offset)
      return Readable.from([])
    }
    let range: string | undefined
    if (offset > 0 || length !== undefined) range = `bytes=${offset}-${length !== undefined ? offset + length - 1 : ''}`
    if (this.#directReads) {
      // Signing is local; the URL is used at once, so a short expiry is plenty.
      const url = new URL(await getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: 15 * 60 }))
      try {
        return (await s3Get(url, range, this.#requestTimeoutMs)).body
      } catch (error) {
        if (!(error instanceof S3GetError)) {
          throw new StorageDriverError('IO_ERROR', `${this.name}: ${(error as Error).message} on ${path}`, { cause: error })
        }
        if (error.status === 416 || error.code === 'InvalidRange') return this.#pastEnd(path, offset)
        if (error.status === 404) throw new PathNotFoundError(path, { cause: error })
        throw new StorageDriverError('IO_ERROR', `${this.name}: ${error.message} on ${path}`, { cause: error })
      }
    }
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range !== undefined ? { Range: range } : {}) }))
      if (out.Body === undefined) return Readable.from([])
      return out.Body as Readable
    } catch (error) {
      if (httpStatus(error) === 416 || (error as S3ErrorShape).name === 'InvalidRange') return this.#pastEnd(path, offset)
      throw this.#wrap(path, error)
    }
  }

  /** After a 416 (the range starts at or past the end): at the end is a valid empty read. */
  async #pastEnd(path: string, offset: number): Promise<Readable> {
    const info = await this.#head(path)
    if (info === undefined) throw new PathNotFoundError(path)
    if (offset === info.size) return Readable.from([])
    throw new InvalidOffsetError(path, offset)
  }

  async writer(path: string, options: { append?: boolean } = {}): Promise<FileWriter> {
    const key = this.key(path)
    const append = options.append === true
    const existing = append ? await this.#head(path) : undefined
    return new S3FileWriter(this, path, key, append, existing === undefined ? undefined : { size: existing.size, etag: existing.etag })
  }

  async stat(path: string): Promise<FileInfo> {
    this.key(path)
    if (path !== '/') {
      const info = await this.#head(path)
      if (info !== undefined) return { path, size: info.size, modTime: info.modTime, isDir: false, ...(info.etag ? { etag: info.etag } : {}) }
    }
    if (path === '/' || (await this.#hasChildren(path))) return { path, size: 0, modTime: new Date(0), isDir: true }
    throw new PathNotFoundError(path)
  }

  /** One HEAD: a key with no object is not found, whatever lies below it. */
  async statFile(path: string): Promise<FileInfo> {
    const info = path === '/' ? undefined : await this.#head(path)
    if (info === undefined) throw new PathNotFoundError(path)
    return { path, size: info.size, modTime: info.modTime, isDir: false, ...(info.etag ? { etag: info.etag } : {}) }
  }

  /** A copy onto itself with new metadata: S3's only way to move an object's Last-Modified. */
  async touch(path: string): Promise<void> {
    const info = await this.#head(path)
    if (info === undefined) throw new PathNotFoundError(path)
    await this.#copy(path, path, info.size, info.etag, true)
  }

  async list(path: string): Promise<string[]> {
    const prefix = this.#dirPrefix(path)
    const children = new Set<string>()
    let token: string | undefined
    try {
      do {
        const out = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: '/', ...(token !== undefined ? { ContinuationToken: token } : {}) }),
        )
        for (const p of out.CommonPrefixes ?? []) if (p.Prefix !== undefined) children.add(this.#pathOf(p.Prefix.slice(0, -1)))
        for (const o of out.Contents ?? []) if (o.Key !== undefined && o.Key !== prefix) children.add(this.#pathOf(o.Key))
        token = out.IsTruncated ? out.NextContinuationToken : undefined
      } while (token !== undefined)
    } catch (error) {
      throw this.#wrap(path, error)
    }
    if (children.size === 0 && path !== '/') throw new PathNotFoundError(path)
    return [...children].sort()
  }

  /** Copy then delete (S3 has no rename); the destination appears whole, as a copy is atomic. */
  async move(sourcePath: string, destPath: string): Promise<void> {
    this.key(destPath)
    const info = await this.#head(sourcePath)
    if (info === undefined) throw new PathNotFoundError(sourcePath)
    await this.#copy(sourcePath, destPath, info.size, info.etag, false)
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(sourcePath) }))
    } catch (error) {
      throw this.#wrap(sourcePath, error)
    }
  }

  /** Server-side copy; objects over 5 GiB are copied in 1 GiB ranges through a multipart upload. */
  async #copy(sourcePath: string, destPath: string, size: number, etag: string | undefined, replaceMetadata: boolean): Promise<void> {
    const source = `${this.bucket}/${encodeURIComponent(this.key(sourcePath)).replace(/%2F/g, '/')}`
    const destKey = this.key(destPath)
    try {
      if (size <= MAX_COPY_SIZE) {
        await this.client.send(
          new CopyObjectCommand({
            Bucket: this.bucket,
            Key: destKey,
            CopySource: source,
            ...(etag !== undefined ? { CopySourceIfMatch: etag } : {}),
            // REPLACE is what makes a copy onto itself legal (touch); the object carries no metadata of ours.
            ...(replaceMetadata ? { MetadataDirective: 'REPLACE' as const } : {}),
          }),
        )
        return
      }
      const upload = await this.createMultipart(destKey)
      try {
        const parts = await this.copyParts(destKey, upload, source, etag, size, 1)
        await this.completeMultipart(destKey, upload, parts)
      } catch (error) {
        await this.abortMultipart(destKey, upload)
        throw error
      }
    } catch (error) {
      if (httpStatus(error) === 412) throw new PathNotFoundError(sourcePath, { cause: error })
      throw this.#wrap(sourcePath, error)
    }
  }

  async delete(path: string): Promise<void> {
    const key = this.key(path)
    let found = false
    try {
      // Everything below, a page (≤ 1000 keys) at a time; listing again from the start each round
      // would also work, but the continuation token saves re-reading deleted keys. The object at
      // the key itself and the first page are looked up together (one round trip).
      const prefix = this.#dirPrefix(path)
      const page = (token: string | undefined) =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            MaxKeys: DELETE_BATCH,
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        )
      const [own, first] = await Promise.all([path === '/' ? undefined : this.#head(path), page(undefined)])
      if (own !== undefined) {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }))
        found = true
      }
      let token: string | undefined
      let out = first
      for (;;) {
        const keys = (out.Contents ?? []).flatMap(o => (o.Key !== undefined ? [{ Key: o.Key }] : []))
        if (keys.length > 0) {
          found = true
          const result = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys, Quiet: true } }))
          const failed = (result.Errors ?? []).filter(e => e.Code !== 'NoSuchKey')
          if (failed.length > 0) {
            throw new StorageDriverError(
              'IO_ERROR',
              `${this.name}: could not delete ${failed.length} objects under ${path}: ${failed[0]?.Code ?? ''} ${failed[0]?.Key ?? ''}`,
            )
          }
        }
        token = out.IsTruncated ? out.NextContinuationToken : undefined
        if (token === undefined) break
        out = await page(token)
      }
    } catch (error) {
      throw this.#wrap(path, error)
    }
    if (!found) throw new PathNotFoundError(path)
  }

  /**
   * Depth first, children sorted, one delimited listing per directory (so 'skip' saves the
   * listing of a whole subtree, which is what GC and upload purging use it for).
   */
  async walk(path: string, visit: (info: FileInfo) => Promise<'skip' | void> | 'skip' | void): Promise<void> {
    const start = await this.stat(path)
    if (!start.isDir) throw new PathNotFoundError(path)
    const descend = async (directory: string): Promise<void> => {
      const prefix = this.#dirPrefix(directory)
      const entries = new Map<string, FileInfo>()
      let token: string | undefined
      try {
        do {
          const out = await this.client.send(
            new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, Delimiter: '/', ...(token !== undefined ? { ContinuationToken: token } : {}) }),
          )
          for (const p of out.CommonPrefixes ?? []) {
            if (p.Prefix === undefined) continue
            const child = this.#pathOf(p.Prefix.slice(0, -1))
            entries.set(child, { path: child, size: 0, modTime: new Date(0), isDir: true })
          }
          for (const o of out.Contents ?? []) {
            if (o.Key === undefined || o.Key === prefix) continue
            const child = this.#pathOf(o.Key)
            // A key that is both an object and a prefix shows up as a file here, as on a filesystem it could not.
            if (!entries.has(child)) entries.set(child, { path: child, size: o.Size ?? 0, modTime: o.LastModified ?? new Date(0), isDir: false })
          }
          token = out.IsTruncated ? out.NextContinuationToken : undefined
        } while (token !== undefined)
      } catch (error) {
        throw this.#wrap(directory, error)
      }
      for (const child of [...entries.keys()].sort()) {
        const info = entries.get(child) as FileInfo
        if ((await visit(info)) !== 'skip' && info.isDir) await descend(child)
      }
    }
    await descend(path)
  }

  /** A presigned GET URL when redirects are on (see S3DriverOptions.redirect); signing is local, no request. */
  async redirectUrl(path: string): Promise<string | undefined> {
    if (!this.redirect) return undefined
    const key = this.key(path)
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: REDIRECT_EXPIRY_SECONDS })
  }

  /** Aborts multipart uploads under the prefix initiated before `olderThan` (see StorageDriver). */
  async abortIncompleteWrites(olderThan: Date): Promise<number> {
    let aborted = 0
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    try {
      do {
        const out = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.#dirPrefix('/'),
            ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
            ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
          }),
        )
        for (const upload of out.Uploads ?? []) {
          if (upload.Key === undefined || upload.UploadId === undefined || upload.Initiated === undefined) continue
          if (upload.Initiated.getTime() >= olderThan.getTime()) continue
          await this.abortMultipart(upload.Key, upload.UploadId)
          aborted++
        }
        const more = out.IsTruncated === true
        keyMarker = more ? out.NextKeyMarker : undefined
        uploadIdMarker = more ? out.NextUploadIdMarker : undefined
      } while (keyMarker !== undefined)
    } catch (error) {
      throw this.#wrap('/', error)
    }
    return aborted
  }

  // Multipart helpers shared with the writer.

  async createMultipart(key: string): Promise<string> {
    const out = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key }))
    if (out.UploadId === undefined) throw new StorageDriverError('IO_ERROR', `${this.name}: no upload id for ${key}`)
    return out.UploadId
  }

  async copyParts(key: string, uploadId: string, source: string, etag: string | undefined, size: number, firstPart: number): Promise<CompletedPart[]> {
    const parts: CompletedPart[] = []
    for (let start = 0, n = firstPart; start < size; start += COPY_PART_SIZE, n++) {
      const end = Math.min(size, start + COPY_PART_SIZE) - 1
      const out = await this.client.send(
        new UploadPartCopyCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: n,
          CopySource: source,
          CopySourceRange: `bytes=${start}-${end}`,
          ...(etag !== undefined ? { CopySourceIfMatch: etag } : {}),
        }),
      )
      // Ceph answers this ETag unquoted; Complete accepts either form, so pass it on as is.
      parts.push({ PartNumber: n, ETag: out.CopyPartResult?.ETag })
    }
    return parts
  }

  async completeMultipart(key: string, uploadId: string, parts: CompletedPart[]): Promise<void> {
    // Ceph returns an empty <ETag/> here; nothing reads it.
    await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }))
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId })).catch(() => {
      // Best effort: an upload left behind is invisible, and a bucket lifecycle rule
      // (AbortIncompleteMultipartUpload) removes it.
    })
  }

  sourceOf(key: string): string {
    return `${this.bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`
  }

  wrapError(path: string, error: unknown): Error {
    return this.#wrap(path, error)
  }
}

/**
 * The ETag S3 gives a completed multipart object: the MD5 of the parts' binary MD5s, then `-N`
 * (AWS, Ceph RGW and MinIO agree). Computed here because Ceph answers CompleteMultipartUpload with
 * an empty ETag, and a HEAD afterwards could already see another instance's write.
 */
export function multipartEtag(parts: readonly CompletedPart[]): string | undefined {
  const md5 = createHash('md5')
  for (const part of parts) {
    const hex = bareEtag(part.ETag)
    if (hex === undefined || !/^[0-9a-f]{32}$/i.test(hex)) return undefined
    md5.update(Buffer.from(hex, 'hex'))
  }
  return `${md5.digest('hex')}-${parts.length}`
}

/**
 * Part buffers whose upload completed, for the next parts to reuse: without it every 8 MiB part
 * was a fresh allocation that lived until V8's next full collection, which external memory
 * triggers only after about 64 MiB of it, so a push held several dead parts at once. At most
 * PART_POOL_MAX are kept, and the pool empties once no part has been taken for PART_POOL_IDLE_MS.
 */
const PART_POOL_MAX = 4
const PART_POOL_IDLE_MS = 30_000
const partPool: Buffer[] = []
let partPoolTimer: NodeJS.Timeout | undefined

function takePart(size: number): Buffer {
  const index = partPool.findIndex(buffer => buffer.byteLength === size)
  return index === -1 ? Buffer.allocUnsafe(size) : (partPool.splice(index, 1)[0] as Buffer)
}

function givePart(buffer: Buffer): void {
  if (partPool.length < PART_POOL_MAX) partPool.push(buffer)
  partPoolTimer?.refresh()
  partPoolTimer ??= setTimeout(() => {
    partPool.length = 0
    partPoolTimer = undefined
  }, PART_POOL_IDLE_MS).unref()
}

/**
 * See the module comment. `existing` is the object an append writer continues (size and ETag at
 * open); a replace writer starts empty.
 */
class S3FileWriter implements FileWriter {
  #size: number
  /** The part being filled (allocated at partSize when the first byte arrives); bytes 0..#buffered are set. */
  #part: Buffer | undefined
  #buffered = 0
  #uploadId: string | undefined
  #parts: CompletedPart[] = []
  #inFlight: Promise<void> | undefined
  #prefixLoaded: boolean
  #done = false
  #etag: string | undefined

  constructor(
    private readonly driver: S3Driver,
    private readonly path: string,
    private readonly key: string,
    private readonly append: boolean,
    private readonly existing: { size: number; etag: string | undefined } | undefined,
  ) {
    this.#size = existing?.size ?? 0
    this.#prefixLoaded = existing === undefined || existing.size === 0
  }

  get size(): number {
    return this.#size
  }

  /** The ETag of the object this writer left (computed, so it needs no HEAD that could see a later write). */
  get etag(): string | undefined {
    return this.#etag
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#done) throw new StorageDriverError('WRITER_CLOSED', 'write after commit, cancel or close')
    if (chunk.byteLength === 0) return
    await this.#loadSmallPrefix()
    // Copied into the part (callers may reuse their buffers once write() resolves): one copy, and
    // no concatenation when the part is sent.
    let offset = 0
    while (offset < chunk.byteLength) {
      this.#part ??= takePart(this.driver.partSize)
      const n = Math.min(chunk.byteLength - offset, this.#part.byteLength - this.#buffered)
      this.#part.set(chunk.subarray(offset, offset + n), this.#buffered)
      this.#buffered += n
      this.#size += n
      offset += n
      if (this.#buffered === this.#part.byteLength) await this.#flushPart()
    }
  }

  async commit(): Promise<void> {
    if (this.#done) throw new StorageDriverError('WRITER_CLOSED', 'writer already committed, cancelled or closed')
    await this.#finish()
  }

  async close(): Promise<void> {
    if (this.#done) return
    // An append writer keeps what it wrote (the object is resumable upload state); a replace
    // writer that was not committed leaves nothing.
    if (this.append) await this.#finish()
    else await this.cancel()
  }

  async cancel(): Promise<void> {
    if (this.#done) return
    this.#done = true
    await this.#inFlight?.catch(() => {})
    if (this.#uploadId !== undefined) await this.driver.abortMultipart(this.key, this.#uploadId)
    this.#part = undefined
  }

  /** An existing object under 5 MiB cannot be a copied part (only the last part may be small): resend its bytes. */
  async #loadSmallPrefix(): Promise<void> {
    if (this.#prefixLoaded || this.existing === undefined) return
    this.#prefixLoaded = true
    if (this.existing.size >= MIN_PART_SIZE) return
    try {
      const out = await this.driver.client.send(
        new GetObjectCommand({ Bucket: this.driver.bucket, Key: this.key, ...(this.existing.etag !== undefined ? { IfMatch: this.existing.etag } : {}) }),
      )
      const bytes = out.Body === undefined ? Buffer.alloc(0) : Buffer.from(await out.Body.transformToByteArray())
      if (bytes.byteLength !== this.existing.size) throw new StorageDriverError('IO_ERROR', `${this.driver.name}: ${this.path} changed while appending`)
      // Nothing is buffered yet (this runs before the first byte is taken), and partSize > 5 MiB > bytes.
      this.#part ??= takePart(this.driver.partSize)
      this.#part.set(bytes, 0)
      this.#buffered = bytes.byteLength
    } catch (error) {
      this.#prefixLoaded = false
      if (httpStatus(error) === 412) throw new StorageDriverError('IO_ERROR', `${this.driver.name}: ${this.path} changed while appending`, { cause: error })
      throw this.driver.wrapError(this.path, error)
    }
  }

  async #startMultipart(): Promise<void> {
    if (this.#uploadId !== undefined) return
    try {
      this.#uploadId = await this.driver.createMultipart(this.key)
      if (this.existing !== undefined && this.existing.size >= MIN_PART_SIZE) {
        this.#parts = await this.driver.copyParts(this.key, this.#uploadId, this.driver.sourceOf(this.key), this.existing.etag, this.existing.size, 1)
      }
    } catch (error) {
      if (httpStatus(error) === 412) throw new StorageDriverError('IO_ERROR', `${this.driver.name}: ${this.path} changed while appending`, { cause: error })
      throw this.driver.wrapError(this.path, error)
    }
  }

  /** Sends the buffer as the next part; waits for the previous part first (at most two parts in memory). */
  async #flushPart(): Promise<void> {
    await this.#startMultipart()
    await this.#inFlight
    const part = this.#part ?? Buffer.alloc(0)
    const body = part.subarray(0, this.#buffered)
    this.#part = undefined
    this.#buffered = 0
    const partNumber = this.#parts.length + 1
    if (partNumber > MAX_PARTS) throw new StorageDriverError('IO_ERROR', `${this.driver.name}: ${this.path} is larger than ${MAX_PARTS} parts`)
    const slot: CompletedPart = { PartNumber: partNumber }
    this.#parts.push(slot)
    const uploadId = this.#uploadId as string
    const sending = this.driver.client
      .send(
        new UploadPartCommand({
          Bucket: this.driver.bucket,
          Key: this.key,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: body,
          ContentLength: body.byteLength,
        }),
      )
      .then(out => {
        slot.ETag = out.ETag
        // The SDK resolves once the body is written and answered: nothing refers to the bytes now.
        if (part.byteLength === this.driver.partSize) givePart(part)
      })
    // Keep a handled copy so an early failure is not an unhandled rejection; the next flush or finish rethrows it.
    this.#inFlight = sending.catch(error => {
      throw this.driver.wrapError(this.path, error)
    })
    this.#inFlight.catch(() => {})
  }

  async #finish(): Promise<void> {
    this.#done = true
    try {
      const largeExisting = this.existing !== undefined && this.existing.size >= MIN_PART_SIZE
      if (this.#uploadId === undefined && this.existing !== undefined && this.#size === this.existing.size) {
        // Nothing was written: the object at open stays as it is.
        this.#etag = this.existing.etag
        return
      }
      await this.#loadSmallPrefix()
      if (this.#uploadId === undefined) {
        if (!largeExisting) {
          // Everything (old small bytes + new ones) is in the buffer, under one part: one PUT.
          const body = (this.#part ?? Buffer.alloc(0)).subarray(0, this.#buffered)
          this.#part = undefined
          const out = await this.driver.client.send(
            new PutObjectCommand({ Bucket: this.driver.bucket, Key: this.key, Body: body, ContentLength: body.byteLength }),
          )
          this.#etag = bareEtag(out.ETag) || createHash('md5').update(body).digest('hex')
          return
        }
      }
      if (this.#buffered > 0 || this.#parts.length === 0) await this.#flushPart()
      await this.#inFlight
      await this.driver.completeMultipart(this.key, this.#uploadId as string, this.#parts)
      this.#etag = multipartEtag(this.#parts)
    } catch (error) {
      if (this.#uploadId !== undefined) await this.driver.abortMultipart(this.key, this.#uploadId)
      throw this.driver.wrapError(this.path, error)
    }
  }
}
