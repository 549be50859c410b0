/**
 * `berth ls`, `berth tags`, `berth rm` and `berth reindex` run in-process (runCli) against a data
 * folder pushed to over HTTP, as a user runs them beside (or without) `berth serve`.
 */
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import test from 'ava'
import { runCli } from '../../src/cli/program.js'
import { FilesystemDriver } from '../../src/storage/driver/filesystem.js'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { INDEX_ROOT } from '../../src/storage/paths.js'
import { request } from '../helpers/http.js'
import { OCI_INDEX, OCI_MANIFEST, imageManifest, putManifest, sha256, startApp, tempRoot } from '../registry/fixtures.js'

function captureIo(cwd: string) {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', chunk => (out += String(chunk)))
  stderr.on('data', chunk => (err += String(chunk)))
  return { io: { stdout, stderr, stdin: new PassThrough(), env: {}, cwd }, out: () => out, err: () => err }
}

async function berth(datadir: string, ...args: string[]) {
  const capture = captureIo(join(datadir, '..'))
  const code = await runCli(['node', 'berth', ...args, '--datadir', datadir], capture.io)
  return { code, stdout: capture.out(), stderr: capture.err() }
}

async function setup(t: import('ava').ExecutionContext) {
  const root = await tempRoot(t)
  const driver = new FilesystemDriver(root)
  const index = new MetadataIndex(driver)
  const running = await startApp(t, { driver, observer: index })
  const push = async (name: string, tag: string) => {
    const image = await imageManifest(running.server, name, { layers: 2 })
    t.is((await putManifest(running.server, name, tag, image.manifest, OCI_MANIFEST)).status, 201)
    return image
  }
  return { root, datadir: join(root, '..'), driver, index, running, push }
}

test('ls and tags print what the index holds; --json gives the same data', async t => {
  const { datadir, push, running } = await setup(t)
  const app = await push('team/app', 'v1')
  await push('team/app', 'v2')
  await push('tools/cli', 'latest')
  t.is((await request(running.server, '/v2/team/app/manifests/v1')).status, 200)

  const ls = await berth(datadir, 'ls')
  t.is(ls.code, 0, ls.stderr)
  t.regex(ls.stdout, /^REPOSITORY +TAGS +SIZE +LAST PUSHED\n/)
  t.regex(ls.stdout, /^team\/app +2 +[\d.]+ KiB +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/m)
  t.regex(ls.stdout, /^tools\/cli +1 /m)
  const prefixed = await berth(datadir, 'ls', 'tools/', '--json')
  t.deepEqual(
    (JSON.parse(prefixed.stdout) as { items: { name: string }[] }).items.map(r => r.name),
    ['tools/cli'],
  )

  const tags = await berth(datadir, 'tags', 'team/app')
  t.is(tags.code, 0, tags.stderr)
  t.regex(tags.stdout, /^TAG +DIGEST +SIZE +PLATFORMS +CREATED +PUSHED +PULLS +LAST PULLED\n/)
  t.regex(tags.stdout, new RegExp(`^v1 +${app.digest.slice(0, 'sha256:'.length + 12)} `, 'm'))
  const json = JSON.parse((await berth(datadir, 'tags', 'team/app', '--json', '--sort', 'pushed')).stdout) as { tags: { tag: string; digest: string }[] }
  t.deepEqual(
    json.tags.map(x => x.tag),
    ['v2', 'v1'],
  )
  const missing = await berth(datadir, 'tags', 'nope')
  t.is(missing.code, 1)
  t.regex(missing.stderr, /^berth: no repository nope in the metadata index/)
})

test('rm repo:tag untags; rm repo@digest deletes the image and names its tags; missing is exit 1; a platform of an index is refused', async t => {
  const { datadir, push, running, index } = await setup(t)
  const image = await push('app', 'v1')
  t.is((await putManifest(running.server, 'app', 'latest', image.manifest, OCI_MANIFEST)).status, 201)
  t.is((await putManifest(running.server, 'app', 'old', image.manifest, OCI_MANIFEST)).status, 201)

  const untag = await berth(datadir, 'rm', 'app:old')
  t.is(untag.code, 0, untag.stderr)
  t.regex(untag.stdout, new RegExp(`^untagged app:old \\(was ${image.digest}\\)`))
  t.is((await request(running.server, '/v2/app/manifests/old')).status, 404)

  const again = await berth(datadir, 'rm', 'app:old')
  t.is(again.code, 1)
  t.is(again.stderr, 'berth: no tag app:old\n')

  const gone = await berth(datadir, 'rm', `app@${image.digest}`, '--json')
  t.is(gone.code, 0, gone.stderr)
  t.deepEqual(JSON.parse(gone.stdout), { repository: 'app', digest: image.digest, image: true, tags: ['latest', 'v1'] })
  t.is((await request(running.server, `/v2/app/manifests/${image.digest}`)).status, 404)
  const missing = await berth(datadir, 'rm', `app@${image.digest}`)
  t.is(missing.code, 1)
  t.regex(missing.stderr, /^berth: no manifest app@sha256:/)
  t.is((await berth(datadir, 'rm', 'app')).code, 2)

  // The serving process's view follows after its refresh; a fresh reader at once.
  await index.refresh()
  t.deepEqual(await index.listTags('app'), undefined)

  const child = await push('multi', 'child')
  const list = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: child.digest, size: child.manifest.byteLength, platform: { os: 'linux', architecture: 'amd64' } }],
    }),
  )
  t.is((await putManifest(running.server, 'multi', 'latest', list, OCI_INDEX)).status, 201)
  const refused = await berth(datadir, 'rm', `multi@${child.digest}`)
  t.is(refused.code, 1)
  t.regex(refused.stderr, /is one platform of multi:latest; remove that instead, or pass --force/)
  t.is((await berth(datadir, 'rm', `multi@${sha256(list)}`)).code, 0)
})

test('reindex rebuilds deleted records (idempotent), then ls shows them again', async t => {
  const { datadir, push, driver, index } = await setup(t)
  await push('a', 'v1')
  await push('b', 'v1')
  await index.close()
  await driver.delete(INDEX_ROOT)
  const empty = await berth(datadir, 'ls')
  t.regex(empty.stderr, /run: berth reindex/)
  const first = await berth(datadir, 'reindex')
  t.is(first.code, 0, first.stderr)
  t.regex(first.stdout, /^reindexed 2 repositories under .*: 2 tag records written, 0 deleted; 2 manifest records written, 0 deleted\n$/)
  const second = await berth(datadir, 'reindex', '--json')
  t.deepEqual(JSON.parse(second.stdout), { repositories: 2, tagsWritten: 0, tagsDeleted: 0, manifestsWritten: 0, manifestsDeleted: 0 })
  t.regex((await berth(datadir, 'ls')).stdout, /^b +1 /m)
})
