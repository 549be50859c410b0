/**
 * The machine's own limits, measured in the same run so every figure can be read as a share of
 * what the hardware allows: one core's sha256 and AES-GCM (what a registry and TLS pay per byte),
 * a fresh-file write with fsync on the disk the registries store to, and TLS between two Node
 * processes over loopback.
 */
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import { once } from 'node:events'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BenchPki } from './pki.js'
import { MiB, run } from './util.js'

export interface Ceilings {
  /** MB/s (10^6 bytes per second) throughout, like the throughput cases. */
  sha256: number
  aes128gcm: number
  aes256gcm: number
  diskFsyncWrite: number
  loopbackTls: number
}

function cpuRate(bytes: number, step: (chunk: Buffer) => void): number {
  const chunk = crypto.randomBytes(MiB)
  const started = process.hrtime.bigint()
  for (let done = 0; done < bytes; done += chunk.length) step(chunk)
  return bytes / (Number(process.hrtime.bigint() - started) / 1e9) / 1e6
}

export function sha256Rate(bytes: number): number {
  const hash = crypto.createHash('sha256')
  const rate = cpuRate(bytes, chunk => hash.update(chunk))
  hash.digest()
  return rate
}

/**
 * AES-GCM on one core over 16 KiB buffers (a full TLS record), with `openssl speed -evp`: Node's
 * cipher.update allocates a fresh output buffer per call, which measures the allocator instead.
 */
export async function aesGcmRate(bits: 128 | 256, seconds: number): Promise<number> {
  const result = await run('openssl', ['speed', '-evp', `aes-${bits}-gcm`, '-bytes', '16384', '-seconds', String(seconds), '-mr'])
  const match = /^\+F:\d+:[^:]+:([\d.]+)/m.exec(result.stdout)
  if (!match) throw new Error(`cannot read openssl speed output:\n${result.stdout}`)
  return Number(match[1]) / 1e6
}

/** `dd conv=fsync` of a fresh file in `dir`; the clock includes the final fsync. */
export async function diskRate(dir: string, bytes: number): Promise<number> {
  const file = path.join(dir, `ceiling-${process.pid}.dd`)
  await run('sync', [])
  const result = await run('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${Math.round(bytes / MiB)}`, 'conv=fsync'])
  await rm(file, { force: true })
  return bytes / result.seconds / 1e6
}

const peerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tls-ceiling-peer.ts')

/** A Node TLS server process receiving `bytes` from a Node TLS client process, same cert as the stacks. */
export async function loopbackTlsRate(pki: BenchPki, bytes: number): Promise<number> {
  const server = spawn(process.execPath, ['--import', 'tsx', peerScript, 'server', pki.serverChain, pki.serverKey, String(bytes)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  try {
    const [line] = (await once(server.stdout!.setEncoding('utf8'), 'data')) as [string]
    const port = Number(line.trim())
    const client = await run(process.execPath, ['--import', 'tsx', peerScript, 'client', pki.caCert, String(port), String(bytes)])
    return Number(client.stdout.trim())
  } finally {
    server.kill()
  }
}

export async function measureCeilings(pki: BenchPki, diskDir: string, quick: boolean): Promise<Ceilings> {
  const cpuBytes = (quick ? 256 : 1024) * MiB
  return {
    sha256: sha256Rate(cpuBytes),
    aes128gcm: await aesGcmRate(128, quick ? 1 : 2),
    aes256gcm: await aesGcmRate(256, quick ? 1 : 2),
    diskFsyncWrite: await diskRate(diskDir, (quick ? 256 : 1024) * MiB),
    loopbackTls: await loopbackTlsRate(pki, (quick ? 512 : 2048) * MiB),
  }
}
