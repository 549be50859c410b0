/**
 * `berth gc`: online garbage collection and upload purging on a datadir or an S3 bucket
 * (storage/gc.ts, storage/purge-uploads.ts). Safe while `berth serve` (or, on a datadir,
 * registry:2) serves the same store: nothing written or touched within the grace period is
 * removed, and a blob a push re-uses during the run is kept (the rules: storage/gc.ts for the
 * filesystem, storage/gc-guard.ts for S3, where every serving instance must be a Berth).
 */
import { resolve } from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import type { Config } from '../../config/config.js'
import { CONFIG_ENV, loadConfig } from '../../config/load.js'
import { SETTINGS, UPLOAD_PURGING, type Setting, type SettingKey } from '../../config/settings.js'
import type { StorageDriver } from '../../storage/driver/storage-driver.js'
import { recordGcRun } from '../../storage/gc-last-run.js'
import { collectGarbage, DEFAULT_GC_GRACE_MS, GcBusyError, type GcProgress, type GcReport } from '../../storage/gc.js'
import { purgeUploads, type PurgeUploadsReport } from '../../storage/purge-uploads.js'
import { openStorage, StorageOpenError } from '../../storage/open-storage.js'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import { createRegistryStore } from '../../storage/registry-store.js'
import { formatBytes } from '../../storage/usage.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { optionFor } from './serve.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** "90m", "1h", "7d", "0" → milliseconds. A commander argument parser (usage error on bad input). */
export function parseDuration(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$/.exec(value.trim())
  if (match === null || (match[2] === undefined && Number(match[1]) !== 0)) {
    throw new InvalidArgumentError(`"${value}" is not a duration: use a number with a unit, e.g. 30m, 1h, 7d (or 0)`)
  }
  return Number(match[1]) * UNITS[match[2] ?? 'ms']!
}

export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNITS[unit]!
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

export function datadirOption(): Option {
  return new Option('--datadir <dir>', 'the datadir whose data/ folder holds the registry (default: ./datadir; env: BERTH_DATADIR)')
}

/** The settings that say where images are stored, as `berth serve` takes them (flags, BERTH_*, --config). */
const STORAGE_KEYS: readonly SettingKey[] = ['storage', 's3Endpoint', 's3Bucket', 's3Region', 's3Prefix']

export interface StoreOptions {
  datadir?: string
  config?: string
  [key: string]: unknown
}

/** Adds --config and the storage flags of `berth serve` (besides --datadir) to a maintenance command. */
export function addStoreOptions(command: Command, configRead = 'only its storage settings are read here'): Command {
  command.addOption(datadirOption())
  command.option('-c, --config <file>', `the YAML or JSON settings file berth serve uses; ${configRead} (env: ${CONFIG_ENV})`)
  for (const setting of SETTINGS as readonly Setting[]) if (STORAGE_KEYS.includes(setting.key)) command.addOption(optionFor(setting))
  return command
}

/**
 * The store `berth serve` would use with the same flags, environment and config file: the
 * datadir's data/ folder (which must exist), or the S3 bucket (checked with one request).
 */
export async function openStore(io: CliIo, options: StoreOptions): Promise<{ driver: StorageDriver; shown: string; config: Config }> {
  const flags: Partial<Record<SettingKey, unknown>> = {}
  for (const key of ['datadir', ...STORAGE_KEYS] as const) if (options[key] !== undefined) flags[key] = options[key]
  const config = await loadConfig({
    flags,
    env: io.env,
    cwd: io.cwd,
    allowNoCertificate: true,
    ...(typeof options.config === 'string' ? { configFile: options.config } : {}),
  })
  try {
    return { ...(await openStorage({ storage: config.storage, datadir: resolve(io.cwd, config.datadir), create: false })), config }
  } catch (error) {
    throw error instanceof StorageOpenError ? new CliError(error.message, 2, { cause: error }) : error
  }
}

interface GcCommandOptions extends StoreOptions {
  datadir?: string
  dryRun?: boolean
  deleteUntagged?: boolean
  keepReferrers: boolean
  grace: number
  uploadMaxAge: number | false
  wait: number
  json?: boolean
  quiet?: boolean
}

