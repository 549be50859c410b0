/**
 * What the image page shows, read from the manifest and its config blob (the detail page is the
 * one place that reads them; lists answer from the metadata index alone): platforms of an index
 * (buildx attestation manifests left out), layers with the history lines that made them, labels,
 * annotations, and referrers grouped by artifact type. Everything here is attacker-controlled
 * text: it is bounded here and shown as text by the browser code.
 */
import { isAttestation, platformOf } from '../storage/metadata/describe.js'
import type { ImageDetails } from '../storage/metadata/view.js'
import { isIndexType, parseManifest, type Descriptor } from '../storage/manifest.js'
import type { ImageView, LayerEntry, PlatformEntry, ReferrerEntry } from './api-types.js'

/** Configs larger than this are not read for the page (the index does the same). */
export const CONFIG_READ_MAX_BYTES = 1024 * 1024
/** Most entries of one list (layers, history, labels, annotations, platforms, referrers) shown. */
export const MAX_ENTRIES = 500
/** Longest text of one entry (a label value, a history line). */
export const MAX_TEXT = 4096

export interface ImageSources {
  readonly repository: string
  readonly digest: string
  readonly content: Buffer
  /** The index's record of this manifest, when it has one. */
  readonly details: ImageDetails | undefined
  /** The config blob's bytes (undefined when absent or too large). */
  readConfig(digest: string): Promise<Buffer | undefined>
  /** A stored manifest's total size (for an index's platforms). */
  sizeOf(digest: string): Promise<number | undefined>
  readonly canDelete: boolean
}

export async function imageView(sources: ImageSources): Promise<ImageView> {
  const { content, details } = sources
  const parsed = parseManifest(content)
  const isIndex = isIndexType(parsed.mediaType)
  const platforms: PlatformEntry[] = []
  let attestationManifests = 0
  if (isIndex) {
    for (const child of parsed.manifests.slice(0, MAX_ENTRIES)) {
      if (isAttestation(child)) {
        attestationManifests++
        continue
      }
      platforms.push({
        platform: text(platformOf(child) ?? 'unknown'),
        digest: child.digest,
        mediaType: text(child.mediaType),
        size: (await sources.sizeOf(child.digest)) ?? child.size,
      })
    }
  }
  let layers: LayerEntry[] = []
  let labels: Record<string, string> = {}
  let platform: string | null = null
  let created: string | null = details?.created ?? null
  if (!isIndex) {
    const rawLayers = layersOf(content)
    const config = parsed.config !== undefined && parsed.config.size <= CONFIG_READ_MAX_BYTES ? await sources.readConfig(parsed.config.digest) : undefined
    const read = config === undefined ? undefined : readConfig(config)
    layers = joinHistory(rawLayers, read?.history)
    labels = read?.labels ?? {}
    platform = read?.platform ?? null
    created ??= read?.created ?? null
  }
  const referrers = groupReferrers(details?.referrers ?? [])
  return {
    repository: sources.repository,
    digest: sources.digest,
    mediaType: parsed.storedMediaType,
    isIndex,
    artifactType: details?.artifactType ?? parsed.artifactType ?? null,
    tags: details?.tags ?? [],
    size: details?.totalSize ?? null,
    created,
    pushedAt: details?.pushedAt ?? null,
    lastPulledAt: details?.lastPulledAt ?? null,
    pullCount: details?.pullCount ?? 0,
    platform,
    platforms,
    attestationManifests,
    layers,
    labels,
    annotations: boundedMap(parsed.annotations ?? {}),
    referrers,
    subject: parsed.subject?.digest ?? null,
    canDelete: sources.canDelete,
  }
}

function text(value: string): string {
  return value.length > MAX_TEXT ? `${value.slice(0, MAX_TEXT)}…` : value
}

function boundedMap(map: Readonly<Record<string, unknown>>): Record<string, string> {
  const out: Record<string, string> = {}
  let count = 0
  for (const [key, value] of Object.entries(map)) {
    if (typeof value !== 'string') continue
    if (++count > MAX_ENTRIES) break
    out[text(key)] = text(value)
  }
  return out
}

