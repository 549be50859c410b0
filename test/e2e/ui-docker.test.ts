/**
 * Issue #15's "done when", followed literally: a newcomer starts Berth (the real `berth serve` as a
 * child, what `npm start` runs), pushes with docker (Debian's 20.10, a private dockerd), opens the
 * registry's address in a browser (Debian's Chromium via playwright-core) and finds the image with
 * its size, platforms and pushed time; then the same over HTTPS with a login.
 *
 * The multi-platform image is a Docker manifest list made with `docker manifest` from two images the
 * daemon built, as a user without buildx makes one. Expected figures are read from the registry API
 * (manifests and their configs and layers, each digest once), never from Berth's index.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { chromium, type APIRequestContext, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { startBerth, type Berth } from '../helpers/berth.js'
import { DOCKER_TLS_NAME, startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { makeTempDir, removeDir, run } from '../helpers/procs.js'
import { createTestPki } from '../helpers/tls.js'

const CHROMIUM = '/usr/bin/chromium'
const USER = 'newcomer'
const PASSWORD = 'newcomer-password'
const ACCEPT = [
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
].join(', ')

let work: string | undefined
let dockerd: Dockerd | undefined
let browser: Browser | undefined
const servers: Berth[] = []

test.before(async () => {
  work = await makeTempDir('e2e-ui-docker')
  ;[dockerd, browser] = await Promise.all([
    startDockerd(),
    chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        // The HTTPS registry's name, as the daemon resolves it (dockerd.ts): the browser opens https://berth.test:<port>/.
        `--host-resolver-rules=MAP ${DOCKER_TLS_NAME} [::1]`,
      ],
    }),
  ])
})

test.after.always(async () => {
  await Promise.allSettled([dockerd?.stop(), browser?.close(), ...servers.map(server => server.stop())])
  if (work) await removeDir(work)
})

function env(): { dockerd: Dockerd; browser: Browser; work: string } {
  if (!dockerd || !browser || !work) throw new Error('setup failed')
  return { dockerd, browser, work }
}

interface Pushed {
  /** The repository, e.g. `hello`. */
  repository: string
  tag: string
  digest: string
  /** Between these two instants the tag was written (ms). */
  startedAt: number
  endedAt: number
}

/** Two images built by the daemon (one file each), pushed, then a manifest list of both (amd64 and arm64) pushed as `<repository>:multi`. */
async function pushMultiPlatform(dockerd: Dockerd, registry: string, repository: string): Promise<Pushed> {
  const base = `${registry}/${repository}`
  for (const arch of ['amd64', 'arm64']) {
    await dockerd.build(`${base}:${arch}`, {
      Dockerfile: `FROM scratch\nCOPY ${arch}.bin /\n`,
      [`${arch}.bin`]: randomBytes(48 * 1024 + (arch === 'arm64' ? 7000 : 0)),
    })
    await dockerd.docker(['push', `${base}:${arch}`])
  }
  await dockerd.docker(['manifest', 'create', '--insecure', `${base}:multi`, `${base}:amd64`, `${base}:arm64`])
  await dockerd.docker(['manifest', 'annotate', '--arch', 'arm64', `${base}:multi`, `${base}:arm64`])
  const startedAt = Date.now()
  const pushed = await dockerd.docker(['manifest', 'push', '--insecure', `${base}:multi`])
  const endedAt = Date.now()
  const digest = /sha256:[0-9a-f]{64}/.exec(pushed.stdout)?.[0]
  if (digest === undefined) throw new Error(`no digest in docker manifest push output:\n${pushed.stdout}`)
  return { repository, tag: 'multi', digest, startedAt, endedAt }
}

/** Compressed bytes of a manifest as the registry serves it: config plus layers, each digest once; an index sums its children. */
async function storedSize(request: APIRequestContext, url: string, repository: string, reference: string, headers: Record<string, string>): Promise<number> {
  const response = await request.get(`${url}/v2/${repository}/manifests/${reference}`, { headers: { ...headers, Accept: ACCEPT } })
  if (!response.ok()) throw new Error(`GET manifest ${reference}: ${response.status()}`)
  const manifest = (await response.json()) as {
    manifests?: { digest: string }[]
    config?: { digest: string; size: number }
    layers?: { digest: string; size: number }[]
  }
  if (manifest.manifests !== undefined) {
    let total = 0
    for (const digest of new Set(manifest.manifests.map(child => child.digest))) total += await storedSize(request, url, repository, digest, headers)
    return total
  }
  const blobs = new Map<string, number>()
  for (const blob of [manifest.config, ...(manifest.layers ?? [])]) if (blob !== undefined) blobs.set(blob.digest, blob.size)
  return [...blobs.values()].reduce((sum, size) => sum + size, 0)
}

