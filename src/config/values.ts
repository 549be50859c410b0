/**
 * Parsers for setting values. Each takes what a flag, a `BERTH_*` variable or a config file
 * gave (strings from the first two; strings, numbers, booleans or lists from a file) and returns
 * the typed value, or throws `InvalidValue` with what is accepted. The loader adds the setting's
 * name and source to make the one-line error a user sees.
 */
import { isIP, isIPv4 } from 'node:net'
import { compileGlob } from '../access/rules.js'
import type { QuotaSetting } from '../storage/quota.js'
import { compileTagPattern, type RetentionKeep, type RetentionPolicy } from '../storage/retention.js'

/** Thrown by a parser; `accepted` completes "expected ..." in the user's error line. */
export class InvalidValue extends Error {
  override readonly name = 'InvalidValue'
  constructor(readonly accepted: string) {
    super(accepted)
  }
}

const TRUE = new Set(['1', 'true', 'yes', 'on'])
const FALSE = new Set(['0', 'false', 'no', 'off'])

export function parseBoolean(raw: unknown): boolean {
  if (typeof raw === 'boolean') return raw
  if (typeof raw === 'string' && TRUE.has(raw.trim().toLowerCase())) return true
  if (typeof raw === 'string' && FALSE.has(raw.trim().toLowerCase())) return false
  throw new InvalidValue('true or false (also 1/0, yes/no, on/off)')
}

export function parsePort(raw: unknown): number {
  const text = typeof raw === 'number' ? String(raw) : typeof raw === 'string' ? raw.trim() : ''
  if (!/^\d{1,5}$/.test(text)) throw new InvalidValue('a port number from 1 to 65535')
  const port = Number(text)
  if (port < 1 || port > 65535) throw new InvalidValue('a port number from 1 to 65535')
  return port
}

/** A whole number of at least 1 (a count of connections …). */
export function parseCount(raw: unknown): number {
  const text = typeof raw === 'number' ? String(raw) : typeof raw === 'string' ? raw.trim() : ''
  const count = /^\d{1,9}$/.test(text) ? Number(text) : 0
  if (count < 1) throw new InvalidValue('a whole number of at least 1')
  return count
}

export function parseString(raw: unknown): string {
  if (typeof raw === 'number') return String(raw)
  if (typeof raw !== 'string' || raw.trim() === '') throw new InvalidValue('a non-empty text')
  return raw.trim()
}

/** An address to listen on: an IPv4/IPv6 literal, or a host name that resolves locally. */
export function parseHost(raw: unknown): string {
  const text = parseString(raw)
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  if (isIP(bare) !== 0) return bare
  if (/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(bare)) return bare
  throw new InvalidValue('an IP address (0.0.0.0, ::, 127.0.0.1) or a host name')
}

/**
 * A listen address: `host:port`, `[v6]:port`, a bare port (127.0.0.1) or `unix:/path` (port is then
 * the socket's path). The one grammar of `--internal-listen` and `--metrics-listen`.
 */
export function parseListenAddress(raw: unknown): { port: number | string; host: string | undefined } {
  const value = parseString(raw)
  if (value.startsWith('unix:/')) return { port: value.slice('unix:'.length), host: undefined }
  const match = /^(?:(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):)?(\d{1,5})$/.exec(value)
  const port = Number(match?.[3])
  if (!match || port > 65535) throw new InvalidValue('address:port (127.0.0.1:5001, [::1]:5001), a port, or unix:/path')
  return { port, host: match[1] ?? match[2] ?? '127.0.0.1' }
}

/**
 * Whether a listen address accepts connections from this machine only: `localhost`, 127.0.0.0/8,
 * `::1` or an IPv4-mapped 127.x. Any other name counts as reachable from other machines, since
 * what it resolves to can change.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = (host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host).toLowerCase()
  const v4 = bare.startsWith('::ffff:') ? bare.slice('::ffff:'.length) : bare
  return bare === 'localhost' || bare === '::1' || (isIPv4(v4) && v4.startsWith('127.'))
}

/**
 * A DNS name the registry is reached by (what users type in `docker login <name>`). No scheme,
 * port or path: those are common mistakes (`https://registry.example.com`), so they get a hint.
 */
