/**
 * StorageDriver kept in a Map, for tests and examples only: nothing survives the process, and
 * `list` scans every key. Directories exist implicitly while a file lies below them, as on S3.
 */
import { Readable } from 'node:stream'
import {
  assertValidPath,
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type LockOptions,
  type StorageDriver,
  type StoreLock,
} from './storage-driver.js'
import { takeStoreLock } from './store-lock.js'

interface Entry {
  data: Buffer
  modTime: Date
}

export class InMemoryDriver implements StorageDriver {
  readonly name = 'in-memory'
  /** Map operations are atomic: a move cannot interleave with a touch. One process only. */
  readonly capabilities = { atomicRename: true, sharedAcrossHosts: false, moveRefreshesModTime: false }
  readonly #files = new Map<string, Entry>()

  #file(path: string): Entry {
    assertValidPath(path)
    const entry = this.#files.get(path)
    if (entry === undefined) throw new PathNotFoundError(path)
    return entry
  }

  #isDir(path: string): boolean {
    const prefix = path === '/' ? '/' : `${path}/`
    for (const key of this.#files.keys()) if (key.startsWith(prefix)) return true
    return false
  }

  async getContent(path: string): Promise<Buffer> {
    return Buffer.from(this.#file(path).data)
  }

  async putContent(path: string, content: Uint8Array): Promise<void> {
    assertValidPath(path)
    if (this.#isDir(path)) throw new StorageDriverError('IO_ERROR', `is a directory: ${path}`)
    this.#files.set(path, { data: Buffer.from(content), modTime: new Date() })
  }

  async putContentIfAbsent(path: string, content: Uint8Array): Promise<boolean> {
    assertValidPath(path)
    if (this.#files.has(path)) return false
    await this.putContent(path, content)
    return true
  }

  lock(path: string, options?: LockOptions): Promise<StoreLock> {
    return takeStoreLock(this, path, options)
  }

  /** Folders exist only while a file lies below them. */
  async removeEmptyDirectory(): Promise<void> {}

  async reader(path: string, offset = 0, length?: number): Promise<Readable> {
    const { data } = this.#file(path)
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > data.byteLength) throw new InvalidOffsetError(path, offset)
    const end = length === undefined ? data.byteLength : Math.min(data.byteLength, offset + Math.max(0, length))
    const slice = Buffer.from(data.subarray(offset, end))
    return Readable.from(slice.byteLength === 0 ? [] : [slice])
  }

  async writer(path: string, options: { append?: boolean } = {}): Promise<FileWriter> {
    assertValidPath(path)
    const files = this.#files
    const existing = files.get(path)
    const initial = options.append && existing ? existing.data : Buffer.alloc(0)
    const chunks: Buffer[] = [initial]
    let size = initial.byteLength
    let done = false
    const append = options.append === true
    const publish = () => files.set(path, { data: Buffer.concat(chunks), modTime: new Date() })
    if (append) publish() // an append writer creates the file at open, like O_APPEND|O_CREAT
    return {
      get size() {
        return size
      },
      async write(chunk: Uint8Array) {
        if (done) throw new StorageDriverError('WRITER_CLOSED', 'write after commit, cancel or close')
        chunks.push(Buffer.from(chunk))
        size += chunk.byteLength
      },
      async commit() {
        if (done) throw new StorageDriverError('WRITER_CLOSED', 'writer already committed, cancelled or closed')
        done = true
        publish()
      },
      async cancel() {
        if (done) return
        done = true
        if (!append) return
        if (existing) files.set(path, { data: initial, modTime: existing.modTime })
        else files.delete(path)
      },
      async close() {
        if (done) return
        done = true
        if (append) publish()
      },
    }
  }

  async stat(path: string): Promise<FileInfo> {
    assertValidPath(path)
    const entry = this.#files.get(path)
    if (entry) return { path, size: entry.data.byteLength, modTime: entry.modTime, isDir: false }
    if (path === '/' || this.#isDir(path)) return { path, size: 0, modTime: new Date(0), isDir: true }
    throw new PathNotFoundError(path)
  }

  async touch(path: string): Promise<void> {
    this.#file(path).modTime = new Date()
  }

  async list(path: string): Promise<string[]> {
    assertValidPath(path)
    const prefix = path === '/' ? '/' : `${path}/`
    const children = new Set<string>()
    for (const key of this.#files.keys()) {
      if (!key.startsWith(prefix)) continue
      const rest = key.slice(prefix.length)
      children.add(prefix + rest.split('/', 1)[0])
    }
    // A file is not a directory, and an empty directory does not exist here (as on S3).
    if (children.size === 0 && path !== '/') throw new PathNotFoundError(path)
    return [...children].sort()
  }

  async move(sourcePath: string, destPath: string): Promise<void> {
    const entry = this.#file(sourcePath)
    assertValidPath(destPath)
    this.#files.delete(sourcePath)
    this.#files.set(destPath, entry)
  }

  async delete(path: string): Promise<void> {
    assertValidPath(path)
    const prefix = path === '/' ? '/' : `${path}/`
    let found = this.#files.delete(path)
    for (const key of Array.from(this.#files.keys())) {
      if (key.startsWith(prefix)) {
        this.#files.delete(key)
        found = true
      }
    }
    if (!found) throw new PathNotFoundError(path)
  }

  async walk(path: string, visit: (info: FileInfo) => Promise<'skip' | void> | 'skip' | void): Promise<void> {
    const start = await this.stat(path)
    if (!start.isDir) throw new PathNotFoundError(path)
    const descend = async (directory: string): Promise<void> => {
      let children: string[]
      try {
        children = await this.list(directory)
      } catch (error) {
        if (error instanceof PathNotFoundError) return
        throw error
      }
      for (const child of children) {
        let info: FileInfo
        try {
          info = await this.stat(child)
        } catch (error) {
          if (error instanceof PathNotFoundError) continue
          throw error
        }
        if ((await visit(info)) !== 'skip' && info.isDir) await descend(child)
      }
    }
    await descend(path)
  }
}
