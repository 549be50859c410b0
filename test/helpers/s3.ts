/**
 * The S3 test setup the driver, upload, certificate-store and GC tests share: one real S3 server
 * (Ceph RGW, ./ceph.ts) per test file, and S3Drivers on its bucket under a key prefix, set up as
 * a user's `--s3-*` flags would set them (endpoint, region, bucket, prefix, keys).
 */
import type { TestFn } from 'ava'
import { S3Driver } from '../../src/storage/driver/s3.js'
import { startS3, type S3Server } from './ceph.js'

/**
 * Starts the file's S3 server now (while the file's tests are being declared) and stops it after
 * the file's tests, also when it failed to start. Await the result in each test that needs it.
 */
export function s3ForFile<Context>(test: TestFn<Context>): Promise<S3Server> {
  const started = startS3()
  test.after.always(async () => {
    await (await started.catch(() => undefined))?.stop()
  })
  return started
}

/** A driver on `s3`'s bucket under `prefix`; each call is its own client, as another instance's would be. */
export function s3DriverFor(s3: S3Server, prefix: string, options: { partSize?: number } = {}): S3Driver {
  return new S3Driver({
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket,
    prefix,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    ...(options.partSize !== undefined ? { partSize: options.partSize } : {}),
  })
}
