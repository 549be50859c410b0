import test from 'ava'
import { toRegistryError } from '../../src/registry/errors.js'

const systemError = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: open '/data/x'`), { code })

for (const code of ['EMFILE', 'ENFILE']) {
  test(`${code} from storage is 503 UNAVAILABLE with Retry-After, never a 500`, t => {
    const mapped = toRegistryError(new Error('reading a blob failed', { cause: systemError(code) }))
    t.is(mapped.status, 503)
    t.is(mapped.code, 'UNAVAILABLE')
    t.is(mapped.headers['Retry-After'], '5')
    t.regex(mapped.message, /too many open files/)
  })
}

test('a full disk stays 507 and an unknown error 500', t => {
  t.is(toRegistryError(systemError('ENOSPC')).status, 507)
  t.is(toRegistryError(new Error('boom')).status, 500)
})
