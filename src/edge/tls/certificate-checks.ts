/**
 * Checks on certificates that catch a misconfiguration before clients do, shared by `berth serve`
 * (refuse or warn at start, warn on every reload) and `berth doctor` (report with a fix).
 * Pure functions over PEM text and a clock reading; reading files is the caller's.
 */
import { X509Certificate } from 'node:crypto'
import { isIP } from 'node:net'
import type { Logger } from '../../log.js'
import type { TlsCertificate } from './certificate-source.js'

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g
const DAY = 24 * 60 * 60 * 1000

/** A finding about a certificate: `fail` means clients cannot work with it, `warn` that they may soon not. */
export interface CertificateProblem {
  readonly severity: 'fail' | 'warn'
  readonly message: string
}

/** Days left until `notAfter` (negative once expired), rounded down. */
export function daysLeft(notAfter: Date, now: number): number {
  return Math.floor((notAfter.getTime() - now) / DAY)
}

/**
 * What is wrong with a `--client-ca` file (PEM, one or more CA certificates). The edge hands the
 * text to TLS as its trust list; a file without a usable CA makes every client certificate fail
 * the handshake check, so each client gets 400. Returns the CAs' subjects when it is usable.
 * `fail`: no PEM certificate, a certificate that does not parse, none that is a CA, all expired.
 * `warn`: some of several are not CAs or expired, or the last valid one expires within 30 days.
 */
export function inspectClientCa(pem: string, now: number): { subjects: string[]; problems: CertificateProblem[] } {
  const blocks = pem.match(PEM_CERTIFICATE) ?? []
  if (blocks.length === 0)
    return { subjects: [], problems: [{ severity: 'fail', message: 'no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)' }] }
  const certificates: X509Certificate[] = []
  for (const [index, block] of blocks.entries()) {
    try {
      certificates.push(new X509Certificate(block))
    } catch (error) {
      return { subjects: [], problems: [{ severity: 'fail', message: `certificate ${index + 1} does not parse: ${(error as Error).message}` }] }
    }
  }
  const problems: CertificateProblem[] = []
  const authorities = certificates.filter(certificate => certificate.ca)
  const valid = authorities.filter(certificate => new Date(certificate.validTo).getTime() > now)
  if (authorities.length === 0) {
    problems.push({ severity: 'fail', message: `${describe(certificates)} not a CA (basicConstraints CA:TRUE): it cannot have signed client certificates` })
  } else if (valid.length === 0) {
    problems.push({ severity: 'fail', message: `expired on ${dateOf(latestExpiry(authorities))}: every client certificate it signed is refused` })
  } else {
    const notCa = certificates.length - authorities.length
    const expired = authorities.length - valid.length
    if (notCa > 0) problems.push({ severity: 'warn', message: `${notCa} of ${certificates.length} certificates are not CAs and are ignored` })
    if (expired > 0) problems.push({ severity: 'warn', message: `${expired} of ${authorities.length} CAs expired` })
    const until = latestExpiry(valid)
    if (daysLeft(until, now) < 30) problems.push({ severity: 'warn', message: `expires in ${daysLeft(until, now)} days (${dateOf(until)})` })
  }
  return { subjects: valid.map(subjectOf), problems }
}

/**
 * The `--domain` names `certificate` does not cover (wildcards and IP addresses honoured as TLS
 * clients check them). Empty when it covers all, or when no domain was configured.
 */
export function uncoveredDomains(certificate: Pick<TlsCertificate, 'cert'>, domains: readonly string[]): string[] {
  const leaf = certificate.cert.match(PEM_CERTIFICATE)?.[0]
  if (leaf === undefined) return [...domains]
  const x509 = new X509Certificate(leaf)
  return domains.filter(domain => (isIP(domain) ? x509.checkIP(domain) : x509.checkHost(domain)) === undefined)
}

/**
 * Logs a warning when the certificate being served does not cover every `--domain`, naming the
 * names it has (clients then fail with "certificate is valid for …, not …"). For the start and for
 * every reload: pass it to a CertificateProvider's `onChange`.
 */
export function warnIfDomainsUncovered(certificate: TlsCertificate | undefined, domains: readonly string[], logger: Pick<Logger, 'warn'>): void {
  if (certificate === undefined) return
  const missing = uncoveredDomains(certificate, domains)
  if (missing.length === 0) return
  logger.warn(`the certificate does not cover ${missing.join(', ')}: clients connecting by that name will refuse it`, {
    certificateNames: certificate.names.join(', '),
    fix: `a certificate for ${missing.join(', ')}, or --domain set to a name it has`,
  })
}

function describe(certificates: readonly X509Certificate[]): string {
  return certificates.length === 1 ? `${subjectOf(certificates[0] as X509Certificate)} is` : `none of its ${certificates.length} certificates is`
}

function subjectOf(certificate: X509Certificate): string {
  return /(?:^|\n)CN=([^\n]+)/.exec(certificate.subject)?.[1] ?? certificate.subject.replace(/\n/g, ', ')
}

function latestExpiry(certificates: readonly X509Certificate[]): Date {
  return new Date(Math.max(...certificates.map(certificate => new Date(certificate.validTo).getTime())))
}

function dateOf(date: Date): string {
  return date.toISOString().slice(0, 10)
}
