/**
 * podman 4.3 (real client, private vfs store) against Berth in local mode: pull an image pushed by
 * skopeo, push it under another name, remove it, pull it back; the image (config digest) never changes.
 */
import test from 'ava'
import path from 'node:path'
import { startLocalBerth, type Berth } from '../helpers/berth.js'
import { OciLayout } from '../helpers/images.js'
import { createPodman, type Podman } from '../helpers/podman.js'
import { makeTempDir, removeDir } from '../helpers/procs.js'
import { copy, inspect, inspectRaw, type RegistryAccess } from '../helpers/skopeo.js'

const plainHttp: RegistryAccess = { tlsVerify: false }

let work: string | undefined
let berth: Berth | undefined
let podman: Podman | undefined

test.before(async () => {
  work = await makeTempDir('e2e-podman')
  ;[berth, podman] = await Promise.all([startLocalBerth({ datadir: path.join(work, 'datadir') }), createPodman()])
})

test.after.always(async () => {
  await Promise.allSettled([berth?.stop(), podman?.cleanup()])
  if (work) await removeDir(work)
})

test.serial('podman pulls, pushes, removes and pulls again; the image stays the same', async t => {
  if (!work || !berth || !podman) throw new Error('setup failed')
  const layout = await OciLayout.create(path.join(work, 'layout'))
  const image = await layout.addImage({ tag: 'v1', layers: [256 * 1024, 100] })
  const imageId = image.config.digest.slice('sha256:'.length)
  const source = `${berth.hostPort}/podman/source:v1`
  const target = `${berth.hostPort}/podman/target:v1`
  await copy(layout.ref('v1'), `docker://${source}`, { dest: plainHttp })

  await podman.pull(source, plainHttp)
  t.is(await podman.imageId(source), imageId, 'podman image id is the config digest')

  await podman.podman(['tag', source, target])
  await podman.push(target, `docker://${target}`, plainHttp)
  const pushed = await inspect(`docker://${target}`, plainHttp)
  const manifest = JSON.parse((await inspectRaw(`docker://${target}`, plainHttp)).toString('utf8')) as { config: { digest: string } }
  t.is(manifest.config.digest, image.config.digest, 'same config blob under the new name')
  t.is(pushed.Layers.length, image.layers.length)

  await podman.podman(['rmi', '--force', source, target])
  await t.throwsAsync(podman.imageId(target))
  await podman.pull(target, plainHttp)
  t.is(await podman.imageId(target), imageId)
})

test.serial('podman pull of an unknown tag fails cleanly', async t => {
  if (!berth || !podman) throw new Error('setup failed')
  const error = await t.throwsAsync(podman.pull(`${berth.hostPort}/podman/none:latest`, plainHttp))
  t.regex(error?.message ?? '', /manifest unknown|not found/i)
})
