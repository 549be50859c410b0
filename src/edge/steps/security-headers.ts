/** Headers every HTTPS answer carries: HSTS (the seed's nginx `add_header Strict-Transport-Security ... always`). */
import type { Step } from '../../http/exchange.js'
import { HSTS_VALUE } from '../tls/tls-options.js'

export const securityHeaders: Step = (exchange, next) => {
  exchange.res.setHeader('Strict-Transport-Security', HSTS_VALUE)
  return next(exchange)
}
