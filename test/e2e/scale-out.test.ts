/**
 * Scale-out (issue #9): two Berth processes (`berth serve --local --storage s3 ...`, exactly what a
 * user runs) share one bucket on a real S3 server (single-node Ceph RGW), behind a round-robin
 * balancer with no sticky sessions: every *request* goes to the next instance, so the requests of
 * one upload land on both. What a user relies on:
 * - skopeo pushes and pulls through the balancer, byte for byte;
 * - a chunked upload whose POST, PATCHes and PUT alternate between instances completes, and the
 *   blob is served by both;
 * - a pull from one instance right after a push to the other;
 * - both instances pushing the same image at the same moment both succeed;
 * - the seed's docker flow (Debian's docker 20.10, a private dockerd) through the balancer;
 * - with --s3-redirect, layer downloads go straight to S3 through a presigned URL.
 */
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import anyTest, { type TestFn } from 'ava'
import { startBerth, type Berth } from '../helpers/berth.js'
import { startS3, uniquePrefix, type S3Server } from '../helpers/ceph.js'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { request } from '../helpers/http.js'
import { OciLayout } from '../helpers/images.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { plainHttp, pullChecker, s3StorageArgs, startBalancer, stopAfterAll, type Balancer } from '../helpers/scale-out.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'

interface Context {
  s3: S3Server
  work: string
  berths: [Berth, Berth]
  balancer: Balancer
  source: OciLayout
  dockerd: Dockerd
  /** A third instance on the same bucket, with --s3-redirect. */
  redirecting: Berth
}

const test = anyTest as TestFn
let ctx: Context | undefined

/** Stops whatever did start, also when the setup failed halfway: newest first (balancer, instances, then the S3 cluster and the folder). */
const started = stopAfterAll(test)

test.before(async () => {
  const dockerdStarting = startDockerd().then(d => {
    started.push(() => d.stop())
    return d
  })
  dockerdStarting.catch(() => {})
  const s3 = await startS3()
  started.push(() => s3.stop())
  const work = await makeTempDir('scale-out')
  started.push(() => removeDir(work))
  const prefix = uniquePrefix('scale-out')
  const args = s3StorageArgs(s3, prefix)
  // Each instance has its own datadir (nothing is stored there with S3): only the bucket is shared.
  const all = (await Promise.all(
    [0, 1, 2].map(async i => {
      const berth = await startBerth({ datadir: path.join(work, `datadir-${i}`), args: i === 2 ? [...args, '--s3-redirect'] : args, env: s3.env })
      started.push(() => berth.stop())
      return berth
    }),
  )) as [Berth, Berth, Berth]
  const berths: [Berth, Berth] = [all[0], all[1]]
  const redirecting = all[2]
  const balancer = await startBalancer(berths)
  started.push(() => balancer.close())
  const source = await OciLayout.create(path.join(work, 'source'))
  ctx = { s3, work, berths, balancer, source, dockerd: await dockerdStarting, redirecting }
})

function env(): Context {
  if (ctx === undefined) throw new Error('setup failed')
  return ctx
}

const pullAndCheck = pullChecker(() => env().work)

test.serial('skopeo pushes and pulls through a round-robin balancer; both instances took part in the uploads', async t => {
  const { balancer, source } = env()
  const image = await source.addImage({ tag: 'multi', layers: [6 * 1024 * 1024, 300 * 1024, 1000] })
  const before = balancer.hits.length
  await copy(source.ref('multi'), `docker://${balancer.hostPort}/scale/multi:v1`, { dest: plainHttp })
  const pushHits = balancer.hits.slice(before)
  const uploadHits = pushHits.filter(h => h.path.includes('/blobs/uploads/'))
  t.true(uploadHits.some(h => h.instance === 0) && uploadHits.some(h => h.instance === 1), 'upload requests went to both instances')
  // Some upload's requests (POST, PATCH, PUT of one id) were served by both instances.
  const byUpload = new Map<string, Set<number>>()
  for (const h of uploadHits) {
    const id = h.path.split('/blobs/uploads/')[1]
    if (id) byUpload.set(id, (byUpload.get(id) ?? new Set()).add(h.instance))
  }
  t.true(
    [...byUpload.values()].some(set => set.size === 2),
    'one upload was continued by the other instance',
  )
  // skopeo asks (HEAD) whether each blob is there first: 404 is the expected answer then.
  t.deepEqual(
    pushHits.filter(h => h.status >= 400 && !(h.method === 'HEAD' && h.status === 404)),
    [],
    'no request failed',
  )

  t.true((await inspectRaw(`docker://${balancer.hostPort}/scale/multi:v1`, plainHttp)).equals(image.manifestBytes))
  await pullAndCheck(t, `docker://${balancer.hostPort}/scale/multi:v1`, image)
})

