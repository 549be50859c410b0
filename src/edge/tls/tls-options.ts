/**
 * The TLS settings of the HTTPS listener, in one place so tests and `berth doctor` can read them.
 * Mozilla "intermediate" (server-side TLS guidelines 5.7): TLS 1.2 and 1.3, ECDHE + AEAD only for 1.2
 * (Node's default list still has DHE and CBC suites). TLS 1.3 suites are Node's defaults (all AEAD).
 */
export const MIN_TLS_VERSION = 'TLSv1.2'
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')
export const TLS13_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256'
export const ECDH_CURVES = 'X25519:P-256:P-384'
/** HTTP/1.1 only: dockerd speaks it, and HTTP/2 is not proven for multi-GB uploads here (DESIGN). */
export const ALPN_PROTOCOLS = ['http/1.1']
/** One year, no `preload`: a registry name should not be pinned into browsers by default. */
export const HSTS_VALUE = 'max-age=31536000'
