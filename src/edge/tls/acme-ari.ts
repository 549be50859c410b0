/**
 * ACME Renewal Information (ARI, RFC 9773): the CA tells us when to renew, e.g. ahead of a mass
 * revocation. acme-client 5.4 has no ARI, so the certificate identifier, the GET and the parsing are here.
 *
 * certID (RFC 9773 §4.1) = base64url(AKI keyIdentifier) "." base64url(serial number DER content bytes),
 * e.g. AKI 69:88:5B:…:D4 and serial 00:87:65:43:21 → `aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE`.
 */
import { X509Certificate } from 'node:crypto'

export class AriError extends Error {
  override readonly name = 'AriError'
}

/** Minimal DER reader: enough to walk a certificate to its serial number and extensions. */
interface Tlv {
  tag: number
  start: number // first content byte
  end: number // one past the last content byte
}

function readTlv(der: Uint8Array, offset: number): Tlv {
  const tag = der[offset]
  let lengthByte = der[offset + 1]
  if (tag === undefined || lengthByte === undefined) throw new AriError('truncated DER')
  let start = offset + 2
  let length = lengthByte
  if (lengthByte & 0x80) {
    const count = lengthByte & 0x7f
    if (count === 0 || count > 4) throw new AriError('unsupported DER length')
    length = 0
    for (let i = 0; i < count; i++) {
      lengthByte = der[start + i]
      if (lengthByte === undefined) throw new AriError('truncated DER')
      length = length * 256 + lengthByte
    }
    start += count
  }
  if (start + length > der.length) throw new AriError('truncated DER')
  return { tag, start, end: start + length }
}

function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const result: Tlv[] = []
  for (let offset = parent.start; offset < parent.end;) {
    const child = readTlv(der, offset)
    result.push(child)
    offset = child.end
  }
  return result
}

const AKI_OID = Buffer.from([0x55, 0x1d, 0x23]) // 2.5.29.35

/** Serial number content bytes and AKI keyIdentifier of a DER certificate. */
export function certificateIdentifiers(der: Uint8Array): { serial: Buffer; authorityKeyId: Buffer } {
  const certificate = readTlv(der, 0)
  const tbs = children(der, certificate)[0]
  if (!tbs) throw new AriError('not a certificate')
  const fields = children(der, tbs)
  let index = 0
  if (fields[0]?.tag === 0xa0) index++ // [0] EXPLICIT version
  const serialTlv = fields[index]
  if (!serialTlv || serialTlv.tag !== 0x02) throw new AriError('certificate has no serial number')
  const serial = Buffer.from(der.subarray(serialTlv.start, serialTlv.end))
  const extensionsWrapper = fields.find(f => f.tag === 0xa3) // [3] EXPLICIT Extensions
  const extensionList = extensionsWrapper ? children(der, extensionsWrapper)[0] : undefined
  for (const extension of extensionList ? children(der, extensionList) : []) {
    const parts = children(der, extension)
    const oid = parts[0]
    const value = parts[parts.length - 1] // extnValue OCTET STRING (critical BOOLEAN may sit between)
    if (!oid || !value || !Buffer.from(der.subarray(oid.start, oid.end)).equals(AKI_OID)) continue
    const aki = readTlv(der, value.start) // AuthorityKeyIdentifier ::= SEQUENCE { [0] keyIdentifier … }
    const keyId = children(der, aki).find(c => c.tag === 0x80)
    if (!keyId) break
    return { serial, authorityKeyId: Buffer.from(der.subarray(keyId.start, keyId.end)) }
  }
  throw new AriError('certificate has no authority key identifier')
}

export function ariCertIdFrom(authorityKeyId: Uint8Array, serial: Uint8Array): string {
  return `${Buffer.from(authorityKeyId).toString('base64url')}.${Buffer.from(serial).toString('base64url')}`
}

/** The ARI certID of the leaf (first certificate) of a PEM chain. */
export function ariCertId(chainPem: string): string {
  const leaf = new X509Certificate(chainPem)
  const { serial, authorityKeyId } = certificateIdentifiers(leaf.raw)
  return ariCertIdFrom(authorityKeyId, serial)
}

export interface RenewalInfo {
  readonly windowStart: Date
  readonly windowEnd: Date
  readonly explanationUrl?: string
  /** When to ask again: the Retry-After header, clamped to [1 min, 24 h]; 6 h when absent. */
  readonly retryAfterMs: number
}

const DEFAULT_ARI_RETRY_MS = 6 * 60 * 60_000

/** Parses a Retry-After header value (delta-seconds or HTTP date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | undefined | null, now: number): number | undefined {
  if (!value) return undefined
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const date = Date.parse(trimmed)
  return Number.isFinite(date) ? Math.max(0, date - now) : undefined
}

/** Parses a renewalInfo response (RFC 9773 §4.2). Throws AriError on anything malformed. */
export function parseRenewalInfo(body: unknown, retryAfterHeader: string | undefined | null, now: number): RenewalInfo {
  const window = (body as { suggestedWindow?: { start?: unknown; end?: unknown } } | null)?.suggestedWindow
  const start = typeof window?.start === 'string' ? Date.parse(window.start) : NaN
  const end = typeof window?.end === 'string' ? Date.parse(window.end) : NaN
  if (!Number.isFinite(start) || !Number.isFinite(end)) throw new AriError('renewalInfo has no valid suggestedWindow')
  if (end < start) throw new AriError('renewalInfo suggestedWindow ends before it starts')
  const explanation = (body as { explanationURL?: unknown }).explanationURL
  const retryAfter = parseRetryAfter(retryAfterHeader, now) ?? DEFAULT_ARI_RETRY_MS
  return {
    windowStart: new Date(start),
    windowEnd: new Date(end),
    ...(typeof explanation === 'string' ? { explanationUrl: explanation } : {}),
    retryAfterMs: Math.min(Math.max(retryAfter, 60_000), 24 * 60 * 60_000),
  }
}

/** `<renewalInfo>/<certID>`; the base URL may or may not end in a slash. */
export function renewalInfoUrl(base: string, certId: string): string {
  return `${base.replace(/\/+$/, '')}/${certId}`
}
