/**
 * Per-repository access rules: the access file's format, its compilation, and the decision.
 * Pure: no I/O (access-file.ts reads and watches the file).
 *
 * The file (YAML):
 *
 * ```yaml
 * groups:
 *   devs: [alice, bob]
 * rules:
 *   - repository: "public/**"        # a glob, or a list of globs
 *     who: [anonymous, authenticated]
 *     can: [pull]
 *   - repository: "release/**"
 *     who: [group:devs]
 *     can: [pull, push]
 * ```
 *
 * The decision, for a caller (a user name, or anonymous: no credentials), a repository and an action:
 * 1. A rule APPLIES when one of its `repository` globs matches the repository AND its `who` names
 *    the caller. The action plays no part in whether a rule applies.
 * 2. The rules are read in file order; the FIRST rule that applies decides, and no other rule is
 *    read. The action is allowed if and only if it is in that rule's `can`; if it is not, the action
 *    is denied, even when a later rule would grant it (there is no fall-through).
 * 3. When no rule applies, every action is denied. A rule with `can: []` denies its callers every
 *    action on its repositories, and so keeps the rules after it from applying to them.
 * So the actions a caller has on a repository are exactly the `can` of the first rule that applies.
 * Put narrow rules (one user, one namespace) before broad ones (`**`, `authenticated`).
 *
 * `who` names the caller when it lists: the caller's user name; `group:<name>` of a group (defined
 * under `groups:`) that lists the user; `authenticated`, for any user who logged in; `anonymous`, for
 * a caller without credentials. The words `anonymous` and `authenticated` always mean these two,
 * never a user of that name. Whether a user exists or the password was right is decided before
 * (htpasswd): here any user name counts as authenticated.
 *
 * Globs: a repository name is segments joined by `/`. `*` stands for one or more characters within
 * one segment (never `/`); `**`, always a whole segment, for whole segments: `a/**` matches `a/x` and
 * `a/x/y` but not `a`; `**` alone matches every repository; `**` at the start or between two segments
 * also matches no segment (`**\/app` matches `app` and `x/app`; `a/**\/b` matches `a/b` and `a/x/b`).
 * Every other character is itself, from the repository-name alphabet `a-z 0-9 . _ - /`.
 *
 * Actions: `pull` (read manifests, blobs, tags, referrers); `push` (upload blobs, put manifests,
 * create a tag); `overwrite` (move an existing tag to another manifest); `delete`.
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type Pair } from 'yaml'

export type Action = 'pull' | 'push' | 'overwrite' | 'delete'

export const ACTIONS: readonly Action[] = ['pull', 'push', 'overwrite', 'delete']

/**
 * A problem in an access file. `message` is one line: `<source>:<line>:<column>: <problem>` (the
 * position left out when the file as a whole is the problem); `problem` is the part after it.
 */
export class AccessFileError extends Error {
  override readonly name = 'AccessFileError'
  /** Every problem found in the file, this one first. */
  all: readonly AccessFileError[] = [this]

  constructor(
    readonly problem: string,
    readonly source: string,
    readonly line?: number,
    readonly column?: number,
    options?: ErrorOptions,
  ) {
    super(line === undefined ? `${source}: ${problem}` : `${source}:${line}:${column ?? 1}: ${problem}`, options)
  }
}

/** The outcome of `AccessPolicy.decide`. */
export interface Decision {
  readonly allowed: boolean
  /** The rule that applied; absent when none did. */
  readonly rule?: {
    /** 1-based position in `rules:`, as `reason` prints it. */
    readonly number: number
    /** Line of the rule in the file. */
    readonly line: number
    /** The glob of the rule that matched the repository. */
    readonly repository: string
  }
  /** One line for people, e.g. `rule 2 (line 7, repository "alice/**") lets alice push`. */
  readonly reason: string
}

interface Glob {
  readonly text: string
  readonly pattern: RegExp
}

interface CompiledRule {
  readonly number: number
  readonly line: number
  readonly globs: readonly Glob[]
  /** Users named directly or through a group. */
  readonly users: ReadonlySet<string>
  readonly anonymous: boolean
  readonly authenticated: boolean
  readonly can: ReadonlySet<Action>
}

