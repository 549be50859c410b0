import type { AddressInfo } from 'node:net'
import test from 'ava'
import { TAGS_MAX_ENTRIES } from '../../src/registry/handlers/tags.js'
import { parseDigest } from '../../src/storage/digest.js'
import { manifestRevisionLinkPath, tagIndexLinkPath } from '../../src/storage/paths.js'
import { request } from '../helpers/http.js'
import { listTags } from '../helpers/skopeo.js'
import { errorCode, imageManifest, OCI_MANIFEST, putManifest, sha256, startApp } from './fixtures.js'

/** Runs `task` over `items`, `width` at a time. */
async function inParallel<T>(items: readonly T[], width: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await task(items[next++] as T)
    }),
  )
}

async function tagged(t: Parameters<typeof startApp>[0], name: string, tags: string[]) {
  const running = await startApp(t)
  const image = await imageManifest(running.server, name)
  for (const tag of tags) await putManifest(running.server, name, tag, image.manifest, OCI_MANIFEST)
  return running
}

test('tags/list returns every tag sorted lexically', async t => {
  const { server } = await tagged(t, 'app', ['v2', 'latest', 'V1', 'a', 'v10'])
  const list = await request(server, '/v2/app/tags/list')
  t.is(list.status, 200)
  t.is(list.headers['content-type'], 'application/json')
  t.deepEqual(list.json, { name: 'app', tags: ['V1', 'a', 'latest', 'v10', 'v2'] })
  t.is(list.headers.link, undefined)
})

test('tags/list paginates with n and last, and a Link to the next page', async t => {
  const { server } = await tagged(t, 'org/app', ['a', 'b', 'c', 'd', 'e'])
  const first = await request(server, '/v2/org/app/tags/list?n=2')
  t.deepEqual(first.json.tags, ['a', 'b'])
  t.is(first.headers.link, '</v2/org/app/tags/list?n=2&last=b>; rel="next"')
  const second = await request(server, '/v2/org/app/tags/list?n=2&last=b')
  t.deepEqual(second.json.tags, ['c', 'd'])
  const third = await request(server, '/v2/org/app/tags/list?n=2&last=d')
  t.deepEqual(third.json.tags, ['e'])
  t.is(third.headers.link, undefined)
  const exact = await request(server, '/v2/org/app/tags/list?n=5')
  t.is(exact.json.tags.length, 5)
  t.is(exact.headers.link, undefined)
  const lastOnly = await request(server, '/v2/org/app/tags/list?last=c')
  t.deepEqual(lastOnly.json.tags, ['d', 'e'])
  const notATag = await request(server, '/v2/org/app/tags/list?last=bb')
  t.deepEqual(notATag.json.tags, ['c', 'd', 'e'])
})

test('n=0 gives an empty list and no Link', async t => {
  const { server } = await tagged(t, 'app', ['a', 'b'])
  const list = await request(server, '/v2/app/tags/list?n=0')
  t.deepEqual(list.json, { name: 'app', tags: [] })
  t.is(list.headers.link, undefined)
})

test('a bad n is 400', async t => {
  const { server } = await tagged(t, 'app', ['a'])
  for (const n of ['-1', 'abc', '1.5', '1e3', '0x10']) {
    const list = await request(server, `/v2/app/tags/list?n=${n}`)
    t.is(list.status, 400, n)
    t.is(errorCode(list), 'PAGINATION_NUMBER_INVALID')
  }
})

test('a tag folder without a current link (a crash leftover) is skipped and the page still fills', async t => {
  const running = await tagged(t, 'app', ['a', 'b', 'c', 'd'])
  const digest = sha256('left by a crash')
  await running.driver.putContent(tagIndexLinkPath('app', 'bb', digest), Buffer.from(digest))
  const first = await request(running.server, '/v2/app/tags/list?n=3')
  t.deepEqual(first.json.tags, ['a', 'b', 'c'])
  t.is(first.headers.link, '</v2/app/tags/list?n=3&last=c>; rel="next"')
  const second = await request(running.server, '/v2/app/tags/list?n=2&last=b')
  t.deepEqual(second.json.tags, ['c', 'd'])
  t.is(second.headers.link, undefined)
})

