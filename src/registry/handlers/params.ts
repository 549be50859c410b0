/** Route parameters, checked once against the spec's grammar before any handler uses them. */
import { parseDigest, type Digest } from '../../storage/digest.js'
import { assertRepositoryName } from '../../storage/reference.js'
import { RegistryError } from '../errors.js'
import type { RouteParams } from '../routes.js'

export function repositoryName(params: RouteParams): string {
  const name = params.name ?? ''
  assertRepositoryName(name)
  return name
}

export function pathDigest(params: RouteParams): Digest {
  return parseDigest(params.digest ?? '')
}

export function reference(params: RouteParams): string {
  const value = params.reference
  if (value === undefined || value === '') throw new RegistryError('MANIFEST_INVALID', undefined, { message: 'missing reference' })
  return value
}

/**
 * The `n` query parameter: a non-negative integer of any size (callers cap it), or undefined when
 * absent. Anything else is 400 PAGINATION_NUMBER_INVALID.
 */
export function pageSize(query: URLSearchParams): number | undefined {
  const raw = query.get('n')
  if (raw === null || raw === '') return undefined
  if (!/^[0-9]+$/.test(raw)) throw new RegistryError('PAGINATION_NUMBER_INVALID', { n: raw.slice(0, 50) })
  return Number(raw)
}
