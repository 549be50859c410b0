#!/usr/bin/env node
// Makes sure the Debian packages the test suites drive are installed (`npm test` runs this as `pretest`).
//
// The tests use real clients and real servers (docker, skopeo, podman, pebble, registry:2, nginx ...),
// started by the tests themselves on loopback. This script only checks that the programs are there:
// one `dpkg-query` call, well under a second when nothing is missing. When something is missing it
// installs it with apt-get if we run as root (CI runs as root on a clean machine), or exits non-zero
// with the exact command to run.
//
// Plain Node ESM without dependencies on purpose: it runs before anything else, even before `tsc`.
//
// Environment: BERTH_SKIP_PACKAGES=1 skips the check (for a machine that runs only the unit tests).
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Always needed: the e2e helpers in test/helpers and the suites in test/e2e use these. */
const core = [
  'docker.io', //        dockerd + docker CLI 20.10 (test/helpers/dockerd.ts); pulls containerd and runc
  'docker-compose', //   the compose e2e test
  'skopeo', //           test/helpers/skopeo.ts
  'podman', //           test/helpers/podman.ts
  'docker-registry', //  distribution 2.8.2, test/helpers/registry2.ts
  'pebble', //           ACME server for the edge tests
  'apache2-utils', //    htpasswd -B, ab
  'nginx', //            the seed's proxy, side-by-side tests
  'curl',
  'openssl', //          test CAs and certificates
  'iproute2', //         ss, ip (network namespace tests)
  'util-linux', //       unshare, nsenter (dockerd runs in its own mount namespace)
  'tar',
  'gzip',
]

/**
 * Installed only when some test file mentions the tool (they are larger, or used by one suite):
 * package → a string that appears in a test that uses it.
 */
const onDemand = {
  'testssl.sh': 'testssl',
  sslscan: 'sslscan',
  slowhttptest: 'slowhttptest',
  'ceph-mon': 'ceph-up',
  'ceph-osd': 'ceph-up',
  radosgw: 'ceph-up',
  'ceph-common': 'ceph-up',
  'uuid-runtime': 'ceph-up', // uuidgen, used by test/helpers/ceph/ceph-up.sh
  prometheus: '/usr/bin/prometheus', // prometheus and promtool, test/e2e/metrics-prometheus.test.ts
  chromium: '/usr/bin/chromium', //    the web UI's browser tests (test/web/ui-browser.test.ts, playwright-core)
}

const testRoot = join(dirname(fileURLToPath(import.meta.url)), '..')

function testSources(dir) {
  const out = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...testSources(path))
    else if (/\.(ts|mts|js|mjs|sh)$/.test(entry.name) && path !== fileURLToPath(import.meta.url)) out.push(path)
  }
  return out
}

if (process.env.BERTH_SKIP_PACKAGES === '1') {
  console.log('ensure-packages: skipped (BERTH_SKIP_PACKAGES=1)')
  process.exit(0)
}

const wanted = new Set(core)
const needles = Object.entries(onDemand)
if (needles.length > 0) {
  const sources = testSources(testRoot).map(file => readFileSync(file, 'utf8'))
  for (const [pkg, needle] of needles) {
    if (sources.some(text => text.includes(needle))) wanted.add(pkg)
  }
}

const query = spawnSync('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\\n', ...wanted], { encoding: 'utf8' })
if (query.error) {
  console.error(`ensure-packages: cannot run dpkg-query (${query.error.message}); the test suites need Debian 12 (bookworm).`)
  process.exit(1)
}
const installed = new Set(
  query.stdout
    .split('\n')
    .map(line => line.trim().split(' '))
    .filter(([, status]) => status === 'installed')
    .map(([name]) => name),
)
const missing = [...wanted].filter(pkg => !installed.has(pkg))
if (missing.length === 0) process.exit(0)

const install = `apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing.join(' ')}`
if (process.getuid?.() !== 0) {
  console.error(`ensure-packages: missing Debian packages: ${missing.join(' ')}\nInstall them as root:\n  ${install}`)
  process.exit(1)
}

console.log(
  `ensure-packages: installing ${missing.length} Debian packages as root with apt-get, plus their dependencies ` +
    `(about 190 on a fresh machine, ~16 min with the first test run), because the tests drive real clients and ` +
    `servers and this may start services such as docker and nginx: ${missing.join(' ')} ` +
    `(BERTH_SKIP_PACKAGES=1 skips this; see README)`,
)
const result = spawnSync('sh', ['-c', install], {
  stdio: 'inherit',
  env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
})
if (result.status !== 0) {
  console.error(`ensure-packages: the install failed (exit ${result.status}). Command was:\n  ${install}`)
  process.exit(1)
}
