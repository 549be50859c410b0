/** The access-rule engine: the file format and its errors, glob semantics, and the decision against a reference evaluation. */
import test from 'ava'
import { fc, testProp } from '@fast-check/ava'
import { AccessFileError, AccessPolicy, ACTIONS, compileGlob, type Action } from '../../src/access/rules.js'

const README_EXAMPLE = `groups:
  devs: [alice, bob]
rules:                       # the first rule that applies decides; no rule applies → denied
  - repository: "public/**"
    who: [anonymous, authenticated]
    can: [pull]
  - repository: "alice/**"
    who: [alice]
    can: [pull, push, overwrite, delete]
  - repository: "release/**"
    who: [group:devs]
    can: [pull, push]        # without overwrite, a tag once pushed never moves (immutable tags)
  - repository: "**"
    who: [authenticated]
    can: [pull]
`

test("the issue's example file: each decision and its reason", t => {
  const policy = AccessPolicy.parse(README_EXAMPLE, 'access.yml')
  t.is(policy.ruleCount, 4)
  t.true(policy.namesAnonymous)
  const cases: [string | undefined, string, Action, boolean, string][] = [
    [undefined, 'public/app', 'pull', true, 'rule 1 (line 4, repository "public/**") lets anonymous pull'],
    [undefined, 'public/app', 'push', false, 'rule 1 (line 4, repository "public/**") applies to anonymous but does not grant push'],
    [undefined, 'public', 'pull', false, 'no rule applies to anonymous on public'],
    [undefined, 'alice/app', 'pull', false, 'no rule applies to anonymous on alice/app'],
    ['alice', 'alice/app', 'push', true, 'rule 2 (line 7, repository "alice/**") lets alice push'],
    ['alice', 'alice/a/b', 'delete', true, 'rule 2 (line 7, repository "alice/**") lets alice delete'],
    ['bob', 'alice/app', 'pull', true, 'rule 4 (line 13, repository "**") lets bob pull'],
    ['bob', 'alice/app', 'push', false, 'rule 4 (line 13, repository "**") applies to bob but does not grant push'],
    ['alice', 'release/app', 'push', true, 'rule 3 (line 10, repository "release/**") lets alice push'],
    ['bob', 'release/app', 'overwrite', false, 'rule 3 (line 10, repository "release/**") applies to bob but does not grant overwrite'],
    ['carol', 'release/app', 'push', false, 'rule 4 (line 13, repository "**") applies to carol but does not grant push'],
    ['carol', 'ci/app', 'pull', true, 'rule 4 (line 13, repository "**") lets carol pull'],
    // The first rule that applies decides: rule 1 applies to every logged-in user on public/**, so
    // alice may not push there although she may push elsewhere.
    ['alice', 'public/app', 'push', false, 'rule 1 (line 4, repository "public/**") applies to alice but does not grant push'],
  ]
  for (const [user, repository, action, allowed, reason] of cases) {
    const decision = policy.decide(user, repository, action)
    t.is(decision.allowed, allowed, `${user ?? 'anonymous'} ${action} ${repository}`)
    t.is(decision.reason, reason)
    t.is(policy.allows(user, repository, action), allowed)
  }
  t.deepEqual(policy.decide('alice', 'alice/x', 'pull').rule, { number: 2, line: 7, repository: 'alice/**' })
  t.is(policy.decide(undefined, 'ci/app', 'pull').rule, undefined)
  t.deepEqual([...policy.actionsFor('alice', 'alice/app')], ['pull', 'push', 'overwrite', 'delete'])
  t.deepEqual([...policy.actionsFor('bob', 'release/x')], ['pull', 'push'])
  t.deepEqual([...policy.actionsFor(undefined, 'private/x')], [])
})