export function gcCommand(io: CliIo): Command {
  const command = new Command('gc')
    .summary('free the disk space of deleted images (safe while the registry runs)')
    .description(
      'Garbage collection: delete blobs no tag or manifest references, layer links to deleted blobs, ' +
        'and uploads left unfinished. Runs while `berth serve` (or registry:2) serves the same datadir, ' +
        'or while any number of Berth instances serve the same S3 bucket (--storage s3): anything pushed ' +
        'or re-used within the grace period is kept, and one run at a time holds the store.',
    )
  addStoreOptions(command)
    .option('-n, --dry-run', 'list what would be deleted and how many bytes it frees; delete nothing')
    .option('--delete-untagged', 'also delete manifests no tag reaches (never a child of a tagged multi-arch index)')
    .option('--no-keep-referrers', 'with --delete-untagged: also delete signatures/SBOMs (referrers) of kept images')
    .addOption(
      new Option(
        '--grace <duration>',
        'keep anything written or re-used this recently (e.g. 30m, 2h); longer than your slowest push, since clients push layers before the manifest (0 only when nobody pushes)',
      )
        .argParser(parseDuration)
        .default(DEFAULT_GC_GRACE_MS, formatDuration(DEFAULT_GC_GRACE_MS)),
    )
    .addOption(
      new Option('--upload-max-age <duration>', 'purge unfinished uploads started longer ago than this ("off": keep them)')
        .argParser((value: string) => (value === 'off' ? false : parseDuration(value)))
        .default(UPLOAD_PURGING.maxAgeMs, formatDuration(UPLOAD_PURGING.maxAgeMs)),
    )
    .addOption(
      new Option(
        '--wait <duration>',
        "when another run holds the store (e.g. a serving instance's --gc-interval), wait this long for it instead of failing at once (e.g. 5m)",
      )
        .argParser(parseDuration)
        .default(0, '0'),
    )
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress lines')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  berth gc --dry-run                      what would go, and how much space it frees\n' +
        '  berth gc                                delete it (the registry may keep running)\n' +
        '  berth gc --delete-untagged              also delete manifests no tag reaches\n' +
        '  berth gc --datadir /srv/registry        a datadir written by registry:2 (its data/ folder)\n' +
        '  berth gc --storage s3 --s3-endpoint http://10.0.0.5:7480 --s3-bucket registry\n' +
        '                                          the bucket several instances serve (AWS_* credentials)',
    )
  command.action(async (options: GcCommandOptions) => {
    const { driver } = await openStore(io, options)
    const progress = options.quiet || options.json ? undefined : progressPrinter(io)
    let uploads: PurgeUploadsReport | undefined
    let report: GcReport
    try {
      if (options.uploadMaxAge !== false) {
        const store = createRegistryStore(driver)
        uploads = await purgeUploads(driver, store.uploads, { olderThan: new Date(Date.now() - options.uploadMaxAge), dryRun: options.dryRun ?? false })
      }
      report = await collectGarbage(driver, {
        dryRun: options.dryRun ?? false,
        deleteUntagged: options.deleteUntagged ?? false,
        keepReferrers: options.keepReferrers,
        gracePeriodMs: options.grace,
        lock: { waitMs: options.wait },
        ...(progress ? { onProgress: progress } : {}),
      })
    } catch (error) {
      if (error instanceof GcBusyError) throw new CliError(error.message, 1, { cause: error })
      throw error
    }
    await recordGcRun(driver, report, options.deleteUntagged ?? false)
    if (!report.dryRun && report.manifests.length > 0) {
      // The metadata index forgets the manifests this run deleted (serving instances see it at their next refresh).
      const index = new MetadataIndex(driver)
      await index.manifestsCollected(report.manifests)
      await index.close()
    }
    if (options.json) {
      io.stdout.write(`${JSON.stringify({ gc: report, uploads: uploads ?? null }, null, 2)}\n`)
      return
    }
    io.stdout.write(describe(report, uploads, options.grace))
    if (report.blobs.length === 0 && !(options.deleteUntagged ?? false)) {
      // Read-only and lock-free: what --delete-untagged would free, to say why this run freed nothing.
      const untagged = await collectGarbage(driver, { dryRun: true, deleteUntagged: true, keepReferrers: options.keepReferrers, gracePeriodMs: options.grace })
      io.stdout.write(whyNothingFreed(report, untagged, options.grace))
    }
  })
  return command
}

