/**
 * Hints that depend on where Berth runs. In its own image (the Dockerfile sets BERTH_IN_CONTAINER)
 * the user types commands on the host, not in the container: paths are the host's folders that
 * compose mounts, fixes to ownership happen on the host, and `berth …` is
 * `docker compose run --rm registry …`. Every message that names a path, a fix or a command for
 * the user goes through these functions, so the two cases never disagree.
 */
import { isAbsolute, join, relative } from 'node:path'

type Env = NodeJS.ProcessEnv

/** The folders docker-compose.yml mounts (container path → host path beside the compose file). */
const MOUNTS: readonly (readonly [container: string, host: string])[] = [
  ['/srv/berth/datadir', 'datadir'],
  ['/srv/berth/certs', 'certs'],
]

export function isInContainer(env: Env = process.env): boolean {
  const value = env.BERTH_IN_CONTAINER
  return value !== undefined && value !== '' && value !== '0' && value !== 'false'
}

/**
 * A path as the user sees it: in the image, a path under a mounted folder becomes the host's
 * `./datadir/…` or `./certs/…`; anything else (and every path outside the image) is unchanged.
 */
export function hostPath(path: string, env: Env = process.env): string {
  if (!isInContainer(env)) return path
  for (const [inside, outside] of MOUNTS) {
    const rest = relative(inside, path)
    if (!rest.startsWith('..') && !isAbsolute(rest)) return `./${join(outside, rest)}`
  }
  return path
}

/**
 * How the user runs a `berth` subcommand (`htpasswd add <user>`): `berth …` on a machine, the
 * compose service in the image. Both spellings of compose exist (Debian 12's docker.io has only
 * `docker-compose`); the hint uses the plugin's, which the README pairs with the other.
 */
export function berthCommand(args: string, env: Env = process.env): string {
  return isInContainer(env) ? `docker compose run --rm registry ${args}` : `berth ${args}`
}

/**
 * The command that adds a user to `file`. `--file` is left out inside the image when `file` is the
 * one `htpasswd add` edits there by default (BERTH_HTPASSWD, else <BERTH_DATADIR>/htpasswd).
 */
export function addUserCommand(file: string, env: Env = process.env): string {
  if (isInContainer(env)) {
    const byDefault = env.BERTH_HTPASSWD || (env.BERTH_DATADIR ? join(env.BERTH_DATADIR, 'htpasswd') : undefined)
    return berthCommand(`htpasswd add <user>${file === byDefault ? '' : ` --file ${file}`}`, env)
  }
  return berthCommand(`htpasswd add <user> --file ${file}`, env)
}

/**
 * What to do when `path` is not writable by this process: in the image, give the mounted folders
 * to the user the container runs as (uid 1000 unless overridden), on the host; elsewhere, give
 * `path` to the user running berth.
 */
export function ownershipFix(path: string, env: Env = process.env): string {
  const uid = process.getuid?.() ?? 1000
  const gid = process.getgid?.() ?? 1000
  if (isInContainer(env)) return `on the host, run: sudo chown -R ${uid}:${gid} datadir certs (the folders mounted into the container)`
  return `fix the owner, e.g. sudo chown -R ${uid}:${gid} ${path}`
}
