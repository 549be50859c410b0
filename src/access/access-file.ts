/**
 * The access file on disk, reloaded when it changes (rules.ts holds its format and meaning).
 *
 * A file that is missing, unreadable or broken at start is refused (`open` rejects), so the
 * registry never starts with rules other than the ones written. After start the file is stat-ed
 * every `pollMs`; a change (inode, size, modification or change time) is read and parsed:
 * - good: the new rules apply to the next decision, logged at info ('access rules reloaded');
 * - broken (not YAML, a mistake, empty, as an editor's in-place write leaves it for a moment): the
 *   previous rules stay, and the problem is logged at error with path, line and column. A poll that
 *   sees a broken file for the first time waits for the next one before logging, so a write in
 *   progress is not reported;
 * - deleted or unreadable: the previous rules stay (a missing file never opens the registry), logged
 *   at error once until the file changes again.
 */
import { readFile, stat } from 'node:fs/promises'
import type { Logger } from '../log.js'
import { silentLogger } from '../log.js'
import { AccessFileError, AccessPolicy } from './rules.js'

export interface AccessRulesOptions {
  logger?: Logger
  /** How often the file is stat-ed for changes, default 1000 ms. */
  pollMs?: number
  /** Called with the new policy after each successful reload (not for the first load). */
  onReload?: (policy: AccessPolicy) => void
}

const MISSING = 'missing'
const NO_SUCH_FILE = 'no such file (give an existing access file, or none: then every user who logs in may do everything)'

/**
 * Reads and parses an access file once, without watching it (`berth access check`, `berth doctor`).
 * @throws AccessFileError when it is missing, unreadable or has a mistake.
 */
export async function loadAccessFile(path: string): Promise<AccessPolicy> {
  return AccessPolicy.parse(await readText(path), path)
}

export class AccessRules {
  private policy: AccessPolicy
  /** The file version the current policy, or the last reported problem, came from. */
  private fingerprint: string
  /** A broken version seen once, reported only if the next poll still sees it. */
  private brokenSeen: string | undefined
  private timer: NodeJS.Timeout | undefined
  /** The reload running now; polls skip while one runs, reloadNow waits for it. */
  private running: Promise<void> | undefined
  private readonly logger: Logger

  private constructor(
    readonly path: string,
    loaded: { policy: AccessPolicy; fingerprint: string },
    private readonly options: AccessRulesOptions,
  ) {
    this.policy = loaded.policy
    this.fingerprint = loaded.fingerprint
    this.logger = options.logger ?? silentLogger
  }

  /**
   * Loads the file and starts watching it.
   * @throws AccessFileError when the file is missing, unreadable or has a mistake (with its line and column).
   */
  static async open(path: string, options: AccessRulesOptions = {}): Promise<AccessRules> {
    let fingerprint: string
    try {
      fingerprint = await fingerprintOf(path)
    } catch (error) {
      throw new AccessFileError(`cannot read it: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, path, undefined, undefined, {
        cause: error,
      })
    }
    if (fingerprint === MISSING) throw new AccessFileError(NO_SUCH_FILE, path)
    const policy = AccessPolicy.parse(await readText(path), path)
    const rules = new AccessRules(path, { policy, fingerprint }, options)
    rules.logger.info('access rules loaded', { path, rules: policy.ruleCount })
    rules.timer = setInterval(() => {
      if (rules.running === undefined) void rules.run(false)
    }, options.pollMs ?? 1000)
    rules.timer.unref()
    return rules
  }

  /** The rules in force: the last version of the file that was read without a problem. */
  current(): AccessPolicy {
    return this.policy
  }

  /** Reads the file now, changed or not, and reports a problem at once (for SIGHUP). Never rejects. */
  async reloadNow(): Promise<void> {
    while (this.running !== undefined) await this.running
    await this.run(true)
  }

  close(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  private async run(force: boolean): Promise<void> {
    const reload = this.load(force).catch((error: unknown) => {
      this.logger.error('access file not reloaded; keeping the rules loaded before', { path: this.path, error: (error as Error).message })
    })
    this.running = reload
    try {
      await reload
    } finally {
      this.running = undefined
    }
  }

  private async load(force: boolean): Promise<void> {
    const fingerprint = await fingerprintOf(this.path)
    if (fingerprint === this.fingerprint && !force) return
    if (fingerprint === MISSING) {
      this.fingerprint = MISSING
      this.logger.error('access file is gone; keeping the rules loaded before (the registry never opens without it). Restore it to change them', {
        path: this.path,
        rules: this.policy.ruleCount,
      })
      return
    }
    let policy: AccessPolicy
    try {
      policy = AccessPolicy.parse(await readText(this.path), this.path)
    } catch (error) {
      if (!(error instanceof AccessFileError)) throw error
      if (!force && this.brokenSeen !== fingerprint) {
        this.brokenSeen = fingerprint
        return
      }
      this.brokenSeen = undefined
      this.fingerprint = fingerprint
      this.logger.error('access file not reloaded; keeping the rules loaded before', {
        path: this.path,
        line: error.line,
        column: error.column,
        error: error.problem,
        problems: error.all.length,
      })
      return
    }
    this.brokenSeen = undefined
    this.fingerprint = fingerprint
    this.policy = policy
    this.logger.info('access rules reloaded', { path: this.path, rules: policy.ruleCount })
    this.options.onReload?.(policy)
  }
}

async function fingerprintOf(path: string): Promise<string> {
  try {
    const info = await stat(path)
    return `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return MISSING
    throw error
  }
}

/** The file's text; a file that vanished or cannot be read is an AccessFileError without a line. */
async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new AccessFileError(NO_SUCH_FILE, path, undefined, undefined, { cause: error })
    const reason = code === 'EACCES' ? 'permission denied (it must be readable by the user running berth)' : String(code)
    throw new AccessFileError(`cannot read it: ${reason}`, path, undefined, undefined, { cause: error })
  }
}
