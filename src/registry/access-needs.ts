/**
 * What a request of the Distribution API needs from the access rules, read from its method and raw
 * path with the engine's own route table, so the authorization step and the engine always agree on
 * the route and on the repository name (the same raw, undecoded string). Every method of every
 * route with a repository has its entry below; a route added without one fails loudly here, never
 * open.
 *
 *   GET|HEAD /v2/                      a caller: anonymous gets the challenge, anyone else passes
 *   GET /v2/_catalog                   nothing here; the engine lists what the caller may pull
 *   GET|HEAD manifests, blobs, tags, referrers                        pull
 *   PUT manifests; POST, GET, PATCH, PUT, DELETE on blob uploads      push (pull too, as clients ask both)
 *   DELETE manifests or blobs                                         delete
 *
 * Two checks only the engine can make stay with it (through `Exchange.access`): moving an existing
 * tag needs `overwrite`, and a cross-repository mount needs `pull` on the source. A path no route
 * matches, or a method a route does not serve, needs nothing: the engine answers 404 or 405.
 */
import type { AccessAction } from '../http/exchange.js'
import { registryRoutes } from './handlers/index.js'
import { matchRoute } from './routes.js'
import { isRepositoryName } from '../storage/reference.js'

export type AccessNeed =
  | { readonly kind: 'none' }
  | { readonly kind: 'caller' }
  | { readonly kind: 'catalog' }
  /** The path names a repository outside the name grammar: refused before any rule is asked. */
  | { readonly kind: 'invalid-name'; readonly repository: string }
  | { readonly kind: 'repository'; readonly repository: string; readonly actions: readonly AccessAction[] }

const NONE: AccessNeed = { kind: 'none' }
const PULL: readonly AccessAction[] = ['pull']
const PUSH: readonly AccessAction[] = ['pull', 'push']
const DELETE: readonly AccessAction[] = ['delete']

/** Per route, per method: the actions the request needs. */
const ROUTE_ACTIONS: Readonly<Record<string, Readonly<Record<string, readonly AccessAction[]>>>> = {
  tags: { GET: PULL },
  manifest: { GET: PULL, HEAD: PULL, PUT: PUSH, DELETE },
  'upload-start': { POST: PUSH },
  upload: { GET: PUSH, PATCH: PUSH, PUT: PUSH, DELETE: PUSH },
  blob: { GET: PULL, HEAD: PULL, DELETE },
  referrers: { GET: PULL },
}

export function accessNeeded(method: string, path: string): AccessNeed {
  const match = matchRoute(registryRoutes, path)
  if (match === undefined) return NONE
  const { route, params } = match
  if (route.handlers[method] === undefined) return NONE
  if (route.name === 'base') return { kind: 'caller' }
  if (route.name === 'catalog') return { kind: 'catalog' }
  const actions = ROUTE_ACTIONS[route.name]?.[method]
  if (actions === undefined || params.name === undefined) throw new Error(`access-needs: no actions for ${method} on route ${route.name}`)
  if (!isRepositoryName(params.name)) return { kind: 'invalid-name', repository: params.name }
  return { kind: 'repository', repository: params.name, actions }
}

/** Whether `method` on `path` may change what is stored: refused in read-only mode. */
export function isWrite(method: string, path: string): boolean {
  return path.startsWith('/v2/') && method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS'
}
