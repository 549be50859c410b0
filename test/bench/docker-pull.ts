/**
 * `docker pull` of a 3-layer image (issue 21): the daemon fetches the layers in parallel, so this
 * is the case where a registry serving several downloads at once shows. A private dockerd
 * (test/helpers/dockerd.ts: Debian's 20.10, its own data root and mount namespace, the bench CA in
 * its certs.d for every stack's host:port) logs in to each stack; the same image (3 fresh random
 * layers of a third of the big size each) is pushed to each with skopeo; each round times one
 * `docker pull` per stack (order flipped every round), each followed by `docker rmi` and `docker
 * image prune` so that the next pull finds nothing on the client side.
 *
 * The stacks listen on 127.0.0.1, which dockerd treats as an insecure registry: it still speaks
 * TLS to them (HTTPS is tried first) but would not check the certificate; the CA is in certs.d anyway.
 */
import { readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { startDockerd, type Dockerd } from '../helpers/dockerd.js'
import { skopeoPush } from './clients.js'
import { writeImageLayout } from './content.js'
import type { CaseHooks } from './hooks.js'
import type { BenchPki } from './pki.js'
import { ResourceMonitor } from './procs.js'
import type { Stack } from './stacks.js'
import { fmt, formatBytes } from './util.js'

export const DOCKER_PULL_LAYERS = 3
const REPOSITORY = 'bench/docker-pull'
const TAG = 'latest'

export interface DockerPullOptions {
  stacks: Stack[]
  pki: BenchPki
  /** Where the image to push is written (RAM when there is room). */
  clientRoot: string
  /** The image's total layer bytes, split over DOCKER_PULL_LAYERS layers. */
  bytes: number
}

/** Runs the `docker-pull` case on every stack (or notes why it could not). */
export async function runDockerPull(hooks: CaseHooks, options: DockerPullOptions): Promise<void> {
  const { stacks, pki } = options
  let dockerd: Dockerd
  try {
    hooks.progress('docker pull: starting a private dockerd')
    dockerd = await startDockerd({ baseImage: false })
  } catch (error) {
    const reason = (error instanceof Error ? error.message : String(error)).split('\n')[0]!
    hooks.progress(`docker pull: skipped, dockerd cannot run here: ${reason}`)
    hooks.note('docker-pull', `not measured: dockerd cannot run here (${reason})`)
    return
  }
  const layerSize = Math.floor(options.bytes / DOCKER_PULL_LAYERS)
  const image = await writeImageLayout(
    path.join(options.clientRoot, 'docker-pull'),
    Array.from({ length: DOCKER_PULL_LAYERS }, () => layerSize),
  )
  try {
    const ca = await readFile(pki.caCert, 'utf8')
    const ready: Stack[] = []
    for (const stack of stacks) {
      try {
        await dockerd.addCa(stack.host, ca)
        await dockerd.docker(['login', '--username', pki.user, '--password-stdin', stack.host], { input: pki.password })
        await skopeoPush({ host: stack.host, pki }, image.reference, REPOSITORY, TAG)
        ready.push(stack)
      } catch (error) {
        hooks.fail('docker-pull', stack.name, error)
      }
    }
    const label = `docker pull ${DOCKER_PULL_LAYERS} × ${formatBytes(layerSize)}`
    for (let round = 0; round < hooks.rounds; round++) {
      for (const stack of round % 2 === 0 ? ready : [...ready].reverse()) {
        const reference = `${stack.host}/${REPOSITORY}:${TAG}`
        await hooks.settle()
        try {
          // CPU of the server and of the client side (dockerd with its containerd), to show which one bounds the pull.
          const server = new ResourceMonitor(() => stack.pids())
          const client = new ResourceMonitor(() => [dockerd.pid])
          server.start()
          client.start()
          const started = process.hrtime.bigint()
          let seconds: number
          let cpu: { server: number; client: number }
          try {
            await dockerd.docker(['pull', '--quiet', reference])
          } finally {
            seconds = Number(process.hrtime.bigint() - started) / 1e9
            cpu = { server: server.stop().cpuSeconds, client: client.stop().cpuSeconds }
          }
          const pulled = await dockerd.inspectImage(reference)
          if (!pulled.RepoDigests.some(digest => digest.endsWith(`@${image.manifest.digest}`))) {
            throw new Error(`docker pulled ${pulled.RepoDigests.join(', ') || 'no digest'}, expected ${image.manifest.digest}`)
          }
          const rate = image.layerBytes / seconds / 1e6
          hooks.record('docker-pull', stack.name, rate)
          hooks.detail('dockerPull', { round: round + 1, stack: stack.name, seconds, serverCpuSeconds: cpu.server, dockerdCpuSeconds: cpu.client })
          hooks.progress(
            `r${round + 1}/${hooks.rounds} ${stack.name.padEnd(13)} ${label}: ${fmt(rate)} MB/s (${fmt(seconds)} s), ` +
              `CPU ${fmt(cpu.server)} s in ${stack.name}, ${fmt(cpu.client)} s in dockerd + containerd`,
          )
        } catch (error) {
          hooks.fail('docker-pull', stack.name, error, round)
        } finally {
          // Cold on the client side for the next pull: no image, no layers left.
          await dockerd.docker(['rmi', '--force', reference], { allowFailure: true })
          await dockerd.docker(['image', 'prune', '--force'], { allowFailure: true })
        }
      }
    }
  } finally {
    await dockerd.stop()
    await rm(image.dir, { recursive: true, force: true })
  }
}
