/**
 * Retention planning (storage/retention.ts) as a table: records built by hand, an injected clock.
 * Each test names the rule it checks; the plan's rows say what goes, and `deletesManifest` whether
 * the image goes with its tag.
 */
import test from 'ava'
import { loadConfig } from '../../src/config/load.js'
import { parseRetention } from '../../src/config/values.js'
import { RECORD_VERSION, type ManifestRecord } from '../../src/storage/metadata/records.js'
import { RepositoryRecords } from '../../src/storage/metadata/view.js'
import { compilePolicies, planRetention, type RetentionPolicy } from '../../src/storage/retention.js'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const NOW = new Date('2026-06-01T00:00:00Z')
const DAY = 86_400_000
const ago = (days: number) => new Date(NOW.getTime() - days * DAY).toISOString()
const d = (name: string) => `sha256:${name.padEnd(64, '0')}`

interface Spec {
  tags?: Record<string, [digest: string, pushedDaysAgo: number | null]>
  manifests?: Record<string, Partial<ManifestRecord> & { daysAgo?: number | null }>
  pulled?: Record<string, number>
}

/** Records of one repository: every tag's digest gets an image record (size 100) unless given. */
function repo(name: string, spec: Spec): RepositoryRecords {
  const records = new RepositoryRecords(name)
  for (const [tag, [digest, days]] of Object.entries(spec.tags ?? {})) {
    records.tags.set(tag, { v: RECORD_VERSION, digest: d(digest), pushedAt: days === null ? null : ago(days) })
    if (!records.manifests.has(d(digest)))
      records.manifests.set(d(digest), { v: RECORD_VERSION, mediaType: 'm', size: 100, pushedAt: days === null ? null : ago(days) })
  }
  for (const [digest, { daysAgo, ...rest }] of Object.entries(spec.manifests ?? {})) {
    records.manifests.set(d(digest), {
      v: RECORD_VERSION,
      mediaType: 'm',
      size: 100,
      pushedAt: daysAgo === undefined || daysAgo === null ? null : ago(daysAgo),
      ...rest,
      ...(rest.children ? { children: rest.children.map(d) } : {}),
      ...(rest.subject ? { subject: d(rest.subject) } : {}),
    })
  }
  const pulls = new Map(Object.entries(spec.pulled ?? {}).map(([digest, days]) => [d(digest), { count: 1, last: NOW.getTime() - days * DAY }]))
  records.pulls.set('instance', pulls)
  return records
}

function plan(policies: RetentionPolicy[], ...records: RepositoryRecords[]) {
  return planRetention(records, compilePolicies(policies), NOW)
}

/** `tag` for tag rows, `@digest-name` for manifest rows; `+` marks a row whose image goes. */
function rows(result: ReturnType<typeof plan>): string[] {
  return result.items.map(item => `${item.repository}:${item.tag ?? `@${item.digest.slice(7, 11).replace(/0+$/, '')}`}${item.deletesManifest ? '+' : ''}`)
}

const ci = (keep: RetentionPolicy['keep'], untagged?: RetentionPolicy['untagged']): RetentionPolicy => ({ repositories: ['ci/**'], keep, untagged })

test('keep last N: the oldest beyond N go, oldest first, with their images and bytes', t => {
  const records = repo('ci/app', { tags: { a: ['a', 5], b: ['b', 4], c: ['c', 3], e: ['e', 2], f: ['f', 1] } })
  const result = plan([ci({ last: 2 })], records)
  t.deepEqual(rows(result), ['ci/app:a+', 'ci/app:b+', 'ci/app:c+'])
  t.is(result.bytes, 300)
  t.is(result.tags, 3)
  t.is(result.manifests, 3)
  t.is(result.items[0]!.reason, 'policy 1: not among the newest 2')
  t.is(result.items[0]!.pushed, ago(5))
})