/** (user, repository) pairs whose applying rule `allows` remembers; the oldest is forgotten first. */
const MEMO_LIMIT = 10_000
const NO_RULE = -1
const NO_ACTIONS: ReadonlySet<Action> = new Set()

/** The compiled rules of one access file. Immutable; a reload makes a new one. */
export class AccessPolicy {
  /** The rule index (or NO_RULE) that applies to a (user, repository) key. */
  private readonly memo = new Map<string, number>()

  private constructor(private readonly rules: readonly CompiledRule[]) {}

  /**
   * Parses and checks an access file. `source` names the file in errors.
   * @throws AccessFileError for the first problem (in file order); its `all` lists every problem found.
   */
  static parse(text: string, source: string): AccessPolicy {
    return new AccessPolicy(compile(text, source))
  }

  get ruleCount(): number {
    return this.rules.length
  }

  /** True when some rule names `anonymous`: callers without credentials may get access. */
  get namesAnonymous(): boolean {
    return this.rules.some(rule => rule.anonymous)
  }

  /** The decision with the rule that made it and why. `user` undefined = anonymous. */
  decide(user: string | undefined, repository: string, action: Action): Decision {
    const caller = user ?? 'anonymous'
    for (const rule of this.rules) {
      const glob = appliesTo(rule, user, repository)
      if (glob === undefined) continue
      const allowed = rule.can.has(action)
      const where = `rule ${rule.number} (line ${rule.line}, repository "${glob.text}")`
      return {
        allowed,
        rule: { number: rule.number, line: rule.line, repository: glob.text },
        reason: allowed ? `${where} lets ${caller} ${action}` : `${where} applies to ${caller} but does not grant ${action}`,
      }
    }
    return { allowed: false, reason: `no rule applies to ${caller} on ${repository}` }
  }

  /** `decide(...).allowed`, for the request path: the applying rule is remembered per (user, repository). */
  allows(user: string | undefined, repository: string, action: Action): boolean {
    return this.actionsFor(user, repository).has(action)
  }

  /** Every action the caller has on the repository: the `can` of the first rule that applies, or none. */
  actionsFor(user: string | undefined, repository: string): ReadonlySet<Action> {
    const index = this.applyingRule(user, repository)
    return index === NO_RULE ? NO_ACTIONS : this.rules[index]!.can
  }

  private applyingRule(user: string | undefined, repository: string): number {
    // Length-prefixed, so no user name and repository pair can collide with another.
    const key = user === undefined ? `${repository.length}:${repository}` : `${repository.length}:${repository}@${user}`
    const known = this.memo.get(key)
    if (known !== undefined) return known
    const index = this.rules.findIndex(rule => appliesTo(rule, user, repository) !== undefined)
    if (this.memo.size >= MEMO_LIMIT) this.memo.delete(this.memo.keys().next().value!)
    this.memo.set(key, index)
    return index
  }
}

/** The glob through which the rule applies to the caller and repository, or undefined. */
function appliesTo(rule: CompiledRule, user: string | undefined, repository: string): Glob | undefined {
  const named = user === undefined ? rule.anonymous : rule.authenticated || rule.users.has(user)
  if (!named) return undefined
  return rule.globs.find(glob => glob.pattern.test(repository))
}

/**
 * Checks a glob and compiles it to an anchored RegExp.
 * @returns the RegExp, or the problem (one line: what is wrong and what is allowed).
 */
export function compileGlob(glob: string): RegExp | string {
  if (glob === '') return 'empty repository glob; write a name such as "app", or "team/*" or "**"'
  const bad = /[^a-z0-9._/*-]/.exec(glob)
  if (bad) {
    const what = /[A-Z]/.test(bad[0]) ? `uppercase "${bad[0]}" (repository names are lowercase)` : `character ${JSON.stringify(bad[0])}`
    return `${what} in repository glob "${glob}"; allowed: a-z 0-9 . _ - /, and * or ** for segments`
  }
  if (glob.startsWith('/')) return `repository glob "${glob}" starts with "/"; repository names never do: write "${glob.replace(/^\/+/, '')}"`
  if (glob.endsWith('/')) return `repository glob "${glob}" ends with "/"; write "${glob.replace(/\/+$/, '')}/**" for everything under it`
  const segments = glob.split('/')
  if (segments.includes('')) return `repository glob "${glob}" has an empty segment ("//"); segments are separated by one "/"`
  let source = ''
  for (let index = 0; index < segments.length; index++) {
    const segment = segments[index]!
    const first = index === 0
    const last = index === segments.length - 1
    if (segment === '**') {
      if (segments[index + 1] === '**') return `repository glob "${glob}" has "**/**"; one "**" already matches any number of segments`
      // `**` last needs one segment or more; first or in the middle, zero or more (each followed by `/`).
      if (last) source += first ? '[^/]+(?:/[^/]+)*' : '(?:/[^/]+)+'
      else source += first ? '(?:[^/]+/)*' : '/(?:[^/]+/)*'
      continue
    }
    if (segment.includes('**')) return `repository glob "${glob}": "**" must be a whole segment (as in "a/**" or "a/**/b"), use "*" inside a segment`
    const afterDoubleStar = segments[index - 1] === '**'
    source += (first || afterDoubleStar ? '' : '/') + segment.split('*').map(escapeRegExp).join('[^/]+')
  }
  return new RegExp(`^${source}$`)
}

