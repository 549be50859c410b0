/**
 * Contracts between the edge's TLS listener and whatever supplies its certificate:
 * files the user brings, a self-signed local CA, or an ACME issuer.
 */

/** A certificate ready to serve: PEM private key and the full chain (leaf first). */
export interface TlsCertificate {
  readonly key: string
  readonly cert: string
  /** The leaf's names and expiry, for logs and `berth doctor`. */
  readonly names: readonly string[]
  readonly notAfter: Date
}

/**
 * Supplies the certificate the HTTPS listener serves and tells it when that changes.
 * The edge calls `current()` for every new TLS context it builds and swaps contexts on `onChange`
 * without dropping connections.
 */
export interface CertificateProvider {
  /** The certificate to serve now, or undefined while none exists yet (ACME before its first order). */
  current(): TlsCertificate | undefined
  /** Registers a listener called after a new certificate replaced the current one. */
  onChange(listener: (certificate: TlsCertificate) => void): void
  /** Loads or obtains the first certificate and starts any watching/renewal. Rejects on fatal setup errors. */
  start(): Promise<void>
  /** Stops timers and watchers. Idempotent. */
  stop(): Promise<void>
}

/** Answers ACME HTTP-01 challenges on port 80 (RFC 8555 §8.3). */
export interface ChallengeResponder {
  /**
   * The key authorization for `token`, or undefined when no challenge with that token is pending.
   * `requestId` is the id of the port-80 request asking, for the log line of an answer. A responder
   * that asks a store shared with other instances answers with a promise.
   */
  keyAuthorization(token: string, requestId?: string): string | undefined | Promise<string | undefined>
}
