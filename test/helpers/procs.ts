/**
 * Child processes for tests: run a command to completion, start a long-running daemon, wait for
 * readiness, pick free loopback ports, make and remove temporary folders.
 *
 * Every daemon is started in its own process group so that stop() (and the exit hook below, for a test
 * worker that dies without running its teardown) also ends the grandchildren, e.g. dockerd's containerd.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

export interface RunOptions {
  cwd?: string
  /** Merged over process.env. A value of undefined removes the variable. */
  env?: Record<string, string | undefined>
  /** Written to the child's stdin, which is then closed. */
  input?: string | Uint8Array
  /** Kill the command (SIGKILL) after this long. Default 120 s. */
  timeoutMs?: number
  /** Resolve with the result instead of throwing CommandError on a non-zero exit. */
  allowFailure?: boolean
}

export interface RunResult {
  readonly command: string
  readonly exitCode: number | null
  readonly signal: NodeJS.Signals | null
  /** stdout as received, byte for byte (e.g. `skopeo inspect --raw`, whose digest matters). */
  readonly stdoutBytes: Buffer
  readonly stdout: string
  readonly stderr: string
}

/** A command exited non-zero (or was killed). Carries its output so a failing test shows why. */
export class CommandError extends Error {
  readonly result: RunResult
  constructor(result: RunResult) {
    const status = result.signal ? `signal ${result.signal}` : `exit ${result.exitCode}`
    super(`${result.command} failed (${status})\n--- stderr ---\n${tail(result.stderr)}\n--- stdout ---\n${tail(result.stdout)}`)
    this.name = 'CommandError'
    this.result = result
  }
}

function tail(text: string, max = 4000): string {
  return text.length <= max ? text : '…' + text.slice(-max)
}

function mergeEnv(env: Record<string, string | undefined> | undefined): NodeJS.ProcessEnv {
  const merged: NodeJS.ProcessEnv = { ...process.env }
  for (const [key, value] of Object.entries(env ?? {})) {
    if (value === undefined) delete merged[key]
    else merged[key] = value
  }
  return merged
}

