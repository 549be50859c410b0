/** Reads and checks a PEM key + certificate chain, shared by the file and self-signed sources. */
import { X509Certificate, createPrivateKey } from 'node:crypto'
import type { TlsCertificate } from './certificate-source.js'

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/**
 * Validates that `cert` is a PEM chain (leaf first) whose leaf matches `key`, and returns the
 * servable certificate with the leaf's names and expiry.
 * @throws Error with a message fit for a log line (never containing key material).
 */
export function toTlsCertificate(key: string, cert: string): TlsCertificate {
  const blocks = cert.match(PEM_CERTIFICATE)
  if (!blocks || blocks.length === 0) throw new Error('no PEM certificate found')
  const leaf = new X509Certificate(blocks[0] ?? '')
  for (const block of blocks.slice(1)) new X509Certificate(block) // throws on a corrupt intermediate
  let privateKey
  try {
    privateKey = createPrivateKey(key)
  } catch (cause) {
    throw new Error('the private key is not a readable PEM key (an encrypted key needs its passphrase removed)', { cause })
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new Error('the private key does not belong to the first certificate of the chain')
  return { key, cert, names: namesOf(leaf), notAfter: new Date(leaf.validTo) }
}

/** DNS names and IP addresses of the subjectAltName, falling back to the subject CN. */
export function namesOf(certificate: X509Certificate): string[] {
  const names: string[] = []
  for (const part of (certificate.subjectAltName ?? '').split(/,\s*/)) {
    const match = /^(DNS|IP Address):(.+)$/.exec(part)
    if (match?.[2]) names.push(match[2])
  }
  if (names.length === 0) {
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(certificate.subject)
    if (cn?.[1]) names.push(cn[1])
  }
  return names
}
