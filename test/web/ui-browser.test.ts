/**
 * The web UI in a real browser: Debian's Chromium driven by playwright-core (never a downloaded
 * browser). Images are pushed by skopeo (an index of two platforms, an image with hostile
 * annotations), a signature as an OCI artifact referring to the index. Then: an anonymous visitor
 * sees only what anonymous may pull; a user logs in, browses to the image and sees its platforms
 * and the signature, copies a pull command, deletes a tag, and logs out; hostile annotations render
 * as text (no dialog, no injected element).
 *
 * BERTH_UPDATE_SCREENSHOTS=1 also writes the README's screenshots (src/ui/screenshots, light and dark).
 */
import test from 'ava'
import { mkdtemp, mkdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import type { RulePolicy } from '../../src/edge/steps/access-control.js'
import { OciLayout } from '../helpers/images.js'
import { copy } from '../helpers/skopeo.js'
import { pushImage, startUiEdge } from './ui-fixture.js'

const CHROMIUM = '/usr/bin/chromium'
const SCREENSHOTS = path.join(import.meta.dirname, '..', '..', 'src', 'ui', 'screenshots')
const XSS_SCRIPT = '<script>alert(1)</script>'
const XSS_IMG = '"><img src=x onerror=alert(2)>'
const XSS_RTL = 'invoice\u202Efdp.exe'

const policy: RulePolicy = {
  allows: (user, repository, action) => {
    if (repository.startsWith('public/')) return action === 'pull' || user === 'alice'
    return user === 'alice'
  },
}

async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  })
}

/** Fails the test when any JavaScript dialog opens (an XSS payload that ran). */
function watchDialogs(page: Page): string[] {
  const opened: string[] = []
  page.on('dialog', dialog => {
    opened.push(dialog.message())
    void dialog.dismiss()
  })
  return opened
}

