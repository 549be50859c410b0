#!/usr/bin/env node
'use strict'
/**
 * dist/berth.cjs: runs the bundle (dist/berth-bundle.cjs) with V8's code cache for it
 * (dist/berth-bundle.cjs.cache), which `npm run build` writes with the node that built it.
 *
 * Contract: the bundle runs exactly as `node dist/berth-bundle.cjs` would run it (same
 * `__filename`, `__dirname`, `require`, `module`, `process.argv`). The cache only saves compiling:
 * V8 checks it against the source and its own version and flags, and compiles from source when it
 * does not match, when it is missing, or when this node cannot load it; nothing is ever written
 * here at run time, except with BERTH_WRITE_CODE_CACHE=1 (the build's own run, src/boot/build.mjs).
 */
const fs = require('node:fs')
const Module = require('node:module')
const path = require('node:path')
const vm = require('node:vm')

const bundle = path.join(__dirname, 'berth-bundle.cjs')
const cacheFile = `${bundle}.cache`
const writeCache = process.env.BERTH_WRITE_CODE_CACHE === '1'
const dynamicImport = vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER

let cachedData
if (!writeCache) {
  try {
    cachedData = fs.readFileSync(cacheFile)
  } catch {
    cachedData = undefined
  }
}

if ((cachedData === undefined && !writeCache) || dynamicImport === undefined) {
  require(bundle)
} else {
  // The shebang becomes an empty line, so line numbers in stack traces match the file.
  const source = fs.readFileSync(bundle, 'utf8').replace(/^#![^\n]*/, '')
  const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData, importModuleDynamically: dynamicImport })
  if (writeCache) {
    // After the command ran: the cache then holds the functions it compiled, not just the top level.
    process.once('exit', () => {
      const temporary = `${cacheFile}.${process.pid}.tmp`
      fs.writeFileSync(temporary, script.createCachedData())
      fs.renameSync(temporary, cacheFile)
    })
  }
  const bundled = new Module(bundle, module)
  bundled.filename = bundle
  bundled.paths = Module._nodeModulePaths(__dirname)
  bundled.loaded = true
  const requireFromBundle = Module.createRequire(bundle)
  script.runInThisContext().call(bundled.exports, bundled.exports, requireFromBundle, bundled, bundle, __dirname)
}
