/**
 * Line-level editing of an htpasswd file for `berth htpasswd add|remove|list`.
 *
 * Lines the CLI does not touch are kept byte for byte (comments, other users, even hash kinds the
 * edge refuses), so editing one user never destroys a file written by Apache's `htpasswd` or an
 * nginx-era setup. Writes are atomic: a temporary file in the same folder (mode 0600 from the
 * moment it is created), fsync, rename over the old file, fsync of the folder. A reader (the edge
 * watching the file) sees the old file or the new one, never half of one.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

export interface HtpasswdEntry {
  readonly user: string
  readonly hash: string
  /** 1-based line number in the file. */
  readonly line: number
}

/** Reads the file's lines; a missing file is an empty list. */
export async function readHtpasswdLines(file: string): Promise<string[]> {
  try {
    const text = await readFile(file, 'utf8')
    const lines = text.split('\n').map(line => line.replace(/\r$/, ''))
    if (lines.at(-1) === '') lines.pop()
    return lines
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}

export function entriesOf(lines: readonly string[]): HtpasswdEntry[] {
  const entries: HtpasswdEntry[] = []
  lines.forEach((text, index) => {
    const line = text.trim()
    if (line === '' || line.startsWith('#')) return
    const colon = line.indexOf(':')
    if (colon <= 0) return
    entries.push({ user: line.slice(0, colon), hash: line.slice(colon + 1), line: index + 1 })
  })
  return entries
}

/** Replaces the user's line (all of them, if duplicated) with `newLine`, or appends it. */
export function upsertLine(lines: readonly string[], user: string, newLine: string): { lines: string[]; isNew: boolean } {
  const result: string[] = []
  let isNew = true
  for (const line of lines) {
    if (userOf(line) === user) {
      if (isNew) result.push(newLine)
      isNew = false
    } else {
      result.push(line)
    }
  }
  if (isNew) result.push(newLine)
  return { lines: result, isNew }
}

export function removeUser(lines: readonly string[], user: string): { lines: string[]; removed: boolean } {
  const kept = lines.filter(line => userOf(line) !== user)
  return { lines: kept, removed: kept.length !== lines.length }
}

function userOf(line: string): string | undefined {
  const trimmed = line.trim()
  if (trimmed.startsWith('#')) return undefined
  const colon = trimmed.indexOf(':')
  return colon > 0 ? trimmed.slice(0, colon) : undefined
}

/** Short name of a hash kind for `list`; bcrypt is what the edge accepts. */
export function hashKind(hash: string): { kind: string; isAccepted: boolean } {
  const bcrypt = /^\$2[aby]\$(\d{2})\$/.exec(hash)
  if (bcrypt) return { kind: `bcrypt cost ${Number(bcrypt[1])}`, isAccepted: true }
  if (hash.startsWith('$apr1$')) return { kind: 'apr1-md5 (not accepted: re-add the user)', isAccepted: false }
  if (hash.startsWith('{SHA}')) return { kind: 'sha1 (not accepted: re-add the user)', isAccepted: false }
  return { kind: 'unknown (not accepted: re-add the user)', isAccepted: false }
}

/** Atomically replaces `file` with `lines` (mode 0600), creating its folder if needed. */
export async function writeHtpasswdAtomically(file: string, lines: readonly string[]): Promise<void> {
  const folder = dirname(file)
  await mkdir(folder, { recursive: true, mode: 0o700 })
  const temporary = join(folder, `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
  const handle = await open(temporary, 'wx', 0o600)
  try {
    await handle.writeFile(lines.length === 0 ? '' : lines.join('\n') + '\n')
    await handle.chmod(0o600) // the umask may have narrowed or the mode argument been ignored; be explicit
    await handle.sync()
  } catch (error) {
    await handle.close()
    await rm(temporary, { force: true })
    throw error
  }
  await handle.close()
  try {
    await rename(temporary, file)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  // The rename is durable only once the folder entry is on disk.
  const directory = await open(folder, 'r')
  try {
    await directory.sync()
  } finally {
    await directory.close()
  }
}