function escapeRegExp(text: string): string {
  return text.replace(/[.\\^$|?+()[\]{}-]/g, '\\$&')
}

const TOP_KEYS = ['groups', 'rules'] as const
const RULE_KEYS = ['repository', 'who', 'can'] as const
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/
const WHO_HELP = 'a user name, group:<name>, anonymous or authenticated'
const WHO_LIST = 'callers (user names, group:<name>, anonymous, authenticated), e.g. [alice, group:devs]'

/** Walks the YAML document, collecting every problem; throws the first (file order) with all of them. */
function compile(text: string, source: string): CompiledRule[] {
  const lineCounter = new LineCounter()
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const problems: AccessFileError[] = []
  const at = (offset: number | undefined, problem: string): void => {
    const position = lineCounter.linePos(offset ?? 0)
    problems.push(new AccessFileError(problem, source, position.line, position.col))
  }
  const atNode = (node: Node | Pair | null | undefined, problem: string): void => at(offsetOf(node), problem)
  const firstProblem = (): AccessFileError => {
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0))
    const first = problems[0]!
    first.all = problems
    return first
  }

  for (const error of document.errors) at(error.pos[0], `not valid YAML: ${error.message.split('\n')[0]}`)
  visit(document, {
    Alias(_, alias) {
      if (alias.resolve(document) === undefined) atNode(alias, `alias "*${alias.source}" refers to no anchor; define "&${alias.source}" before it`)
    },
  })
  if (problems.length > 0) throw firstProblem()
  const root = resolve(document, document.contents)
  if (root === undefined || (isScalar(root) && (root.value === null || root.value === ''))) {
    at(0, 'the file is empty; it needs a "rules:" list (and may define "groups:")')
    throw firstProblem()
  }
  if (!isMap(root)) {
    atNode(root, 'expected a mapping with "rules:" (and optionally "groups:") at the top of the file')
    throw firstProblem()
  }

  let groupsNode: Node | undefined
  let rulesNode: Node | undefined
  for (const pair of entries(root)) {
    const key = keyOf(pair)
    if (key === 'groups') groupsNode = resolve(document, pair.value as Node | null)
    else if (key === 'rules') rulesNode = resolve(document, pair.value as Node | null)
    else atNode(pair, `unknown key ${JSON.stringify(key)} at the top of the file; allowed: ${TOP_KEYS.join(', ')}`)
  }

  const groups = new Map<string, Set<string>>()
  if (groupsNode !== undefined) {
    if (!isMap(groupsNode)) atNode(groupsNode, '"groups" must be a mapping of group names to lists of users, e.g. "devs: [alice, bob]"')
    else {
      for (const pair of entries(groupsNode)) {
        const name = keyOf(pair)
        if (!GROUP_NAME.test(name)) {
          atNode(pair, `group name ${JSON.stringify(name)} is not allowed; use letters, digits, ".", "_" and "-"`)
          continue
        }
        const members = new Set<string>()
        groups.set(name, members)
        const list = listOf(document, pair, `group "${name}"`, 'user names, e.g. [alice, bob]', atNode)
        for (const item of list) {
          const member = stringOf(item, `a member of group "${name}"`, atNode)
          if (member === undefined) continue
          if (member === 'anonymous' || member === 'authenticated' || member.startsWith('group:')) {
            atNode(item, `group "${name}" lists "${member}"; groups hold user names only (name "${member}" in a rule's who instead)`)
          } else if (!isUserName(member)) {
            atNode(item, `${JSON.stringify(member)} is not a user name (no spaces or ":"); group "${name}" lists user names`)
          } else if (members.has(member)) {
            atNode(item, `group "${name}" lists "${member}" twice`)
          } else members.add(member)
        }
      }
    }
  }

  const rules: CompiledRule[] = []
  if (rulesNode === undefined) {
    at(offsetOf(root), 'no "rules:" list; the file needs at least one rule (- repository: ..., who: [...], can: [...])')
  } else if (!isSeq(rulesNode)) {
    atNode(rulesNode, '"rules" must be a list of rules, each "- repository: ..., who: [...], can: [...]"')
  } else if (rulesNode.items.length === 0) {
    atNode(rulesNode, '"rules" is empty; add at least one rule (without rules nobody may do anything)')
  } else {
    rulesNode.items.forEach((item, index) => {
      const rule = compileRule(document, resolve(document, item as Node | null), index + 1, groups, lineCounter, atNode)
      if (rule) rules.push(rule)
    })
  }
  if (problems.length > 0) throw firstProblem()
  return rules
}

