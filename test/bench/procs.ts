/**
 * Resource accounting for a stack's process tree, from /proc: peak resident memory and CPU time.
 *
 * Peak RSS is taken two ways. Before a measured job every process's high-water mark is reset
 * (`echo 5 > /proc/<pid>/clear_refs`, Linux ≥ 4.0, root), and afterwards VmHWM is summed: an upper
 * bound on the tree's peak. A 50 ms sampler also sums VmRSS over the tree: the peak it saw is a
 * lower bound. CPU seconds are utime+stime deltas over every process seen in the tree.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'

const TICKS = 100 // USER_HZ on Linux

interface Stat {
  pid: number
  ppid: number
  cpuTicks: number
}

function readStat(pid: number): Stat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // comm may contain spaces and parentheses; fields resume after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return { pid, ppid: Number(fields[1]), cpuTicks: Number(fields[11]) + Number(fields[12]) }
  } catch {
    return undefined
  }
}

function statusKiB(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  try {
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) : 0
  } catch {
    return 0
  }
}

/** Every live process whose ancestry includes one of `roots` (roots included). */
export function processTree(roots: readonly number[]): Stat[] {
  const all = new Map<number, Stat>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const stat = readStat(Number(name))
    if (stat) all.set(stat.pid, stat)
  }
  const inTree = new Set(roots.filter(pid => all.has(pid)))
  let grew = true
  while (grew) {
    grew = false
    for (const stat of all.values()) {
      if (!inTree.has(stat.pid) && inTree.has(stat.ppid)) {
        inTree.add(stat.pid)
        grew = true
      }
    }
  }
  return [...inTree].map(pid => all.get(pid)!)
}

export interface ResourceUsage {
  /** Sum over the tree of each process's VmHWM since the reset, MiB (upper bound of the peak). */
  peakRssMiB: number
  /** Highest sampled sum of VmRSS over the tree, MiB (lower bound of the peak). */
  sampledPeakRssMiB: number
  /** Sum of VmRSS over the tree when the job started, MiB: what the job found, not what it added. */
  startRssMiB: number
  cpuSeconds: number
  processes: number
}

export class ResourceMonitor {
  private readonly baseline = new Map<number, number>()
  private readonly last = new Map<number, number>()
  private sampledPeakKiB = 0
  private startKiB = 0
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly roots: () => number[],
    private readonly intervalMs = 50,
  ) {}

  start(): void {
    const tree = processTree(this.roots())
    for (const stat of tree) this.startKiB += statusKiB(stat.pid, 'VmRSS')
    for (const stat of tree) {
      this.baseline.set(stat.pid, stat.cpuTicks)
      this.last.set(stat.pid, stat.cpuTicks)
      try {
        writeFileSync(`/proc/${stat.pid}/clear_refs`, '5')
      } catch {
        /* not root: HWM is lifetime */
      }
    }
    this.sample()
    this.timer = setInterval(() => this.sample(), this.intervalMs)
  }

  private sample(): void {
    let rss = 0
    for (const stat of processTree(this.roots())) {
      if (!this.baseline.has(stat.pid)) this.baseline.set(stat.pid, 0) // born during the job
      this.last.set(stat.pid, stat.cpuTicks)
      rss += statusKiB(stat.pid, 'VmRSS')
    }
    this.sampledPeakKiB = Math.max(this.sampledPeakKiB, rss)
  }

  stop(): ResourceUsage {
    clearInterval(this.timer)
    this.sample()
    const tree = processTree(this.roots())
    let hwm = 0
    for (const stat of tree) hwm += statusKiB(stat.pid, 'VmHWM')
    let ticks = 0
    for (const [pid, end] of this.last) ticks += end - (this.baseline.get(pid) ?? 0)
    return {
      peakRssMiB: hwm / 1024,
      sampledPeakRssMiB: this.sampledPeakKiB / 1024,
      startRssMiB: this.startKiB / 1024,
      cpuSeconds: ticks / TICKS,
      processes: this.last.size,
    }
  }
}
