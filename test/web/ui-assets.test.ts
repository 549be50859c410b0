/** The web UI's bundle in src/web/ui-assets.generated.ts is what src/ui/build.mjs makes from src/ui now. */
import test from 'ava'
import { readFile, writeFile } from 'node:fs/promises'
import { CONTENT_SECURITY_POLICY } from '../../src/web/web-ui.js'
import { UI_ASSETS, UI_INDEX_HTML } from '../../src/web/ui-assets.generated.js'

const GENERATED = new URL('../../src/web/ui-assets.generated.ts', import.meta.url)

test('the generated UI assets match the sources (BERTH_UPDATE_VENDORED=1 rewrites them; npm run build does too)', async t => {
  // @ts-expect-error: a plain .mjs build script without type declarations
  const { generate } = (await import('../../src/ui/build.mjs')) as { generate: () => Promise<string> }
  const fresh = await generate()
  const current = await readFile(GENERATED, 'utf8')
  if (process.env['BERTH_UPDATE_VENDORED'] === '1' && fresh !== current) {
    await writeFile(GENERATED, fresh)
    return t.pass()
  }
  t.true(fresh === current, 'src/ui changed: run node src/ui/build.mjs')
})

test('the page loads only same-origin files and has no inline script or style (the CSP allows neither)', t => {
  t.true(CONTENT_SECURITY_POLICY.includes("script-src 'self'"))
  t.false(CONTENT_SECURITY_POLICY.includes('unsafe-inline'))
  t.notRegex(UI_INDEX_HTML, /<script>|<style|style=| on[a-z]+=|https?:\/\//)
  t.deepEqual(Object.keys(UI_ASSETS).sort(), ['app.css', 'app.js', 'icon.svg'])
  t.false(UI_ASSETS['app.js']!.body.includes('innerHTML'))
  t.false(/https?:\/\/(?!www\.w3\.org)/.test(UI_ASSETS['app.js']!.body + UI_ASSETS['app.css']!.body), 'nothing loaded from elsewhere')
})
