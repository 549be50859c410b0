/**
 * Responses the edge itself makes (401, 413, 429, 502, 400 …): always the OCI error JSON body
 * (`{"errors":[{code,message,detail}]}`, OCI distribution-spec "Error Codes") and
 * `Docker-Distribution-Api-Version: registry/2.0`, which docker expects even on a proxy's 401
 * (distribution recipes/nginx.md adds it with `always`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

export const API_VERSION_HEADER = 'docker-distribution-api-version'
export const API_VERSION = 'registry/2.0'

export type EdgeErrorCode = 'UNAUTHORIZED' | 'TOOMANYREQUESTS' | 'SIZE_INVALID' | 'UNAVAILABLE' | 'UNKNOWN' | 'DENIED' | 'NAME_UNKNOWN' | 'UNSUPPORTED'

/** Writes one edge-made error. For HEAD, Node drops the body but the headers (length included) stay. */
export function sendError(
  res: ServerResponse,
  status: number,
  code: EdgeErrorCode,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] }) + '\n'
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    [API_VERSION_HEADER]: API_VERSION,
    ...headers,
  })
  res.end(body)
}

/** How long an unread request body is drained after a rejection before the socket is destroyed. */
const LINGER_MS = 5000

/**
 * Call before answering a request whose body will not be read (401/413 before or during an upload).
 * The response gets `Connection: close`; afterwards the rest of the body is read and discarded for up
 * to 5 s before the socket is destroyed. Closing at once with unread bytes makes the kernel send a
 * RST, and the client would lose the 413/401 it has not read yet (nginx's "lingering close").
 */
export function closeAfterResponse(req: IncomingMessage, res: ServerResponse): void {
  res.shouldKeepAlive = false
  const socket = req.socket as Socket & { destroySoon?: () => void }
  socket.destroySoon = () => {
    socket.end()
    const timer = setTimeout(() => socket.destroy(), LINGER_MS)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
  }
  res.once('finish', () => {
    req.unpipe()
    req.removeAllListeners('data')
    req.on('error', () => {})
    req.resume()
  })
}

/** How many header lines named `name` (lower case) a request had, duplicates included. */
export function countHeaderLines(rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) count++
  return count
}
