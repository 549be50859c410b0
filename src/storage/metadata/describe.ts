/**
 * A manifest record from a manifest's bytes: done once per manifest at push (or by reindex), so
 * listing never reads manifests or configs again.
 *
 * - size: an image's config and layers (each digest once; foreign layers with `urls` are not
 *   stored and not counted). An index records its children instead: its size is the sum of the
 *   sizes of the children stored in the repository, computed when read, so it stays exact when a
 *   child is deleted.
 * - platforms: from an index's `manifests[].platform`, leaving out buildx attestation manifests
 *   (annotation `vnd.docker.reference.type: attestation-manifest`).
 * - created and labels: from the image config (only for image config media types, only configs up
 *   to CONFIG_MAX_BYTES), labels cut to LABELS_MAX_BYTES of JSON.
 */
import { isIndexType, parseManifest, storedMediaType, type Descriptor } from '../manifest.js'
import { LABELS_MAX_BYTES, RECORD_VERSION, type ManifestRecord } from './records.js'

/** Configs larger than this are not read (an image config is a few KiB; history can make it 100s). */
export const CONFIG_MAX_BYTES = 1024 * 1024

const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json'])

const ATTESTATION_ANNOTATION = 'vnd.docker.reference.type'

export function isAttestation(descriptor: Descriptor): boolean {
  return descriptor.annotations?.[ATTESTATION_ANNOTATION] === 'attestation-manifest'
}

export function platformOf(descriptor: Descriptor): string | undefined {
  const platform = descriptor.platform
  if (platform === undefined || typeof platform.os !== 'string' || typeof platform.architecture !== 'string') return undefined
  return [platform.os, platform.architecture, ...(typeof platform.variant === 'string' && platform.variant !== '' ? [platform.variant] : [])].join('/')
}

/**
 * The record of `content` (a stored manifest), with `pushedAt`. `readConfig` returns the config
 * blob's bytes, or undefined when it is not stored; it is called at most once, only for image
 * configs no larger than CONFIG_MAX_BYTES. Bytes that do not parse as a manifest still get a
 * record (media type and pushed-at), so they are listed.
 */
export async function describeManifest(
  content: Buffer,
  pushedAt: string | null,
  readConfig: (digest: string) => Promise<Buffer | undefined>,
): Promise<ManifestRecord> {
  let parsed
  try {
    parsed = parseManifest(content)
  } catch {
    return { v: RECORD_VERSION, mediaType: storedMediaType(content), size: 0, pushedAt }
  }
  const record: { -readonly [K in keyof ManifestRecord]: ManifestRecord[K] } = { v: RECORD_VERSION, mediaType: parsed.storedMediaType, size: 0, pushedAt }
  const artifactType = parsed.artifactType ?? (isIndexType(parsed.mediaType) ? undefined : parsed.config?.mediaType)
  if (artifactType !== undefined && !IMAGE_CONFIG_TYPES.has(artifactType)) record.artifactType = artifactType
  if (parsed.subject !== undefined) record.subject = parsed.subject.digest
  if (isIndexType(parsed.mediaType)) {
    record.children = parsed.manifests.map(child => child.digest)
    record.platforms = [...new Set(parsed.manifests.filter(child => !isAttestation(child)).map(platformOf))].filter(
      (platform): platform is string => platform !== undefined,
    )
    return record
  }
  record.size = imageSize(content)
  const config = parsed.config
  if (config !== undefined && IMAGE_CONFIG_TYPES.has(config.mediaType) && config.size <= CONFIG_MAX_BYTES) {
    const bytes = await readConfig(config.digest)
    if (bytes !== undefined) Object.assign(record, fromConfig(bytes))
  }
  return record
}

/** Config and layers of an image manifest, each digest once, foreign layers left out. */
export function imageSize(content: Buffer): number {
  const json = JSON.parse(content.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[] }
  const sizes = new Map<string, number>()
  for (const descriptor of [json.config, ...(json.layers ?? [])]) {
    if (descriptor === undefined || (descriptor.urls !== undefined && descriptor.urls.length > 0)) continue
    sizes.set(descriptor.digest, descriptor.size)
  }
  let total = 0
  for (const size of sizes.values()) total += size
  return total
}

function fromConfig(bytes: Buffer): Pick<ManifestRecord, 'created' | 'labels' | 'labelsTruncated'> {
  let json: unknown
  try {
    json = JSON.parse(bytes.toString('utf8'))
  } catch {
    return {}
  }
  if (typeof json !== 'object' || json === null) return {}
  const out: { created?: string; labels?: Record<string, string>; labelsTruncated?: true } = {}
  const { created, config } = json as { created?: unknown; config?: { Labels?: unknown } }
  if (typeof created === 'string' && !Number.isNaN(Date.parse(created))) out.created = created
  const labels = config?.Labels
  if (typeof labels === 'object' && labels !== null) {
    const kept: Record<string, string> = {}
    let bytesUsed = 2
    for (const key of Object.keys(labels).sort()) {
      const value = (labels as Record<string, unknown>)[key]
      if (typeof value !== 'string') continue
      const cost = Buffer.byteLength(JSON.stringify(key)) + Buffer.byteLength(JSON.stringify(value)) + 2
      if (bytesUsed + cost > LABELS_MAX_BYTES) {
        out.labelsTruncated = true
        continue
      }
      kept[key] = value
      bytesUsed += cost
    }
    if (Object.keys(kept).length > 0) out.labels = kept
  }
  return out
}
