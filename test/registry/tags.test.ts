import test from 'ava'
import { request } from '../helpers/http.js'
import { errorCode, imageManifest, OCI_MANIFEST, putManifest, startApp } from './fixtures.js'

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
  for (const n of ['-1', 'abc', '1.5']) {
    const list = await request(server, `/v2/app/tags/list?n=${n}`)
    t.is(list.status, 400, n)
    t.is(errorCode(list), 'PAGINATION_NUMBER_INVALID')
  }
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

test('_catalog of an empty registry is an empty list', async t => {
  const { server } = await startApp(t)
  t.deepEqual((await request(server, '/v2/_catalog')).json, { repositories: [] })
})
