/**
 * The web UI's parts for the composition root (server.ts): the session key from the CertStore
 * (the bucket with S3, so every instance accepts every instance's sessions; else the certs
 * folder), and the stores it reads. A certs folder that cannot be written does not stop the
 * server: the key is then made in memory and sessions end on restart (logged).
 */
import { randomBytes } from 'node:crypto'
import { FileCertStore, type CertStore } from '../edge/tls/cert-store.js'
import type { Logger } from '../log.js'
import type { RegistryApp } from '../registry/app.js'
import type { MetadataStore } from '../storage/metadata/view.js'
import type { StorageSurvey } from '../storage/storage-survey.js'
import { Sessions, loadSessionKey } from './sessions.js'
import type { EdgeOptions } from '../edge/edge.js'

export async function webUiParts(parts: {
  app: RegistryApp
  metadata: MetadataStore
  survey: StorageSurvey | undefined
  /** The shared CertStore (S3), or undefined for the certs folder. */
  sharedCertStore: CertStore | undefined
  certsDir: string
  logger: Logger
}): Promise<NonNullable<EdgeOptions['ui']>> {
  const { logger } = parts
  let key: Buffer
  try {
    let store = parts.sharedCertStore
    if (store === undefined) {
      const folder = new FileCertStore(parts.certsDir)
      await folder.init()
      store = folder
    }
    key = await loadSessionKey(store, logger)
  } catch (error) {
    logger.warn('web UI: cannot keep the session key with the certificates; sessions end when the server restarts', {
      error: (error as Error).message,
    })
    key = randomBytes(32)
  }
  return {
    sessions: new Sessions({ key }),
    metadata: parts.metadata,
    ...(parts.survey !== undefined ? { survey: parts.survey } : {}),
    store: parts.app.store,
    mirrorPrefixes: parts.app.mirrorPrefixes,
  }
}