/** The UI's byte format (src/ui/dom.ts formatBytes), restated so the test does not trust it. */
function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

/** Asserts a `<time>` shows an instant within [from - slack, to + slack]. */
async function assertTimeWithin(t: import('ava').ExecutionContext, time: ReturnType<Page['locator']>, from: number, to: number, what: string): Promise<void> {
  const datetime = await time.getAttribute('datetime')
  t.truthy(datetime, `${what}: a time is shown`)
  const at = Date.parse(datetime ?? '')
  // The store's clock is this machine's (a link file's modification time); a second of slack for its granularity.
  t.true(at >= from - 1000 && at <= to + 1000, `${what}: ${datetime} within the push (${new Date(from).toISOString()} … ${new Date(to).toISOString()})`)
  t.regex((await time.textContent()) ?? '', /now|second|minute/, `${what}: shown as just now`)
}

/**
 * What the newcomer does in the browser: the repository list shows the repository with its size
 * and last push; its page shows the tag with platforms, size and pushed time; the image page shows
 * the platforms and when the image was built.
 */
async function findImage(
  t: import('ava').ExecutionContext,
  page: Page,
  origin: string,
  pushed: Pushed,
  expected: { imageSize: number; repositorySize: number },
) {
  await page.goto(`${origin}/`)
  const repositoryLink = page.getByRole('link', { name: pushed.repository, exact: true })
  await repositoryLink.waitFor()
  const repositoryRow = page.getByRole('row').filter({ has: repositoryLink })
  const repositoryCells = repositoryRow.getByRole('cell')
  t.is(await repositoryCells.nth(0).textContent(), '3', 'three tags: amd64, arm64, multi')
  t.is(await repositoryCells.nth(1).textContent(), formatBytes(expected.repositorySize), 'repository size')
  await assertTimeWithin(t, repositoryRow.locator('time'), pushed.startedAt - 120_000, pushed.endedAt, 'last pushed')

  await repositoryLink.click()
  await page.getByRole('heading', { level: 1, name: pushed.repository }).waitFor()
  const tagLink = page.getByRole('link', { name: pushed.tag, exact: true })
  await tagLink.waitFor()
  const tagRow = page.getByRole('row').filter({ has: tagLink })
  const cells = tagRow.getByRole('cell')
  // Cells after the row header: digest, platforms, size, pushed, actions.
  t.is(await cells.nth(0).locator('code').getAttribute('title'), pushed.digest, 'the digest docker printed')
  t.deepEqual(await cells.nth(1).getByRole('listitem').allTextContents(), ['linux/amd64', 'linux/arm64'], 'platforms')
  t.is(await cells.nth(2).textContent(), formatBytes(expected.imageSize), 'image size')
  await assertTimeWithin(t, cells.nth(3).locator('time'), pushed.startedAt, pushed.endedAt, 'pushed')

  await tagLink.click()
  await page.getByRole('heading', { name: 'Platforms (2)' }).waitFor()
  t.is(await page.getByRole('link', { name: 'linux/amd64' }).count(), 1)
  t.is(await page.getByRole('link', { name: 'linux/arm64' }).count(), 1)
  const facts = page.locator('dl.facts')
  t.is(await facts.locator('dt:text-is("Size") + dd').textContent(), formatBytes(expected.imageSize), 'image page size')
  t.truthy(await facts.locator('dt:text-is("Created") + dd time').getAttribute('datetime'), 'created: the latest of the platforms, not unknown')
  await assertTimeWithin(t, facts.locator('dt:text-is("Pushed") + dd time'), pushed.startedAt - 120_000, pushed.endedAt, 'image pushed')
}

function collectProblems(page: Page): string[] {
  const problems: string[] = []
  page.on('pageerror', error => problems.push(error.message))
  page.on('console', message => {
    if (message.type() === 'error') problems.push(message.text())
  })
  return problems
}

async function newContext(browser: Browser, options: Parameters<Browser['newContext']>[0] = {}): Promise<BrowserContext> {
  return browser.newContext({ viewport: { width: 1200, height: 900 }, ...options })
}