export function parseDomain(raw: unknown): string {
  const text = parseString(raw).toLowerCase().replace(/\.$/, '')
  const label = '[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?'
  if (new RegExp(`^(\\*\\.)?${label}(\\.${label})*$`).test(text) && text.length <= 253) return text
  if (/^[a-z]+:\/\//.test(text) || text.includes('/') || text.includes(':')) {
    throw new InvalidValue('a bare host name such as registry.example.com (no scheme, port or path)')
  }
  throw new InvalidValue('a host name such as registry.example.com')
}

/** One or more domains: repeated flags, a comma- or space-separated variable, or a list in a file. */
export function parseDomains(raw: unknown): string[] {
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(/[\s,]+/) : [raw]
  const domains = items.filter(item => !(typeof item === 'string' && item.trim() === '')).map(parseDomain)
  return [...new Set(domains)]
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }

/**
 * A byte size as nginx writes `client_max_body_size`: `5g`, `512m`, `100k`, plain bytes; binary
 * units (5g = 5 × 1024³). `KiB`/`MB`-style suffixes are accepted too and also mean binary units.
 */
export function parseSize(raw: unknown): number {
  const text = typeof raw === 'number' ? String(raw) : typeof raw === 'string' ? raw.trim().toLowerCase() : ''
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/.exec(text) ?? /^(\d+)\s*(b)$/.exec(text)
  const unit = match ? SIZE_UNITS[match[2] ?? ''] : undefined
  if (!match || unit === undefined) throw new InvalidValue('a size such as 5g, 512m, 100k or a number of bytes')
  const bytes = Math.floor(Number(match[1]) * unit)
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidValue('a size greater than 0, such as 5g')
  return bytes
}

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A duration such as `30m`, `6h`, `1d` in milliseconds; `off` or `0` is 0 (turned off). */
export function parseDuration(raw: unknown): number {
  const text = typeof raw === 'number' ? String(raw) : typeof raw === 'string' ? raw.trim().toLowerCase() : ''
  if (text === 'off' || text === '0') return 0
  const match = /^(\d+(?:\.\d+)?)\s*([smhd])$/.exec(text)
  const ms = match ? Math.round(Number(match[1]) * DURATION_UNITS[match[2]!]!) : NaN
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new InvalidValue('a duration such as 30m, 6h or 1d, or off')
  return ms
}

/** An http(s) URL of another registry to put the edge in front of. */
export function parseUpstream(raw: unknown): string {
  const text = parseString(raw)
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new InvalidValue('an http:// or https:// URL such as http://127.0.0.1:5000')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidValue('an http:// or https:// URL such as http://127.0.0.1:5000')
  }
  if (url.username || url.password) throw new InvalidValue('a URL without user:password')
  return url.href.replace(/\/$/, '')
}

/** One `--mirror`: a path prefix of this registry and the registry it mirrors, with optional credentials (config file only). */
export interface MirrorSetting {
  readonly prefix: string
  readonly url: string
  readonly username?: string
  readonly password?: string
}

const MIRROR_ACCEPTED = 'prefix=URL such as docker.io=https://registry.example.com (a list in the file may give {prefix, url, username, password})'
const mirrorPrefixGrammar = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/

/**
 * `--mirror <prefix>=<url>`: repeated flags, a comma-separated variable, or a list in the file whose
 * items are such strings or `{prefix, url, username, password}` mappings. The prefix is one
 * component of a repository name (`docker.io`, `quay.example`); each prefix at most once.
 */