test('globs: * is one segment (one character or more), ** whole segments; everything else literal', t => {
  const cases: [string, string, boolean][] = [
    ['public/**', 'public/a', true],
    ['public/**', 'public/a/b', true],
    ['public/**', 'public', false],
    ['public/**', 'publicity/a', false],
    ['**', 'a', true],
    ['**', 'a/b/c', true],
    ['*', 'a', true],
    ['*', 'a/b', false],
    ['team/*', 'team/app', true],
    ['team/*', 'team/app/x', false],
    ['team/*', 'team', false],
    ['app-*', 'app-web', true],
    ['app-*', 'app-', false],
    ['*-db', 'pg-db', true],
    ['a/*/c', 'a/b/c', true],
    ['a/*/c', 'a/c', false],
    ['**/app', 'app', true],
    ['**/app', 'x/y/app', true],
    ['**/app', 'x/app2', false],
    ['a/**/b', 'a/b', true],
    ['a/**/b', 'a/x/y/b', true],
    ['a/**/b', 'a/x/y', false],
    ['a.b', 'a.b', true],
    ['a.b', 'axb', false],
    ['app', 'app', true],
    ['app', 'app/x', false],
    ['app', 'x/app', false],
  ]
  for (const [glob, name, expected] of cases) {
    const pattern = compileGlob(glob)
    if (typeof pattern === 'string') {
      t.fail(`${glob}: ${pattern}`)
      continue
    }
    t.is(pattern.test(name), expected, `${glob} vs ${name}`)
  }
})

test('globs: malformed ones are refused with what is wrong and what is allowed', t => {
  const cases: [string, RegExp][] = [
    ['a**b', /"\*\*" must be a whole segment/],
    ['a/**x', /"\*\*" must be a whole segment/],
    ['***', /"\*\*" must be a whole segment/],
    ['**/**', /one "\*\*" already matches any number of segments/],
    ['/public/**', /starts with "\/"; .*write "public\/\*\*"/],
    ['public/', /ends with "\/"; write "public\/\*\*"/],
    ['a//b', /empty segment/],
    ['Public/*', /uppercase "P" \(repository names are lowercase\)/],
    ['a+b', /character "\+" in repository glob "a\+b"; allowed: a-z 0-9 \. _ - \/, and \* or \*\* for segments/],
    ['a b', /character " "/],
    ['', /empty repository glob/],
  ]
  for (const [glob, pattern] of cases) {
    const result = compileGlob(glob)
    t.is(typeof result, 'string', glob)
    t.regex(String(result), pattern, glob)
  }
})

/** The one-line message of the first problem in `text`. */
function firstProblem(t: import('ava').ExecutionContext, text: string): string {
  const error = t.throws(() => AccessPolicy.parse(text, 'access.yml'), { instanceOf: AccessFileError })
  return error?.message ?? ''
}

const rule = (lines: string) => `rules:\n  - ${lines.trim().split('\n').join('\n    ')}\n`

