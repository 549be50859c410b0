/**
 * The audit trail (`--audit-log <file>`): one JSON object per line per committed change, apart from
 * the request log, appended to a file that survives restarts.
 *
 *   {"time":"2026-12-07T13:48:34.547Z","action":"push","repository":"alice/app","tag":"1.0",
 *    "digest":"sha256:…","mediaType":"…","size":1234,"user":"alice","address":"203.0.113.7","id":"…"}
 *
 * The file is opened for appending only and is made mode 0600 (it names users and addresses). A write
 * never blocks or fails the change it records: lines go through one write stream (in order), and a
 * write error is logged once and the line dropped until `reopen()` (SIGHUP, e.g. after logrotate
 * moved the file) opens the file again. Lines already handed to the stream are written before
 * `close()` resolves.
 */
import { createWriteStream, type WriteStream } from 'node:fs'
import { chmod, mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Logger } from '../log.js'
import type { Actor, EventSink, RegistryEvent } from './events.js'

export class AuditLog implements EventSink {
  #stream: WriteStream | undefined
  #failed = false

  private constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** Opens (creating it 0600, and its folder) the file for appending. Rejects when it cannot be written. */
  static async open(path: string, logger: Logger): Promise<AuditLog> {
    const log = new AuditLog(path, logger)
    await log.#open()
    return log
  }

  emit(event: RegistryEvent, actor?: Actor): void {
    const stream = this.#stream
    if (stream === undefined || this.#failed) return
    const line = JSON.stringify({
      time: new Date().toISOString(),
      ...event,
      user: actor?.user,
      address: actor?.address,
      id: actor?.requestId,
    })
    stream.write(line + '\n')
  }

  /** Closes the file and opens it again at `path` (after a rotation). Never rejects. */
  async reopen(): Promise<void> {
    await this.close()
    await this.#open().catch((error: unknown) => this.#report(error))
  }

  /** Flushes and closes. Idempotent. */
  async close(): Promise<void> {
    const stream = this.#stream
    this.#stream = undefined
    if (stream === undefined) return
    await new Promise<void>(resolve => stream.end(resolve))
  }

  async #open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 })
    // Created 0600; an existing file made by someone else keeps its content and is narrowed to 0600.
    const handle = await open(this.path, 'a', 0o600)
    await handle.close()
    await chmod(this.path, 0o600)
    const stream = createWriteStream(this.path, { flags: 'a', mode: 0o600 })
    stream.on('error', error => this.#report(error))
    this.#failed = false
    this.#stream = stream
  }

  #report(error: unknown): void {
    if (this.#failed) return
    this.#failed = true
    this.logger.error('audit log not written: lines are dropped until it is reopened (SIGHUP) or Berth restarts', {
      path: this.path,
      error: (error as Error).message,
    })
  }
}
