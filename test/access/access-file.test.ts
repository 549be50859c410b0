/** The access file on disk: refused at start when broken, reloaded on change, previous rules kept on a broken edit or a deletion. */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { AccessRules, loadAccessFile } from '../../src/access/access-file.js'
import { AccessFileError, type AccessPolicy } from '../../src/access/rules.js'
import type { LogFields, Logger } from '../../src/log.js'

interface Entry {
  level: string
  message: string
  fields: LogFields
}

function recordingLogger(): { logger: Logger; entries: Entry[] } {
  const entries: Entry[] = []
  const log =
    (level: string) =>
    (message: string, fields: LogFields = {}) =>
      void entries.push({ level, message, fields })
  return { logger: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }, entries }
}

async function tempFile(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-access-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return join(dir, 'access.yml')
}

async function eventually(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** A file of `count` rules, each letting alice pull `r<i>`. */
function rulesText(count: number): string {
  let text = 'rules:\n'
  for (let index = 0; index < count; index++) text += `  - repository: r${index}\n    who: [alice]\n    can: [pull]\n`
  return text
}

test('open: a missing, empty or broken file is refused with its line and column', async t => {
  const file = await tempFile(t)
  const missing = await t.throwsAsync(AccessRules.open(file), { instanceOf: AccessFileError })
  t.is(missing?.message, `${file}: no such file (give an existing access file, or none: then every user who logs in may do everything)`)

  await writeFile(file, '')
  const empty = await t.throwsAsync(AccessRules.open(file), { instanceOf: AccessFileError })
  t.is(empty?.message, `${file}:1:1: the file is empty; it needs a "rules:" list (and may define "groups:")`)

  await writeFile(file, 'rules:\n  - repository: a\n    who: [alice]\n    can: [pull, fly]\n')
  const broken = await t.throwsAsync(AccessRules.open(file), { instanceOf: AccessFileError })
  t.is(broken?.line, 4)
  t.is(broken?.column, 17)
  t.is(broken?.message, `${file}:4:17: unknown action "fly" in rule 1; allowed: pull, push, overwrite, delete`)
  await t.throwsAsync(loadAccessFile(file), { instanceOf: AccessFileError })
})

test('a good edit is applied at the next poll and logged with the rule count; onReload sees it', async t => {
  const file = await tempFile(t)
  await writeFile(file, rulesText(1))
  const { logger, entries } = recordingLogger()
  const reloaded: AccessPolicy[] = []
  const rules = await AccessRules.open(file, { logger, pollMs: 20, onReload: policy => reloaded.push(policy) })
  t.teardown(() => rules.close())
  t.is(rules.current().ruleCount, 1)
  t.deepEqual(entries, [{ level: 'info', message: 'access rules loaded', fields: { path: file, rules: 1 } }])
  t.false(rules.current().allows('alice', 'r1', 'pull'))

  await writeFile(file, rulesText(2))
  await eventually(() => rules.current().ruleCount === 2, 'the reload')
  t.true(rules.current().allows('alice', 'r1', 'pull'))
  t.deepEqual(entries.at(-1), { level: 'info', message: 'access rules reloaded', fields: { path: file, rules: 2 } })
  t.is(reloaded.length, 1)
  t.is(reloaded[0], rules.current())

  // An editor that writes a new file and renames it over the old one.
  await writeFile(`${file}.tmp`, rulesText(3))
  await rename(`${file}.tmp`, file)
  await eventually(() => rules.current().ruleCount === 3, 'the reload after a rename')
  t.is(entries.filter(entry => entry.level === 'error').length, 0)
})

test('a broken edit keeps the previous rules and logs path, line and column once; the next good edit applies', async t => {
  const file = await tempFile(t)
  await writeFile(file, rulesText(1))
  const { logger, entries } = recordingLogger()
  const rules = await AccessRules.open(file, { logger, pollMs: 20 })
  t.teardown(() => rules.close())
  const before = rules.current()

  await writeFile(file, 'rules:\n  - repository: a\n    who: [group:devs]\n    can: [pull]\n')
  await eventually(() => entries.some(entry => entry.level === 'error'), 'the error line')
  t.is(rules.current(), before)
  t.deepEqual(entries.at(-1), {
    level: 'error',
    message: 'access file not reloaded; keeping the rules loaded before',
    fields: { path: file, line: 3, column: 11, error: 'unknown group "devs"; define it under "groups:" first', problems: 1 },
  })
  await sleep(100)
  t.is(entries.filter(entry => entry.level === 'error').length, 1, 'reported once, not at every poll')
  t.true(rules.current().allows('alice', 'r0', 'pull'))

  // Emptied (as an editor writing in place leaves it for a moment): still the previous rules.
  await writeFile(file, '')
  await eventually(() => entries.filter(entry => entry.level === 'error').length === 2, 'the empty-file error')
  t.is(entries.at(-1)?.fields.error, 'the file is empty; it needs a "rules:" list (and may define "groups:")')
  t.is(rules.current(), before)

  await writeFile(file, rulesText(2))
  await eventually(() => rules.current().ruleCount === 2, 'the reload')
})

test('a deleted file keeps the previous rules and is logged once; a restored file is read again', async t => {
  const file = await tempFile(t)
  await writeFile(file, rulesText(1))
  const { logger, entries } = recordingLogger()
  const rules = await AccessRules.open(file, { logger, pollMs: 20 })
  t.teardown(() => rules.close())
  const before = rules.current()

  await rm(file)
  await eventually(() => entries.some(entry => entry.level === 'error'), 'the error line')
  t.regex(entries.at(-1)!.message, /^access file is gone; keeping the rules loaded before/)
  t.deepEqual(entries.at(-1)!.fields, { path: file, rules: 1 })
  await sleep(100)
  t.is(entries.filter(entry => entry.level === 'error').length, 1)
  t.is(rules.current(), before)
  t.true(rules.current().allows('alice', 'r0', 'pull'), 'never opens the registry')

  await writeFile(file, rulesText(2))
  await eventually(() => rules.current().ruleCount === 2, 'the reload')
})

test('reloadNow reads the file at once (SIGHUP) and reports a problem without waiting for a second look', async t => {
  const file = await tempFile(t)
  await writeFile(file, rulesText(1))
  const { logger, entries } = recordingLogger()
  const rules = await AccessRules.open(file, { logger, pollMs: 3_600_000 })
  t.teardown(() => rules.close())

  await writeFile(file, rulesText(2))
  await rules.reloadNow()
  t.is(rules.current().ruleCount, 2)

  await writeFile(file, 'rules: [')
  await rules.reloadNow()
  t.is(rules.current().ruleCount, 2)
  t.is(entries.at(-1)?.level, 'error')
  t.is(entries.at(-1)?.fields.line, 1)
  t.is(typeof entries.at(-1)?.fields.column, 'number')
  t.regex(String(entries.at(-1)?.fields.error), /^not valid YAML: /)
})
