/**
 * The metadata index with two instances on one real S3 bucket (Ceph RGW): each instance has its own
 * S3 client, engine and index, as two `berth serve --storage s3` processes would. Concurrent pushes
 * of one tag through both end with the tag's record equal to its link, and each instance sees the
 * other's pushes and deletes after a refresh.
 */
import test from 'ava'
import { MetadataIndex } from '../../src/storage/metadata/metadata-index.js'
import { tagCurrentLinkPath } from '../../src/storage/paths.js'
import { uniquePrefix } from '../helpers/ceph.js'
import { request } from '../helpers/http.js'
import { s3DriverFor, s3ForFile } from '../helpers/s3.js'
import { imageManifest, OCI_MANIFEST, putManifest, startApp } from '../registry/fixtures.js'

const s3 = s3ForFile(test)

test("two instances on S3: concurrent pushes of one tag leave the record equal to the link; deletes reach the other's index", async t => {
  const server = await s3
  const prefix = uniquePrefix('index')
  const instances = await Promise.all(
    [0, 1].map(async () => {
      const driver = s3DriverFor(server, prefix)
      const index = new MetadataIndex(driver)
      const running = await startApp(t, { driver, observer: index })
      t.teardown(() => index.close())
      return { driver, index, running }
    }),
  )
  const [a, b] = instances as [(typeof instances)[0], (typeof instances)[0]]
  await Promise.all([a.index.ready(), b.index.ready()])
  for (let round = 0; round < 4; round++) {
    const [x, y] = await Promise.all(
      [a, b].map(async instance => {
        const image = await imageManifest(instance.running.server, 'shared/app')
        const put = await putManifest(instance.running.server, 'shared/app', 'latest', image.manifest, OCI_MANIFEST)
        t.is(put.status, 201)
        return image
      }),
    )
    const link = (await a.driver.getContent(tagCurrentLinkPath('shared/app', 'latest'))).toString()
    t.true([x!.digest, y!.digest].includes(link))
    const fresh = new MetadataIndex(s3DriverFor(server, prefix))
    t.is((await fresh.listTags('shared/app'))?.[0]?.digest, link, `round ${round}: the stored record follows the link`)
    await Promise.all([a.index.refresh(), b.index.refresh()])
    t.is((await a.index.listTags('shared/app'))?.[0]?.digest, link, `round ${round}: instance A`)
    t.is((await b.index.listTags('shared/app'))?.[0]?.digest, link, `round ${round}: instance B`)
  }

  const other = await imageManifest(a.running.server, 'shared/other')
  t.is((await putManifest(a.running.server, 'shared/other', 'v1', other.manifest, OCI_MANIFEST)).status, 201)
  await b.index.refresh()
  t.deepEqual((await b.index.listRepositories()).items.map(item => item.name).sort(), ['shared/app', 'shared/other'])
  t.is((await request(b.running.server, '/v2/shared/other/manifests/v1', { method: 'DELETE' })).status, 202)
  await a.index.refresh()
  t.deepEqual((await a.index.listTags('shared/other')) ?? [], [], "B's delete reached A's index")
})
