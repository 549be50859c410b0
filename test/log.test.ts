import test from 'ava'
import { createLogger } from '../src/log.js'

test('json format: one object per line with time, level, msg and the fields; empty fields left out, reserved names kept', t => {
  const lines: string[] = []
  const logger = createLogger({ format: 'json', write: line => lines.push(line) })
  logger.info('request', { method: 'GET', status: 200, aborted: undefined, user: null, id: 'a b"c', msg: 'forged', time: 'forged' })
  logger.debug('hidden')
  logger.error('two\nlines', { error: 'x' })
  t.is(lines.length, 2)
  const first = JSON.parse(lines[0]!) as Record<string, unknown>
  t.deepEqual(Object.keys(first), ['time', 'level', 'msg', 'method', 'status', 'id'])
  t.like(first, { level: 'info', msg: 'request', method: 'GET', status: 200, id: 'a b"c' })
  t.regex(String(first.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  t.false(lines[1]!.includes('\n'), 'one line even when the message has a newline')
  t.like(JSON.parse(lines[1]!), { level: 'error', msg: 'two\nlines', error: 'x' })
})

test('text format stays the default: time LEVEL message key=value', t => {
  const lines: string[] = []
  createLogger({ write: line => lines.push(line) }).warn('client certificate refused', { reason: 'no client certificate sent', id: 'r-1' })
  t.regex(lines[0]!, /^\S+Z WARN {2}client certificate refused reason="no client certificate sent" id=r-1$/)
})
