import packageJson from '../../package.json' with { type: 'json' }

/** The version from package.json (bundled into dist/berth.cjs and the single binary). */
export const VERSION: string = packageJson.version
