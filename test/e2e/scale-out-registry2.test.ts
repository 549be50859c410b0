/**
 * A bucket written by distribution's s3 driver is served as is, and the other way round: Debian's
 * docker-registry 2.8.2 (registry:2) with `storage.s3` and Berth with `--storage s3` on the same
 * bucket and rootdirectory/prefix of one Ceph RGW. skopeo pushes to one and pulls from the other.
 */
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import anyTest, { type TestFn } from 'ava'
import { ListObjectsV2Command } from '@aws-sdk/client-s3'
import { startBerth, type Berth } from '../helpers/berth.js'
import { startS3, uniquePrefix, type S3Server } from '../helpers/ceph.js'
import { OciLayout } from '../helpers/images.js'
import { freePort, makeTempDir, probeStatus, removeDir, startDaemon, waitFor, type Daemon } from '../helpers/procs.js'
import { DOCKER_REGISTRY } from '../helpers/registry2.js'
import { plainHttp, pullChecker, stopAfterAll } from '../helpers/scale-out.js'
import { copy, inspectRaw } from '../helpers/skopeo.js'
import { S3Driver } from '../../src/storage/driver/s3.js'

interface Context {
  s3: S3Server
  work: string
  prefix: string
  berth: Berth
  registry2: { daemon: Daemon; hostPort: string }
  source: OciLayout
}

const test = anyTest as TestFn
let ctx: Context | undefined

/** Stops whatever did start, newest first (the servers, then the S3 cluster, then the folder), also when the setup failed halfway. */
const started = stopAfterAll(test)

async function startRegistry2OnS3(s3: S3Server, prefix: string, work: string): Promise<{ daemon: Daemon; hostPort: string }> {
  const port = await freePort()
  const config = {
    version: 0.1,
    log: { level: 'info', accesslog: { disabled: true } },
    storage: {
      // distribution 2.8's s3 driver: a regionendpoint turns on path-style addressing.
      s3: {
        accesskey: s3.accessKeyId,
        secretkey: s3.secretAccessKey,
        region: s3.region,
        regionendpoint: s3.endpoint,
        bucket: s3.bucket,
        rootdirectory: `/${prefix}`,
        secure: false,
        v4auth: true,
      },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
      redirect: { disable: true },
    },
    http: { addr: `127.0.0.1:${port}`, secret: 'berth-test-secret' },
  }
  const file = path.join(work, 'registry2.yml')
  await writeFile(file, JSON.stringify(config, null, 2)) // JSON is YAML
  // The machine's AWS_CA_BUNDLE makes aws-sdk-go 1.x in registry 2.8 panic (custom transport); plain HTTP needs none.
  const daemon = startDaemon('docker-registry', DOCKER_REGISTRY, ['serve', file], { env: { AWS_CA_BUNDLE: undefined } })
  started.push(() => daemon.stop())
  await waitFor('docker-registry on S3', async () => (await probeStatus(`http://127.0.0.1:${port}/v2/`)) === 200, { daemon, timeoutMs: 30_000 })
  return { daemon, hostPort: `127.0.0.1:${port}` }
}

test.before(async () => {
  const s3 = await startS3()
  started.push(() => s3.stop())
  const work = await makeTempDir('scale-out-r2')
  started.push(() => removeDir(work))
  const prefix = uniquePrefix('shared')
  const [berth, registry2, source] = await Promise.all([
    startBerth({
      datadir: path.join(work, 'datadir'),
      args: ['--storage', 's3', '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix],
      env: s3.env,
    }).then(berth => {
      started.push(() => berth.stop())
      return berth
    }),
    startRegistry2OnS3(s3, prefix, work),
    OciLayout.create(path.join(work, 'source')),
  ])
  ctx = { s3, work, prefix, berth, registry2, source }
})

function env(): Context {
  if (ctx === undefined) throw new Error('setup failed')
  return ctx
}

const pullAndCheck = pullChecker(() => env().work)

test.serial('an image pushed to registry:2 on S3 is served by Berth from the same bucket', async t => {
  const { registry2, berth, source, s3, prefix } = env()
  const image = await source.addImage({ tag: 'from-r2', layers: [6 * 1024 * 1024, 2000] })
  await copy(source.ref('from-r2'), `docker://${registry2.hostPort}/compat/app:r2`, { dest: plainHttp })
  // distribution's keys, under its rootdirectory.
  const driver = new S3Driver({ endpoint: s3.endpoint, bucket: s3.bucket, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
  const listed = await driver.client.send(
    new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `${prefix}/docker/registry/v2/repositories/compat/app/_manifests/tags/r2/` }),
  )
  t.true((listed.Contents ?? []).some(o => o.Key === `${prefix}/docker/registry/v2/repositories/compat/app/_manifests/tags/r2/current/link`))
  t.true((await inspectRaw(`docker://${berth.hostPort}/compat/app:r2`, plainHttp)).equals(image.manifestBytes))
  await pullAndCheck(t, `docker://${berth.hostPort}/compat/app:r2`, image)
})

test.serial('an image pushed to Berth on S3 is served by registry:2 from the same bucket', async t => {
  const { registry2, berth, source } = env()
  const image = await source.addImage({ tag: 'from-berth', layers: [6 * 1024 * 1024, 300 * 1024, 10] })
  await copy(source.ref('from-berth'), `docker://${berth.hostPort}/compat/other:b`, { dest: plainHttp })
  t.true((await inspectRaw(`docker://${registry2.hostPort}/compat/other:b`, plainHttp)).equals(image.manifestBytes))
  await pullAndCheck(t, `docker://${registry2.hostPort}/compat/other:b`, image)
})