type Report = (node: Node | Pair | null | undefined, problem: string) => void

function compileRule(
  document: Document,
  node: Node | undefined,
  number: number,
  groups: ReadonlyMap<string, ReadonlySet<string>>,
  lineCounter: LineCounter,
  report: Report,
): CompiledRule | undefined {
  if (!isMap(node)) {
    report(node, `rule ${number} must be a mapping with repository, who and can (e.g. - repository: "app/**")`)
    return undefined
  }
  const found = new Map<string, Pair>()
  for (const pair of entries(node)) {
    const key = keyOf(pair)
    if ((RULE_KEYS as readonly string[]).includes(key)) found.set(key, pair)
    else report(pair, `unknown key ${JSON.stringify(key)} in rule ${number}; allowed: ${RULE_KEYS.join(', ')}`)
  }
  const missing = RULE_KEYS.filter(key => !found.has(key))
  if (missing.length > 0) report(node, `rule ${number} has no ${missing.join(', ')}; every rule needs repository, who and can`)

  let valid = missing.length === 0
  const globs: Glob[] = []
  const repository = found.get('repository')
  if (repository) {
    const value = resolve(document, repository.value as Node | null)
    const items = isSeq(value) ? listOf(document, repository, `"repository" of rule ${number}`, 'globs, e.g. ["app", "app/**"]', report) : [value ?? repository]
    if (isSeq(value) && items.length === 0) valid = false
    for (const item of items) {
      const text = stringOf(item, `"repository" of rule ${number}`, report, 'a glob such as "public/**", or a list of them')
      if (text === undefined) {
        valid = false
        continue
      }
      const pattern = compileGlob(text)
      if (typeof pattern === 'string') {
        report(item, pattern)
        valid = false
      } else globs.push({ text, pattern })
    }
  }

  const users = new Set<string>()
  let anonymous = false
  let authenticated = false
  const who = found.get('who')
  if (who) {
    const items = listOf(document, who, `"who" of rule ${number}`, WHO_LIST, report)
    if (items.length === 0) valid = false
    const seen = new Set<string>()
    for (const item of items) {
      const entry = stringOf(item, `an entry of "who" in rule ${number}`, report, WHO_HELP)
      if (entry === undefined) {
        valid = false
        continue
      }
      if (seen.has(entry)) {
        report(item, `"who" of rule ${number} lists "${entry}" twice`)
        valid = false
        continue
      }
      seen.add(entry)
      if (entry === 'anonymous') anonymous = true
      else if (entry === 'authenticated') authenticated = true
      else if (entry.startsWith('group:')) {
        const name = entry.slice('group:'.length)
        const members = groups.get(name)
        if (members) for (const member of members) users.add(member)
        else {
          const known = [...groups.keys()]
          report(item, `unknown group "${name}"; ${known.length > 0 ? `defined groups: ${known.join(', ')}` : 'define it under "groups:" first'}`)
          valid = false
        }
      } else if (misspelt(entry) !== undefined) {
        report(item, `"${entry}" in "who" of rule ${number}: ${misspelt(entry)}`)
        valid = false
      } else if (isUserName(entry)) users.add(entry)
      else {
        report(item, `${JSON.stringify(entry)} in "who" of rule ${number} is not ${WHO_HELP}`)
        valid = false
      }
    }
  }

  const can = new Set<Action>()
  const canPair = found.get('can')
  if (canPair) {
    // `can: []` is allowed: a rule that denies its callers everything there and stops the rules after it.
    const items = listOf(document, canPair, `"can" of rule ${number}`, `actions, e.g. [pull, push]; allowed: ${ACTIONS.join(', ')}`, report, true)
    for (const item of items) {
      const action = stringOf(item, `an action in rule ${number}`, report, ACTIONS.join(', '))
      if (action === undefined) {
        valid = false
      } else if (!(ACTIONS as readonly string[]).includes(action)) {
        report(item, `unknown action ${JSON.stringify(action)} in rule ${number}; allowed: ${ACTIONS.join(', ')}`)
        valid = false
      } else if (can.has(action as Action)) {
        report(item, `"can" of rule ${number} lists "${action}" twice`)
        valid = false
      } else can.add(action as Action)
    }
  }

  if (!valid) return undefined
  return { number, line: lineCounter.linePos(offsetOf(node) ?? 0).line, globs, users, anonymous, authenticated, can }
}