test('parse errors: each kind of mistake names file, line and column, what is wrong and what is allowed', t => {
  const cases: [string, string][] = [
    ['', 'access.yml:1:1: the file is empty; it needs a "rules:" list (and may define "groups:")'],
    ['  \n\n', 'access.yml:1:1: the file is empty; it needs a "rules:" list (and may define "groups:")'],
    ['# only a comment\n', 'access.yml:1:1: the file is empty; it needs a "rules:" list (and may define "groups:")'],
    ['- a\n', 'access.yml:1:1: expected a mapping with "rules:" (and optionally "groups:") at the top of the file'],
    ['rules:\n  - repository: "a\n', 'access.yml:3:1: not valid YAML: Missing closing "quote'],
    ['rules: []\nrules: []\n', 'access.yml:2:1: not valid YAML: Map keys must be unique'],
    ['groups: {}\n', 'access.yml:1:1: no "rules:" list; the file needs at least one rule (- repository: ..., who: [...], can: [...])'],
    ['rules: []\n', 'access.yml:1:8: "rules" is empty; add at least one rule (without rules nobody may do anything)'],
    ['rules: pull\n', 'access.yml:1:8: "rules" must be a list of rules, each "- repository: ..., who: [...], can: [...]"'],
    ['rule: []\n', 'access.yml:1:1: unknown key "rule" at the top of the file; allowed: groups, rules'],
    ['rules:\n  - pull\n', 'access.yml:2:5: rule 1 must be a mapping with repository, who and can (e.g. - repository: "app/**")'],
    [rule('repository: a\nwho: [alice]\ncan: [pull]\nrepo: b'), 'access.yml:5:5: unknown key "repo" in rule 1; allowed: repository, who, can'],
    [rule('repository: a\nwho: [alice]'), 'access.yml:2:5: rule 1 has no can; every rule needs repository, who and can'],
    [rule('repository: a\nwho: [alice]\ncan: [read]'), 'access.yml:4:11: unknown action "read" in rule 1; allowed: pull, push, overwrite, delete'],
    [
      rule('repository: a\nwho: [alice]\ncan: pull'),
      'access.yml:4:10: "can" of rule 1 must be a list of actions, e.g. [pull, push]; allowed: pull, push, overwrite, delete',
    ],
    [rule('repository: a\nwho: [alice]\ncan: [pull, pull]'), 'access.yml:4:17: "can" of rule 1 lists "pull" twice'],
    [
      rule('repository: a\nwho: [alice]\ncan: [1]'),
      'access.yml:4:11: an action in rule 1 must be a string (pull, push, overwrite, delete), not 1 (quote it: "1")',
    ],
    [
      rule('repository: a\nwho: alice\ncan: [pull]'),
      'access.yml:3:10: "who" of rule 1 must be a list of callers (user names, group:<name>, anonymous, authenticated), e.g. [alice, group:devs]',
    ],
    [
      rule('repository: a\nwho: []\ncan: [pull]'),
      'access.yml:3:10: "who" of rule 1 is empty; list callers (user names, group:<name>, anonymous, authenticated), e.g. [alice, group:devs]',
    ],
    [rule('repository: a\nwho: [group:devs]\ncan: [pull]'), 'access.yml:3:11: unknown group "devs"; define it under "groups:" first'],
    ['groups:\n  ops: [carol]\n' + rule('repository: a\nwho: [group:devs]\ncan: [pull]'), 'access.yml:5:11: unknown group "devs"; defined groups: ops'],
    [
      rule('repository: a\nwho: ["al ice"]\ncan: [pull]'),
      'access.yml:3:11: "al ice" in "who" of rule 1 is not a user name, group:<name>, anonymous or authenticated',
    ],
    [
      rule('repository: a\nwho: [42]\ncan: [pull]'),
      'access.yml:3:11: an entry of "who" in rule 1 must be a string (a user name, group:<name>, anonymous or authenticated), not 42 (quote it: "42")',
    ],
    [rule('repository: a\nwho: [bob, bob]\ncan: [pull]'), 'access.yml:3:16: "who" of rule 1 lists "bob" twice'],
    [rule('repository: a\nwho: [Anonymous]\ncan: [pull]'), 'access.yml:3:11: "Anonymous" in "who" of rule 1: write "anonymous" in lowercase'],
    [
      rule('repository: a\nwho: [everyone]\ncan: [pull]'),
      'access.yml:3:11: "everyone" in "who" of rule 1: there is no wildcard caller; write authenticated (any user who logs in) and/or anonymous (no credentials)',
    ],
    [rule('repository: a\nwho: ["@devs"]\ncan: [pull]'), 'access.yml:3:11: "@devs" in "who" of rule 1: groups are written group:devs'],
    [
      rule('repository: "a**b"\nwho: [bob]\ncan: [pull]'),
      'access.yml:2:17: repository glob "a**b": "**" must be a whole segment (as in "a/**" or "a/**/b"), use "*" inside a segment',
    ],
    [
      rule('repository: [ok, "App"]\nwho: [bob]\ncan: [pull]'),
      'access.yml:2:22: uppercase "A" (repository names are lowercase) in repository glob "App"; allowed: a-z 0-9 . _ - /, and * or ** for segments',
    ],
    [
      rule('repository: 7\nwho: [bob]\ncan: [pull]'),
      'access.yml:2:17: "repository" of rule 1 must be a string (a glob such as "public/**", or a list of them), not 7 (quote it: "7")',
    ],
    [rule('repository: []\nwho: [bob]\ncan: [pull]'), 'access.yml:2:17: "repository" of rule 1 is empty; list globs, e.g. ["app", "app/**"]'],
    [
      'groups: [a]\n' + rule('repository: a\nwho: [bob]\ncan: [pull]'),
      'access.yml:1:9: "groups" must be a mapping of group names to lists of users, e.g. "devs: [alice, bob]"',
    ],
    ['groups:\n  devs: []\n' + rule('repository: a\nwho: [bob]\ncan: [pull]'), 'access.yml:2:9: group "devs" is empty; list user names, e.g. [alice, bob]'],
    [
      'groups:\n  devs: [anonymous]\n' + rule('repository: a\nwho: [bob]\ncan: [pull]'),
      'access.yml:2:10: group "devs" lists "anonymous"; groups hold user names only (name "anonymous" in a rule\'s who instead)',
    ],
    [
      'groups:\n  "dev team": [a]\n' + rule('repository: a\nwho: [bob]\ncan: [pull]'),
      'access.yml:2:3: group name "dev team" is not allowed; use letters, digits, ".", "_" and "-"',
    ],
    ['rules: *nothing\n', 'access.yml:1:8: alias "*nothing" refers to no anchor; define "&nothing" before it'],
  ]
  for (const [text, message] of cases) t.is(firstProblem(t, text), message, JSON.stringify(text))
})

