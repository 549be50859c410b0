/**
 * The storage page's API: unique and shared bytes per repository, what garbage collection would
 * free (plain and --delete-untagged) and the last run, all from the background survey
 * (storage-survey.ts) and never computed on the request; whole-store figures only for a viewer who
 * sees every repository; the list paged.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import type { RulePolicy } from '../../src/edge/steps/access-control.js'
import { silentLogger } from '../../src/log.js'
import { readLastGcRun } from '../../src/storage/gc-last-run.js'
import { runGc } from '../../src/storage/gc-schedule.js'
import type { StorageView } from '../../src/web/api-types.js'
import { pushBlob } from '../registry/fixtures.js'
import { pushImage, startUiEdge, UiClient } from './ui-fixture.js'

const policy: RulePolicy = {
  allows: (user, repository, action) => user === 'alice' || (user === 'bob' && repository.startsWith('team/') && action === 'pull'),
}

test('unique vs shared bytes, what GC would free and the last run, from the background survey only', async t => {
  const edge = await startUiEdge(t, { users: ['alice', 'bob'], policy })
  // Same layer count and labels: the two repositories' configs are the same blob (shared).
  await pushImage(edge.engineUrl, 'team/api', 'v1', { layers: [3000] })
  await pushImage(edge.engineUrl, 'secret/db', 'v1', { layers: [5000] })
  await pushImage(edge.engineUrl, 'team/api', 'v2', { layers: [4000] })
  const orphan = randomBytes(700)
  await pushBlob(edge.engineUrl, 'team/api', orphan) // a layer no manifest names: plain GC frees it

  const alice = new UiClient(edge)
  await alice.login('alice')
  t.is((await alice.call('DELETE', '/api/ui/tag?repository=team/api&tag=v2')).status, 200) // v2 is now untagged

  const before = (await alice.call('GET', '/api/ui/storage')).json as StorageView
  t.is(before.survey, 'pending', 'nothing walked yet: the request does not walk')
  t.is(before.repositories[0]?.uniqueBytes, null)

  const survey = await edge.survey.refresh()
  t.truthy(survey)
  const view = (await alice.call('GET', '/api/ui/storage')).json as StorageView
  if (typeof view.survey === 'string') return t.fail(`survey ${view.survey}`)
  t.is(view.count, 2)
  const byName = new Map(view.repositories.map(repository => [repository.name, repository]))
  const teamApi = byName.get('team/api')!
  const secretDb = byName.get('secret/db')!
  t.true(teamApi.sharedBytes! > 0, 'the config both repositories link')
  t.is(teamApi.sharedBytes, secretDb.sharedBytes)
  // secret/db: its layer and its manifest are its own.
  t.true(secretDb.uniqueBytes! >= 5000 && secretDb.uniqueBytes! < 5000 + 2000, `${secretDb.uniqueBytes}`)
  t.true(secretDb.size > 5000, 'size stays the index figure (config plus layers)')
  // team/api holds two layers, two manifests and the orphan alone.
  t.true(teamApi.uniqueBytes! >= 3000 + 4000 + 700, `${teamApi.uniqueBytes}`)
  t.is(view.survey.storedBytes, teamApi.uniqueBytes! + secretDb.uniqueBytes! + teamApi.sharedBytes!)
  t.is(view.survey.sharedBytes, teamApi.sharedBytes!)
  t.deepEqual(view.survey.gcWouldFree, { blobs: 1, bytes: 700 }, 'plain GC: the orphan only')
  t.is(view.survey.gcUntaggedWouldFree.manifests, 1)
  t.is(view.survey.gcUntaggedWouldFree.blobs, 3, "the orphan, v2's layer and v2's manifest (its config is v1's)")
  t.true(view.survey.gcUntaggedWouldFree.bytes > 700 + 4000)
  t.is(view.survey.lastGc, null)

  // Bob sees team/* only: his repositories with their split, but no whole-store figures.
  const bob = new UiClient(edge)
  await bob.login('bob')
  const bobs = (await bob.call('GET', '/api/ui/storage')).json as StorageView
  t.is(bobs.survey, 'hidden')
  t.deepEqual(
    bobs.repositories.map(repository => [repository.name, repository.uniqueBytes]),
    [['team/api', teamApi.uniqueBytes]],
  )

  // Paged.
  const page = (await alice.call('GET', '/api/ui/storage?limit=1&offset=1')).json as StorageView
  t.is(page.count, 2)
  t.deepEqual(
    page.repositories.map(repository => repository.name),
    [view.repositories[1]!.name],
  )
  t.is((await alice.call('GET', '/api/ui/storage?limit=0')).status, 400)

  // A collection records itself; the next survey shows it and what is left to free.
  const report = await runGc(edge.driver, silentLogger, new AbortController().signal, { gracePeriodMs: 0 })
  t.is(report?.bytesFreed, 700)
  t.is((await readLastGcRun(edge.driver))?.bytesFreed, 700)
  await edge.survey.refresh()
  const after = (await alice.call('GET', '/api/ui/storage')).json as StorageView
  if (typeof after.survey === 'string') return t.fail(`survey ${after.survey}`)
  t.deepEqual(after.survey.gcWouldFree, { blobs: 0, bytes: 0 })
  t.like(after.survey.lastGc, { blobs: 1, bytesFreed: 700, manifests: 0, deleteUntagged: false })
})

test('refreshes asked while one runs share it and add exactly one more run', async t => {
  const edge = await startUiEdge(t, { users: ['alice'] })
  await pushImage(edge.engineUrl, 'app', 'v1')
  const first = edge.survey.refresh()
  const second = edge.survey.refresh()
  const third = edge.survey.refresh()
  t.is(second, third)
  const [a, b] = await Promise.all([first, second])
  t.is(a, b, 'one result for all callers')
  t.is(edge.survey.latest, a)
})