function layersOf(content: Buffer): Descriptor[] {
  const json = JSON.parse(content.toString('utf8')) as { layers?: unknown }
  if (!Array.isArray(json.layers)) return []
  return (json.layers as Descriptor[]).filter(layer => typeof layer === 'object' && layer !== null).slice(0, MAX_ENTRIES)
}

interface HistoryLine {
  readonly createdBy: string | null
  readonly comment: string | null
  readonly emptyLayer: boolean
}

function readConfig(bytes: Buffer): { history: HistoryLine[]; labels: Record<string, string>; platform: string | null; created: string | null } | undefined {
  let json: unknown
  try {
    json = JSON.parse(bytes.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof json !== 'object' || json === null) return undefined
  const { history, config, os, architecture, variant, created } = json as Record<string, unknown>
  const lines: HistoryLine[] = []
  if (Array.isArray(history)) {
    for (const entry of history.slice(0, MAX_ENTRIES * 2) as unknown[]) {
      if (typeof entry !== 'object' || entry === null) continue
      const { created_by: by, comment, empty_layer: empty } = entry as Record<string, unknown>
      lines.push({
        createdBy: typeof by === 'string' ? text(by) : null,
        comment: typeof comment === 'string' ? text(comment) : null,
        emptyLayer: empty === true,
      })
    }
  }
  const rawLabels = typeof config === 'object' && config !== null ? (config as Record<string, unknown>)['Labels'] : undefined
  const labels = typeof rawLabels === 'object' && rawLabels !== null ? boundedMap(rawLabels as Record<string, unknown>) : {}
  const platform =
    typeof os === 'string' && typeof architecture === 'string'
      ? text([os, architecture, ...(typeof variant === 'string' && variant ? [variant] : [])].join('/'))
      : null
  return { history: lines, labels, platform, created: typeof created === 'string' && !Number.isNaN(Date.parse(created)) ? created : null }
}

/** Layers in order, each with the history line that made it; history lines that made no layer sit between them. */
function joinHistory(layers: readonly Descriptor[], history: readonly HistoryLine[] | undefined): LayerEntry[] {
  const entries: LayerEntry[] = []
  let next = 0
  for (const line of history ?? []) {
    if (line.emptyLayer) {
      entries.push({ digest: null, mediaType: null, size: null, createdBy: line.createdBy, comment: line.comment, emptyLayer: true })
      continue
    }
    const layer = layers[next++]
    entries.push({
      digest: layer?.digest ?? null,
      mediaType: layer === undefined ? null : text(String(layer.mediaType)),
      size: typeof layer?.size === 'number' ? layer.size : null,
      createdBy: line.createdBy,
      comment: line.comment,
      emptyLayer: false,
    })
  }
  for (const layer of layers.slice(next)) {
    entries.push({
      digest: typeof layer.digest === 'string' ? text(layer.digest) : null,
      mediaType: text(String(layer.mediaType)),
      size: typeof layer.size === 'number' ? layer.size : null,
      createdBy: null,
      comment: null,
      emptyLayer: false,
    })
  }
  return entries.slice(0, MAX_ENTRIES * 2)
}

/** Which group an artifact type falls in: cosign/notation/sigstore signatures, SPDX/CycloneDX SBOMs, in-toto and other attestations. */
export function referrerGroup(artifactType: string | undefined): 'signatures' | 'sboms' | 'attestations' | 'other' {
  const type = (artifactType ?? '').toLowerCase()
  if (/signature|\.sig\b|cosign\.artifact\.sig|notary|sigstore\.bundle/.test(type)) return 'signatures'
  if (/spdx|cyclonedx|sbom|syft/.test(type)) return 'sboms'
  if (/in-toto|intoto|attestation|provenance|slsa|vex|vuln/.test(type)) return 'attestations'
  return 'other'
}

function groupReferrers(referrers: ImageDetails['referrers']): ImageView['referrers'] {
  const groups: Record<'signatures' | 'sboms' | 'attestations' | 'other', ReferrerEntry[]> = { signatures: [], sboms: [], attestations: [], other: [] }
  for (const referrer of referrers.slice(0, MAX_ENTRIES)) {
    groups[referrerGroup(referrer.artifactType)].push({
      digest: referrer.digest,
      mediaType: text(referrer.mediaType),
      artifactType: referrer.artifactType === undefined ? null : text(referrer.artifactType),
    })
  }
  return groups
}
