/**
 * `berth events`: the webhook deliveries waiting in the store (pending: not yet answered with a
 * 2xx; failed: given up after the last try), on a datadir or an S3 bucket, with the same storage
 * settings as `berth serve`. `retry` puts dead letters back in the queue (a serving process picks
 * them up within a minute, or at its next start); `drop` deletes deliveries.
 */
import { Command } from 'commander'
import { shownEndpoint, WebhookQueue, type ListedDelivery } from '../../events/webhook-queue.js'
import { CliError } from '../errors.js'
import type { CliIo } from '../io.js'
import { addStoreOptions, openStore, type StoreOptions } from './gc.js'

export function eventsCommand(io: CliIo): Command {
  const command = new Command('events').summary('webhook deliveries: pending and failed ones, retry, drop')
  command.addCommand(listCommand(io), { isDefault: true })
  command.addCommand(retryCommand(io))
  command.addCommand(dropCommand(io))
  return command
}

function listCommand(io: CliIo): Command {
  const command = new Command('list').summary('list pending and failed webhook deliveries (the default)')
  return addStoreOptions(command)
    .option('--json', 'one JSON array of the deliveries (without their bodies)')
    .action(async (options: StoreOptions & { json?: boolean }) => {
      const queue = new WebhookQueue((await openStore(io, options)).driver)
      const listed = await queue.list()
      if (options.json) io.stdout.write(`${JSON.stringify(listed.map(summaryOf), null, 2)}\n`)
      else io.stdout.write(renderDeliveries(listed))
    })
}

function retryCommand(io: CliIo): Command {
  const command = new Command('retry')
    .summary('send failed deliveries again (all, or the ids given)')
    .argument('[ids...]', 'delivery ids (berth events lists them)')
  return addStoreOptions(command).action(async (ids: string[], options: StoreOptions) => {
    const queue = new WebhookQueue((await openStore(io, options)).driver)
    const requeued = await queue.retry(ids.length === 0 ? 'all' : ids, new Date())
    const missing = ids.filter(id => !requeued.includes(id))
    io.stdout.write(`${requeued.length} failed deliver${requeued.length === 1 ? 'y' : 'ies'} queued again; a serving berth sends them within a minute\n`)
    if (missing.length > 0) throw new CliError(`no failed delivery with id ${missing.join(', ')}`, 1)
  })
}

function dropCommand(io: CliIo): Command {
  const command = new Command('drop')
    .summary('delete deliveries by id, or every failed one with --failed')
    .argument('[ids...]', 'delivery ids (berth events lists them)')
    .option('--failed', 'delete every failed delivery')
  return addStoreOptions(command).action(async (ids: string[], options: StoreOptions & { failed?: boolean }) => {
    if (ids.length === 0 && !options.failed) throw new CliError('name the deliveries to drop (ids from berth events), or --failed for every failed one', 2)
    if (ids.length > 0 && options.failed) throw new CliError('give ids or --failed, not both', 2)
    const queue = new WebhookQueue((await openStore(io, options)).driver)
    const dropped = await queue.drop(options.failed ? 'failed' : ids)
    io.stdout.write(`${dropped.length} deliver${dropped.length === 1 ? 'y' : 'ies'} dropped\n`)
    const missing = ids.filter(id => !dropped.some(item => item.record.id === id))
    if (missing.length > 0) throw new CliError(`no delivery with id ${missing.join(', ')}`, 1)
  })
}

/** What `--json` prints per delivery: everything but the body. */
function summaryOf(item: ListedDelivery): Record<string, unknown> {
  const { body: _body, version: _version, contentType: _contentType, ...record } = item.record
  return { state: item.state, ...record, endpoint: shownEndpoint(record.endpoint), ...(item.instance !== undefined ? { instance: item.instance } : {}) }
}

export function renderDeliveries(listed: readonly ListedDelivery[]): string {
  if (listed.length === 0) return 'no pending or failed webhook deliveries\n'
  const header = ['ID', 'STATE', 'ENDPOINT', 'ACTION', 'REPOSITORY', 'TAG', 'ATTEMPTS', 'NEXT TRY', 'LAST ERROR']
  const rows = listed.map(({ state, record }) => [
    record.id,
    state,
    shownEndpoint(record.endpoint),
    record.action,
    record.repository ?? '-',
    record.tag ?? '-',
    String(record.attempts),
    state === 'failed' ? 'gave up' : record.nextAttemptAt,
    record.lastError ?? '-',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(row => row[i]!.length)))
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join('  ')
      .trimEnd()
  const pending = listed.filter(item => item.state === 'pending').length
  const footer = `${pending} pending, ${listed.length - pending} failed (berth events retry sends failed ones again; berth events drop <id>|--failed deletes)`
  return [line(header), ...rows.map(line), '', footer, ''].join('\n')
}