test('tag patterns match the whole tag', t => {
  const records = repo('ci/app', {
    tags: { 'v1.2.3': ['a', 9], 'v1.2.3-rc1': ['b', 9], latest: ['c', 9], 'latest-old': ['e', 9], 'ci-7': ['f', 9] },
  })
  const result = plan([ci({ tags: ['^v\\d+\\.\\d+\\.\\d+$', 'latest'] })], records)
  t.deepEqual(rows(result).sort(), ['ci/app:ci-7+', 'ci/app:latest-old+', 'ci/app:v1.2.3-rc1+'])
})

test('pushedWithin and pulledWithin against the injected clock', t => {
  const records = repo('ci/app', { tags: { old: ['a', 40], recent: ['b', 3], pulled: ['c', 40], stale: ['e', 40] }, pulled: { c: 2, e: 31 } })
  t.deepEqual(rows(plan([ci({ pushedWithinMs: 7 * DAY })], records)), ['ci/app:old+', 'ci/app:pulled+', 'ci/app:stale+'])
  t.deepEqual(rows(plan([ci({ pulledWithinMs: 30 * DAY })], records)), ['ci/app:old+', 'ci/app:stale+', 'ci/app:recent+'])
  const both = plan([ci({ pushedWithinMs: 7 * DAY, pulledWithinMs: 30 * DAY })], records)
  t.deepEqual(rows(both), ['ci/app:old+', 'ci/app:stale+'], 'a tag is kept when ANY rule keeps it')
  t.is(both.items[1]!.lastPulled, ago(31))
  t.is(both.items[0]!.lastPulled, null)
  t.is(both.items[0]!.reason, 'policy 1: pushed more than 7d ago, not pulled within 30d')
})

test('OR of rules: last N, patterns and age each keep their own tags', t => {
  const records = repo('ci/app', { tags: { 'v1.0.0': ['a', 300], n1: ['b', 1], n2: ['c', 2], week: ['e', 20], gone: ['f', 200] }, pulled: { e: 1 } })
  const result = plan([ci({ last: 2, tags: ['v.*'], pulledWithinMs: 7 * DAY })], records)
  t.deepEqual(rows(result), ['ci/app:gone+'])
})

test('repositories no policy matches keep everything; the first matching policy applies', t => {
  const other = repo('team/app', { tags: { old: ['a', 900] } })
  const app = repo('ci/app', { tags: { x: ['a', 10], y: ['b', 9], z: ['c', 8] } })
  const result = plan(
    [
      { repositories: ['ci/app'], keep: { last: 2 } },
      { repositories: ['ci/**'], keep: { last: 1 } },
    ],
    other,
    app,
  )
  t.deepEqual(rows(result), ['ci/app:x+'])
  t.is(result.repositories, 1)
  t.deepEqual(rows(plan([{ repositories: ['ci/**'], untagged: { olderThanMs: DAY } }], app)), [], 'no keep: every tag stays')
})

test('an unknown push time counts as new: never removed, and newest for last N', t => {
  const records = repo('ci/app', { tags: { unknown: ['a', null], newer: ['b', 1], older: ['c', 2] } })
  t.deepEqual(rows(plan([ci({ last: 2 })], records)), ['ci/app:older+'])
  t.deepEqual(rows(plan([ci({ tags: ['nothing'] })], records)), ['ci/app:older+', 'ci/app:newer+'], 'only known-old tags go')
  t.deepEqual(rows(plan([ci({ pushedWithinMs: DAY / 2 })], records)), ['ci/app:older+', 'ci/app:newer+'])
})

test('a tag goes but its image stays while another tag keeps it', t => {
  const records = repo('ci/app', { tags: { 'ci-1': ['a', 30], latest: ['a', 30] } })
  const result = plan([ci({ tags: ['latest'] })], records)
  t.deepEqual(rows(result), ['ci/app:ci-1'])
  t.is(result.items[0]!.bytes, 0)
  t.is(result.manifests, 0)
  t.regex(result.items[0]!.reason, /the image stays \(also tagged latest, which is kept\)/)
})

