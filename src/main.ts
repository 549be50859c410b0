#!/usr/bin/env node
/** Entry point of the `berth` command (dist/berth.cjs and the single binary run this). */
import { runCli } from './cli/program.js'

// No top-level await: this file is bundled to CommonJS for the single binary.
runCli(process.argv).then(
  code => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`berth: ${(error as Error)?.message ?? String(error)}\n`)
    process.exitCode = 1
  },
)
