/**
 * The JSON the web UI's API answers (`/api/ui/...`), shared by the server (src/web) and the
 * browser code (src/ui, type imports only). Times are ISO 8601 strings or null when unknown.
 */

export interface SessionInfo {
  /** The logged-in user, or null. */
  readonly user: string | null
  /** Send this in the `X-Berth-Csrf` header of every POST and DELETE. */
  readonly csrf: string
  /** Whether a login form makes sense (htpasswd users exist). */
  readonly canLogIn: boolean
  /** Whether an anonymous visitor sees anything at all. */
  readonly anonymousSees: 'everything' | 'some' | 'nothing'
  /** Whether deletes are refused (read-only mode). */
  readonly readOnly: boolean
}

export interface RepositoryItem {
  readonly name: string
  readonly tags: number
  readonly lastPushed: string | null
  readonly size: number
}

export interface RepositoryPage {
  readonly total: number
  readonly offset: number
  readonly limit: number
  readonly items: readonly RepositoryItem[]
  /** Top-level namespaces of the repositories matching the search (before paging), with counts. */
  readonly namespaces: readonly { readonly name: string; readonly repositories: number }[]
}

export interface TagItem {
  readonly tag: string
  readonly digest: string
  readonly mediaType: string | null
  readonly size: number | null
  readonly platforms: readonly string[]
  readonly created: string | null
  readonly pushedAt: string | null
  readonly lastPulledAt: string | null
  readonly pullCount: number
  /** The other tags on the same digest (they go too when the image is deleted). */
  readonly sameDigest: readonly string[]
}

export interface TagPage {
  readonly repository: string
  readonly total: number
  readonly offset: number
  readonly limit: number
  readonly items: readonly TagItem[]
  readonly canDelete: boolean
}

export interface PlatformEntry {
  readonly platform: string
  readonly digest: string
  readonly mediaType: string
  readonly size: number
}

export interface LayerEntry {
  readonly digest: string | null
  readonly mediaType: string | null
  readonly size: number | null
  /** The history line that made the layer (`created_by`), if any. */
  readonly createdBy: string | null
  readonly comment: string | null
  /** A history line that made no layer (ENV, LABEL ...). */
  readonly emptyLayer: boolean
}

export interface ReferrerEntry {
  readonly digest: string
  readonly mediaType: string
  readonly artifactType: string | null
}

export interface ImageView {
  readonly repository: string
  readonly digest: string
  readonly mediaType: string
  readonly isIndex: boolean
  readonly artifactType: string | null
  readonly tags: readonly string[]
  readonly size: number | null
  readonly created: string | null
  readonly pushedAt: string | null
  readonly lastPulledAt: string | null
  readonly pullCount: number
  /** `os/architecture[/variant]` of the config (an image) or null. */
  readonly platform: string | null
  /** For an index: its platforms (buildx attestation manifests left out). */
  readonly platforms: readonly PlatformEntry[]
  /** How many attestation manifests the index holds (not listed as platforms). */
  readonly attestationManifests: number
  readonly layers: readonly LayerEntry[]
  readonly labels: Readonly<Record<string, string>>
  readonly annotations: Readonly<Record<string, string>>
  readonly referrers: {
    readonly signatures: readonly ReferrerEntry[]
    readonly sboms: readonly ReferrerEntry[]
    readonly attestations: readonly ReferrerEntry[]
    readonly other: readonly ReferrerEntry[]
  }
  /** The manifest this one refers to (`subject`), when it is a referrer. */
  readonly subject: string | null
  readonly canDelete: boolean
}

export interface StorageRepository {
  readonly name: string
  /** From the metadata index: its manifests' sizes summed (a blob two images share counts twice). */
  readonly size: number
  readonly tags: number
  /** From the last survey, stored bytes only this repository links, and bytes others link too; null before the first survey. */
  readonly uniqueBytes: number | null
  readonly sharedBytes: number | null
}

/** The store as a whole, from the last background survey; only for viewers who see every repository. */
export interface StorageSurveyView {
  readonly computedAt: string
  readonly durationMs: number
  /** Every stored blob once. */
  readonly storedBytes: number
  readonly sharedBytes: number
  readonly unreferencedBytes: number
  readonly uploadBytes: number
  /** What `berth gc` (as the schedule runs it) would free now. */
  readonly gcWouldFree: { readonly blobs: number; readonly bytes: number }
  /** What `berth gc --delete-untagged` would free now. */
  readonly gcUntaggedWouldFree: { readonly blobs: number; readonly bytes: number; readonly manifests: number }
  readonly lastGc: {
    readonly startedAt: string
    readonly finishedAt: string
    readonly blobs: number
    readonly bytesFreed: number
    readonly manifests: number
    readonly deleteUntagged: boolean
  } | null
}

export interface StorageView {
  /** The index sizes of every repository the viewer sees, summed. */
  readonly total: number
  /** How many repositories the viewer sees; `repositories` is one page of them, largest first. */
  readonly count: number
  readonly offset: number
  readonly limit: number
  readonly repositories: readonly StorageRepository[]
  /** 'pending' until the first survey finished; 'hidden' when the viewer does not see every repository. */
  readonly survey: StorageSurveyView | 'pending' | 'hidden'
}

export interface DeleteResult {
  readonly repository: string
  /** The tags removed. */
  readonly tags: readonly string[]
  /** The manifest deleted, when an image was deleted. */
  readonly digest: string | null
}

/** Every error of the API: `{ errors: [{ code, message, detail? }] }` (the registry's error body). */
export interface ApiError {
  readonly errors: readonly { readonly code: string; readonly message: string }[]
}
