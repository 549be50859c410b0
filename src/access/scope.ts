/**
 * Resource scopes of distribution's token protocol (docs/spec/auth/scope.md):
 *
 *   scope         := resourcescope [ ' ' resourcescope ]*
 *   resourcescope := resourcetype ':' resourcename ':' action [ ',' action ]*
 *   resourcetype  := /[a-z0-9]+/ [ '(' /[a-z0-9]+/ ')' ]
 *
 * e.g. `repository:alice/app:pull,push`, `repository:localhost:5000/app:pull` (a name may carry one
 * `host:port` prefix, so the type ends at the first ':' and the actions begin after the last one),
 * `registry:catalog:*`. A resource class (`repository(plugin)`) is deprecated and ignored by
 * distribution: it is dropped here, so `repository(plugin):x:pull` is `repository:x:pull`.
 *
 * A scope that does not parse is ignored, not an error, as distribution's token server does: a
 * client gets a token without it and the registry answers the request with 401/403. Names are kept
 * to the characters of the reference grammar (plus upper case, which no repository matches), so a
 * name never needs escaping in a challenge or a token.
 */

/** One entry of a token's `access` claim, and one requested scope. */
export interface ResourceAccess {
  type: string
  name: string
  actions: string[]
}

/** Longest resource name accepted (distribution's limit on a repository name). */
export const MAX_SCOPE_NAME_LENGTH = 255

const TYPE = /^([a-z0-9]+)(?:\([a-z0-9]+\))?$/
const NAME = /^[A-Za-z0-9._/:-]+$/
const ACTION = /^(?:[a-z]+|\*)$/

/** One `type:name:actions` scope; undefined when malformed. Actions are deduplicated, in the order given; an empty list is kept. */
export function parseScope(text: string): ResourceAccess | undefined {
  const first = text.indexOf(':')
  const last = text.lastIndexOf(':')
  if (first <= 0 || last === first) return undefined
  const type = TYPE.exec(text.slice(0, first))?.[1]
  const name = text.slice(first + 1, last)
  if (type === undefined || name.length > MAX_SCOPE_NAME_LENGTH || !NAME.test(name)) return undefined
  // At most one ':' in a name: the port of a host prefix.
  if (name.indexOf(':') !== name.lastIndexOf(':')) return undefined
  const actions: string[] = []
  for (const action of text.slice(last + 1).split(',')) {
    if (action === '') continue
    if (!ACTION.test(action)) return undefined
    if (!actions.includes(action)) actions.push(action)
  }
  return { type, name, actions }
}

/**
 * Every scope in `values` (each may hold several, separated by spaces, as in a POST form or a
 * challenge's `scope`), malformed ones dropped; scopes naming the same resource are merged into one
 * entry with the union of their actions.
 */
export function parseScopes(values: Iterable<string>): ResourceAccess[] {
  const byResource = new Map<string, ResourceAccess>()
  for (const value of values) {
    for (const text of value.split(' ')) {
      const scope = text === '' ? undefined : parseScope(text)
      if (scope === undefined) continue
      const key = `${scope.type}:${scope.name}`
      const seen = byResource.get(key)
      if (seen === undefined) byResource.set(key, scope)
      else for (const action of scope.actions) if (!seen.actions.includes(action)) seen.actions.push(action)
    }
  }
  return [...byResource.values()]
}

/** `type:name:action,action`, the form a challenge's `scope` and a token request carry. */
export function formatScope(access: ResourceAccess): string {
  return `${access.type}:${access.name}:${access.actions.join(',')}`
}
