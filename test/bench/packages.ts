/**
 * The Debian packages the benchmark drives. Missing ones are installed with apt-get when we run as
 * root (as the tests do); otherwise the bench stops and names the command to run.
 */
import { run } from './util.js'

/** package → the binary the bench calls from it. */
export const benchPackages: Record<string, string> = {
  nginx: '/usr/sbin/nginx',
  'docker-registry': '/usr/bin/docker-registry',
  skopeo: '/usr/bin/skopeo',
  curl: '/usr/bin/curl',
  wrk: '/usr/bin/wrk',
  'apache2-utils': '/usr/bin/ab',
  openssl: '/usr/bin/openssl',
  time: '/usr/bin/time', // the mirror cases' client CPU time
  iproute2: '/usr/sbin/tc', // the mirror's 1 Gbit/s link (skipped with a note without it)
}

async function isInstalled(name: string): Promise<boolean> {
  const result = await run('dpkg-query', ['-W', '-f=${Status}', name], { allowFailure: true })
  return result.code === 0 && result.stdout.includes('install ok installed')
}

export async function ensurePackages(log: (line: string) => void): Promise<void> {
  const missing: string[] = []
  for (const name of Object.keys(benchPackages)) if (!(await isInstalled(name))) missing.push(name)
  if (missing.length === 0) return
  if (process.getuid?.() !== 0) {
    throw new Error(`the benchmark needs these Debian packages: ${missing.join(' ')}\n` + `install them with: sudo apt-get install -y ${missing.join(' ')}`)
  }
  log(`installing Debian packages: ${missing.join(' ')}`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const first = await run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { env, allowFailure: true })
  if (first.code !== 0) {
    await run('apt-get', ['update'], { env })
    await run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { env })
  }
}
