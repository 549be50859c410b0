/** Calls to Berth's UI API (same origin, JSON only); state changes carry the session's CSRF token. */
import type { ApiError, SessionInfo } from '../web/api-types.js'

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

let csrf = ''

export function rememberSession(session: SessionInfo): void {
  csrf = session.csrf
}

export async function api<T>(
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  query: Record<string, string | number | undefined> = {},
  body?: unknown,
): Promise<T> {
  const params = new URLSearchParams()
  for (const [name, value] of Object.entries(query)) if (value !== undefined && value !== '') params.set(name, String(value))
  const search = params.toString()
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (method !== 'GET') headers['X-Berth-Csrf'] = csrf
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const response = await fetch(`/api/ui/${path}${search ? `?${search}` : ''}`, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  })
  const text = await response.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new ApiFailure(response.status, `unexpected answer (${response.status})`)
  }
  if (!response.ok) throw new ApiFailure(response.status, (json as ApiError).errors?.[0]?.message ?? `failed (${response.status})`)
  return json as T
}
