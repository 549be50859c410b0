/**
 * Parsing and checking manifests as pushed: OCI image manifest and index (image-spec 1.1, with
 * `artifactType` and `subject`), Docker schema 2 manifest and manifest list. The stored bytes are
 * always the pushed bytes; this only reads them to learn the media type and the references.
 * Docker schema 1 is refused (docker stopped pushing it years ago; distribution 3 removed it).
 */
import { parseDigest, type Digest } from './digest.js'
import { ManifestInvalidError } from './errors.js'

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const

export type ManifestMediaType = (typeof MEDIA_TYPES)[keyof typeof MEDIA_TYPES]

/**
 * The most descriptors one manifest may list: `layers` of an image manifest, `manifests` of an
 * index. Runnable images stop at 127 layers (overlayfs' mount limit in docker and containerd);
 * what goes past that is artifacts that push one layer per file or per disk chunk (hundreds,
 * rarely more than a thousand). Ten times that leaves room for them and still bounds what one
 * PUT costs. More is MANIFEST_INVALID on push.
 */
export const MAX_DESCRIPTORS = 10_000

const knownTypes = new Set<string>(Object.values(MEDIA_TYPES))
const GENERIC_CONTENT_TYPES = new Set(['application/json', 'application/octet-stream', 'text/plain'])

export function isIndexType(type: string): boolean {
  return type === MEDIA_TYPES.ociIndex || type === MEDIA_TYPES.dockerManifestList
}

export function isManifestMediaType(type: string): type is ManifestMediaType {
  return knownTypes.has(type)
}

export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  urls?: string[]
  annotations?: Record<string, string>
  artifactType?: string
  platform?: { architecture?: string; os?: string; variant?: string }
}

export interface ParsedManifest {
  mediaType: ManifestMediaType
  /** What GET serves for these bytes: `storedMediaType(body)`, without parsing them again. */
  storedMediaType: string
  /** Config and layers that must be stored in the repository (foreign layers with `urls` excluded). */
  blobs: Digest[]
  /** Child manifests of an index / manifest list. */
  manifests: Descriptor[]
  config?: Descriptor
  subject?: Descriptor
  artifactType?: string
  annotations?: Record<string, string>
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function parseAnnotations(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined) return undefined
  if (!isObject(value) || !Object.values(value).every(v => typeof v === 'string')) {
    throw new ManifestInvalidError(`${where}annotations must be a map of strings`)
  }
  return value as Record<string, string>
}