export function parseMirrors(raw: unknown): MirrorSetting[] {
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : [raw]
  const mirrors = items.filter(item => !(typeof item === 'string' && item.trim() === '')).map(parseMirror)
  const seen = new Set<string>()
  for (const mirror of mirrors) {
    if (seen.has(mirror.prefix)) throw new InvalidValue(`each prefix once (${mirror.prefix} is given twice)`)
    seen.add(mirror.prefix)
  }
  if (mirrors.length === 0) throw new InvalidValue(MIRROR_ACCEPTED)
  return mirrors
}

function parseMirror(item: unknown): MirrorSetting {
  let prefix: unknown
  let url: unknown
  let credentials: { username?: string; password?: string } = {}
  if (typeof item === 'string') {
    const at = item.indexOf('=')
    if (at === -1) throw new InvalidValue(MIRROR_ACCEPTED)
    prefix = item.slice(0, at).trim()
    url = item.slice(at + 1).trim()
  } else if (typeof item === 'object' && item !== null && !Array.isArray(item)) {
    const record = item as Record<string, unknown>
    const unknown = Object.keys(record).filter(key => !['prefix', 'url', 'username', 'password'].includes(key))
    if (unknown.length > 0) throw new InvalidValue(`only prefix, url, username and password in a mirror entry (not ${unknown.join(', ')})`)
    prefix = record.prefix
    url = record.url
    if ((record.username === undefined) !== (record.password === undefined)) throw new InvalidValue('username and password together in a mirror entry')
    if (record.username !== undefined) credentials = { username: parseString(record.username), password: parseString(record.password) }
  } else {
    throw new InvalidValue(MIRROR_ACCEPTED)
  }
  if (typeof prefix !== 'string' || !mirrorPrefixGrammar.test(prefix)) {
    throw new InvalidValue('a mirror prefix of lower-case letters, digits and . _ - (one name component, such as docker.io)')
  }
  let upstream: string
  try {
    upstream = parseUpstream(url)
  } catch {
    throw new InvalidValue(`an http:// or https:// upstream URL without user:password after ${prefix}=`)
  }
  return { prefix, url: upstream, ...credentials }
}

/** `--mirror-default`: one mirror prefix (checked against the `--mirror` prefixes in config.ts). */
export function parseMirrorPrefix(raw: unknown): string {
  const text = parseString(raw)
  if (!mirrorPrefixGrammar.test(text)) throw new InvalidValue('a mirror prefix such as docker.io')
  return text
}

export const ACME_DIRECTORIES = {
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
  zerossl: 'https://acme.zerossl.com/v2/DV90',
} as const

/** `letsencrypt`, `letsencrypt-staging`, or the https URL of any RFC 8555 directory. */
export function parseAcmeDirectory(raw: unknown): string {
  const text = parseString(raw)
  if (Object.hasOwn(ACME_DIRECTORIES, text)) return ACME_DIRECTORIES[text as keyof typeof ACME_DIRECTORIES]
  try {
    const url = new URL(text)
    if (url.protocol === 'https:') return url.href
  } catch {
    // fall through to the error below
  }
  throw new InvalidValue('letsencrypt, letsencrypt-staging, zerossl or an https:// ACME directory URL')
}

export function parseEmail(raw: unknown): string {
  const text = parseString(raw).replace(/^mailto:/i, '')
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(text)) throw new InvalidValue('an email address such as me@example.com')
  return text
}

export function parseEnum<T extends string>(values: readonly T[]): (raw: unknown) => T {
  return raw => {
    const text = typeof raw === 'string' ? raw.trim().toLowerCase() : ''
    const found = values.find(value => value === text)
    if (found === undefined) throw new InvalidValue(`one of ${values.join(', ')}`)
    return found
  }
}

/** What a webhook may be told about (`events:` of an endpoint). */
export const WEBHOOK_EVENTS = ['push', 'delete', 'pull', 'gc'] as const
export type WebhookEventName = (typeof WEBHOOK_EVENTS)[number]

