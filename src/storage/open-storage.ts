/**
 * The one way to open the store the settings name, for `berth serve`, `berth gc` and `berth du`:
 * `<datadir>/data` on the filesystem, or an S3 bucket (checked with one request). Rejects with
 * StorageOpenError, whose message says what to fix; callers turn it into their usage error.
 */
import { constants } from 'node:fs'
import { access, mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { FilesystemDriver } from './driver/filesystem.js'
import type { StorageDriver } from './driver/storage-driver.js'

/** Where images are stored. */
export type StorageChoice =
  | { readonly kind: 'filesystem' }
  | {
      readonly kind: 's3'
      /** Undefined: AWS itself. */
      readonly endpoint: string | undefined
      readonly bucket: string
      /** Undefined: AWS_REGION, else us-east-1 (decided where the client is made). */
      readonly region: string | undefined
      /** Folder in the bucket ('' = root), as registry:2's `rootdirectory`. */
      readonly prefix: string
      /** Blob GETs answered with a redirect to a presigned URL. */
      readonly redirect: boolean
    }

export interface StorageOptions {
  readonly storage: StorageChoice
  /** The filesystem store is `<datadir>/data` (registry:2's `rootdirectory`). */
  readonly datadir: string
  /** Create `<datadir>/data` when missing (serve); otherwise a missing one is an error (maintenance commands). */
  readonly create: boolean
}

export class StorageOpenError extends Error {
  readonly code = 'STORAGE_UNAVAILABLE'
}

export async function openStorage(options: StorageOptions): Promise<{ driver: StorageDriver; shown: string }> {
  const choice = options.storage
  if (choice.kind === 's3') {
    // Loaded here: the S3 client is big, and a datadir needs none of it.
    const { S3Driver } = await import('./driver/s3.js')
    const driver = new S3Driver({
      bucket: choice.bucket,
      prefix: choice.prefix,
      redirect: choice.redirect,
      ...(choice.endpoint !== undefined ? { endpoint: choice.endpoint } : {}),
      ...(choice.region !== undefined ? { region: choice.region } : {}),
    })
    try {
      await driver.check()
    } catch (error) {
      throw new StorageOpenError(`--storage s3: ${(error as Error).message}`, { cause: error })
    }
    return { driver, shown: `s3://${choice.bucket}/${choice.prefix}${choice.endpoint !== undefined ? ` at ${choice.endpoint}` : ''}` }
  }
  const root = join(options.datadir, 'data')
  if (options.create) {
    await prepareFolder(root, 'datadir', options.datadir)
  } else if (!(await stat(root).catch(() => undefined))?.isDirectory()) {
    throw new StorageOpenError(`no registry data at ${root} (set --datadir to the folder that holds data/, as mounted into registry:2)`)
  }
  return { driver: new FilesystemDriver(root), shown: root }
}

/** Creates `folder` and checks this process may write there; the message names the fix. */
export async function prepareFolder(folder: string, setting: string, shown: string): Promise<void> {
  try {
    await mkdir(folder, { recursive: true })
    await access(folder, constants.W_OK | constants.X_OK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      const owner = await stat(shown).then(
        info => ` (owned by uid ${info.uid}, berth runs as uid ${process.getuid?.() ?? '?'})`,
        () => '',
      )
      const uid = process.getuid?.() ?? 1000
      const gid = process.getgid?.() ?? 1000
      // In the image (Dockerfile sets BERTH_IN_CONTAINER) the folder is a bind mount: the fix is on the host.
      const fix = process.env.BERTH_IN_CONTAINER
        ? `on the host, run: sudo chown -R ${uid}:${gid} datadir certs (the folders mounted into the container)`
        : `fix the owner, e.g. sudo chown -R ${uid}:${gid} ${shown}`
      throw new StorageOpenError(`--${setting} ${shown} is not writable${owner}; ${fix}`, { cause: error })
    }
    throw new StorageOpenError(`--${setting} ${shown}: ${(error as Error).message}`, { cause: error })
  }
}
