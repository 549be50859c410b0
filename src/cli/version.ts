/**
 * The version `berth --version` prints. Kept in sync with package.json by test/cli/cli.test.ts.
 * Not imported from package.json: the bundle (and the single binary) would then carry the whole
 * file, including the SEA fuse sentinel in the build:binary script, which postject must find once.
 */
export const VERSION = '0.1.0'
