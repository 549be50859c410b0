/**
 * `berth du`: disk usage per repository (unique and shared bytes), unreferenced blobs and
 * unfinished uploads, and the total. Reads only; works on a datadir written by registry:2, and on
 * an S3 bucket (--storage s3, the same settings as `berth serve`).
 */
import { Command } from 'commander'
import { diskUsage, formatBytes, type UsageReport } from '../../storage/usage.js'
import type { CliIo } from '../io.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

export function duCommand(io: CliIo): Command {
  const command = new Command('du')
    .alias('usage')
    .summary('disk usage per repository: unique and shared bytes, and the total')
    .description(
      'Disk usage of the registry data. "unique" is what only that repository uses (what deleting it and ' +
        'running `berth gc` frees); "shared" is stored once for every repository that uses it.',
    )
  return addStoreOptions(command)
    .option('--bytes', 'exact byte counts instead of KiB/MiB/GiB')
    .option('--json', 'print the report as JSON')
    .action(async (options: StoreOptions & { bytes?: boolean; json?: boolean }) => {
      const { shown: root, driver } = await openStore(io, options)
      const report = await diskUsage(driver)
      if (options.json) io.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
      else io.stdout.write(renderUsage(report, root, options.bytes ? (n: number) => String(n) : formatBytes))
    })
}

export function renderUsage(report: UsageReport, root: string, size: (bytes: number) => string): string {
  const header = ['REPOSITORY', 'MANIFESTS', 'BLOBS', 'UNIQUE', 'SHARED', 'TOTAL', 'UPLOADS']
  const rows = report.repositories.map(r => [
    r.name,
    String(r.manifests),
    String(r.blobs),
    size(r.uniqueBytes),
    size(r.sharedBytes),
    size(r.bytes),
    size(r.uploadBytes),
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(row => row[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ')
      .trimEnd()
  const lines = [line(header), ...rows.map(line), '']
  lines.push(
    `stored:        ${size(report.bytes)} in ${report.blobs} blob${report.blobs === 1 ? '' : 's'} under ${root} (shared blobs counted once: ${size(report.sharedBytes)})`,
  )
  lines.push(
    `unreferenced:  ${size(report.unreferencedBytes)} in ${report.unreferencedBlobs} blob${report.unreferencedBlobs === 1 ? '' : 's'} no repository links (berth gc frees them)`,
  )
  lines.push(`uploads:       ${size(report.uploadBytes)} in unfinished uploads`)
  return lines.join('\n') + '\n'
}
