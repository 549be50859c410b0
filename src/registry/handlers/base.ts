import { sendJson } from '../../http/respond.js'
import type { Handler } from '../routes.js'

/** `GET /v2/`: the API version check docker and every client do first (end-1). */
export const base: Handler = async ({ exchange }) => {
  sendJson(exchange, 200, {})
}