test('log in, browse to a skopeo-pushed image with platforms and a signature, copy a pull command, delete a tag, log out', async t => {
  const edge = await startUiEdge(t, { users: ['alice'], policy })
  const work = await mkdtemp(path.join(tmpdir(), 'berth-ui-browser-'))
  t.teardown(() => rm(work, { recursive: true, force: true }))
  const layout = await OciLayout.create(path.join(work, 'layout'))
  const built = await layout.addIndex({
    tag: 'multi',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
    ],
    layers: [2048, 4096],
  })
  await layout.addImage({
    tag: 'evil',
    layers: [1024],
    annotations: { 'org.opencontainers.image.description': XSS_SCRIPT, 'x.attr': XSS_IMG, 'x.rtl': XSS_RTL },
  })
  const registry = new URL(edge.engineUrl).host
  await copy(layout.ref('multi'), `docker://${registry}/public/app:multi`, { all: true, dest: { tlsVerify: false } })
  await copy(layout.ref('multi'), `docker://${registry}/public/app:old`, { all: true, dest: { tlsVerify: false } })
  await copy(layout.ref('evil'), `docker://${registry}/public/app:evil`, { dest: { tlsVerify: false } })
  await copy(layout.ref('evil'), `docker://${registry}/secret/db:v1`, { dest: { tlsVerify: false } })
  await pushImage(edge.engineUrl, 'public/app', undefined, {
    artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
    subject: { mediaType: built.index.mediaType, digest: built.index.digest, size: built.index.size },
  })

  const browser = await launch()
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } })
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: edge.url })
  const page = await context.newPage()
  const dialogs = watchDialogs(page)
  const problems: string[] = []
  page.on('pageerror', error => problems.push(error.message))
  page.on('console', message => {
    if (message.type() === 'error') problems.push(message.text())
  })

  // Anonymous: only what anonymous may pull.
  await page.goto(edge.url + '/')
  await page.getByRole('link', { name: 'public/app' }).waitFor()
  t.is(await page.getByRole('link', { name: 'secret/db' }).count(), 0)

  // Log in.
  await page.getByRole('link', { name: 'Log in' }).click()
  await page.getByLabel('User name').fill('alice')
  await page.getByLabel('Password').fill('alice-password')
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('button', { name: 'Log out' }).waitFor()
  await page.getByRole('link', { name: 'secret/db' }).waitFor()
  t.true((await page.locator('#session').textContent())!.includes('alice'))

  // The repository, then the index: platforms and the signature.
  await page.getByRole('link', { name: 'public/app' }).click()
  await page.getByRole('heading', { level: 1, name: 'public/app' }).waitFor()
  await page.getByRole('link', { name: 'multi', exact: true }).click()
  await page.getByRole('heading', { name: 'Platforms (2)' }).waitFor()
  t.is(await page.getByRole('link', { name: 'linux/amd64' }).count(), 1)
  t.is(await page.getByRole('link', { name: 'linux/arm64/v8' }).count(), 1)
  await page.getByRole('heading', { name: 'Signatures (1)' }).waitFor()

  // Copy the pull command.
  await page.getByRole('button', { name: 'podman' }).click()
  await page.getByRole('button', { name: 'Copy the pull command' }).click()
  await page.getByRole('status').getByText('Copied to the clipboard').waitFor()
  const host = new URL(edge.url).host
  t.is(
    await page.evaluate(() => (globalThis as unknown as { navigator: { clipboard: { readText(): Promise<string> } } }).navigator.clipboard.readText()),
    `podman pull --tls-verify=false ${host}/public/app:multi`,
  )

  // Hostile annotations render as text.
  await page.goto(`${edge.url}/ui/image/public/app?reference=evil`)
  const annotations = page.getByTestId('annotations')
  await annotations.waitFor()
  const shown = (await annotations.textContent()) ?? ''
  t.true(shown.includes(XSS_SCRIPT))
  t.true(shown.includes(XSS_IMG))
  t.true(shown.includes(XSS_RTL))
  t.is(await page.locator('img[src="x"]').count(), 0)
  t.is(await page.locator('main script').count(), 0)

  // Storage: unique and shared bytes per repository and what GC would free, from the background survey.
  await edge.survey.refresh()
  await page.goto(`${edge.url}/ui/storage`)
  await page.getByRole('heading', { name: 'The whole store' }).waitFor()
  t.regex((await page.getByTestId('store-facts').textContent()) ?? '', /Garbage collection would free.*berth gc --delete-untagged/)
  t.is(await page.getByRole('columnheader', { name: 'Unique' }).count(), 1)
  t.not(await page.getByRole('row').filter({ hasText: 'public/app' }).getByRole('cell').nth(1).textContent(), '—', 'unique bytes shown')

  if (process.env['BERTH_UPDATE_SCREENSHOTS'] === '1') await screenshots(page, edge.url)

  // Delete a tag, with the confirmation naming what stays.
  await page.goto(`${edge.url}/ui/repository/public/app?sort=name`)
  await page.getByRole('button', { name: 'Delete tag old' }).click()
  const confirm = page.getByRole('dialog')
  await confirm.getByText('Only the tag goes').waitFor()
  t.true(((await confirm.textContent()) ?? '').includes('multi'), 'the other tag on the same digest is named')
  await confirm.getByRole('button', { name: 'Delete tag' }).click()
  await page.getByRole('status').getByText('Deleted tag old').waitFor()
  await page.getByRole('link', { name: 'old', exact: true }).waitFor({ state: 'detached' })
  t.is(await page.getByRole('link', { name: 'multi', exact: true }).count(), 1)
  t.truthy(edge.events.find(event => event.action === 'delete' && event.reference === 'old'))

  // Log out: back to what anonymous sees.
  await page.getByRole('button', { name: 'Log out' }).click()
  await page.getByRole('link', { name: 'Log in' }).waitFor()
  await page.getByRole('link', { name: 'public/app' }).waitFor()
  t.is(await page.getByRole('link', { name: 'secret/db' }).count(), 0)

  t.deepEqual(dialogs, [], 'no JavaScript dialog opened')
  t.deepEqual(problems, [], 'no script error and no CSP violation')
})

async function screenshots(page: Page, url: string): Promise<void> {
  await mkdir(SCREENSHOTS, { recursive: true })
  const pages: [string, string][] = [
    ['repositories', '/'],
    ['repository', '/ui/repository/public/app'],
    ['image', '/ui/image/public/app?reference=multi'],
    ['storage', '/ui/storage'],
  ]
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme })
    for (const [name, target] of pages) {
      await page.goto(url + target)
      await page.locator('main h1').waitFor()
      await page.waitForLoadState('networkidle')
      await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${scheme}.png`), fullPage: false })
    }
  }
  await page.emulateMedia({ colorScheme: 'light' })
}