test(`tags/list answers at most ${TAGS_MAX_ENTRIES} tags for any larger n, with a Link; without n every tag, as registry:2; skopeo list-tags gets every tag`, async t => {
  const { server, app } = await startApp(t)
  const image = await imageManifest(server, 'big')
  const count = TAGS_MAX_ENTRIES + 205
  const all = Array.from({ length: count }, (_, i) => `t${String(i).padStart(4, '0')}`)
  // The first tag through the API, the rest straight into the tag store (the same two links a
  // manifest PUT by tag writes, without its checks: a fraction of the requests on S3).
  t.is((await putManifest(server, 'big', all[0] as string, image.manifest, OCI_MANIFEST)).status, 201)
  const digest = parseDigest(image.digest)
  await inParallel(all.slice(1), 16, tag => app.store.tags.tag('big', tag, digest))
  const firstLink = `</v2/big/tags/list?n=${TAGS_MAX_ENTRIES}&last=${all[TAGS_MAX_ENTRIES - 1]}>; rel="next"`
  // Without n: every tag in one answer, no Link (scripts written for registry:2 rely on it).
  const whole = await request(server, '/v2/big/tags/list')
  t.deepEqual(whole.json.tags, all)
  t.is(whole.headers.link, undefined)
  for (const query of [`?n=${TAGS_MAX_ENTRIES + 1}`, '?n=1000000000', `?n=${'9'.repeat(40)}`]) {
    const page = await request(server, `/v2/big/tags/list${query}`)
    t.is(page.status, 200, query)
    t.deepEqual(page.json.tags, all.slice(0, TAGS_MAX_ENTRIES), query)
    t.is(page.headers.link, firstLink, query)
  }
  // The Link leads to the rest, and the last page has none.
  const next = await request(server, String(/^<([^>]+)>/.exec(firstLink)?.[1]))
  t.deepEqual(next.json.tags, all.slice(TAGS_MAX_ENTRIES))
  t.is(next.headers.link, undefined)
  // n at the cap is honoured exactly; n below it pages as asked.
  t.is((await request(server, `/v2/big/tags/list?n=${TAGS_MAX_ENTRIES}`)).json.tags.length, TAGS_MAX_ENTRIES)
  const small = await request(server, `/v2/big/tags/list?n=7&last=${all[1100]}`)
  t.deepEqual(small.json.tags, all.slice(1101, 1108))
  t.is(small.headers.link, `</v2/big/tags/list?n=7&last=${all[1107]}>; rel="next"`)
  // A real client (skopeo asks without n).
  const { port } = server.address() as AddressInfo
  t.deepEqual(await listTags(`docker://127.0.0.1:${port}/big`, { tlsVerify: false }), all)
})

test('tags/list of an unknown repository is 404 NAME_UNKNOWN', async t => {
  const { server } = await startApp(t)
  const list = await request(server, '/v2/nothing/tags/list')
  t.is(list.status, 404)
  t.is(errorCode(list), 'NAME_UNKNOWN')
})

test('_catalog lists repositories (nested too) sorted, with n/last/Link', async t => {
  const { server } = await startApp(t)
  for (const name of ['library/alpine', 'zeta', 'a/b/c', 'a/b', 'a-b']) {
    const image = await imageManifest(server, name)
    await putManifest(server, name, 'v1', image.manifest, OCI_MANIFEST)
  }
  // A repository with blobs but no manifest is not listed (distribution: it needs _manifests).
  await imageManifest(server, 'only-blobs')
  const all = await request(server, '/v2/_catalog')
  t.is(all.status, 200)
  t.deepEqual(all.json, { repositories: ['a-b', 'a/b', 'a/b/c', 'library/alpine', 'zeta'] })
  const page = await request(server, '/v2/_catalog?n=2')
  t.deepEqual(page.json.repositories, ['a-b', 'a/b'])
  t.is(page.headers.link, '</v2/_catalog?n=2&last=a%2Fb>; rel="next"')
  const next = await request(server, '/v2/_catalog?n=2&last=a%2Fb')
  t.deepEqual(next.json.repositories, ['a/b/c', 'library/alpine'])
})

test('_catalog answers 100 repositories without n and at most 1000 for any larger n, with a Link to the rest', async t => {
  const { server, driver } = await startApp(t)
  // 1,010 repositories. The first gets a manifest through the API; the others get the same
  // manifest's revision link written straight into the store (what makes a folder a repository
  // for the catalog, and a fraction of the requests a push costs on S3).
  const names = Array.from({ length: 1010 }, (_, i) => `r${String(i).padStart(4, '0')}`)
  const image = await imageManifest(server, names[0] as string)
  t.is((await putManifest(server, names[0] as string, 'v1', image.manifest, OCI_MANIFEST)).status, 201)
  await inParallel(names.slice(1), 16, name => driver.putContent(manifestRevisionLinkPath(name, image.digest), Buffer.from(image.digest)))
  const everything = names
  const byDefault = await request(server, '/v2/_catalog')
  t.deepEqual(byDefault.json.repositories, everything.slice(0, 100))
  t.is(byDefault.headers.link, `</v2/_catalog?n=100&last=${everything[99]}>; rel="next"`)
  for (const n of ['1001', '1000000000']) {
    const capped = await request(server, `/v2/_catalog?n=${n}`)
    t.is(capped.status, 200, n)
    t.deepEqual(capped.json.repositories, everything.slice(0, 1000), n)
    t.is(capped.headers.link, `</v2/_catalog?n=1000&last=${everything[999]}>; rel="next"`, n)
  }
  const rest = await request(server, `/v2/_catalog?n=1000&last=${everything[999]}`)
  t.deepEqual(rest.json.repositories, everything.slice(1000))
  t.is(rest.headers.link, undefined)
})

test('_catalog of an empty registry is an empty list', async t => {
  const { server } = await startApp(t)
  t.deepEqual((await request(server, '/v2/_catalog')).json, { repositories: [] })
})