export function quoteCommand(command: string, args: readonly string[]): string {
  return [command, ...args].map(part => (/^[\w@%+=:,./-]+$/.test(part) ? part : `'${part.replace(/'/g, `'\\''`)}'`)).join(' ')
}

/** Runs a command to completion. Output is collected in memory: use it for commands, not for blobs. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const display = quoteCommand(command, args)
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: mergeEnv(options.env),
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout!.on('data', (chunk: Buffer) => out.push(chunk))
    child.stderr!.on('data', (chunk: Buffer) => err.push(chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('error', error => {
      clearTimeout(timer)
      reject(new Error(`cannot run ${display}: ${error.message}`, { cause: error }))
    })
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer)
      const stdoutBytes = Buffer.concat(out)
      const result: RunResult = {
        command: display,
        exitCode,
        signal,
        stdoutBytes,
        stdout: stdoutBytes.toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }
      if ((exitCode !== 0 || signal) && !options.allowFailure) reject(new CommandError(result))
      else resolve(result)
    })
    if (options.input !== undefined) child.stdin!.end(options.input)
  })
}

export interface DaemonOptions {
  cwd?: string
  env?: Record<string, string | undefined>
  /** Keep at most this many characters of combined output for output(). Default 64 KiB. */
  keepOutput?: number
  /** Called with each chunk of output (e.g. to wait for a listen line). */
  onOutput?: (text: string) => void
}

export interface Daemon {
  readonly name: string
  readonly pid: number
  readonly child: ChildProcess
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  isRunning(): boolean
  /** The last part of its combined stdout and stderr, for error messages. */
  output(): string
  /** SIGTERM (or `signal`), then SIGKILL to the whole process group after `timeoutMs` (default 10 s). Idempotent. */
  stop(options?: { signal?: NodeJS.Signals; timeoutMs?: number }): Promise<void>
}

const liveGroups = new Set<number>()
const liveDirs = new Set<string>()
let exitHookInstalled = false

/** Kills every daemon group still alive and removes temp folders not yet removed (synchronously). */
function emergencyCleanup(): void {
  for (const pgid of liveGroups) {
    try {
      process.kill(-pgid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  liveGroups.clear()
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 100 })
    } catch {
      // best effort: a process we just killed may still hold it
    }
  }
  liveDirs.clear()
}

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Last resort when a worker exits without teardown: never leave daemons behind. ava ends a worker
  // that hit its timeout with SIGTERM, which skips 'exit' handlers, so catch that too and re-raise it.
  process.on('exit', emergencyCleanup)
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      emergencyCleanup()
      process.kill(process.pid, signal)
    })
  }
}

/** Starts a long-running process in its own process group. Check readiness with waitFor(). */
export function startDaemon(name: string, command: string, args: readonly string[], options: DaemonOptions = {}): Daemon {
  installExitHook()
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: mergeEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  const keep = options.keepOutput ?? 64 * 1024
  let log = ''
  let running = true
  const onData = (chunk: Buffer) => {
    const text = chunk.toString('utf8')
    log = (log + text).slice(-keep)
    options.onOutput?.(text)
  }
  child.stdout!.on('data', onData)
  child.stderr!.on('data', onData)
  const pid = child.pid
  if (pid !== undefined) liveGroups.add(pid)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(resolve => {
    child.on('error', error => {
      log += `\n[spawn error: ${error.message}]`
      running = false
      resolve({ code: null, signal: null })
    })
    child.on('exit', (code, signal) => {
      running = false
      resolve({ code, signal })
    })
  })
  let stopping: Promise<void> | undefined
  const killGroup = (signal: NodeJS.Signals) => {
    if (pid === undefined) return
    try {
      process.kill(-pid, signal)
    } catch {
      // group already gone
    }
  }
  return {
    name,
    pid: pid ?? -1,
    child,
    exited,
    isRunning: () => running,
    output: () => log,
    stop(stopOptions = {}) {
      stopping ??= (async () => {
        if (running) {
          try {
            child.kill(stopOptions.signal ?? 'SIGTERM')
          } catch {
            // already exited
          }
          const timer = setTimeout(() => killGroup('SIGKILL'), stopOptions.timeoutMs ?? 10_000)
          await exited
          clearTimeout(timer)
        }
        // Grandchildren that outlived their parent (containerd after a crashed dockerd, say).
        killGroup('SIGKILL')
        if (pid !== undefined) liveGroups.delete(pid)
      })()
      return stopping
    },
  }
}

export interface WaitOptions {
  timeoutMs?: number
  intervalMs?: number
  /** Fail at once, with its output, when this daemon exits while we wait. */
  daemon?: Daemon
}

/** Polls `probe` until it returns something other than undefined/false; returns that value. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, options: WaitOptions = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000)
  let lastError: unknown
  for (;;) {
    if (options.daemon && !options.daemon.isRunning()) {
      throw new Error(`${options.daemon.name} exited while waiting for ${what}\n--- output ---\n${tail(options.daemon.output())}`)
    }
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value
    } catch (error) {
      lastError = error
    }
    if (Date.now() > deadline) {
      const output = options.daemon ? `\n--- ${options.daemon.name} output ---\n${tail(options.daemon.output())}` : ''
      const last = lastError instanceof Error ? ` (last error: ${lastError.message})` : ''
      throw new Error(`timed out waiting for ${what}${last}${output}`)
    }
    await new Promise(resolve => setTimeout(resolve, options.intervalMs ?? 100))
  }
}

/**
 * Resolves as `promise` does, or rejects with `message` after `timeoutMs`. For an event that must come
 * but has no upper bound of its own: give it a deadline many times what it needs on a quiet machine.
 */
export async function withDeadline<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} (no result after ${timeoutMs} ms)`)), timeoutMs)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** A port that was free a moment ago on `host`. Small race by nature; prefer port 0 where the server reports its port. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/**
 * Status code of a GET, or undefined when nothing answers. For readiness probes only: TLS certificates
 * are not checked here (that is what the tests themselves check, with real clients).
 */
export function probeStatus(url: string, options: { socketPath?: string; timeoutMs?: number } = {}): Promise<number | undefined> {
  return new Promise(resolve => {
    const target = new URL(url)
    const request = (target.protocol === 'https:' ? https : http).request(
      target,
      { method: 'GET', socketPath: options.socketPath, rejectUnauthorized: false, timeout: options.timeoutMs ?? 2000, agent: false },
      response => {
        response.resume()
        resolve(response.statusCode)
      },
    )
    request.on('timeout', () => request.destroy(new Error('timeout')))
    request.on('error', () => resolve(undefined))
    request.end()
  })
}

/** A new empty folder under the OS temp dir, named `berth-<prefix>-XXXXXX`; removed at process exit at the latest. */
export async function makeTempDir(prefix: string): Promise<string> {
  installExitHook()
  const dir = await mkdtemp(path.join(os.tmpdir(), `berth-${prefix}-`))
  liveDirs.add(dir) // removed at exit if the test never calls removeDir()
  return dir
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 })
  liveDirs.delete(dir)
}
