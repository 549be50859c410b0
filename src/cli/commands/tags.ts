/**
 * `berth tags <repository>`: a repository's tags with digest, size, platforms, created, pushed
 * and pull figures, from the metadata index in the store.
 */
import { Command, Option } from 'commander'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import { MetadataView } from '../../storage/metadata/view.js'
import { assertRepositoryName } from '../../storage/reference.js'
import { formatBytes } from '../../storage/usage.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { formatTime, shortDigest, table } from './catalog-format.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

interface TagsOptions extends StoreOptions {
  sort: 'name' | 'pushed'
  bytes?: boolean
  digests?: boolean
  json?: boolean
}

export function tagsCommand(io: CliIo): Command {
  const command = new Command('tags')
    .summary("list a repository's tags: digest, size, platforms, created, pushed, pulls")
    .description(
      "List a repository's tags from the metadata index. PULLS and LAST PULLED count manifest downloads " +
        'by every instance, as written by them (every few seconds while serving).',
    )
    .argument('<repository>', 'the repository, e.g. team/app')
  return addStoreOptions(command)
    .addOption(new Option('--sort <key>', 'order by (pushed: newest first)').choices(['name', 'pushed']).default('name'))
    .option('--digests', 'full digests instead of the first 12 hex digits')
    .option('--bytes', 'exact byte counts instead of KiB/MiB/GiB')
    .option('--json', 'print the list as JSON')
    .action(async (repository: string, options: TagsOptions) => {
      try {
        assertRepositoryName(repository)
      } catch (error) {
        throw new CliError(`${JSON.stringify(repository)} is not a repository name`, 2, { cause: error })
      }
      const { driver } = await openStore(io, options)
      const records = await new MetadataIndex(driver).readRepository(repository)
      const tags = MetadataView.of([records]).listTags(repository, { sort: options.sort })
      if (tags === undefined) throw new CliError(`no repository ${repository} in the metadata index (data written by registry:2? run: berth reindex)`)
      if (options.json) {
        io.stdout.write(`${JSON.stringify({ name: repository, tags }, null, 2)}\n`)
        return
      }
      const size = options.bytes ? (n: number) => String(n) : formatBytes
      io.stdout.write(
        table(
          ['TAG', 'DIGEST', 'SIZE', 'PLATFORMS', 'CREATED', 'PUSHED', 'PULLS', 'LAST PULLED'],
          tags.map(t => [
            t.tag,
            options.digests ? t.digest : shortDigest(t.digest),
            t.size === undefined ? '?' : size(t.size),
            t.platforms.join(',') || '-',
            formatTime(t.created),
            formatTime(t.pushedAt),
            String(t.pullCount),
            t.pullCount === 0 ? '-' : formatTime(t.lastPulledAt),
          ]),
          [false, false, true, false, false, false, true, false],
        ),
      )
    })
}
