// `npm run test:unit`: the tests that run Berth's code in this process, on the in-memory driver or a
// temporary folder, with no external program (no docker, skopeo, podman, pebble, Ceph, registry:2,
// curl, openssl, htpasswd ...) and no child process. Same settings as the full run (package.json "ava").
import { readFileSync } from 'node:fs'

const { ava } = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'))

export default {
  ...ava,
  files: [
    'test/scheduler.test.ts',
    'test/log.test.ts',
    'test/health.test.ts',
    'test/access/**/*.test.ts',
    'test/config/**/*.test.ts',
    'test/metrics/**/*.test.ts',
    'test/registry/**/*.test.ts',
    'test/mirror/**/*.test.ts',
    'test/storage/**/*.test.ts',
    'test/edge/redirect.test.ts',
    'test/edge/size.test.ts',
    'test/edge/access-control.test.ts',
    'test/events/**/*.test.ts',
    'test/retention/**/*.test.ts',
    'test/edge/access-properties.test.ts',
    'test/hardening/delete-order.test.ts',
    'test/hardening/pipelining.test.ts',
    'test/hardening/properties.test.ts',
    'test/cli/catalog-commands.test.ts',
    'test/web/ui-api.test.ts',
    'test/web/ui-storage.test.ts',
    'test/web/ui-assets.test.ts',
    'test/web/sessions.test.ts',
    // These need an external program or start processes:
    '!test/registry/tags.test.ts', // one test runs skopeo list-tags
    '!test/storage/layout.test.ts', // registry:2 on the same datadir
    '!test/storage/crash.test.ts', // kills engine processes
    '!test/storage/gc-s3.test.ts', // Ceph RGW
    '!test/storage/metadata-index-s3.test.ts', // Ceph RGW
    '!test/storage/driver/s3*.test.ts', // Ceph RGW
  ],
  // The registry fixtures follow BERTH_TEST_DRIVER (s3 starts Ceph): the unit loop stays in memory.
  environmentVariables: { ...ava.environmentVariables, BERTH_TEST_DRIVER: 'memory' },
}
