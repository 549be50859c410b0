/**
 * What changed in the registry, told once the change is committed (the store holds it): the audit
 * trail writes every event, and later subscribers (webhooks) take the ones they want. The engine, the
 * edge and the background jobs emit; nothing they do waits for a sink or fails because of one.
 */

/** Who made a change: the verified user (absent for anonymous), the client's address, the request id. */
export interface Actor {
  readonly user?: string | undefined
  readonly address?: string | undefined
  readonly requestId?: string | undefined
  /** The request as webhooks describe it (distribution's `request` record): method, Host header, User-Agent, and the door's scheme. */
  readonly method?: string | undefined
  readonly host?: string | undefined
  readonly userAgent?: string | undefined
  readonly scheme?: 'http' | 'https' | undefined
}

export type RegistryEvent =
  /** A manifest stored under a tag or by digest; `previous` is the digest a moved tag pointed at before. */
  | {
      readonly action: 'push'
      readonly repository: string
      readonly digest: string
      readonly mediaType: string
      readonly size: number
      readonly tag?: string | undefined
      readonly previous?: string | undefined
    }
  /** A manifest served (GET answered 200); emitted only when a sink `wantsPulls`, and given only to those. */
  | {
      readonly action: 'pull'
      readonly repository: string
      readonly digest: string
      readonly mediaType: string
      readonly size: number
      readonly tag?: string | undefined
    }
  /** A tag removed, or a manifest (with the tags that pointed at it), or a blob link. */
  | { readonly action: 'delete'; readonly repository: string; readonly target: 'tag' | 'manifest' | 'blob'; readonly reference: string }
  /** A garbage collection run that finished. */
  | { readonly action: 'gc'; readonly blobsDeleted: number; readonly bytesFreed: number; readonly manifestsDeleted: number; readonly seconds: number }
  /** A password checked against the htpasswd file (a cached answer is not a new login). */
  | { readonly action: 'login'; readonly outcome: 'ok' | 'failed' | 'throttled'; readonly userName?: string | undefined }
  /** The access file read again: its rules apply now, or a broken version was refused. */
  | { readonly action: 'access-reload'; readonly file: string; readonly outcome: 'applied' | 'refused'; readonly detail?: string | undefined }

/** Takes committed events. Must not throw, and must not make the caller wait. */
export interface EventSink {
  emit(event: RegistryEvent, actor?: Actor): void
  /**
   * True when this sink takes pull events. The engine checks it before building one, so a registry
   * without such a sink does no work per pull; a sink without it is never given pulls.
   */
  readonly wantsPulls?: boolean
}

/** A sink that drops everything (no audit log, no webhooks). */
export const NO_EVENTS: EventSink = { emit() {} }

/** One sink over several. */
export function fanOut(sinks: readonly EventSink[]): EventSink {
  if (sinks.length === 0) return NO_EVENTS
  if (sinks.length === 1) return sinks[0]!
  return {
    wantsPulls: sinks.some(sink => sink.wantsPulls === true),
    emit(event, actor) {
      for (const sink of sinks) if (event.action !== 'pull' || sink.wantsPulls === true) sink.emit(event, actor)
    },
  }
}
