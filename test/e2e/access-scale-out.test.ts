/**
 * Access rules on several instances (issue #14): two Berth processes (`berth serve --local
 * --storage s3 … --access <file> --htpasswd <file>`, as a user runs them) on one bucket of a real S3
 * server (single-node Ceph RGW), each with its own copy of the same access file and the same
 * htpasswd. What a user relies on:
 * - the token signing key is made once, in the bucket (not in either instance's --certs folder);
 * - a token issued by instance A's realm (`/token`) is accepted by instance B, and B still applies
 *   the rules to the token's user;
 * - skopeo pushes as alice through A and pulls through B; anonymous pulls are refused;
 * - an edit of the access files takes effect on both instances within seconds, without a restart.
 *
 * Not here: a token from before a key rotation. There is no `berth token rotate` command to trigger
 * one from outside; rotation is covered by test/access/token-keys.test.ts (unit, shared store).
 */
import { readdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import { CERT_STORE_ROOT, DriverCertStore } from '../../src/edge/tls/cert-store.js'
import { startBerth, type Berth } from '../helpers/berth.js'
import { startS3, uniquePrefix, type S3Server } from '../helpers/ceph.js'
import { request, type HttpResponse } from '../helpers/http.js'
import { fileDigest, OciLayout } from '../helpers/images.js'
import { makeTempDir, removeDir, run } from '../helpers/procs.js'
import { s3DriverFor } from '../helpers/s3.js'
import { plainHttp, s3StorageArgs, stopAfterAll } from '../helpers/scale-out.js'
import { copy, type RegistryAccess } from '../helpers/skopeo.js'

const PASSWORDS = { alice: 'alice-secret', bob: 'bob-secret' } as const
type User = keyof typeof PASSWORDS

/** Local mode has no --domain: the token service (audience) is Berth's default name. */
const SERVICE = 'berth'

const RULES = `rules:
  - repository: "alice/**"
    who: [alice]
    can: [pull, push, overwrite, delete]
  - repository: "**"
    who: [authenticated]
    can: [pull]
`

/** The edit: bob may push to alice/shared too (a rule before alice's). */
const RULES_WITH_BOB = `rules:
  - repository: "alice/shared"
    who: [alice, bob]
    can: [pull, push]
${RULES.slice('rules:\n'.length)}`

interface Context {
  s3: S3Server
  prefix: string
  work: string
  a: Berth
  b: Berth
  accessFiles: [string, string]
  certsDirs: [string, string]
  source: OciLayout
}

const test = anyTest as TestFn
let ctx: Context | undefined
const started = stopAfterAll(test)

test.before(async () => {
  const s3 = await startS3()
  started.push(() => s3.stop())
  const work = await makeTempDir('access-scale-out')
  started.push(() => removeDir(work))
  const prefix = uniquePrefix('access-scale-out')
  const htpasswd = path.join(work, 'htpasswd')
  let users = ''
  for (const [user, password] of Object.entries(PASSWORDS)) users += (await run('htpasswd', ['-Bbn', user, password])).stdout.trim() + '\n'
  await writeFile(htpasswd, users)
  const accessFiles: [string, string] = [path.join(work, 'access-a.yml'), path.join(work, 'access-b.yml')]
  const certsDirs: [string, string] = [path.join(work, 'certs-a'), path.join(work, 'certs-b')]
  await Promise.all(accessFiles.map(file => writeFile(file, RULES)))
  // Started together, so both look for a signing key at once: the bucket's lock must leave one.
  const [a, b] = (await Promise.all(
    [0, 1].map(async i => {
      const berth = await startBerth({
        datadir: path.join(work, `datadir-${i}`),
        args: [...s3StorageArgs(s3, prefix), '--htpasswd', htpasswd, '--access', accessFiles[i] as string, '--certs', certsDirs[i] as string],
        env: s3.env,
      })
      started.push(() => berth.stop())
      return berth
    }),
  )) as [Berth, Berth]
  const source = await OciLayout.create(path.join(work, 'source'))
  ctx = { s3, prefix, work, a, b, accessFiles, certsDirs, source }
})

function env(): Context {
  if (ctx === undefined) throw new Error('setup failed')
  return ctx
}

function basic(user: User): string {
  return `Basic ${Buffer.from(`${user}:${PASSWORDS[user]}`).toString('base64')}`
}

/** GET <berth>/token for `scope` as `user` (or anonymous); the whole answer. */
function tokenRequest(berth: Berth, scope: string, user?: User): Promise<HttpResponse> {
  const query = new URLSearchParams({ service: SERVICE, scope })
  return request(berth.url, `/token?${query}`, { headers: user === undefined ? {} : { authorization: basic(user) } })
}

async function tokenFrom(t: ExecutionContext, berth: Berth, scope: string, user?: User): Promise<string> {
  const response = await tokenRequest(berth, scope, user)
  t.is(response.status, 200, response.body.toString())
  const token = (response.json as { token?: unknown }).token
  if (typeof token !== 'string') throw new Error(`no token in ${response.body.toString()}`)
  return token
}

function jwtPart(token: string, index: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[index] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
}

function startUpload(berth: Berth, repository: string, token: string): Promise<HttpResponse> {
  return request(berth.url, `/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
}

/** Every file under `dir`, relative (none when the folder was never made). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])
  return entries.filter(entry => entry.isFile()).map(entry => path.relative(dir, path.join(entry.parentPath, entry.name)))
}

test.serial('the token signing key is made once, in the bucket, and not in either --certs folder', async t => {
  const { s3, prefix, a, b, certsDirs } = env()
  const store = new DriverCertStore(s3DriverFor(s3, prefix), CERT_STORE_ROOT)
  const keys = await store.list('token/keys')
  t.is(keys.length, 1, `one key for two instances started together: ${keys.join(', ')}`)
  const kid = /^token\/keys\/([A-Za-z0-9_-]+)\.json$/.exec(keys[0] ?? '')?.[1]
  t.truthy(kid, keys[0])
  for (const berth of [a, b]) {
    const token = await tokenFrom(t, berth, 'repository:alice/app:pull', 'alice')
    t.is(jwtPart(token, 0).kid, kid, `${berth.url} signs with the key in the bucket`)
  }
  for (const dir of certsDirs)
    t.deepEqual(
      (await filesUnder(dir)).filter(file => file.includes('token')),
      [],
      `${dir} holds no token key`,
    )
})

test.serial("a token from A's realm is accepted by B, and B applies the rules to its user", async t => {
  const { a, b } = env()
  const token = await tokenFrom(t, a, 'repository:alice/app:pull,push', 'alice')
  const claims = jwtPart(token, 1)
  t.is(claims.sub, 'alice')
  t.is(claims.aud, SERVICE)
  t.deepEqual(claims.access, [{ type: 'repository', name: 'alice/app', actions: ['pull', 'push'] }])

  const upload = await startUpload(b, 'alice/app', token)
  t.is(upload.status, 202, upload.body.toString())
  t.regex(String(upload.headers.location), /^\/v2\/alice\/app\/blobs\/uploads\/[^/]+/)
  // The upload continues on A with the same token (one bucket, one key).
  const status = await request(a.url, String(upload.headers.location), { headers: { authorization: `Bearer ${token}` } })
  t.is(status.status, 204, status.body.toString())

  // The token names alice/app only: another repository on B asks for a new token.
  const other = await startUpload(b, 'alice/other', token)
  t.is(other.status, 401)
  t.regex(
    String(other.headers['www-authenticate']),
    /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="berth",scope="repository:alice\/other:pull,push",error="insufficient_scope"$/,
  )

  // bob's token from A grants no push on alice/app; B refuses a known user with 403 DENIED.
  const bobs = await tokenFrom(t, a, 'repository:alice/app:pull,push', 'bob')
  t.deepEqual(jwtPart(bobs, 1).access, [{ type: 'repository', name: 'alice/app', actions: ['pull'] }])
  const denied = await startUpload(b, 'alice/app', bobs)
  t.is(denied.status, 403)
  t.is((denied.json as { errors: { code: string }[] }).errors[0]?.code, 'DENIED')

  // Without a token B challenges with its own realm.
  const anonymous = await request(b.url, '/v2/alice/app/blobs/uploads/', { method: 'POST' })
  t.is(anonymous.status, 401)
  t.true(String(anonymous.headers['www-authenticate']).startsWith(`Bearer realm="${b.url}/token",service="berth"`))

  // A token whose signature is not the bucket's key is refused by both.
  const [header, payload] = token.split('.')
  const forged = `${header}.${payload}.${Buffer.alloc(64, 1).toString('base64url')}`
  for (const berth of [a, b]) t.is((await startUpload(berth, 'alice/app', forged)).status, 401)
})

test.serial('skopeo copies an image as alice through A; it pulls through B as alice, never anonymously', async t => {
  const { a, b, source, work } = env()
  const image = await source.addImage({ tag: 'app', layers: [512 * 1024, 3000] })
  const alice: RegistryAccess = { ...plainHttp, creds: `alice:${PASSWORDS.alice}` }
  await copy(source.ref('app'), `docker://${a.hostPort}/alice/app:v1`, { dest: alice })

  const out = await OciLayout.create(path.join(work, 'pulled'))
  await copy(`docker://${b.hostPort}/alice/app:v1`, out.ref('pulled'), { src: alice })
  t.true((await out.readBlob(image.manifest.digest)).equals(image.manifestBytes), 'manifest bytes identical')
  for (const blob of image.blobs) t.is(await fileDigest(out.blobPath(blob.digest)), blob.digest, `blob ${blob.digest} intact`)

  // bob may pull it too (the `**` rule), but not push over it.
  const bob: RegistryAccess = { ...plainHttp, creds: `bob:${PASSWORDS.bob}` }
  await copy(`docker://${b.hostPort}/alice/app:v1`, out.ref('by-bob'), { src: bob })
  const bobPush = await copy(source.ref('app'), `docker://${b.hostPort}/alice/app:bob`, { dest: bob }, { allowFailure: true })
  t.not(bobPush.exitCode, 0)
  t.regex(bobPush.stderr, /denied: requested access to the resource is denied/)

  const anonymous = await copy(`docker://${b.hostPort}/alice/app:v1`, out.ref('anonymous'), { src: plainHttp }, { allowFailure: true })
  t.log('skopeo anonymous pull through B:', anonymous.stderr.trim())
  t.not(anonymous.exitCode, 0)
  // skopeo quotes docker's multi-line error on one line, newlines as \n.
  t.regex(anonymous.stderr, /reading manifest v1 in 127\.0\.0\.1:\d+\/alice\/app: errors:\\ndenied: requested access to the resource is denied\\nunauthorized/)
})

test.serial('an edit of the access files takes effect on both instances within seconds, without a restart', async t => {
  const { a, b, accessFiles } = env()
  const scope = 'repository:alice/shared:pull,push'
  const grantedTo = async (berth: Berth) =>
    ((jwtPart(await tokenFrom(t, berth, scope, 'bob'), 1).access as { actions: string[] }[])[0]?.actions ?? []).join(',')
  t.is(await grantedTo(a), 'pull')
  t.is(await grantedTo(b), 'pull')

  const edited = Date.now()
  await Promise.all(accessFiles.map(file => writeFile(file, RULES_WITH_BOB)))
  for (const berth of [a, b]) {
    while ((await grantedTo(berth)) !== 'pull,push') {
      if (Date.now() - edited > 10_000) return t.fail(`${berth.url} still refuses push 10 s after the edit`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  t.log(`both instances applied the edit ${Date.now() - edited} ms after it`)
  t.regex(a.output(), /access rules reloaded/)
  t.regex(b.output(), /access rules reloaded/)

  // The token one instance issues under the new rules works on the other.
  for (const [issuer, checker] of [
    [a, b],
    [b, a],
  ] as const) {
    const upload = await startUpload(checker, 'alice/shared', await tokenFrom(t, issuer, scope, 'bob'))
    t.is(upload.status, 202, upload.body.toString())
  }

  // And back: a token bob got before the edit is reverted no longer lets him push (the rules decide per request).
  const before = await tokenFrom(t, a, scope, 'bob')
  await Promise.all(accessFiles.map(file => writeFile(file, RULES)))
  const reverted = Date.now()
  for (const berth of [a, b]) {
    while ((await startUpload(berth, 'alice/shared', before)).status !== 403) {
      if (Date.now() - reverted > 10_000) return t.fail(`${berth.url} still lets bob push 10 s after the revert`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  t.pass()
})
