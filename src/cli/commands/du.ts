/**
 * `berth du`: disk usage per repository (unique and shared bytes), unreferenced blobs and
 * unfinished uploads, and the total. Reads only; works on a datadir written by registry:2, and on
 * an S3 bucket (--storage s3, the same settings as `berth serve`). With quotas in the config file,
 * each repository's usage against its quota too (the figure pushes are checked against:
 * storage/quota.ts).
 */
import { Command } from 'commander'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import { RepositoryQuotas, type QuotaUsage } from '../../storage/quota.js'
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
  addStoreOptions(command, 'its storage settings and quotas: are read here')
  return command
    .option('--bytes', 'exact byte counts instead of KiB/MiB/GiB')
    .option('--json', 'print the report as JSON')
    .action(async (options: StoreOptions & { bytes?: boolean; json?: boolean }) => {
      const { shown: root, driver, config } = await openStore(io, options)
      const report = await diskUsage(driver)
      const quotas = config.quotas.length === 0 ? undefined : await quotaUsage(new RepositoryQuotas(config.quotas, new MetadataIndex(driver)), report)
      if (options.json) {
        const repositories = report.repositories.map(r => (quotas?.has(r.name) ? { ...r, quota: quotas.get(r.name) } : r))
        io.stdout.write(`${JSON.stringify({ ...report, repositories }, null, 2)}\n`)
      } else io.stdout.write(renderUsage(report, root, options.bytes ? (n: number) => String(n) : formatBytes, quotas))
    })
}

/** Usage against quota of each repository a quota applies to. */
async function quotaUsage(quotas: RepositoryQuotas, report: UsageReport): Promise<Map<string, QuotaUsage>> {
  const usage = new Map<string, QuotaUsage>()
  for (const { name } of report.repositories) {
    const one = await quotas.usageOf(name)
    if (one !== undefined) usage.set(name, one)
  }
  return usage
}

/** `used / limit (percent)`, or `-` for a repository no quota applies to. */
function quotaCell(quota: QuotaUsage | undefined, size: (bytes: number) => string): string {
  if (quota === undefined) return '-'
  return `${size(quota.usage)} / ${size(quota.limit)} (${Math.floor((quota.usage / quota.limit) * 100)}%)`
}

export function renderUsage(report: UsageReport, root: string, size: (bytes: number) => string, quotas?: ReadonlyMap<string, QuotaUsage>): string {
  // KIND only where a pull-through cache exists: a registry without mirrors holds pushed images only.
  const kinds = report.repositories.some(r => r.cached)
  const header = ['REPOSITORY', ...(kinds ? ['KIND'] : []), 'MANIFESTS', 'BLOBS', 'UNIQUE', 'SHARED', 'TOTAL', 'UPLOADS', ...(quotas ? ['QUOTA'] : [])]
  const rows = report.repositories.map(r => [
    r.name,
    ...(kinds ? [r.cached ? 'cached' : 'pushed'] : []),
    String(r.manifests),
    String(r.blobs),
    size(r.uniqueBytes),
    size(r.sharedBytes),
    size(r.bytes),
    size(r.uploadBytes),
    ...(quotas ? [quotaCell(quotas.get(r.name), size)] : []),
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
  const cachedRepositories = report.repositories.filter(r => r.cached).length
  if (cachedRepositories > 0) {
    lines.push(
      `cached:        ${size(report.cachedBytes)} in ${report.cachedBlobs} blob${report.cachedBlobs === 1 ? '' : 's'} only the ${cachedRepositories} pull-through cache repositor${cachedRepositories === 1 ? 'y' : 'ies'} use (--mirror-max-size caps this)`,
    )
    lines.push(
      `pushed:        ${size(report.pushedBytes)} in ${report.pushedBlobs} blob${report.pushedBlobs === 1 ? '' : 's'} pushed repositories use (${size(report.sharedWithCacheBytes)} of it shared with the cache; eviction never frees it)`,
    )
  }
  if (quotas !== undefined) lines.push('quota:         used = config and layers of the images a repository holds, as pushes are checked (berth.yml quotas:)')
  return lines.join('\n') + '\n'
}
