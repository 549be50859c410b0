/**
 * What a webhook receives: the body of one event, in distribution's notification envelope (what
 * registry:2 sends, so its consumers work unchanged) or as a CloudEvent, and its signature.
 *
 * distribution's envelope (`notifications/event.go`; `registry:2` sends it as `events.v1+json`):
 *
 *   {"events":[{"id":"…","timestamp":"2026-12-07T13:48:34.547Z","action":"push",
 *     "target":{"mediaType":"…","digest":"sha256:…","size":1234,"length":1234,"repository":"team/app",
 *               "url":"https://registry.example.com/v2/team/app/manifests/sha256:…","tag":"1.0"},
 *     "request":{"id":"…","addr":"203.0.113.7","host":"registry.example.com","method":"PUT","useragent":"…"},
 *     "actor":{"name":"alice"},"source":{"addr":"<hostname>","instanceID":"…"}}]}
 *
 * A tag delete carries `target.tag`, a manifest or blob delete `target.digest` (distribution sends no
 * tag there). A garbage collection run is Berth's own action `gc`, with its summary in `gc` and no
 * target (consumers that know only push/pull/delete skip an action they do not know).
 *
 * CloudEvents 1.0, structured mode (`application/cloudevents+json`): `type` is `berth.artifact.pushed`,
 * `berth.artifact.pulled`, `berth.artifact.deleted`, `berth.tag.deleted`, `berth.blob.deleted` or
 * `berth.gc.completed`; `data` holds the same target, request and actor records.
 *
 * The signature is the hex HMAC-SHA256 of the exact body bytes with the endpoint's secret, sent as
 * `X-Berth-Signature-256: sha256=<hex>` (GitHub's scheme). The body carries the event's time, so a
 * receiver can refuse old replays.
 */
import { createHmac } from 'node:crypto'
import type { Actor, RegistryEvent } from './events.js'

export const DISTRIBUTION_EVENTS_TYPE = 'application/vnd.docker.distribution.events.v1+json'
export const CLOUDEVENTS_TYPE = 'application/cloudevents+json; charset=utf-8'
export const SIGNATURE_HEADER = 'x-berth-signature-256'

export type WebhookFormat = 'distribution' | 'cloudevents'

/** The events a webhook can carry (logins and access-file reloads stay in the audit trail). */
export type WebhookEvent = Extract<RegistryEvent, { action: 'push' | 'pull' | 'delete' | 'gc' }>

export function isWebhookEvent(event: RegistryEvent): event is WebhookEvent {
  return event.action === 'push' || event.action === 'pull' || event.action === 'delete' || event.action === 'gc'
}

/** Who sends: distribution's `source` record. */
export interface EventSource {
  /** The machine's host name. */
  readonly addr: string
  /** This process's id (changes with each start). */
  readonly instanceID: string
}

/** One event in distribution's record shape (fields Berth does not know are left out). */
export function distributionEvent(event: WebhookEvent, actor: Actor | undefined, id: string, time: Date, source: EventSource): Record<string, unknown> {
  const record: Record<string, unknown> = { id, timestamp: time.toISOString(), action: event.action }
  if (event.action === 'gc') {
    record.gc = { blobsDeleted: event.blobsDeleted, bytesFreed: event.bytesFreed, manifestsDeleted: event.manifestsDeleted, seconds: event.seconds }
  } else {
    record.target = targetOf(event, actor)
  }
  if (actor !== undefined && event.action !== 'gc') {
    record.request = {
      id: actor.requestId ?? '',
      ...(actor.address !== undefined ? { addr: actor.address } : {}),
      ...(actor.host !== undefined ? { host: actor.host } : {}),
      method: actor.method ?? '',
      useragent: actor.userAgent ?? '',
    }
    record.actor = actor.user !== undefined ? { name: actor.user } : {}
  }
  record.source = { addr: source.addr, instanceID: source.instanceID }
  return record
}

function targetOf(event: Exclude<WebhookEvent, { action: 'gc' }>, actor: Actor | undefined): Record<string, unknown> {
  if (event.action === 'delete') {
    if (event.target === 'tag') return { repository: event.repository, tag: event.reference }
    return { digest: event.reference, repository: event.repository }
  }
  const url = actor?.host !== undefined ? `${actor.scheme ?? 'https'}://${actor.host}/v2/${event.repository}/manifests/${event.digest}` : undefined
  return {
    mediaType: event.mediaType,
    digest: event.digest,
    size: event.size,
    length: event.size,
    repository: event.repository,
    ...(url !== undefined ? { url } : {}),
    ...(event.tag !== undefined ? { tag: event.tag } : {}),
  }
}

function cloudEventType(event: WebhookEvent): string {
  if (event.action === 'push') return 'berth.artifact.pushed'
  if (event.action === 'pull') return 'berth.artifact.pulled'
  if (event.action === 'gc') return 'berth.gc.completed'
  return event.target === 'tag' ? 'berth.tag.deleted' : event.target === 'blob' ? 'berth.blob.deleted' : 'berth.artifact.deleted'
}

function subjectOf(event: WebhookEvent): string | undefined {
  if (event.action === 'gc') return undefined
  if (event.action === 'delete') return event.target === 'tag' ? `${event.repository}:${event.reference}` : `${event.repository}@${event.reference}`
  return event.tag !== undefined ? `${event.repository}:${event.tag}` : `${event.repository}@${event.digest}`
}

/** The body and its content type for one event. */
export function renderBody(
  format: WebhookFormat,
  event: WebhookEvent,
  actor: Actor | undefined,
  id: string,
  time: Date,
  source: EventSource,
): { contentType: string; body: string } {
  const record = distributionEvent(event, actor, id, time, source)
  if (format === 'distribution') return { contentType: DISTRIBUTION_EVENTS_TYPE, body: JSON.stringify({ events: [record] }) }
  const { id: _id, timestamp: _timestamp, action: _action, source: _source, ...data } = record
  const subject = subjectOf(event)
  const cloudEvent = {
    specversion: '1.0',
    id,
    source: `berth://${source.addr}`,
    type: cloudEventType(event),
    time: time.toISOString(),
    ...(subject !== undefined ? { subject } : {}),
    datacontenttype: 'application/json',
    data: { action: event.action, ...data },
  }
  return { contentType: CLOUDEVENTS_TYPE, body: JSON.stringify(cloudEvent) }
}

/** `sha256=<hex>`: the value of X-Berth-Signature-256 for these body bytes. */
export function signature(secret: string, body: string | Uint8Array): string {
  return 'sha256=' + createHmac('sha256', secret).update(body).digest('hex')
}
