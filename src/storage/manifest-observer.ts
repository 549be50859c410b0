/**
 * What the manifest store tells about changes it has committed, for derived data kept beside the
 * registry tree (the metadata index; later the event queue). The store calls these after the
 * change is in the tree, never before, so an observer that reads the tree sees it.
 *
 * Contract for implementations: the `async` methods are awaited on the request that made the
 * change and must not reject (failures are the observer's to log and repair: the change itself
 * is committed and stays); `manifestPulled` is called on the hot path and must return at once
 * without I/O.
 */
export interface ManifestObserver {
  /**
   * A manifest was stored in `repository` (its bytes, revision link, referrer link), and `tags`
   * point at it now (empty for a push by digest without `?tag=`).
   */
  manifestPushed(event: ManifestPushedEvent): Promise<void>
  /** `tag` was removed from `repository` (DELETE by tag). */
  tagDeleted(repository: string, tag: string): Promise<void>
  /** The revision `digest` was removed from `repository` (DELETE by digest), and `tags` with it. */
  manifestDeleted(repository: string, digest: string, tags: readonly string[]): Promise<void>
  /** A client fetched the manifest `digest` of `repository` (a GET answered with its bytes). */
  manifestPulled(repository: string, digest: string): void
}

export interface ManifestPushedEvent {
  readonly repository: string
  readonly digest: string
  /** The bytes as pushed (shared: do not modify). */
  readonly content: Buffer
  readonly tags: readonly string[]
}
