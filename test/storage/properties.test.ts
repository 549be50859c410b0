/** Property tests: whatever passes the grammar builds a safe path; whatever fails is refused. */
import test from 'ava'
import fc from 'fast-check'
import { assertValidPath, InvalidPathError } from '../../src/storage/driver/storage-driver.js'
import { digestOf, parseDigest } from '../../src/storage/digest.js'
import { DigestInvalidError, NameInvalidError, TagInvalidError } from '../../src/storage/errors.js'
import { blobDataPath, layerLinkPath, tagCurrentLinkPath, uploadDataPath } from '../../src/storage/paths.js'
import { isRepositoryName, isTag } from '../../src/storage/reference.js'

const component = fc.stringMatching(/^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/)
const validName = fc
  .array(component, { minLength: 1, maxLength: 4 })
  .map(parts => parts.join('/'))
  .filter(n => n.length <= 255)
const validTag = fc.stringMatching(/^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/)

test('every valid name and tag gives paths the driver accepts, with no dot segments', t => {
  fc.assert(
    fc.property(validName, validTag, fc.uint8Array({ maxLength: 64 }), (name, tag, bytes) => {
      t.true(isRepositoryName(name))
      const digest = digestOf(bytes)
      for (const path of [
        layerLinkPath(name, digest),
        tagCurrentLinkPath(name, tag),
        blobDataPath(digest),
        uploadDataPath(name, '01234567-89ab-cdef-0123-456789abcdef'),
      ]) {
        assertValidPath(path)
        t.false(path.split('/').some(part => part === '.' || part === '..'))
        t.true(path.startsWith('/docker/registry/v2/'))
      }
    }),
    { numRuns: 300 },
  )
})

test('arbitrary strings either are valid names or are refused before a path is built', t => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 80 }), value => {
      if (isRepositoryName(value)) {
        assertValidPath(layerLinkPath(value, digestOf(new Uint8Array())))
      } else {
        t.throws(() => layerLinkPath(value, digestOf(new Uint8Array())), { instanceOf: NameInvalidError })
      }
      if (!isTag(value)) t.throws(() => tagCurrentLinkPath('a', value), { instanceOf: TagInvalidError })
    }),
    { numRuns: 1000 },
  )
})

test('traversal-looking names are never valid', t => {
  for (const name of ['..', '.', 'a/..', '../a', 'a/./b', '/a', 'a/', 'a//b', '%2e%2e', 'a%2fb', 'a\\b', '_layers', 'a/_manifests', 'A']) {
    t.false(isRepositoryName(name), name)
  }
})

test('parseDigest accepts exactly sha256/sha512 lowercase hex of the right length', t => {
  fc.assert(
    fc.property(fc.string({ maxLength: 140 }), value => {
      let parsed
      try {
        parsed = parseDigest(value)
      } catch (error) {
        t.true(error instanceof DigestInvalidError)
        return
      }
      t.regex(parsed.value, /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/)
    }),
    { numRuns: 1000 },
  )
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), bytes => {
      for (const algorithm of ['sha256', 'sha512'] as const) {
        const digest = digestOf(bytes, algorithm)
        t.deepEqual(parseDigest(digest.value), digest)
      }
    }),
  )
})

test('the driver path rule refuses every path with a dot segment or unsafe byte', t => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom('a', 'b', '.', '..', '', '%2e', 'x y', '_u', '-', 'é'), { minLength: 1, maxLength: 6 }), parts => {
      const path = '/' + parts.join('/')
      if (path === '/') return t.notThrows(() => assertValidPath(path)) // the root itself
      const bad = parts.some(p => p === '' || p === '.' || p === '..' || !/^[A-Za-z0-9._-]+$/.test(p))
      if (bad) t.throws(() => assertValidPath(path), { instanceOf: InvalidPathError })
      else t.notThrows(() => assertValidPath(path))
    }),
  )
})
