/**
 * `berth retention`: applies the retention policies of the config file (`retention:`, as `berth
 * serve` reads them) to the store, or with `--dry-run` prints exactly what would go. The rules are
 * in storage/retention.ts. Removes links only, like `berth rm` and the API's DELETE (no lock, safe
 * beside a serving registry); `berth gc` then frees the bytes. Deletions go to the audit log when
 * the config names one (user `retention`); webhooks are sent by serve's own retention runs.
 */
import { Command } from 'commander'
import { AuditLog } from '../../events/audit-log.js'
import { silentLogger } from '../../log.js'
import { MetadataIndex } from '../../storage/metadata/metadata-index.js'
import { createRegistryStore } from '../../storage/registry-store.js'
import { applyRetention, compilePolicies, planFromStore, type RetentionItem, type RetentionPlan, type RetentionResult } from '../../storage/retention.js'
import { formatBytes } from '../../storage/usage.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { formatTime, table } from './catalog-format.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

interface RetentionOptions extends StoreOptions {
  dryRun?: boolean
  json?: boolean
  bytes?: boolean
}

export function retentionCommand(io: CliIo): Command {
  const command = new Command('retention')
    .summary('remove old tags and images by the retention policies of the config file')
    .description(
      'Apply the retention policies (retention: in the --config file, as berth serve reads them): remove the tags no keep ' +
        'rule keeps, and the images left without a kept tag. --dry-run lists exactly what would go. Links only, like ' +
        '`berth rm`: run `berth gc` afterwards to free the space (berth serve does both on --retention-interval). ' +
        'Safe while the registry serves the same store: a tag a push moved meanwhile is left alone.',
    )
  addStoreOptions(command, 'its retention: policies and storage settings are read here')
  return command
    .option('-n, --dry-run', 'list what would be removed (repository, tag, digest, pushed, last pulled, size, why); remove nothing')
    .option('--json', 'print the plan (or what was removed) as JSON')
    .option('--bytes', 'exact byte counts instead of KiB/MiB/GiB')
    .addHelpText(
      'after',
      '\nExample config (berth.yml):\n' +
        '  retention:\n' +
        '    - repositories: ["ci/**"]\n' +
        '      keep: { last: 10, tags: ["^v\\\\d+\\\\.\\\\d+\\\\.\\\\d+$", "latest"], pulledWithin: 30d }\n' +
        '      untagged: { olderThan: 7d }\n' +
        '\n  berth retention --config berth.yml --dry-run\n  berth retention --config berth.yml && berth gc',
    )
    .action(async (options: RetentionOptions) => {
      const { driver, config } = await openStore(io, options)
      if (config.retention.length === 0) {
        throw new CliError('no retention policies: add a retention: list to the config file (--config, or BERTH_CONFIG); see berth retention --help', 2)
      }
      const policies = compilePolicies(config.retention)
      const index = new MetadataIndex(driver)
      const plan = await planFromStore(driver, index, policies, new Date())
      if (options.dryRun) {
        io.stdout.write(options.json ? `${JSON.stringify(plan, null, 2)}\n` : describePlan(plan, options.bytes === true))
        return
      }
      const audit = config.auditLog === undefined ? undefined : await AuditLog.open(config.auditLog, silentLogger)
      let result: RetentionResult
      try {
        const store = createRegistryStore(driver, { observer: index })
        result = await applyRetention(store, plan, { events: audit })
      } finally {
        await index.close()
        await audit?.close()
      }
      io.stdout.write(options.json ? `${JSON.stringify(result, null, 2)}\n` : describeResult(result, options.bytes === true))
    })
}

function rows(items: readonly RetentionItem[], exact: boolean): string {
  const size = exact ? (n: number) => String(n) : formatBytes
  return table(
    ['REPOSITORY', 'TAG', 'DIGEST', 'PUSHED', 'LAST PULLED', 'SIZE', 'WHY'],
    items.map(item => [
      item.repository,
      item.tag ?? '-',
      item.digest,
      formatTime(item.pushed),
      item.lastPulled === null ? 'never' : formatTime(item.lastPulled),
      item.deletesManifest || item.bytes > 0 ? size(item.bytes) : '-',
      item.reason,
    ]),
    [false, false, false, false, false, true, false],
  )
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`
}

export function describePlan(plan: RetentionPlan, exact = false): string {
  const size = exact ? `${plan.bytes} bytes` : formatBytes(plan.bytes)
  if (plan.items.length === 0) return `dry run: nothing to remove in ${plural(plan.repositories, 'repository').replace(/ys$/, 'ies')} a policy matches\n`
  return (
    rows(plan.items, exact) +
    `dry run: would remove ${plural(plan.tags, 'tag')} and ${plural(plan.manifests, 'image')} (${size}) in ` +
    `${plural(plan.repositories, 'repository').replace(/ys$/, 'ies')} a policy matches; berth gc then frees the layers no kept image shares\n`
  )
}

export function describeResult(result: RetentionResult, exact = false): string {
  const size = exact ? `${result.bytes} bytes` : formatBytes(result.bytes)
  const lines: string[] = []
  if (result.removed.length > 0) lines.push(rows(result.removed, exact).trimEnd())
  for (const { item, why } of result.skipped) lines.push(`kept ${item.repository}${item.tag === null ? `@${item.digest}` : `:${item.tag}`}: ${why}`)
  lines.push(`removed ${plural(result.tags, 'tag')} and ${plural(result.manifests, 'image')} (${size})${result.stopped ? '; stopped early' : ''}`)
  if (result.manifests > 0) lines.push('run berth gc to free the space')
  return lines.join('\n') + '\n'
}
