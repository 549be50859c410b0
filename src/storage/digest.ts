/**
 * Digests as the OCI image spec defines them (descriptor.md "Digests"):
 * `algorithm ":" encoded`, with the registered algorithms sha256 (64 lowercase hex) and sha512 (128).
 * Anything else is refused before it can reach a path or a hash function.
 */
import { createHash, type Hash } from 'node:crypto'
import { DigestInvalidError } from './errors.js'

export type DigestAlgorithm = 'sha256' | 'sha512'

export interface Digest {
  readonly algorithm: DigestAlgorithm
  /** Lowercase hex. */
  readonly hex: string
  /** `algorithm:hex`, the wire and link-file form. */
  readonly value: string
}

const encodedLength: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 }
// The spec's general grammar; used to tell "malformed" from "well formed but unsupported".
const grammar = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

export function isDigestAlgorithm(value: string): value is DigestAlgorithm {
  return value === 'sha256' || value === 'sha512'
}

/** Parses `sha256:<hex>` or `sha512:<hex>`. Throws DigestInvalidError for anything else. */
export function parseDigest(value: string): Digest {
  if (value.length > 256 || !grammar.test(value)) throw new DigestInvalidError(value, 'malformed digest')
  const colon = value.indexOf(':')
  const algorithm = value.slice(0, colon)
  const hex = value.slice(colon + 1)
  if (!isDigestAlgorithm(algorithm)) throw new DigestInvalidError(value, `unsupported digest algorithm ${algorithm}`)
  if (hex.length !== encodedLength[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new DigestInvalidError(value, `invalid ${algorithm} encoding`)
  }
  return { algorithm, hex, value }
}

export function isDigest(value: string): boolean {
  try {
    parseDigest(value)
    return true
  } catch {
    return false
  }
}

export function digestOf(content: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(content).digest('hex')
  return { algorithm, hex, value: `${algorithm}:${hex}` }
}

export function newHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm)
}

export function digestFromHash(hash: Hash, algorithm: DigestAlgorithm): Digest {
  const hex = hash.digest('hex')
  return { algorithm, hex, value: `${algorithm}:${hex}` }
}

/** The digest of zero bytes: the only blob an empty upload may commit to. */
export const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