function parseDescriptor(value: unknown, where: string): Descriptor {
  if (!isObject(value)) throw new ManifestInvalidError(`${where} is not a descriptor object`)
  const { mediaType, digest, size, urls, annotations, artifactType, platform } = value
  if (typeof mediaType !== 'string' || mediaType === '') throw new ManifestInvalidError(`${where}.mediaType is missing`)
  if (typeof digest !== 'string') throw new ManifestInvalidError(`${where}.digest is missing`)
  try {
    parseDigest(digest)
  } catch (error) {
    throw new ManifestInvalidError(`${where}.digest is invalid`, { cause: error })
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new ManifestInvalidError(`${where}.size is invalid`)
  const descriptor: Descriptor = { mediaType, digest, size }
  if (urls !== undefined) {
    if (!Array.isArray(urls) || !urls.every(u => typeof u === 'string')) throw new ManifestInvalidError(`${where}.urls is invalid`)
    descriptor.urls = urls as string[]
  }
  const parsedAnnotations = parseAnnotations(annotations, `${where}.`)
  if (parsedAnnotations) descriptor.annotations = parsedAnnotations
  if (artifactType !== undefined) {
    if (typeof artifactType !== 'string') throw new ManifestInvalidError(`${where}.artifactType is invalid`)
    descriptor.artifactType = artifactType
  }
  if (platform !== undefined) {
    if (!isObject(platform)) throw new ManifestInvalidError(`${where}.platform is invalid`)
    descriptor.platform = platform as Descriptor['platform'] & object
  }
  return descriptor
}

function sniff(json: Record<string, unknown>): string | undefined {
  if (Array.isArray(json['manifests'])) return MEDIA_TYPES.ociIndex
  if (isObject(json['config'])) return MEDIA_TYPES.ociManifest
  return undefined
}

/**
 * Parses a manifest body. `contentType` is the request's Content-Type without parameters; when
 * the body also names a `mediaType`, the two must agree (distribution-spec: the registry uses the
 * Content-Type, image-spec: `mediaType` SHOULD be set and then MUST match).
 * `maxDescriptors` bounds `layers` or `manifests` (a push passes MAX_DESCRIPTORS; readers of
 * stored manifests pass nothing, so what was accepted before stays readable).
 * Throws ManifestInvalidError.
 */
export function parseManifest(body: Uint8Array, contentType?: string, maxDescriptors = Number.POSITIVE_INFINITY): ParsedManifest {
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'))
  } catch (error) {
    throw new ManifestInvalidError('body is not valid JSON', { cause: error })
  }
  if (!isObject(json)) throw new ManifestInvalidError('body is not a JSON object')
  if (json['schemaVersion'] === 1) throw new ManifestInvalidError('Docker schema 1 manifests are not supported')
  if (json['schemaVersion'] !== 2) throw new ManifestInvalidError('schemaVersion must be 2')
  const bodyType = json['mediaType']
  if (bodyType !== undefined && typeof bodyType !== 'string') throw new ManifestInvalidError('mediaType must be a string')
  // A generic Content-Type (some clients send application/json or octet-stream) defers to the
  // body; any other Content-Type must agree with the body's mediaType when both are given.
  const generic = contentType === undefined || GENERIC_CONTENT_TYPES.has(contentType)
  if (!generic && bodyType !== undefined && bodyType !== contentType) {
    throw new ManifestInvalidError(`mediaType ${bodyType} does not match Content-Type ${contentType}`)
  }
  const type = bodyType ?? (generic ? sniff(json) : contentType)
  if (type === undefined || !isManifestMediaType(type)) {
    throw new ManifestInvalidError(`unsupported manifest media type ${JSON.stringify(type ?? null)}`)
  }
  const parsed: ParsedManifest = { mediaType: type, storedMediaType: storedTypeOf(json), blobs: [], manifests: [] }
  const annotations = parseAnnotations(json['annotations'], '')
  if (annotations) parsed.annotations = annotations
  const artifactType = json['artifactType']
  if (artifactType !== undefined) {
    if (typeof artifactType !== 'string') throw new ManifestInvalidError('artifactType must be a string')
    parsed.artifactType = artifactType
  }
  if (json['subject'] !== undefined) parsed.subject = parseDescriptor(json['subject'], 'subject')

  if (isIndexType(type)) {
    if (!Array.isArray(json['manifests'])) throw new ManifestInvalidError('manifests must be an array')
    assertDescriptorCount(json['manifests'].length, maxDescriptors, 'manifests')
    parsed.manifests = json['manifests'].map((item, i) => parseDescriptor(item, `manifests[${i}]`))
    return parsed
  }
  parsed.config = parseDescriptor(json['config'], 'config')
  if (!Array.isArray(json['layers'])) throw new ManifestInvalidError('layers must be an array')
  assertDescriptorCount(json['layers'].length, maxDescriptors, 'layers')
  const layers = json['layers'].map((item, i) => parseDescriptor(item, `layers[${i}]`))
  parsed.blobs.push(parseDigest(parsed.config.digest))
  for (const layer of layers) {
    // Foreign / non-distributable layers live at their `urls` and are never pushed here.
    if (layer.urls !== undefined && layer.urls.length > 0) continue
    parsed.blobs.push(parseDigest(layer.digest))
  }
  return parsed
}

function assertDescriptorCount(count: number, max: number, field: string): void {
  if (count > max) throw new ManifestInvalidError(`${field} has ${count} entries; at most ${max} are accepted`)
}

function storedTypeOf(json: Record<string, unknown>): string {
  if (typeof json['mediaType'] === 'string' && json['mediaType'] !== '') return json['mediaType']
  if (json['schemaVersion'] === 1) return 'application/vnd.docker.distribution.manifest.v1+prettyjws'
  return sniff(json) ?? MEDIA_TYPES.ociManifest
}

/** The media type to serve for stored bytes: their `mediaType`, else sniffed as distribution does. */
export function storedMediaType(body: Uint8Array): string {
  try {
    const json: unknown = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'))
    if (isObject(json)) return storedTypeOf(json)
  } catch {
    // fall through: not ours to judge here, the bytes are served as stored
  }
  return MEDIA_TYPES.ociManifest
}