function entries(map: Node): Pair[] {
  return isMap(map) ? (map.items as Pair[]) : []
}

function keyOf(pair: Pair): string {
  const key = pair.key
  return isScalar(key) ? String(key.value) : String(key)
}

/**
 * The items of the list under `pair`'s value; reports (and returns []) when it is not a list or is empty.
 * `what` names the list in messages, `expected` says what it holds.
 */
function listOf(document: Document, pair: Pair, what: string, expected: string, report: Report, emptyAllowed = false): Node[] {
  const value = resolve(document, pair.value as Node | null)
  if (!isSeq(value)) {
    report(value ?? pair, `${what} must be a list of ${expected}`)
    return []
  }
  if (value.items.length === 0 && !emptyAllowed) {
    report(value, `${what} is empty; list ${expected}`)
    return []
  }
  return value.items.map(item => resolve(document, item as Node | null) ?? (item as Node))
}

/** A string scalar's value; reports anything else (a number, a list, null). */
function stringOf(node: Node | Pair | undefined, what: string, report: Report, expected?: string): string | undefined {
  if (isScalar(node) && typeof node.value === 'string') return node.value
  const shown = isScalar(node)
    ? node.value === null
      ? 'nothing'
      : String(node.value as string | number | boolean)
    : isSeq(node)
      ? 'a list'
      : isMap(node)
        ? 'a mapping'
        : 'nothing'
  const hint = isScalar(node) && node.value !== null ? ` (quote it: "${shown}")` : ''
  report(node, `${what} must be a string${expected ? ` (${expected})` : ''}, not ${shown}${hint}`)
  return undefined
}

/** What a `who` entry that reads like a mistake for a keyword should be, or undefined. */
function misspelt(entry: string): string | undefined {
  const lower = entry.toLowerCase()
  if (lower !== entry && (lower === 'anonymous' || lower === 'authenticated')) return `write "${lower}" in lowercase`
  if (entry === '*' || lower === 'all' || lower === 'everyone' || lower === 'any') {
    return 'there is no wildcard caller; write authenticated (any user who logs in) and/or anonymous (no credentials)'
  }
  if (entry.startsWith('@')) return `groups are written group:${entry.slice(1)}`
  return undefined
}

/** User names as htpasswd files hold them: no ':' and no white space. */
function isUserName(name: string): boolean {
  return name.length > 0 && !/[:\s]/.test(name)
}

/** Follows an alias (`*name`) to its anchor; undefined for an alias to nothing. */
function resolve(document: Document, node: Node | null | undefined): Node | undefined {
  if (node === null || node === undefined) return undefined
  if (isAlias(node)) return (node.resolve(document) as Node | undefined) ?? undefined
  return node
}

function offsetOf(node: Node | Pair | null | undefined): number | undefined {
  if (node === null || node === undefined) return undefined
  if ('range' in node && node.range) return node.range[0]
  if ('key' in node) return offsetOf(node.key as Node | null) ?? offsetOf(node.value as Node | null)
  return undefined
}