test.serial('local mode: after a docker push, http://localhost:<port>/ shows the image with its size, platforms and pushed time', async t => {
  const { dockerd, browser, work } = env()
  const berth = await startBerth({ datadir: path.join(work, 'local') })
  servers.push(berth)
  const registry = `localhost:${berth.port}`
  const pushed = await pushMultiPlatform(dockerd, registry, 'hello')

  const context = await newContext(browser)
  t.teardown(() => context.close())
  const origin = `http://localhost:${berth.port}`
  const imageSize = await storedSize(context.request, berth.url, 'hello', pushed.digest, {})
  const repositorySize =
    (await storedSize(context.request, berth.url, 'hello', 'amd64', {})) + (await storedSize(context.request, berth.url, 'hello', 'arm64', {}))
  t.true(imageSize > 96 * 1024, `the two platforms' layers count: ${imageSize} bytes`)
  t.is(repositorySize, imageSize, 'the list adds no bytes of its own')

  t.log(`hello:multi ${pushed.digest}: ${imageSize} bytes over 2 platforms`)
  const page = await context.newPage()
  const problems = collectProblems(page)
  await findImage(t, page, origin, pushed, { imageSize, repositorySize })
  t.deepEqual(problems, [], 'no script error and no CSP violation')
})

test.serial('HTTPS with a login: after docker login and push, https://<domain>:<port>/ shows the same once logged in', async t => {
  const { dockerd, browser, work } = env()
  const dir = path.join(work, 'https')
  const pki = await createTestPki(path.join(dir, 'pki'), [DOCKER_TLS_NAME])
  const htpasswd = path.join(dir, 'htpasswd')
  await writeFile(htpasswd, (await run('htpasswd', ['-Bbn', USER, PASSWORD])).stdout)
  const berth = await startBerth({
    datadir: path.join(dir, 'datadir'),
    host: '::1',
    https: { domain: DOCKER_TLS_NAME, certFile: pki.certPath, keyFile: pki.keyPath, htpasswd },
  })
  servers.push(berth)
  await dockerd.addCa(berth.hostPort, pki.ca.cert)
  await dockerd.docker(['login', '--username', USER, '--password-stdin', berth.hostPort], { input: PASSWORD })
  const pushed = await pushMultiPlatform(dockerd, berth.hostPort, 'team/hello')

  // The test CA is not in Chromium's store (NSS): certificate errors are ignored, as a user who
  // accepted the self-made CA would see the page.
  const context = await newContext(browser, { ignoreHTTPSErrors: true })
  t.teardown(() => context.close())
  const origin = `https://${berth.hostPort}`
  const basic = { Authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` }
  // context.request runs in this process (not the browser's resolver): the address, not the name.
  const imageSize = await storedSize(context.request, berth.url, 'team/hello', pushed.digest, basic)
  const repositorySize =
    (await storedSize(context.request, berth.url, 'team/hello', 'amd64', basic)) + (await storedSize(context.request, berth.url, 'team/hello', 'arm64', basic))

  const page = await context.newPage()
  const problems = collectProblems(page)
  const challenges: string[] = []
  page.on('response', response => {
    if (response.headers()['www-authenticate'] !== undefined) challenges.push(response.url())
  })
  await page.goto(`${origin}/`)
  // Nothing for a visitor who is not logged in (users exist, no access rules).
  await page.getByRole('link', { name: 'Log in' }).first().waitFor()
  t.is(await page.getByRole('link', { name: 'team/hello', exact: true }).count(), 0)

  await page.getByRole('link', { name: 'Log in' }).first().click()
  await page.getByLabel('User name').fill(USER)
  await page.getByLabel('Password').fill('wrong-password')
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('alert').waitFor()
  // The refused login is a 401 the browser logs; it must be the only complaint so far.
  t.deepEqual(problems.splice(0), ['Failed to load resource: the server responded with a status of 401 (Unauthorized)'])
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('button', { name: 'Log out' }).waitFor()
  const cookie = (await context.cookies(origin)).find(one => one.name === 'berth_session')
  t.truthy(cookie, 'a session cookie')
  t.true(cookie?.secure && cookie.httpOnly && cookie.sameSite === 'Strict', 'Secure, HttpOnly, SameSite=Strict')

  await findImage(t, page, origin, pushed, { imageSize, repositorySize })
  t.deepEqual(challenges, [], 'no answer the browser saw asked for Basic credentials (no popup)')
  t.deepEqual(problems, [], 'no script error and no CSP violation')
})
