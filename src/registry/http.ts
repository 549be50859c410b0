/** Small HTTP helpers shared by the handlers. */
import type { IncomingMessage, ServerResponse } from 'node:http'

export const API_VERSION_HEADER = 'Docker-Distribution-API-Version'
export const API_VERSION = 'registry/2.0'

export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  response.writeHead(status, {
    ...headers,
    'Content-Type': headers['Content-Type'] ?? 'application/json',
    'Content-Length': Buffer.byteLength(text),
  })
  response.end(text)
}

/** Sends a status with no body; a header given as an array is sent as one line per value. */
export function sendEmpty(response: ServerResponse, status: number, headers: Record<string, string | number | string[]> = {}): void {
  // RFC 9110 §8.6: no Content-Length on a 204.
  response.writeHead(status, status === 204 ? headers : { ...headers, 'Content-Length': 0 })
  response.end()
}

/** The media type of a Content-Type / Accept item, without parameters, lowercased. */
export function mediaTypeOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const type = value.split(';', 1)[0]!.trim().toLowerCase()
  return type === '' ? undefined : type
}

/**
 * Every media type listed in the request's Accept headers (several headers or comma lists).
 * Node joins repeated Accept lines with ", " in `headers` (RFC 9110 §5.3 allows exactly that), so
 * this reads the one string instead of building `headersDistinct` on every manifest request.
 */
export function acceptedTypes(request: IncomingMessage): string[] | undefined {
  const raw = request.headers['accept']
  if (raw === undefined) return undefined
  const types: string[] = []
  for (const item of raw.split(',')) {
    const type = mediaTypeOf(item)
    if (type !== undefined) types.push(type)
  }
  return types.length === 0 ? undefined : types
}

/** `Content-Length` as a number, undefined when absent; throws on a malformed value. */
export function contentLength(request: IncomingMessage): number | undefined {
  const raw = request.headers['content-length']
  if (raw === undefined) return undefined
  if (!/^[0-9]{1,15}$/.test(raw)) throw new RangeError('malformed Content-Length')
  return Number(raw)
}

export interface ByteRange {
  start: number
  /** Inclusive. */
  end: number
}

/**
 * Parses a single-range `Range: bytes=a-b | a- | -n` header (RFC 9110 §14.1.2) against `size`.
 * Returns undefined when the whole body should be sent (no header, or a form we do not serve,
 * like multiple ranges), 'unsatisfiable' when no byte of it exists.
 */
export function parseRangeHeader(value: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (value === undefined) return undefined
  const match = /^bytes=(\d*)-(\d*)$/.exec(value.trim())
  if (!match) return undefined
  const [, first = '', last = ''] = match
  if (first === '' && last === '') return undefined
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0) return 'unsatisfiable'
    return size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
  if (!Number.isSafeInteger(start) || start >= size) return 'unsatisfiable'
  if (last !== '' && Number(last) < start) return undefined // syntactically invalid: RFC says ignore the header
  return { start, end }
}
