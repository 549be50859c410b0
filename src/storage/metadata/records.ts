/**
 * The metadata index's records (paths.ts draws where they live) and how they are read back.
 * Every record is a small JSON object with a version `v`; a record that does not parse, or has
 * another version, reads as missing, so `berth reindex` (or the background pass) writes it again.
 *
 * Times are ISO 8601 strings in the store's clock (a link file's modification time), or null
 * when unknown: an unknown time stays unknown, it never becomes "now".
 */

export const RECORD_VERSION = 1

/** `_tags/<tag>`: the tag's current digest and when the tag was last written. */
export interface TagRecord {
  readonly v: typeof RECORD_VERSION
  readonly digest: string
  readonly pushedAt: string | null
}

/** `_manifests/<alg>/<hex>`: what one manifest is, read once from its bytes and its config at push. */
export interface ManifestRecord {
  readonly v: typeof RECORD_VERSION
  readonly mediaType: string
  /** The spec's artifact type: the manifest's `artifactType`, else its config's media type (images: absent). */
  readonly artifactType?: string
  /** The `subject` digest: this manifest is a referrer of that one. */
  readonly subject?: string
  /** Config plus layers (each digest once), compressed as stored; 0 for an index (see `children`). */
  readonly size: number
  /** An index's child manifests, in order, attestation manifests included. */
  readonly children?: readonly string[]
  /** An index's platforms (`os/architecture[/variant]`), buildx attestation manifests left out. */
  readonly platforms?: readonly string[]
  /** The image config's `created`, as written there. */
  readonly created?: string
  /** The image config's `config.Labels`, cut to LABELS_MAX_BYTES. */
  readonly labels?: Readonly<Record<string, string>>
  /** Some labels were left out to stay within LABELS_MAX_BYTES. */
  readonly labelsTruncated?: true
  /** When the revision was first recorded (its link's modification time), or null. */
  readonly pushedAt: string | null
}

/** `_pulls/<instance>`: that process's pulls of this repository, by digest, since it started counting. */
export interface PullsRecord {
  readonly v: typeof RECORD_VERSION
  readonly pulls: Readonly<Record<string, PullStat>>
}

export interface PullStat {
  readonly count: number
  /** Milliseconds since the epoch of the last pull this process saw. */
  readonly last: number
}

/** `changes/<instance>`: the last CHANGES_KEPT repositories that process changed, numbered from 1. */
export interface ChangesRecord {
  readonly v: typeof RECORD_VERSION
  readonly seq: number
  readonly entries: readonly (readonly [number, string])[]
}

export const CHANGES_KEPT = 1000
export const LABELS_MAX_BYTES = 8 * 1024

function parse(content: Buffer): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(content.toString('utf8'))
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
    const record = value as Record<string, unknown>
    return record['v'] === RECORD_VERSION ? record : undefined
  } catch {
    return undefined
  }
}

const isTime = (value: unknown): value is string | null => value === null || (typeof value === 'string' && !Number.isNaN(Date.parse(value)))
const isStringArray = (value: unknown): value is string[] => Array.isArray(value) && value.every(item => typeof item === 'string')

export function readTagRecord(content: Buffer): TagRecord | undefined {
  const record = parse(content)
  if (record === undefined || typeof record['digest'] !== 'string' || !isTime(record['pushedAt'])) return undefined
  return { v: RECORD_VERSION, digest: record['digest'], pushedAt: record['pushedAt'] }
}

export function readManifestRecord(content: Buffer): ManifestRecord | undefined {
  const record = parse(content)
  if (record === undefined || typeof record['mediaType'] !== 'string' || typeof record['size'] !== 'number' || !isTime(record['pushedAt'])) return undefined
  const optional = ['artifactType', 'subject', 'created'] as const
  if (optional.some(key => record[key] !== undefined && typeof record[key] !== 'string')) return undefined
  if (record['children'] !== undefined && !isStringArray(record['children'])) return undefined
  if (record['platforms'] !== undefined && !isStringArray(record['platforms'])) return undefined
  const labels = record['labels']
  if (labels !== undefined && (typeof labels !== 'object' || labels === null || !Object.values(labels).every(v => typeof v === 'string'))) return undefined
  return record as unknown as ManifestRecord
}

export function readPullsRecord(content: Buffer): PullsRecord | undefined {
  const record = parse(content)
  const pulls = record?.['pulls']
  if (typeof pulls !== 'object' || pulls === null) return undefined
  const valid = Object.values(pulls).every(
    (stat: unknown) => typeof stat === 'object' && stat !== null && Number.isSafeInteger((stat as PullStat).count) && Number.isFinite((stat as PullStat).last),
  )
  return valid ? (record as unknown as PullsRecord) : undefined
}

export function readChangesRecord(content: Buffer): ChangesRecord | undefined {
  const record = parse(content)
  if (record === undefined || !Number.isSafeInteger(record['seq']) || !Array.isArray(record['entries'])) return undefined
  const entries = record['entries'] as unknown[]
  const valid = entries.every(entry => Array.isArray(entry) && Number.isSafeInteger(entry[0]) && typeof entry[1] === 'string')
  return valid ? (record as unknown as ChangesRecord) : undefined
}

export function encodeRecord(record: TagRecord | ManifestRecord | PullsRecord | ChangesRecord): Buffer {
  return Buffer.from(JSON.stringify(record))
}

/** A Date as a record time, or null. */
export function recordTime(date: Date | undefined): string | null {
  return date === undefined || Number.isNaN(date.getTime()) ? null : date.toISOString()
}