/** One progress line at most every 2 s (and none for runs shorter than that). */
function progressPrinter(io: CliIo): (progress: GcProgress) => void {
  const started = Date.now()
  let last = started
  const names = { mark: 'reading repositories', untagged: 'deleting untagged manifests', blobs: 'sweeping blobs', links: 'checking layer links' }
  return progress => {
    const now = Date.now()
    if (now - last < 2000) return
    last = now
    io.stderr.write(`gc: ${names[progress.phase]} ${progress.done}/${progress.total} (${Math.round((now - started) / 1000)} s)\n`)
  }
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`
}

export function describe(report: GcReport, uploads: PurgeUploadsReport | undefined, graceMs: number): string {
  const lines: string[] = []
  const verb = report.dryRun ? 'would delete' : 'deleted'
  if (report.dryRun) {
    for (const upload of uploads?.uploads ?? []) {
      lines.push(`would purge upload ${upload.repository} ${upload.id} (started ${upload.startedAt.toISOString()}, ${formatBytes(upload.size)})`)
    }
    for (const manifest of report.manifests) lines.push(`would delete manifest ${manifest.repository}@${manifest.digest}`)
    for (const blob of report.blobs) lines.push(`would delete blob ${blob.digest} (${formatBytes(blob.size)})`)
    for (const link of report.layerLinks) lines.push(`would delete layer link ${link.repository} → ${link.digest}`)
  }
  for (const warning of report.warnings) lines.push(`warning: ${warning}`)
  const parts = [
    `${plural(report.blobs.length, 'blob')} (${formatBytes(report.bytesFreed)})`,
    plural(report.manifests.length, 'manifest'),
    plural(report.layerLinks.length, 'layer link'),
  ]
  if (uploads) parts.push(`${plural(uploads.uploads.length, 'unfinished upload')} (${formatBytes(uploads.bytesFreed)})`)
  const freed = report.bytesFreed + (uploads?.bytesFreed ?? 0)
  lines.push(`${report.dryRun ? 'dry run: ' : ''}${verb} ${parts.join(', ')}: ${formatBytes(freed)} ${report.dryRun ? 'would be ' : ''}freed`)
  lines.push(
    `kept ${plural(report.blobsKept, 'referenced blob')} in ${plural(report.repositories, 'repository').replace(/ys$/, 'ies')}` +
      (report.blobsRecent > 0 ? `, and ${plural(report.blobsRecent, 'unreferenced blob')} newer than the ${formatDuration(graceMs)} grace period` : '') +
      (report.restored > 0 ? `; ${report.restored} re-used by a push during the run` : '') +
      (report.recovered > 0 ? `; put back ${report.recovered} left by an interrupted run` : ''),
  )
  lines.push(`took ${((report.finishedAt.getTime() - report.startedAt.getTime()) / 1000).toFixed(1)} s`)
  return lines.join('\n') + '\n'
}

/**
 * The lines that say what holds the space when a run freed no blob: manifests no tag reaches
 * (`untagged`: a dry run of the same store with deleteUntagged), and unreferenced blobs younger
 * than the grace period. Empty when neither holds anything.
 */
export function whyNothingFreed(report: GcReport, untagged: GcReport, graceMs: number): string {
  const lines: string[] = []
  const nothing = report.dryRun ? 'nothing would be freed' : 'nothing freed'
  if (untagged.manifests.length > 0) {
    lines.push(
      `${nothing}: ${plural(untagged.manifests.length, 'untagged manifest')} (${formatBytes(untagged.bytesFreed)}) ${untagged.manifests.length === 1 ? 'holds' : 'hold'} the space: ` +
        `rerun with --delete-untagged${report.dryRun ? ' (with --dry-run first to see them)' : ''}`,
    )
  }
  if (report.blobsRecent > 0) {
    lines.push(
      `${nothing} yet: ${plural(report.blobsRecent, 'unreferenced blob')} ${report.blobsRecent === 1 ? 'is' : 'are'} younger than the ` +
        `${formatDuration(graceMs)} grace period (pushes upload layers before their manifest): a run ${formatDuration(graceMs)} after the last push frees ${report.blobsRecent === 1 ? 'it' : 'them'}`,
    )
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n'
}
