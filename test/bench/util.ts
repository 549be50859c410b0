/**
 * Small process and statistics helpers for the benchmark. Nothing here is on a request path,
 * so synchronous fs calls are acceptable where they keep the harness simple.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import net from 'node:net'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** Wall time in seconds, measured around the child process (spawn to exit). */
  seconds: number
}

/** Options whose value is a `user:password` pair (curl, skopeo, ab -A): never printed. */
const CREDENTIAL_OPTIONS = new Set(['-u', '--user', '-A', '--creds', '--src-creds', '--dest-creds'])

/** `args` as printed in errors and logs, with credentials and Authorization headers replaced by `***`. */
export function redactArgs(args: readonly string[]): string[] {
  return args.map((arg, i) => {
    if (i > 0 && CREDENTIAL_OPTIONS.has(args[i - 1] as string)) return '***'
    return /^authorization:/i.test(arg) ? 'Authorization: ***' : arg
  })
}

export class CommandError extends Error {
  readonly result: RunResult
  constructor(command: string, args: readonly string[], result: RunResult) {
    const tail = (result.stderr || result.stdout).trim().split('\n').slice(-8).join('\n')
    super(`${command} ${redactArgs(args).join(' ')} exited with ${result.code ?? result.signal}:\n${tail}`)
    this.name = 'CommandError'
    this.result = result
  }
}

/**
 * Runs a command to completion and captures its output. Throws CommandError on a non-zero exit
 * unless `allowFailure` is set. Output is capped so a chatty client cannot exhaust memory.
 */
export async function run(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { allowFailure?: boolean; input?: string; stdinFd?: number } = {},
): Promise<RunResult> {
  const started = process.hrtime.bigint()
  const stdin = options.stdinFd ?? 'pipe'
  const child = spawn(command, args, { ...options, stdio: [stdin, 'pipe', 'pipe'] })
  const cap = 1 << 20
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    if (stdout.length < cap) stdout += d
  })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < cap) stderr += d
  })
  if (options.input !== undefined) child.stdin?.end(options.input)
  else if (options.stdinFd === undefined) child.stdin?.end()
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null]
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const result: RunResult = { code, signal, stdout, stderr, seconds }
  if (code !== 0 && !options.allowFailure) throw new CommandError(command, args, result)
  return result
}

/** A long-running child whose output goes to a log file; `stop` ends it (TERM, then KILL). */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer()
  server.listen(0, host)
  await once(server, 'listening')
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  server.close()
  await once(server, 'close')
  return port
}

export const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms))

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

export function formatBytes(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`
  if (bytes >= MiB) return `${+(bytes / MiB).toFixed(1)} MiB`
  return `${+(bytes / 1024).toFixed(1)} KiB`
}

/** Formats a figure with 3 significant digits, the precision a benchmark can honestly claim. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return 'n/a'
  if (Math.abs(value) >= 100) return Math.round(value).toString()
  return Number(value.toPrecision(3)).toString()
}

function cpuTimes(): { idle: number; total: number } {
  // First line of /proc/stat: "cpu user nice system idle iowait irq softirq steal ..."
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const idle = fields[3]! + (fields[4] ?? 0)
  return { idle, total: fields.slice(0, 8).reduce((sum, n) => sum + n, 0) }
}

/** Share of all cores busy over `ms`, from /proc/stat (0..1). */
export async function machineBusy(ms = 500): Promise<number> {
  const a = cpuTimes()
  await sleep(ms)
  const b = cpuTimes()
  const total = b.total - a.total
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0
}

/**
 * Waits (up to `maxMs`) until the machine is mostly idle before a timed job, because this machine
 * may be shared with other work; returns the busy share seen last, which is recorded with the sample.
 */
export async function waitQuiet(maxMs: number, threshold = 0.15): Promise<{ busy: number; waitedMs: number }> {
  const started = Date.now()
  let busy = await machineBusy()
  while (busy > threshold && Date.now() - started < maxMs) busy = await machineBusy()
  return { busy, waitedMs: Date.now() - started }
}