test.serial('a chunked upload whose requests alternate between the instances completes; both serve the blob', async t => {
  const { balancer, berths } = env()
  const chunks = [randomBytes(6 * 1024 * 1024 + 7), randomBytes(1234), randomBytes(5 * 1024 * 1024), randomBytes(99)]
  const whole = Buffer.concat(chunks)
  const digest = `sha256:${createHash('sha256').update(whole).digest('hex')}`
  const before = balancer.hits.length
  const started = await request(balancer.url, '/v2/scale/chunked/blobs/uploads/', { method: 'POST' })
  t.is(started.status, 202)
  let location = String(started.headers.location)
  let offset = 0
  for (const chunk of chunks) {
    const response = await request(balancer.url, location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + chunk.byteLength - 1}` },
      body: chunk,
    })
    t.is(response.status, 202, response.body.toString())
    offset += chunk.byteLength
    t.is(response.headers.range, `0-${offset - 1}`, 'the instance reports every byte so far, whichever took the chunk before')
    location = String(response.headers.location)
  }
  const done = await request(balancer.url, `${location}${location.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT' })
  t.is(done.status, 201, done.body.toString())
  const instances = balancer.hits.slice(before).map(h => h.instance)
  t.deepEqual(
    instances,
    [0, 1, 0, 1, 0, 1].map(i => (i + (instances[0] ?? 0)) % 2),
    'POST, 4 PATCHes and PUT alternated',
  )

  for (const berth of berths) {
    const got = await request(berth.url, `/v2/scale/chunked/blobs/${digest}`)
    t.is(got.status, 200)
    t.true(got.body.equals(whole), `${berth.url} serves the whole blob`)
  }
})

test.serial('a pull from one instance right after a push to the other', async t => {
  const { berths, source } = env()
  const [a, b] = berths
  for (let round = 0; round < 3; round++) {
    const image = await source.addImage({ tag: `rw-${round}`, layers: [200 * 1024, 10] })
    await copy(source.ref(`rw-${round}`), `docker://${a.hostPort}/scale/rw:r${round}`, { dest: plainHttp })
    // No delay: S3's read-after-write is what makes this safe.
    t.true((await inspectRaw(`docker://${b.hostPort}/scale/rw:r${round}`, plainHttp)).equals(image.manifestBytes))
    await pullAndCheck(t, `docker://${b.hostPort}/scale/rw:r${round}`, image)
  }
})

test.serial('both instances pushing the same image at the same moment both succeed', async t => {
  const { berths, balancer, source } = env()
  const image = await source.addImage({ tag: 'same', layers: [3 * 1024 * 1024, 64 * 1024, 10] })
  const results = await Promise.allSettled(berths.map(berth => copy(source.ref('same'), `docker://${berth.hostPort}/scale/same:latest`, { dest: plainHttp })))
  t.deepEqual(
    results.map(r => (r.status === 'fulfilled' ? 'ok' : String(r.reason))),
    ['ok', 'ok'],
  )
  await pullAndCheck(t, `docker://${balancer.hostPort}/scale/same:latest`, image)
})

test.serial("the seed's docker flow through the balancer: build, push, rmi, pull; a second push finds every layer", async t => {
  const { dockerd, balancer } = env()
  // dockerd reaches 127.0.0.0/8 over plain HTTP; localhost in its namespace is the balancer.
  const reference = `localhost:${balancer.hostPort.split(':')[1]}/docker/app:v1`
  await dockerd.build(reference, {
    Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\nCOPY small.txt /small.txt\n',
    'big.bin': randomBytes(7 * 1024 * 1024),
    'small.txt': `small ${randomBytes(8).toString('hex')}\n`,
  })
  const built = await dockerd.inspectImage(reference)
  const push = await dockerd.docker(['push', reference])
  t.is((push.stdout.match(/: Pushed/g) ?? []).length, 2, push.stdout)
  const digest = /digest: (sha256:[0-9a-f]{64})/.exec(push.stdout)?.[1]
  t.truthy(digest)
  const again = await dockerd.docker(['push', reference])
  t.is((again.stdout.match(/Layer already exists/g) ?? []).length, 2, 'HEAD on either instance finds each layer')
  await dockerd.docker(['rmi', reference])
  const pull = await dockerd.docker(['pull', reference])
  t.regex(pull.stdout, new RegExp(`Digest: ${digest}`))
  t.is((await dockerd.inspectImage(reference)).Id, built.Id, 'same image after the round trip')
})

test.serial('with --s3-redirect a layer GET is a 307 to a presigned S3 URL, and skopeo pulls through it', async t => {
  const { redirecting, balancer, source, s3 } = env()
  const image = await source.addImage({ tag: 'redirect', layers: [2 * 1024 * 1024, 100] })
  await copy(source.ref('redirect'), `docker://${balancer.hostPort}/scale/redirect:v1`, { dest: plainHttp })
  const layer = image.layers[0]!
  const head = await request(redirecting.url, `/v2/scale/redirect/blobs/${layer.digest}`, { method: 'HEAD' })
  t.is(head.status, 200, 'HEAD is answered by Berth itself')
  const got = await request(redirecting.url, `/v2/scale/redirect/blobs/${layer.digest}`)
  t.is(got.status, 307)
  const location = String(got.headers.location)
  t.true(location.startsWith(`${s3.endpoint}/`), location)
  t.regex(location, /X-Amz-Signature=/)
  const direct = await request(location.slice(0, location.indexOf('/', 'http://'.length)), location.slice(location.indexOf('/', 'http://'.length)))
  t.is(direct.status, 200)
  t.is(`sha256:${createHash('sha256').update(direct.body).digest('hex')}`, layer.digest, 'the store serves the layer bytes')
  await pullAndCheck(t, `docker://${redirecting.hostPort}/scale/redirect:v1`, image)
})