/** One webhook endpoint as configured: `--webhook <url>`, or an item of `webhooks:` in the config file. */
export interface WebhookSetting {
  readonly url: string
  /** Signs each body (X-Berth-Signature-256); `--webhook-secret` fills it for endpoints without their own. */
  readonly secret?: string | undefined
  /** Which events; undefined: push and delete (config.ts applies the default). */
  readonly events?: readonly WebhookEventName[] | undefined
  /** Repository globs as in the access file (`team/*`, `**`); undefined: every repository. */
  readonly repositories?: readonly string[] | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Milliseconds one delivery attempt may take; undefined: the default. */
  readonly timeoutMs?: number | undefined
  readonly format?: 'distribution' | 'cloudevents' | undefined
}

const WEBHOOK_ACCEPTED = 'an http:// or https:// URL (a list in the file may give {url, secret, events, repositories, headers, timeout, format})'
const WEBHOOK_KEYS = ['url', 'secret', 'events', 'repositories', 'headers', 'timeout', 'format']

/**
 * `--webhook <url>`: repeated flags, a comma-separated variable, or a list in the file whose items
 * are URLs or mappings with the endpoint's own settings. Each URL at most once.
 */
export function parseWebhooks(raw: unknown): WebhookSetting[] {
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : [raw]
  const hooks = items.filter(item => !(typeof item === 'string' && item.trim() === '')).map(parseWebhook)
  if (hooks.length === 0) throw new InvalidValue(WEBHOOK_ACCEPTED)
  const seen = new Set<string>()
  for (const hook of hooks) {
    if (seen.has(hook.url)) throw new InvalidValue(`each webhook URL once (${new URL(hook.url).origin} is given twice)`)
    seen.add(hook.url)
  }
  return hooks
}

function webhookUrl(raw: unknown): string {
  let url: URL
  try {
    url = new URL(parseString(raw))
  } catch {
    throw new InvalidValue(WEBHOOK_ACCEPTED)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidValue(WEBHOOK_ACCEPTED)
  if (url.username || url.password)
    throw new InvalidValue('a webhook URL without user:password (send credentials with headers: {Authorization: ...} in the file)')
  return url.href
}

function parseWebhook(item: unknown): WebhookSetting {
  if (typeof item === 'string') return { url: webhookUrl(item) }
  if (typeof item !== 'object' || item === null || Array.isArray(item)) throw new InvalidValue(WEBHOOK_ACCEPTED)
  const record = item as Record<string, unknown>
  const unknown = Object.keys(record).filter(key => !WEBHOOK_KEYS.includes(key))
  if (unknown.length > 0) throw new InvalidValue(`only ${WEBHOOK_KEYS.join(', ')} in a webhook entry (not ${unknown.join(', ')})`)
  const url = webhookUrl(record.url)
  const list = (value: unknown, what: string): string[] => {
    const values = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',') : undefined
    if (values === undefined || values.length === 0 || values.some(entry => typeof entry !== 'string'))
      throw new InvalidValue(`a list of ${what} in a webhook entry`)
    return (values as string[]).map(entry => entry.trim())
  }
  let events: WebhookEventName[] | undefined
  if (record.events !== undefined) {
    events = list(record.events, WEBHOOK_EVENTS.join(', ')).map(name => {
      const found = WEBHOOK_EVENTS.find(event => event === name.toLowerCase())
      if (found === undefined) throw new InvalidValue(`webhook events among ${WEBHOOK_EVENTS.join(', ')} (not ${JSON.stringify(name)})`)
      return found
    })
  }
  let repositories: string[] | undefined
  if (record.repositories !== undefined) {
    repositories = list(record.repositories, 'repository globs')
    for (const glob of repositories) {
      const compiled = compileGlob(glob)
      if (typeof compiled === 'string') throw new InvalidValue(`webhook repositories as globs: ${compiled}`)
    }
  }
  let headers: Record<string, string> | undefined
  if (record.headers !== undefined) {
    if (typeof record.headers !== 'object' || record.headers === null || Array.isArray(record.headers)) {
      throw new InvalidValue('headers as a mapping of name: value in a webhook entry')
    }
    headers = {}
    for (const [name, value] of Object.entries(record.headers as Record<string, unknown>)) {
      if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name) || (typeof value !== 'string' && typeof value !== 'number') || /[\r\n]/.test(String(value))) {
        throw new InvalidValue('headers as a mapping of name: value (one line each) in a webhook entry')
      }
      headers[name] = String(value)
    }
  }
  const format = record.format === undefined ? undefined : parseEnum(['distribution', 'cloudevents'] as const)(record.format)
  return {
    url,
    ...(record.secret !== undefined ? { secret: parseString(record.secret) } : {}),
    ...(events !== undefined ? { events: [...new Set(events)] } : {}),
    ...(repositories !== undefined ? { repositories } : {}),
    ...(headers !== undefined ? { headers } : {}),
    ...(record.timeout !== undefined ? { timeoutMs: positiveDuration(record.timeout) } : {}),
    ...(format !== undefined ? { format } : {}),
  }
}

