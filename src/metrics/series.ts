/**
 * Counter and histogram families for the request path: each child is a few plain numbers, bound
 * once to its label values and kept by the caller, so recording a request is an addition (and a
 * bucket search), with no label hashing or allocation. The family registers itself with a
 * prom-client Registry as a metric whose `get()` returns the samples in the shape prom-client's own
 * metrics do; prom-client writes the exposition text. Only the scrape walks the children.
 */
import type { Metric, Registry } from 'prom-client'

type Labels = Readonly<Record<string, string | number>>

/** What prom-client's Registry reads from a metric's `get()` to write its exposition. */
export interface FamilySamples {
  readonly name: string
  readonly help: string
  readonly type: 'counter' | 'histogram'
  readonly aggregator: 'sum'
  readonly values: readonly { readonly metricName?: string; readonly labels: Labels; readonly value: number }[]
}

export class CounterChild {
  value = 0
  constructor(readonly labels: Labels) {}
  inc(amount = 1): void {
    this.value += amount
  }
}

export class HistogramChild {
  /** Observations per bucket (not cumulative); the last cell is +Inf. */
  readonly counts: number[]
  sum = 0
  count = 0
  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = Array.from({ length: bounds.length + 1 }, () => 0)
  }
  observe(value: number): void {
    const bounds = this.bounds
    let index = 0
    while (index < bounds.length && value > bounds[index]!) index++
    this.counts[index]!++
    this.sum += value
    this.count++
  }
}

abstract class Family<Child> {
  readonly aggregator = 'sum' as const
  protected readonly children: Child[] = []
  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric)
  }
  /** A new child for these label values; keep it (asking twice makes two series). */
  abstract child(labels?: Labels): Child
}

export class CounterFamily extends Family<CounterChild> {
  readonly type = 'counter' as const
  child(labels: Labels = {}): CounterChild {
    const child = new CounterChild(labels)
    this.children.push(child)
    return child
  }
  get(): Promise<FamilySamples> {
    const values = this.children.map(child => ({ labels: child.labels, value: child.value }))
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values })
  }
  reset(): void {
    for (const child of this.children) child.value = 0
  }
}

export class HistogramFamily extends Family<HistogramChild> {
  readonly type = 'histogram' as const
  constructor(
    name: string,
    help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    super(name, help, registry)
  }
  child(labels: Labels = {}): HistogramChild {
    const child = new HistogramChild(labels, this.bounds)
    this.children.push(child)
    return child
  }
  get(): Promise<FamilySamples> {
    const values: FamilySamples['values'][number][] = []
    for (const child of this.children) {
      let cumulative = 0
      for (let index = 0; index <= this.bounds.length; index++) {
        cumulative += child.counts[index]!
        const le = index < this.bounds.length ? this.bounds[index]! : '+Inf'
        values.push({ metricName: `${this.name}_bucket`, labels: { le, ...child.labels }, value: cumulative })
      }
      values.push({ metricName: `${this.name}_sum`, labels: child.labels, value: child.sum })
      values.push({ metricName: `${this.name}_count`, labels: child.labels, value: child.count })
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values })
  }
  reset(): void {
    for (const child of this.children) {
      child.counts.fill(0)
      child.sum = 0
      child.count = 0
    }
  }
}
