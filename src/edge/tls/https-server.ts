/**
 * The HTTPS transport: a Node HTTPS server with the edge's TLS settings, serving the provider's
 * certificate and switching to each new one (open connections keep theirs).
 */
import https from 'node:https'
import type { Logger } from '../../log.js'
import { serverOptions, type ListenerTimeouts } from '../listeners.js'
import type { CertificateProvider, TlsCertificate } from './certificate-source.js'
import { ALPN_PROTOCOLS, ECDH_CURVES, MIN_TLS_VERSION, TLS12_CIPHERS, TLS13_CIPHERS } from './tls-options.js'

export interface HttpsServerOptions {
  certificate: CertificateProvider
  /** PEM bundle of CAs client certificates must chain to; the request is then refused by the client-cert step, not the handshake. */
  clientCa?: string
  timeouts: ListenerTimeouts
  logger: Logger
}

function contextOptions(certificate: TlsCertificate | undefined, clientCa: string | undefined) {
  return {
    ...(certificate ? { key: certificate.key, cert: certificate.cert } : {}),
    ...(clientCa !== undefined ? { ca: clientCa } : {}),
    minVersion: MIN_TLS_VERSION as 'TLSv1.2',
    ciphers: `${TLS13_CIPHERS}:${TLS12_CIPHERS}`,
    ecdhCurve: ECDH_CURVES,
    // Server order (the Mozilla list order, every suite ECDHE + AEAD): testssl.sh rates "no cipher
    // order" HIGH, and registry clients have AES-NI, so letting them prefer ChaCha20 buys nothing here.
    honorCipherOrder: true,
  }
}

export function createHttpsServer(options: HttpsServerOptions): https.Server {
  const { certificate: provider, clientCa, logger } = options
  const initial = provider.current()
  if (!initial) logger.warn('no TLS certificate yet: HTTPS handshakes fail until one is obtained')
  const server = https.createServer({
    ...serverOptions(options.timeouts),
    handshakeTimeout: options.timeouts.handshakeTimeoutMs,
    ...contextOptions(initial, clientCa),
    ALPNProtocols: ALPN_PROTOCOLS,
    // Ask for a client certificate but decide per request: a clear 400 instead of an opaque TLS alert.
    requestCert: clientCa !== undefined,
    rejectUnauthorized: false,
  })
  provider.onChange(certificate => {
    try {
      server.setSecureContext(contextOptions(certificate, clientCa))
      logger.info('TLS certificate in service', { names: certificate.names.join(','), notAfter: certificate.notAfter.toISOString() })
    } catch (error) {
      logger.error('new TLS certificate refused by OpenSSL; keeping the current one', { error: (error as Error).message })
    }
  })
  server.on('tlsClientError', (error: Error) => logger.debug('TLS handshake failed', { error: error.message }))
  return server
}
