/**
 * Repository names and tags, checked against the OCI distribution-spec v1.1 grammar
 * ("Pulling manifests"): a name that passes can be joined into a storage path safely, because
 * its components can contain only `[a-z0-9._-]`, never start with `.`/`_`/`-`, and are never empty.
 */
import { NameInvalidError, TagInvalidError } from './errors.js'

const nameGrammar = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/
const tagGrammar = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/

/** Many clients cap `host/name` at 255 characters; the name alone can be no longer. */
export const MAX_NAME_LENGTH = 255

export function isRepositoryName(value: string): boolean {
  return value.length > 0 && value.length <= MAX_NAME_LENGTH && nameGrammar.test(value)
}

export function assertRepositoryName(value: string): void {
  if (!isRepositoryName(value)) throw new NameInvalidError(value)
}

export function isTag(value: string): boolean {
  return tagGrammar.test(value)
}

export function assertTag(value: string): void {
  if (!isTag(value)) throw new TagInvalidError(value)
}
