import test from 'ava'
import { fc, testProp } from '@fast-check/ava'
import { parseSize } from '../../src/edge/size.js'

test('parses the --max-body forms users write', t => {
  t.is(parseSize('5g'), 5 * 1024 ** 3)
  t.is(parseSize('5G'), 5 * 1024 ** 3)
  t.is(parseSize('512m'), 512 * 1024 ** 2)
  t.is(parseSize('100k'), 102400)
  t.is(parseSize('1048576'), 1048576)
  t.is(parseSize('1.5g'), 1.5 * 1024 ** 3)
  t.is(parseSize('2GiB'), 2 * 1024 ** 3)
  t.is(parseSize('1t'), 1024 ** 4)
})

test('refuses nonsense with a message that shows the expected form', t => {
  for (const bad of ['', 'g', '-1', '5x', '5 gigs', 'five']) {
    const error = t.throws(() => parseSize(bad), { instanceOf: RangeError })
    t.regex(error?.message ?? '', /invalid size/)
  }
})

testProp('a plain byte count parses to itself', [fc.nat()], (t, n) => {
  t.is(parseSize(String(n)), n)
})
