/**
 * Compact JWS with ES256 only (RFC 7515, RFC 7518 §3.4), on node:crypto: the signature is the raw
 * 64-byte r||s (`dsaEncoding: 'ieee-p1363'`), not DER.
 *
 * `decodeJws` is the strict front half of verification: size first, then exactly three base64url
 * segments in canonical form, a header that is a JSON object with `alg` exactly "ES256", a `kid`,
 * `typ` absent or "JWT" and no other member (Berth reads only its own tokens, so anything else,
 * `crit`, `jwk`, `jku`, `x5c` included, is refused rather than ignored), a payload that is a JSON
 * object. The algorithm is never taken from the token: `verifyJws` checks ES256 with the key the
 * caller looked up by `kid`, over the exact bytes received, so `alg: none` and HS256-with-the-public-key
 * tricks have nothing to work with. Claims are the caller's (token-service.ts).
 */
import { type KeyObject, sign, verify } from 'node:crypto'

/** Tokens longer than this are refused before any decoding (Node's default header limit is 16 KiB). */
export const MAX_TOKEN_BYTES = 16 * 1024

/** A P-256 signature in IEEE P1363 form: r and s, 32 bytes each. */
const SIGNATURE_BYTES = 64
const BASE64URL = /^[A-Za-z0-9_-]*$/
/** What `kid` may look like: an RFC 7638 thumbprint is 43 base64url characters. */
export const KID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

export interface JwsHeader {
  alg: 'ES256'
  kid: string
  typ?: 'JWT'
}

export interface DecodedJws {
  header: JwsHeader
  payload: Record<string, unknown>
  /** `base64url(header) '.' base64url(payload)` exactly as received: what the signature covers. */
  signingInput: string
  signature: Buffer
}

export class JwsFormatError extends Error {
  override readonly name = 'JwsFormatError'
}

export function encodeJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

/** Signs `payload` with an ES256 key; the header carries `kid`. */
export function signJws(payload: Record<string, unknown>, key: { kid: string; privateKey: KeyObject }): string {
  const signingInput = `${encodeJson({ typ: 'JWT', alg: 'ES256', kid: key.kid })}.${encodeJson(payload)}`
  const signature = sign('sha256', Buffer.from(signingInput), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
  return `${signingInput}.${signature.toString('base64url')}`
}

/** Parses a compact JWS without trusting it. @throws JwsFormatError for anything but a well-formed ES256 JWS. */
export function decodeJws(token: string): DecodedJws {
  if (token.length > MAX_TOKEN_BYTES) throw new JwsFormatError('token too long')
  const parts = token.split('.')
  if (parts.length !== 3) throw new JwsFormatError('not a compact JWS')
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string]
  const header = decodeObject(headerPart, 'header')
  const { alg, kid, typ, ...rest } = header
  if (alg !== 'ES256') throw new JwsFormatError('algorithm is not ES256')
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) throw new JwsFormatError('missing or malformed kid')
  if (typ !== undefined && typ !== 'JWT') throw new JwsFormatError('typ is not JWT')
  if (Object.keys(rest).length > 0) throw new JwsFormatError('unexpected header parameters')
  const payload = decodeObject(payloadPart, 'payload')
  const signature = decodeSegment(signaturePart, 'signature')
  if (signature.length !== SIGNATURE_BYTES) throw new JwsFormatError('signature is not 64 bytes')
  return { header: { alg, kid, ...(typ !== undefined ? { typ } : {}) }, payload, signingInput: `${headerPart}.${payloadPart}`, signature }
}

/** Whether `jws` carries a valid ES256 signature by `publicKey`. */
export function verifyJws(jws: DecodedJws, publicKey: KeyObject): boolean {
  return verify('sha256', Buffer.from(jws.signingInput), { key: publicKey, dsaEncoding: 'ieee-p1363' }, jws.signature)
}

/** Strict base64url: the unpadded alphabet only, and the canonical encoding of what it decodes to. */
function decodeSegment(segment: string, what: string): Buffer {
  if (segment === '' || !BASE64URL.test(segment) || segment.length % 4 === 1) throw new JwsFormatError(`${what} is not base64url`)
  const bytes = Buffer.from(segment, 'base64url')
  // Unused trailing bits set would decode to the same bytes: one token, one spelling.
  if (bytes.toString('base64url') !== segment) throw new JwsFormatError(`${what} is not canonical base64url`)
  return bytes
}

function decodeObject(segment: string, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(decodeSegment(segment, what)))
  } catch (error) {
    if (error instanceof JwsFormatError) throw error
    throw new JwsFormatError(`${what} is not JSON`, { cause: error })
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JwsFormatError(`${what} is not a JSON object`)
  return value as Record<string, unknown>
}