test('parse errors: every problem is collected in file order; the thrown one is the first', t => {
  const text = rule('repository: "A"\nwho: [group:x]\ncan: [read, pull]\nextra: 1') + '  - repository: ok\n    who: [bob]\n    can: [fly]\n'
  const error = t.throws(() => AccessPolicy.parse(text, '/etc/berth/access.yml'), { instanceOf: AccessFileError })!
  t.deepEqual(
    error.all.map(problem => `${problem.line}:${problem.column}`),
    ['2:17', '3:11', '4:11', '5:5', '8:11'],
  )
  t.is(error.all[0], error)
  t.is(error.source, '/etc/berth/access.yml')
  t.is(error.line, 2)
  t.is(error.column, 17)
  t.regex(error.problem, /^uppercase "A"/)
  for (const problem of error.all) t.false(problem.message.includes('\n'), 'one line')
})

test('YAML anchors and aliases are followed; a repository may be a list of globs (the matching one is named)', t => {
  const policy = AccessPolicy.parse(
    `rules:
  - repository: [ci/*, "tools/**"]
    who: &ci [jenkins, gha]
    can: [pull, push]
  - repository: "**"
    who: *ci
    can: [pull]
`,
    'access.yml',
  )
  t.deepEqual(policy.decide('gha', 'tools/a/b', 'push').rule, { number: 1, line: 2, repository: 'tools/**' })
  t.true(policy.allows('jenkins', 'ci/app', 'push'))
  t.false(policy.allows('jenkins', 'other', 'push'))
  t.true(policy.allows('jenkins', 'other', 'pull'))
  t.false(policy.allows('alice', 'other', 'pull'))
  t.false(policy.namesAnonymous)
})

test('anonymous is only a caller without credentials; authenticated is any user name', t => {
  const policy = AccessPolicy.parse(
    rule('repository: "**"\nwho: [anonymous]\ncan: [pull]') + '  - repository: "**"\n    who: [authenticated]\n    can: [push]\n',
    'a',
  )
  t.deepEqual([...policy.actionsFor(undefined, 'x')], ['pull'])
  t.deepEqual([...policy.actionsFor('anonymous', 'x')], ['push'], 'a user who logged in as "anonymous" is authenticated')
  t.deepEqual([...policy.actionsFor('', 'x')], ['push'])
})

test('can: [] denies its callers everything there and stops the rules after it', t => {
  const policy = AccessPolicy.parse(
    rule('repository: "mirror/**"\nwho: [alice]\ncan: [pull]') +
      '  - repository: "mirror/**"\n    who: [anonymous, authenticated]\n    can: []\n' +
      '  - repository: "**"\n    who: [anonymous, authenticated]\n    can: [pull]\n',
    'a',
  )
  t.true(policy.allows('alice', 'mirror/x', 'pull'))
  t.false(policy.allows('bob', 'mirror/x', 'pull'))
  t.false(policy.allows(undefined, 'mirror/x', 'pull'))
  t.true(policy.allows('bob', 'other/x', 'pull'))
  t.is(policy.decide(undefined, 'mirror/x', 'pull').reason.length > 0, true)
})

test('allows stays right beyond its memo bound (old entries are forgotten, not wrong)', t => {
  const policy = AccessPolicy.parse(README_EXAMPLE, 'access.yml')
  for (let index = 0; index < 12_000; index++) t.is(policy.allows('alice', `alice/r${index}`, 'push'), true)
  t.true(policy.allows('alice', 'alice/r0', 'delete'))
  t.false(policy.allows('bob', 'alice/r0', 'push'))
  t.true(policy.allows('bob', 'alice/r0', 'pull'))
})

// ---- Property: the engine equals an obviously correct evaluation of the same rules ----

const USERS = ['alice', 'bob', 'carol', 'dave'] as const
const GROUPS = ['devs', 'ops'] as const

interface RefRule {
  readonly globs: readonly string[]
  readonly who: readonly string[]
  readonly can: readonly Action[]
}
interface RefFile {
  readonly groups: Readonly<Record<string, readonly string[]>>
  readonly rules: readonly RefRule[]
}

/** `*` matches one or more characters of one segment. */
function segmentMatches(pattern: string, text: string): boolean {
  if (pattern === '') return text === ''
  if (pattern[0] === '*') {
    for (let taken = 1; taken <= text.length; taken++) if (segmentMatches(pattern.slice(1), text.slice(taken))) return true
    return false
  }
  return text !== '' && pattern[0] === text[0] && segmentMatches(pattern.slice(1), text.slice(1))
}