test('children of a kept index stay; a removed index takes its own children, not shared ones', t => {
  const records = repo('ci/app', {
    tags: { keep: ['k', 1], old: ['o', 30] },
    manifests: {
      k: { children: ['amd', 'arm'], size: 0, daysAgo: 1 },
      o: { children: ['arm', 'old-amd'], size: 0, daysAgo: 30 },
      amd: { size: 10, daysAgo: 1 },
      arm: { size: 20, daysAgo: 1 },
      'old-amd': { size: 30, daysAgo: 30 },
    },
  })
  const result = plan([ci({ last: 1 }, { olderThanMs: DAY })], records)
  t.deepEqual(rows(result), ['ci/app:old+', 'ci/app:@old-+'])
  t.deepEqual(
    result.items.map(item => item.bytes),
    [30, 0],
    "the index row counts its removed children's bytes once",
  )
  t.is(result.bytes, 30)
})

test('referrers of kept images stay; referrers of removed images go with them', t => {
  const records = repo('ci/app', {
    tags: { keep: ['k', 1], old: ['o', 30] },
    manifests: { sig: { subject: 'k', daysAgo: 30 }, sbom: { subject: 'o', daysAgo: 30 }, 'sig-of-sbom': { subject: 'sbom', daysAgo: 30 } },
  })
  const result = plan([ci({ last: 1 }, { olderThanMs: DAY })], records)
  t.deepEqual(rows(result), ['ci/app:old+', 'ci/app:@sbom+', 'ci/app:@sig-+'])
  t.regex(result.items[1]!.reason, /^referrer of the removed sha256:o/)
})

test('untagged manifests go only with untagged.olderThan, and only once older than it', t => {
  const records = repo('ci/app', { tags: { v: ['v', 1] }, manifests: { old: { daysAgo: 10 }, fresh: { daysAgo: 1 }, unknown: { daysAgo: null } } })
  t.deepEqual(rows(plan([ci({ last: 5 })], records)), [], 'without untagged: kept')
  const result = plan([ci({ last: 5 }, { olderThanMs: 7 * DAY })], records)
  t.deepEqual(rows(result), ['ci/app:@old+'])
  t.is(result.items[0]!.reason, 'untagged, pushed more than 7d ago')
})

test('config: retention policies parse from the file; mistakes are one line naming the policy', async t => {
  t.deepEqual(
    parseRetention([
      { repositories: ['ci/*'], keep: { last: 10, tags: ['^v\\d+$', 'latest'], pulledWithin: '30d', pushedWithin: '12h' }, untagged: { olderThan: '7d' } },
    ]),
    [
      {
        repositories: ['ci/*'],
        keep: { last: 10, tags: ['^v\\d+$', 'latest'], pulledWithinMs: 30 * DAY, pushedWithinMs: 12 * 3600_000 },
        untagged: { olderThanMs: 7 * DAY },
      },
    ],
  )
  t.deepEqual(parseRetention('{"repositories":["**"],"untagged":{"olderThan":"1d"}}'), [{ repositories: ['**'], untagged: { olderThanMs: DAY } }])
  t.throws(() => parseRetention([{ repositories: ['ci/*'], keep: { lastt: 3 } }]), {
    message: /only last, tags, pushedWithin, pulledWithin .*\(retention policy 1\)/,
  })
  t.throws(() => parseRetention([{ repositories: ['ci/*'], keep: { tags: ['(('] } }]), { message: /keep.tags as regular expressions/ })
  t.throws(() => parseRetention([{ repositories: ['CI'] }]), { message: /uppercase/ })
  t.throws(() => parseRetention([{ repositories: ['ci'], keep: {} }]), { message: /at least one of/ })

  const dir = await mkdtemp(join(tmpdir(), 'berth-retention-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'berth.yml'), 'local: true\nretention:\n  - repositories: ["ci/**"]\n    keep: { last: 3 }\n')
  const config = await loadConfig({ cwd: dir, configFile: 'berth.yml' })
  t.deepEqual(config.retention, [{ repositories: ['ci/**'], keep: { last: 3 } }])
  t.is(config.retentionIntervalMs, DAY)
  const off = await loadConfig({ cwd: dir, configFile: 'berth.yml', flags: { retentionInterval: 'off' } })
  t.is(off.retentionIntervalMs, undefined)
  t.is((await loadConfig({ cwd: dir, flags: { local: true } })).retentionIntervalMs, undefined, 'off without policies')
})
