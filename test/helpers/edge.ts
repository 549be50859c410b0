/** The edge's settings that every test takes from the defaults (config/settings.ts), as `berth serve` does. */
import { DEFAULTS } from '../../src/config/settings.js'
import { silentLogger } from '../../src/log.js'

export const EDGE_DEFAULTS = {
  realm: DEFAULTS.realm,
  maxBodyBytes: DEFAULTS.maxBody,
  idleTimeoutMs: DEFAULTS.idleTimeout,
  headersTimeoutMs: DEFAULTS.headersTimeout,
  handshakeTimeoutMs: DEFAULTS.handshakeTimeout,
  logger: silentLogger,
}

/** An HTTPS edge on loopback with random ports for `localhost`; add the certificate and the innermost handler. */
export const HTTPS_TEST_EDGE = { ...EDGE_DEFAULTS, mode: 'https', host: '127.0.0.1', httpPort: 0, httpsPort: 0, domains: ['localhost'] } as const

/** A local-mode edge on loopback with a random port; add the innermost handler. */
export const LOCAL_TEST_EDGE = { ...EDGE_DEFAULTS, mode: 'local', host: '127.0.0.1', localPort: 0, domains: [] as readonly string[] } as const