/** `**` as the last segment: one or more segments; elsewhere: zero or more. */
function globMatches(pattern: readonly string[], name: readonly string[]): boolean {
  if (pattern.length === 0) return name.length === 0
  if (pattern[0] === '**') {
    if (pattern.length === 1) return name.length >= 1
    for (let skipped = 0; skipped <= name.length; skipped++) if (globMatches(pattern.slice(1), name.slice(skipped))) return true
    return false
  }
  return name.length > 0 && segmentMatches(pattern[0]!, name[0]!) && globMatches(pattern.slice(1), name.slice(1))
}

function names(file: RefFile, who: string, user: string | undefined): boolean {
  if (who === 'anonymous') return user === undefined
  if (user === undefined) return false
  if (who === 'authenticated') return true
  if (who.startsWith('group:')) return (file.groups[who.slice('group:'.length)] ?? []).includes(user)
  return who === user
}

function referenceDecision(file: RefFile, user: string | undefined, repository: string, action: Action) {
  for (const [index, rule] of file.rules.entries()) {
    if (!rule.who.some(who => names(file, who, user))) continue
    const glob = rule.globs.find(text => globMatches(text.split('/'), repository.split('/')))
    if (glob === undefined) continue
    return { allowed: rule.can.includes(action), number: index + 1, glob }
  }
  return { allowed: false, number: undefined, glob: undefined }
}

const globSegment = fc.constantFrom('a', 'b', 'ab', 'a-b', 'a.b', '*', 'a*', '*b', '**')
const glob = fc
  .array(globSegment, { minLength: 1, maxLength: 4 })
  .filter(segments => !segments.some((segment, index) => segment === '**' && segments[index + 1] === '**'))
  .map(segments => segments.join('/'))
const subset = <T>(items: readonly T[]) => fc.subarray([...items], { minLength: 1 })
const refRule = fc.record({
  globs: fc.array(glob, { minLength: 1, maxLength: 2 }),
  who: subset(['anonymous', 'authenticated', ...USERS, ...GROUPS.map(group => `group:${group}`)]),
  can: subset(ACTIONS),
})
const refFile = fc.record({
  groups: fc.record({ devs: subset(USERS), ops: subset(USERS) }),
  rules: fc.array(refRule, { minLength: 1, maxLength: 6 }),
})
const repositoryName = fc.array(fc.constantFrom('a', 'b', 'ab', 'a-b', 'a.b', 'axb', 'ba', 'abb'), { minLength: 1, maxLength: 5 }).map(parts => parts.join('/'))
const query = fc.tuple(fc.constantFrom(undefined, ...USERS), repositoryName, fc.constantFrom(...ACTIONS))

/** The file as YAML, the repository sometimes as a plain string, sometimes as a list. */
function render(file: RefFile): string {
  const lines = ['groups:', ...Object.entries(file.groups).map(([name, members]) => `  ${name}: [${members.join(', ')}]`), 'rules:']
  for (const rule of file.rules) {
    const repository = rule.globs.length === 1 ? JSON.stringify(rule.globs[0]) : `[${rule.globs.map(text => JSON.stringify(text)).join(', ')}]`
    lines.push(`  - repository: ${repository}`, `    who: [${rule.who.join(', ')}]`, `    can: [${rule.can.join(', ')}]`)
  }
  return lines.join('\n') + '\n'
}

testProp(
  'decide, allows and actionsFor equal a plain reference evaluation of random rule files',
  [refFile, fc.array(query, { minLength: 1, maxLength: 40 })],
  (t, file, queries) => {
    const policy = AccessPolicy.parse(render(file), 'access.yml')
    // Every query twice: the second time `allows` answers from its memo.
    for (const [user, repository, action] of [...queries, ...queries]) {
      const expected = referenceDecision(file, user, repository, action)
      const decision = policy.decide(user, repository, action)
      const label = `${user ?? 'anonymous'} ${action} ${repository}`
      t.is(decision.allowed, expected.allowed, label)
      t.is(decision.rule?.number, expected.number, label)
      t.is(decision.rule?.repository, expected.glob, label)
      t.is(policy.allows(user, repository, action), decision.allowed, label)
      t.is(policy.actionsFor(user, repository).has(action), decision.allowed, label)
    }
  },
  { numRuns: 500 },
)
