/**
 * What run.ts hands to a case module (static-ceiling.ts, docker-pull.ts, startup.ts): the round
 * count and sizes, and its own recording, settling, progress and failure reporting, so a module's
 * samples land in the same table and results.json as run.ts's own cases.
 */
import type { StackName } from './stacks.js'

export interface CaseHooks {
  quick: boolean
  rounds: number
  /** Which case ids were asked for (`--cases`); every id when none were named. */
  wants(id: string): boolean
  /** One sample of `caseId` in the column of `stack`. */
  record(caseId: string, stack: StackName, value: number): void
  /** Waits for the machine to quieten and flushes dirty pages; call before every timed job. */
  settle(): Promise<void>
  progress(text: string): void
  /** Reports a failed job (its sample stays missing); the run goes on. `round` counts from 0. */
  fail(job: string, stack: StackName, error: unknown, round?: number): void
  /** A line for the report under the case's row (shown even when the case has no samples). */
  note(caseId: string, text: string): void
  /** Appends `value` to results.json's `extra[key]` (figures beside the samples, e.g. CPU time). */
  detail(key: string, value: unknown): void
}