function positiveDuration(raw: unknown): number {
  const ms = parseDuration(raw)
  if (ms === 0) throw new InvalidValue('a webhook timeout such as 10s')
  return ms
}

const RETENTION_ACCEPTED =
  'a list of policies {repositories: [globs], keep: {last, tags, pushedWithin, pulledWithin}, untagged: {olderThan}} (JSON on the command line)'
const RETENTION_KEYS = ['repositories', 'keep', 'untagged']
const RETENTION_KEEP_KEYS = ['last', 'tags', 'pushedWithin', 'pulledWithin']

/**
 * `retention:` in the config file, a list of policies (storage/retention.ts has the semantics); on
 * the command line or in BERTH_RETENTION each policy (or the list) as JSON. The first policy whose
 * globs match a repository applies to it.
 */
export function parseRetention(raw: unknown): RetentionPolicy[] {
  return parseObjectList(raw, RETENTION_ACCEPTED, 'retention policy', parseRetentionPolicy)
}

function mapping(value: unknown, what: string, keys: readonly string[]): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidValue(`${what} as a mapping`)
  const record = value as Record<string, unknown>
  const unknown = Object.keys(record).filter(key => !keys.includes(key))
  if (unknown.length > 0) throw new InvalidValue(`only ${keys.join(', ')} in ${what} (not ${unknown.join(', ')})`)
  return record
}

function parseRetentionPolicy(item: unknown): RetentionPolicy {
  const record = mapping(item, 'a retention policy', RETENTION_KEYS)
  const globs = typeof record.repositories === 'string' ? [record.repositories] : record.repositories
  if (!Array.isArray(globs) || globs.length === 0 || globs.some(glob => typeof glob !== 'string')) {
    throw new InvalidValue('repositories: a list of repository globs (such as ci/*, team/**, **) in a retention policy')
  }
  for (const glob of globs as string[]) {
    const compiled = compileGlob(glob.trim())
    if (typeof compiled === 'string') throw new InvalidValue(`retention repositories as globs: ${compiled}`)
  }
  const policy: { repositories: string[]; keep?: RetentionKeep; untagged?: { olderThanMs: number } } = {
    repositories: (globs as string[]).map(glob => glob.trim()),
  }
  if (record.keep !== undefined && record.keep !== null) {
    const keep = mapping(record.keep, 'keep:', RETENTION_KEEP_KEYS)
    const rules: { -readonly [K in keyof RetentionKeep]: RetentionKeep[K] } = {}
    if (keep.last !== undefined) rules.last = parseCount(keep.last)
    if (keep.tags !== undefined) {
      const patterns = typeof keep.tags === 'string' ? [keep.tags] : keep.tags
      if (!Array.isArray(patterns) || patterns.length === 0 || patterns.some(p => typeof p !== 'string' || p === '')) {
        throw new InvalidValue('keep.tags: a list of regular expressions a whole tag must match, such as ^v\\d+\\.\\d+\\.\\d+$ or latest')
      }
      for (const pattern of patterns as string[]) {
        try {
          compileTagPattern(pattern)
        } catch (error) {
          throw new InvalidValue(`keep.tags as regular expressions (${JSON.stringify(pattern)}: ${(error as Error).message})`)
        }
      }
      rules.tags = patterns as string[]
    }
    if (keep.pushedWithin !== undefined) rules.pushedWithinMs = positiveRetentionDuration(keep.pushedWithin, 'keep.pushedWithin')
    if (keep.pulledWithin !== undefined) rules.pulledWithinMs = positiveRetentionDuration(keep.pulledWithin, 'keep.pulledWithin')
    if (Object.keys(rules).length === 0) {
      throw new InvalidValue('at least one of last, tags, pushedWithin, pulledWithin under keep: (leave keep: out to keep every tag)')
    }
    policy.keep = rules
  }
  if (record.untagged !== undefined && record.untagged !== null) {
    const untagged = mapping(record.untagged, 'untagged:', ['olderThan'])
    if (untagged.olderThan === undefined) throw new InvalidValue('untagged: {olderThan: <duration>} such as 24h')
    policy.untagged = { olderThanMs: positiveRetentionDuration(untagged.olderThan, 'untagged.olderThan') }
  }
  return policy
}

