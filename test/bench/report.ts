/**
 * Turns samples into the table a user reads: per case the median and spread (min–max) of each
 * stack, Berth's advantage (how many times better Berth's median is, whichever way "better"
 * points), the issue #7 target and whether it is met, and each median as a share of the ceiling
 * the machine measured in the same run.
 */
import type { Ceilings } from './ceilings.js'
import type { StackName } from './stacks.js'
import { fmt, median } from './util.js'

export interface CaseDef {
  id: string
  label: string
  unit: string
  better: 'higher' | 'lower'
  /** Minimum Berth advantage over the seed stack (issue #7). */
  minAdvantage?: number
  /** Absolute bound on Berth's median, in `unit` (a maximum when lower is better, else a minimum). */
  berthBound?: number
  /** The machine limit this figure is a share of, as `share × ceiling`. */
  ceiling?: { key: keyof Ceilings; share?: number }
}

export interface Summary {
  median: number
  min: number
  max: number
  samples: number[]
}

export interface CaseResult extends CaseDef {
  stacks: Partial<Record<StackName, Summary>>
  /** Berth's median relative to the seed's, > 1 means Berth is better. */
  advantage?: number
  /** With `--stacks berth,berth-metrics`: Berth with metrics relative to without, oriented as `advantage` (< 1: the metrics cost). */
  withMetrics?: number
  met?: boolean
  notes: string[]
}

export function summarize(samples: number[]): Summary | undefined {
  if (samples.length === 0) return undefined
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples }
}

export function evaluate(def: CaseDef, samples: Partial<Record<StackName, number[]>>, ceilings?: Ceilings): CaseResult {
  const stacks: CaseResult['stacks'] = {}
  for (const name of ['seed', 'berth', 'berth-metrics'] as const) {
    const summary = summarize(samples[name] ?? [])
    if (summary) stacks[name] = summary
  }
  const result: CaseResult = { ...def, stacks, notes: [] }
  const berth = stacks.berth?.median
  const seed = stacks.seed?.median
  if (berth !== undefined && seed !== undefined && berth > 0 && seed > 0) {
    result.advantage = def.better === 'higher' ? berth / seed : seed / berth
  }
  const measured = stacks['berth-metrics']?.median
  if (berth !== undefined && measured !== undefined && berth > 0 && measured > 0) {
    result.withMetrics = def.better === 'higher' ? measured / berth : berth / measured
  }
  if (berth === undefined) return result
  const checks: boolean[] = []
  if (def.minAdvantage !== undefined && result.advantage !== undefined) {
    checks.push(result.advantage >= def.minAdvantage)
  }
  if (def.berthBound !== undefined) {
    checks.push(def.better === 'lower' ? berth <= def.berthBound : berth >= def.berthBound)
  }
  if (def.ceiling?.share !== undefined && ceilings) {
    const bound = def.ceiling.share * ceilings[def.ceiling.key]
    const ok = berth >= bound
    checks.push(ok)
    if (!ok) result.notes.push(`below ${def.ceiling.share * 100}% of ${def.ceiling.key} (${fmt(bound)} MB/s)`)
  }
  if (checks.length > 0) result.met = checks.every(Boolean)
  return result
}

function cell(summary: Summary | undefined, unit: string): string {
  if (!summary) return '—'
  if (summary.samples.length === 1) return `${fmt(summary.median)} ${unit}`
  return `${fmt(summary.median)} ${unit} [${fmt(summary.min)}–${fmt(summary.max)}]`
}

function targetText(def: CaseDef): string {
  const parts: string[] = []
  if (def.minAdvantage !== undefined) parts.push(`≥ ${def.minAdvantage}×`)
  if (def.berthBound !== undefined) parts.push(`${def.better === 'higher' ? '≥' : def.berthBound === 0 ? '=' : '<'} ${def.berthBound} ${def.unit}`)
  if (def.ceiling?.share !== undefined) parts.push(`≥ ${def.ceiling.share * 100}% of ${def.ceiling.key}`)
  return parts.join(', ') || '—'
}

function ceilingShare(result: CaseResult, ceilings: Ceilings | undefined, name: StackName): string {
  const summary = result.stacks[name]
  if (!result.ceiling || !ceilings || !summary) return ''
  return `${Math.round((summary.median / ceilings[result.ceiling.key]) * 100)}%`
}

/** A ratio as a change: 0.98 → "−2.0%", 1.013 → "+1.3%". */
function change(ratio: number | undefined): string {
  if (ratio === undefined) return '—'
  const percent = (ratio - 1) * 100
  return `${percent < 0 ? '−' : '+'}${Math.abs(percent).toFixed(1)}%`
}

export function table(results: CaseResult[], ceilings: Ceilings | undefined): string[][] {
  const metricsColumns = results.some(result => result.stacks['berth-metrics'] !== undefined)
  const rows = [['case', 'seed (nginx + registry:2)', 'Berth', 'Berth vs seed', 'target', 'met', 'share of ceiling (seed / Berth)']]
  if (metricsColumns) rows[0]!.push('Berth --metrics-listen', 'with metrics vs without (+ better)')
  for (const result of results) {
    const share =
      result.ceiling && ceilings
        ? `${ceilingShare(result, ceilings, 'seed') || '—'} / ${ceilingShare(result, ceilings, 'berth') || '—'} of ${result.ceiling.key}`
        : ''
    rows.push([
      result.label,
      cell(result.stacks.seed, result.unit),
      cell(result.stacks.berth, result.unit),
      result.advantage === undefined ? '—' : `${fmt(result.advantage)}× ${result.advantage >= 1 ? 'better' : 'worse'}`,
      targetText(result),
      result.met === undefined ? '—' : result.met ? 'yes' : 'NO',
      share,
      ...(metricsColumns ? [cell(result.stacks['berth-metrics'], result.unit), change(result.withMetrics)] : []),
    ])
  }
  return rows
}

export function markdownTable(rows: string[][]): string {
  const escape = (text: string) => text.replace(/\|/g, '\\|')
  const [head, ...body] = rows
  return [`| ${head!.map(escape).join(' | ')} |`, `|${head!.map(() => '---').join('|')}|`, ...body.map(row => `| ${row.map(escape).join(' | ')} |`)].join('\n')
}

export function textTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map(row => Array.from(row[column]!).length)))
  return rows
    .map(row =>
      row
        .map((text, column) => text + ' '.repeat(widths[column]! - Array.from(text).length))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}
