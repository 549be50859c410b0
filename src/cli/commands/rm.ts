/**
 * `berth rm <repository>:<tag>` removes a tag (as `DELETE /v2/<name>/manifests/<tag>`);
 * `berth rm <repository>@<digest>` removes the manifest and every tag pointing at it (as DELETE
 * by digest) and says which tags went. Links only, like the API: the bytes stay until `berth gc`.
 *
 * No lock: this is the same change a DELETE request makes while the registry serves, which
 * garbage collection already tolerates (a run that marked the manifest keeps its blobs this
 * time, the next run frees them). The metadata index is updated here; serving instances see it
 * at their next refresh.
 */
import { Command } from 'commander'
import { isDigest, parseDigest } from '../../storage/digest.js'
import { ManifestUnknownError } from '../../storage/errors.js'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import { isRepositoryName, isTag } from '../../storage/reference.js'
import { createRegistryStore } from '../../storage/registry-store.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

/** `name:tag` or `name@digest`; a usage error (exit 2) otherwise. */
export function parseRemoveTarget(value: string): { name: string; tag?: string; digest?: string } {
  const at = value.indexOf('@')
  if (at >= 0) {
    const name = value.slice(0, at)
    const digest = value.slice(at + 1)
    if (isRepositoryName(name) && isDigest(digest)) return { name, digest }
  } else {
    const colon = value.lastIndexOf(':')
    const name = value.slice(0, colon)
    const tag = value.slice(colon + 1)
    if (colon > 0 && isRepositoryName(name) && isTag(tag)) return { name, tag }
  }
  throw new CliError(`${JSON.stringify(value)} is neither <repository>:<tag> nor <repository>@<digest>`, 2)
}

interface RmOptions extends StoreOptions {
  force?: boolean
  json?: boolean
}

export function rmCommand(io: CliIo): Command {
  const command = new Command('rm')
    .summary('remove a tag (repo:tag) or an image with all its tags (repo@digest)')
    .description(
      'Remove a tag, or an image (a manifest) and every tag pointing at it. Like DELETE in the registry API this ' +
        'removes links only: run `berth gc` afterwards to free the space (`berth gc --delete-untagged` for images ' +
        'left without a tag). Safe while the registry serves the same store.',
    )
    .argument('<reference>', 'team/app:1.0 (a tag) or team/app@sha256:… (an image and all its tags)')
  return addStoreOptions(command)
    .option('--force', 'remove an image even when it is part of a multi-platform image (that image loses the platform)')
    .option('--json', 'print what was removed as JSON')
    .action(async (reference: string, options: RmOptions) => {
      const target = parseRemoveTarget(reference)
      const { driver } = await openStore(io, options)
      const index = new MetadataIndex(driver)
      const store = createRegistryStore(driver, { observer: index })
      let result: { name: string; digest: string; tags: string[] }
      try {
        if (target.tag !== undefined) {
          const digest = (await store.tags.resolve(target.name, target.tag)).value
          await store.manifests.delete(target.name, target.tag)
          result = { name: target.name, digest, tags: [target.tag] }
        } else {
          const digest = target.digest as string
          if (!(await store.manifests.hasRevision(target.name, parseDigest(digest)))) {
            throw new ManifestUnknownError(digest)
          }
          if (!options.force) await refuseChildOfIndex(index, target.name, digest)
          result = { name: target.name, digest, ...(await store.manifests.delete(target.name, digest)) }
        }
      } catch (error) {
        if (error instanceof ManifestUnknownError) {
          throw new CliError(target.tag !== undefined ? `no tag ${target.name}:${target.tag}` : `no manifest ${target.name}@${target.digest}`, 1, {
            cause: error,
          })
        }
        throw error
      } finally {
        await index.close()
      }
      if (options.json) {
        io.stdout.write(
          `${JSON.stringify({ repository: result.name, digest: result.digest, image: target.digest !== undefined, tags: result.tags }, null, 2)}\n`,
        )
        return
      }
      io.stdout.write(describeRemoval(result, target.digest !== undefined))
    })
}

function describeRemoval(result: { name: string; digest: string; tags: string[] }, image: boolean): string {
  if (!image) {
    return (
      `untagged ${result.name}:${result.tags[0]} (was ${result.digest})\n` +
      'the image stays by digest; berth gc --delete-untagged frees it once no tag points at it\n'
    )
  }
  const tags = result.tags.length === 0 ? 'no tag pointed at it' : `tags removed with it: ${result.tags.join(', ')}`
  return `deleted ${result.name}@${result.digest}; ${tags}\nrun berth gc to free the space\n`
}

/** A manifest listed by a multi-platform index in the repository is refused: the index would lose a platform. */
async function refuseChildOfIndex(index: MetadataIndex, name: string, digest: string): Promise<void> {
  const records = await index.readRepository(name)
  const parents = [...records.manifests].filter(([, manifest]) => manifest.children?.includes(digest)).map(([parent]) => parent)
  if (parents.length === 0) return
  const tags = [...records.tags].filter(([, tag]) => parents.includes(tag.digest)).map(([tag]) => `${name}:${tag}`)
  throw new CliError(
    `${name}@${digest} is one platform of ${tags.length > 0 ? tags.join(', ') : `${name}@${parents[0]}`}; ` +
      'remove that instead, or pass --force to remove just this platform',
  )
}