function positiveRetentionDuration(raw: unknown, what: string): number {
  let ms = 0
  try {
    ms = parseDuration(raw)
  } catch {
    // reported below
  }
  if (ms === 0) throw new InvalidValue(`${what}: a duration such as 30d, 12h or 90m`)
  return ms
}

const QUOTAS_ACCEPTED = 'a list of quotas {repositories: [globs], maxSize: <size such as 10g>} (JSON on the command line)'

/**
 * `quotas:` in the config file, a list of {repositories, maxSize} (storage/quota.ts has the
 * semantics); on the command line or in BERTH_QUOTA each quota (or the list) as JSON. The first
 * quota whose globs match a repository applies to it.
 */
export function parseQuotas(raw: unknown): QuotaSetting[] {
  return parseObjectList(raw, QUOTAS_ACCEPTED, 'quota', parseQuota)
}

/**
 * A list setting of objects: the config file's list, or on the command line and in the environment
 * each item (or the whole list) as JSON. A mistake in an item names it (`quota 2`).
 */
function parseObjectList<T>(raw: unknown, accepted: string, itemName: string, parseItem: (item: unknown) => T): T[] {
  const items = (Array.isArray(raw) ? raw : [raw]).flatMap(item => {
    if (typeof item !== 'string') return [item]
    let parsed: unknown
    try {
      parsed = JSON.parse(item)
    } catch {
      throw new InvalidValue(accepted)
    }
    return Array.isArray(parsed) ? parsed : [parsed]
  })
  if (items.length === 0) throw new InvalidValue(accepted)
  return items.map((item, index) => {
    try {
      return parseItem(item)
    } catch (error) {
      if (error instanceof InvalidValue) throw new InvalidValue(`${error.accepted} (${itemName} ${index + 1})`)
      throw error
    }
  })
}

function parseQuota(item: unknown): QuotaSetting {
  const record = mapping(item, 'a quota', ['repositories', 'maxSize'])
  const globs = typeof record.repositories === 'string' ? [record.repositories] : record.repositories
  if (!Array.isArray(globs) || globs.length === 0 || globs.some(glob => typeof glob !== 'string')) {
    throw new InvalidValue('repositories: a list of repository globs (such as ci/*, team/**, **) in a quota')
  }
  for (const glob of globs as string[]) {
    const compiled = compileGlob(glob.trim())
    if (typeof compiled === 'string') throw new InvalidValue(`quota repositories as globs: ${compiled}`)
  }
  if (record.maxSize === undefined) throw new InvalidValue('maxSize: a size such as 10g or 500m in a quota')
  let maxSize: number
  try {
    maxSize = parseSize(record.maxSize)
  } catch {
    throw new InvalidValue('maxSize: a size such as 10g or 500m (binary units, greater than 0) in a quota')
  }
  return { repositories: (globs as string[]).map(glob => glob.trim()), maxSize }
}
