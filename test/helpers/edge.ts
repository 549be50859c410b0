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
