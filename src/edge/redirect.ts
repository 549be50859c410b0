/**
 * Port 80: ACME HTTP-01 answers, and a redirect to HTTPS for everything else.
 * 301 for GET/HEAD, 308 for other methods (308 keeps the method and body, RFC 9110 §15.4.9).
 * Only configured names are redirected to; any other Host goes to the first configured name, as the
 * seed's nginx `return 301 https://$server_name$request_uri` does — never an open redirect.
 */
import type { Exchange, Handler } from '../http/exchange.js'
import { lingerAfterResponse } from '../http/respond.js'
import { LIVENESS_PATH, READINESS_PATH } from './steps/health.js'
import type { ChallengeResponder } from './tls/certificate-source.js'

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/'
/** ACME tokens are base64url (RFC 8555 §8.1; 43 characters from the CAs in use); longer ones are refused unread. */
const MAX_TOKEN_LENGTH = 128

function isTokenShaped(token: string): boolean {
  return token.length <= MAX_TOKEN_LENGTH && /^[A-Za-z0-9_-]+$/.test(token)
}

export interface RedirectOptions {
  domains: readonly string[]
  /** The public HTTPS port; appended to the Location when it is not 443. */
  httpsPort: () => number
  challenges?: ChallengeResponder
}

/** The host name of a Host header, lower-cased, without port or IPv6 brackets. */
export function hostName(host: string | undefined): string {
  if (!host) return ''
  const trimmed = host.trim().toLowerCase()
  if (trimmed.startsWith('[')) return trimmed.slice(1, trimmed.indexOf(']') > 0 ? trimmed.indexOf(']') : undefined)
  const colon = trimmed.lastIndexOf(':')
  return colon >= 0 && trimmed.indexOf(':') === colon ? trimmed.slice(0, colon) : trimmed
}

/** How metrics name a port-80 request: an answer to the CA, a health probe (undefined: `other`), or a redirect. */
export function port80Route(path: string): 'acme-challenge' | 'redirect' | undefined {
  if (path.startsWith(CHALLENGE_PREFIX)) return 'acme-challenge'
  return path === LIVENESS_PATH || path === READINESS_PATH ? undefined : 'redirect'
}

export function createRedirectHandler(options: RedirectOptions): Handler {
  const domains = options.domains.map(domain => domain.toLowerCase())
  return async ({ req, res, id }: Exchange) => {
    const target = req.url ?? '/'
    if (target.startsWith(CHALLENGE_PREFIX) && (req.method === 'GET' || req.method === 'HEAD')) {
      const token = target.slice(CHALLENGE_PREFIX.length).split('?')[0] ?? ''
      const answer = isTokenShaped(token) ? await options.challenges?.keyAuthorization(token, id) : undefined
      res.writeHead(answer === undefined ? 404 : 200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(answer ?? 'not found\n') })
      res.end(answer ?? 'not found\n')
      return
    }
    const requested = hostName(req.headers.host)
    const name = domains.includes(requested) ? requested : domains[0]
    // One answer per connection here; a body is drained first so the client reads the redirect.
    if (!req.complete) lingerAfterResponse(req, res)
    else res.shouldKeepAlive = false
    if (!name) {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('no HTTPS name configured\n')
      return
    }
    const port = options.httpsPort()
    const authority = (name.includes(':') ? `[${name}]` : name) + (port === 443 ? '' : `:${port}`)
    const path = target.startsWith('/') ? target : '/'
    const status = req.method === 'GET' || req.method === 'HEAD' ? 301 : 308
    res.writeHead(status, { location: `https://${authority}${path}`, 'content-type': 'text/plain', 'content-length': 0 })
    res.end()
  }
}
