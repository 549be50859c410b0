/**
 * The user-facing ACME options (`--acme`, `--acme-email`, `--acme-agree-tos`, `--acme-directory`,
 * `--acme-eab-kid`, `--acme-eab-hmac`, `--domain`, `--certs`) and their early validation, so the CLI
 * can refuse to start with one line a user can act on.
 */
import { isIP } from 'node:net'
import acme from 'acme-client'

export type AcmeErrorCode = 'TOS_NOT_AGREED' | 'INVALID_OPTIONS' | 'CA_UNREACHABLE' | 'RATE_LIMITED' | 'VALIDATION_FAILED' | 'ORDER_FAILED' | 'ACCOUNT_FAILED'

/** Anything ACME that went wrong, with a message meant for the person running Berth. */
export class AcmeError extends Error {
  override readonly name = 'AcmeError'
  constructor(
    readonly code: AcmeErrorCode,
    message: string,
    options?: ErrorOptions & { retryAfterMs?: number },
  ) {
    super(message, options)
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs
  }
  /** Set when the CA said how long to wait (Retry-After). */
  readonly retryAfterMs?: number
}

/** `--acme-directory` presets. Anything else must be an RFC 8555 directory URL. */
export const ACME_DIRECTORY_PRESETS: Readonly<Record<string, string>> = {
  letsencrypt: acme.directory.letsencrypt.production,
  'letsencrypt-staging': acme.directory.letsencrypt.staging,
  zerossl: acme.directory.zerossl.production,
}

export interface AcmeOptions {
  /** Names on the one certificate; the first names its folder. */
  domains: readonly string[]
  email?: string | undefined
  /** `--acme-agree-tos`: the CA's terms of service must be accepted explicitly. */
  agreeTos?: boolean | undefined
  /** Preset name or directory URL; default `letsencrypt`. */
  directory?: string | undefined
  eabKid?: string | undefined
  eabHmac?: string | undefined
}

export interface ResolvedAcmeOptions {
  domains: string[]
  email?: string
  directoryUrl: string
  eab?: { kid: string; hmacKey: string }
}

/** Turns a preset name or URL into the directory URL; throws AcmeError('INVALID_OPTIONS'). */
export function resolveAcmeDirectory(value: string | undefined): string {
  const choice = (value ?? 'letsencrypt').trim()
  const preset = ACME_DIRECTORY_PRESETS[choice]
  if (preset) return preset
  let url: URL
  try {
    url = new URL(choice)
  } catch {
    throw new AcmeError(
      'INVALID_OPTIONS',
      `--acme-directory must be ${Object.keys(ACME_DIRECTORY_PRESETS).join(', ')} or an https:// ACME directory URL, not ${JSON.stringify(choice)}`,
    )
  }
  if (url.protocol !== 'https:') {
    throw new AcmeError('INVALID_OPTIONS', `--acme-directory must be an https:// URL (RFC 8555 requires TLS), not ${JSON.stringify(choice)}`)
  }
  return url.href
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/

/** Lower-cases and checks one `--domain`; HTTP-01 can validate plain DNS names only. */
export function normalizeDomain(value: string): string {
  const name = value.trim().toLowerCase().replace(/\.$/, '')
  if (name.startsWith('*.')) {
    throw new AcmeError(
      'INVALID_OPTIONS',
      `--domain ${value}: wildcard certificates need the DNS-01 challenge, which Berth does not do; list each name instead`,
    )
  }
  if (isIP(name.replace(/^\[|\]$/g, ''))) {
    throw new AcmeError('INVALID_OPTIONS', `--domain ${value}: an IP address is not a domain name; point a DNS name at this server and use that`)
  }
  if (name.length > 253 || !name.split('.').every(label => LABEL.test(label))) {
    throw new AcmeError('INVALID_OPTIONS', `--domain ${JSON.stringify(value)} is not a valid DNS name`)
  }
  return name
}

/**
 * Validates ACME options before anything starts. Throws AcmeError whose message is one line, e.g.
 * "--acme needs --acme-agree-tos: …". Returns the normalized options.
 */
export function assertAcmeOptions(options: AcmeOptions): ResolvedAcmeOptions {
  const directoryUrl = resolveAcmeDirectory(options.directory)
  if (options.agreeTos !== true) {
    throw new AcmeError(
      'TOS_NOT_AGREED',
      `--acme needs --acme-agree-tos: add it to accept the terms of service of the certificate authority at ${directoryUrl} (Berth will not accept them for you)`,
    )
  }
  if (options.domains.length === 0) {
    throw new AcmeError('INVALID_OPTIONS', '--acme needs at least one --domain (the public DNS name clients use to reach this registry)')
  }
  const domains = [...new Set(options.domains.map(normalizeDomain))]
  if (domains.length > 100) throw new AcmeError('INVALID_OPTIONS', `--domain given ${domains.length} times; a certificate holds at most 100 names`)
  const email = options.email?.trim()
  if (email !== undefined && email !== '' && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) {
    throw new AcmeError('INVALID_OPTIONS', `--acme-email ${JSON.stringify(email)} is not an email address`)
  }
  const kid = options.eabKid?.trim()
  const hmacKey = options.eabHmac?.trim()
  if (Boolean(kid) !== Boolean(hmacKey)) {
    throw new AcmeError('INVALID_OPTIONS', '--acme-eab-kid and --acme-eab-hmac go together: your CA (e.g. ZeroSSL) gives you both')
  }
  if (hmacKey && !/^[A-Za-z0-9_-]+={0,2}$/.test(hmacKey)) {
    throw new AcmeError('INVALID_OPTIONS', '--acme-eab-hmac must be the base64url key your CA gave you')
  }
  return {
    domains,
    directoryUrl,
    ...(email ? { email } : {}),
    ...(kid && hmacKey ? { eab: { kid, hmacKey } } : {}),
  }
}
