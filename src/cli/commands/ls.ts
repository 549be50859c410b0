/**
 * `berth ls [prefix]`: the repositories, with their tag count, size and last push, from the
 * metadata index in the store (a datadir or a bucket, the same settings as `berth serve`).
 */
import { Command, Option } from 'commander'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import { formatBytes } from '../../storage/usage.js'
import type { CliIo } from '../io.js'
import { formatTime, table } from './catalog-format.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

interface LsOptions extends StoreOptions {
  sort: 'name' | 'pushed' | 'size'
  search?: string
  bytes?: boolean
  json?: boolean
}

export function lsCommand(io: CliIo): Command {
  const command = new Command('ls')
    .summary('list repositories: tags, size, last push')
    .description(
      'List the repositories the metadata index holds, with their number of tags, size (the sum of their images; ' +
        'layers shared between images count once per image, see `berth du` for bytes on disk) and last push.',
    )
    .argument('[prefix]', 'only repositories whose name starts with this (e.g. team/)')
  return addStoreOptions(command)
    .addOption(new Option('--sort <key>', 'order by').choices(['name', 'pushed', 'size']).default('name'))
    .option('--search <text>', 'only names containing this')
    .option('--bytes', 'exact byte counts instead of KiB/MiB/GiB')
    .option('--json', 'print the list as JSON')
    .action(async (prefix: string | undefined, options: LsOptions) => {
      const { driver } = await openStore(io, options)
      const index = new MetadataIndex(driver)
      const result = await index.listRepositories({
        sort: options.sort,
        ...(prefix !== undefined ? { prefix } : {}),
        ...(options.search !== undefined ? { search: options.search } : {}),
      })
      if (options.json) {
        io.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
        return
      }
      const size = options.bytes ? (n: number) => String(n) : formatBytes
      io.stdout.write(
        table(
          ['REPOSITORY', 'TAGS', 'SIZE', 'LAST PUSHED'],
          result.items.map(r => [r.name, String(r.tags), size(r.size), formatTime(r.lastPushed)]),
          [false, true, true, false],
        ),
      )
      if (result.total === 0) io.stderr.write('no repositories in the metadata index (for data written by registry:2 or an older Berth, run: berth reindex)\n')
    })
}
