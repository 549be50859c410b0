/**
 * `npm run build` (after the web UI's build): bundles src/main.ts and every dependency into
 * dist/berth-bundle.cjs, installs the loader as dist/berth.cjs (the `berth` command), and writes
 * V8's code cache for the bundle by running `berth --version` once with this node. Without the
 * cache (a failed write, another node version) the loader compiles the bundle from source.
 */
import { spawnSync } from 'node:child_process'
import { chmod, copyFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const dist = path.join(root, 'dist')
const bundle = path.join(dist, 'berth-bundle.cjs')
const loader = path.join(dist, 'berth.cjs')

await build({
  entryPoints: [path.join(root, 'src/main.ts')],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: bundle,
  logLevel: 'warning',
})
await copyFile(path.join(root, 'src/boot/loader.cjs'), loader)
await chmod(loader, 0o755)
await rm(`${bundle}.cache`, { force: true })

const run = spawnSync(process.execPath, [loader, '--version'], {
  env: { ...process.env, BERTH_WRITE_CODE_CACHE: '1' },
  stdio: ['ignore', 'ignore', 'pipe'],
  encoding: 'utf8',
})
if (run.status !== 0) {
  process.stderr.write(
    `build: the code cache was not written (berth --version exited ${run.status ?? run.signal}); berth compiles from source at each start\n${run.stderr}`,
  )
}
