import test from 'ava'
import { formatScope, parseScope, parseScopes } from '../../src/access/scope.js'

const table: [string, ReturnType<typeof parseScope>][] = [
  ['repository:alice/app:pull', { type: 'repository', name: 'alice/app', actions: ['pull'] }],
  ['repository:alice/app:pull,push', { type: 'repository', name: 'alice/app', actions: ['pull', 'push'] }],
  ['repository:alice/app:push,pull,push', { type: 'repository', name: 'alice/app', actions: ['push', 'pull'] }],
  ['repository:app:', { type: 'repository', name: 'app', actions: [] }],
  ['repository:app:pull,,push', { type: 'repository', name: 'app', actions: ['pull', 'push'] }],
  ['repository:localhost:5000/app:pull', { type: 'repository', name: 'localhost:5000/app', actions: ['pull'] }],
  ['repository(plugin):vieux/sshfs:pull', { type: 'repository', name: 'vieux/sshfs', actions: ['pull'] }],
  ['registry:catalog:*', { type: 'registry', name: 'catalog', actions: ['*'] }],
  ['repository:a.b_c-d/e__f:delete', { type: 'repository', name: 'a.b_c-d/e__f', actions: ['delete'] }],
  // Malformed: ignored.
  ['', undefined],
  ['repository', undefined],
  ['repository:app', undefined],
  [':app:pull', undefined],
  ['repository::pull', undefined],
  ['Repository:app:pull', undefined],
  ['repo-sitory:app:pull', undefined],
  ['repository(plugin:app:pull', undefined],
  ['repository:a:b:c:pull', undefined],
  ['repository:app:PULL', undefined],
  ['repository:app:pull;rm', undefined],
  ['repository:app:pu*ll', undefined],
  ['repository:a p:pull', undefined],
  ['repository:a"b:pull', undefined],
  ['repository:é:pull', undefined],
  [`repository:${'a'.repeat(256)}:pull`, undefined],
]

for (const [text, expected] of table) {
  test(`parseScope ${JSON.stringify(text.slice(0, 60))}`, t => {
    t.deepEqual(parseScope(text), expected)
  })
}

test('a name of 255 characters is accepted', t => {
  t.is(parseScope(`repository:${'a'.repeat(255)}:pull`)?.name.length, 255)
})

test('parseScopes splits on spaces, drops malformed scopes and merges those of one resource', t => {
  t.deepEqual(parseScopes(['repository:a:pull repository:b:push', 'bogus', 'repository:a:push,pull', '  registry:catalog:*  ']), [
    { type: 'repository', name: 'a', actions: ['pull', 'push'] },
    { type: 'repository', name: 'b', actions: ['push'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
  ])
  t.deepEqual(parseScopes([]), [])
})

test('formatScope is the inverse of parseScope', t => {
  for (const text of ['repository:alice/app:pull,push', 'registry:catalog:*', 'repository:localhost:5000/x:pull']) {
    t.is(formatScope(parseScope(text)!), text)
  }
})
