/**
 * `berth reindex`: rebuilds the metadata index from the registry tree (a datadir written by
 * registry:2, or after a crash). Idempotent; keeps push times already recorded. Safe while
 * `berth serve` runs on the same store.
 */
import { Command } from 'commander'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import type { CliIo } from '../io.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

export function reindexCommand(io: CliIo): Command {
  const command = new Command('reindex')
    .summary('rebuild the metadata index from the stored images (registry:2 data, after a crash)')
    .description(
      'Makes the metadata index (what `berth ls`, `berth tags` and the web UI read) agree with the stored tags and ' +
        'manifests: adds what is missing, rewrites what differs, deletes what is gone. Push times already recorded are ' +
        "kept; missing ones are taken from the tag's link file, and stay unknown where the store has none. " +
        'Pull counts cannot be rebuilt. Safe while berth serve runs.',
    )
  return addStoreOptions(command)
    .option('--json', 'print the report as JSON')
    .action(async (options: StoreOptions & { json?: boolean }) => {
      const { driver, shown } = await openStore(io, options)
      const index = new MetadataIndex(driver)
      const report = await index.reindex()
      await index.close()
      if (options.json) {
        io.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
        return
      }
      io.stdout.write(
        `reindexed ${report.repositories} ${report.repositories === 1 ? 'repository' : 'repositories'} under ${shown}: ` +
          `${report.tagsWritten} tag records written, ${report.tagsDeleted} deleted; ` +
          `${report.manifestsWritten} manifest records written, ${report.manifestsDeleted} deleted\n`,
      )
    })
}
