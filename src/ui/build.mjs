#!/usr/bin/env node
// Builds the web UI (src/ui: TypeScript and CSS) with esbuild into src/web/ui-assets.generated.ts:
// the page, the script, the stylesheet and the icon as strings, so the server serves them from
// memory under tsx, in the esbuild bundle and in the single binary alike (no file on disk, nothing
// from the internet). `npm run build` runs this first; the generated file is committed, and
// test/web/ui-assets.test.ts fails when it is not what this script makes from the sources
// (BERTH_UPDATE_VENDORED=1 rewrites it).
//
//   node src/ui/build.mjs            writes the file when it changed
//   node src/ui/build.mjs --print    prints what it would write
import { build } from 'esbuild'
import { readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const output = join(here, '..', 'web', 'ui-assets.generated.ts')

export async function generate() {
  const common = { bundle: true, minify: true, write: false, legalComments: 'none', logLevel: 'warning', target: ['chrome110', 'firefox115', 'safari16'] }
  const [script, style] = await Promise.all([
    build({ ...common, entryPoints: [join(here, 'main.ts')], format: 'iife', platform: 'browser' }),
    build({ ...common, entryPoints: [join(here, 'style.css')] }),
  ])
  const icon = await readFile(join(here, 'icon.svg'), 'utf8')
  const html = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<meta name="color-scheme" content="light dark">',
    '<title>Berth</title>',
    '<link rel="icon" href="/ui/assets/icon.svg" type="image/svg+xml">',
    '<link rel="stylesheet" href="/ui/assets/app.css">',
    '<script src="/ui/assets/app.js" defer></script>',
    '</head>',
    "<body><noscript>Berth's web UI needs JavaScript. The registry API is at /v2/.</noscript></body>",
    '</html>',
    '',
  ].join('\n')
  const assets = {
    'app.js': { type: 'text/javascript; charset=utf-8', body: script.outputFiles[0].text },
    'app.css': { type: 'text/css; charset=utf-8', body: style.outputFiles[0].text },
    'icon.svg': { type: 'image/svg+xml', body: icon.trim() },
  }
  const lines = [
    '// GENERATED FILE, do not edit: made by src/ui/build.mjs from src/ui (npm run build runs it).',
    '// test/web/ui-assets.test.ts checks it against the sources; BERTH_UPDATE_VENDORED=1 rewrites it.',
    '',
    `export const UI_INDEX_HTML: string = ${JSON.stringify(html)}`,
    '',
    'export const UI_ASSETS: Readonly<Record<string, { readonly type: string; readonly body: string }>> = {',
    ...Object.entries(assets).map(
      ([name, asset]) => `  ${JSON.stringify(name)}: { type: ${JSON.stringify(asset.type)}, body: ${JSON.stringify(asset.body)} },`,
    ),
    '}',
    '',
  ]
  let text = lines.join('\n')
  try {
    const prettier = await import('prettier')
    const config = JSON.parse(await readFile(join(here, '..', '..', '.prettierrc.json'), 'utf8'))
    text = await prettier.format(text, { ...config, parser: 'typescript' })
  } catch {
    // prettier is a devDependency: without it the file is still valid TypeScript
  }
  return text
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await generate()
  if (process.argv.includes('--print')) process.stdout.write(text)
  else {
    const before = await readFile(output, 'utf8').catch(() => '')
    if (before !== text) await writeFile(output, text)
  }
}
