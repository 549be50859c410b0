/**
 * `node --import tsx test/bench/profile-summary.ts <file.cpuprofile> [top]`: where a `--cpu-prof`
 * profile of Berth spent its time, by function (self time) and by file, so a benchmark miss can be
 * traced to its cause without opening a flame graph.
 */
import { readFile } from 'node:fs/promises'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

const [file, topArg] = process.argv.slice(2)
if (!file) {
  process.stderr.write('usage: profile-summary.ts <file.cpuprofile> [top]\n')
  process.exit(2)
}
const top = Number(topArg ?? 25)
const profile = JSON.parse(await readFile(file, 'utf8')) as Profile
const byId = new Map(profile.nodes.map(node => [node.id, node]))
const selfMs = new Map<number, number>()
profile.samples.forEach((id, index) => selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0) / 1000))
const totalMs = (profile.endTime - profile.startTime) / 1000

const byFunction = new Map<string, number>()
const byFile = new Map<string, number>()
for (const [id, ms] of selfMs) {
  const frame = byId.get(id)!.callFrame
  const where = frame.url.replace(/^.*\/(node_modules\/|src\/|dist\/)/, '$1') || '(native)'
  const key = `${frame.functionName || '(anonymous)'}  ${where}:${frame.lineNumber + 1}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + ms)
  byFile.set(where, (byFile.get(where) ?? 0) + ms)
}
const print = (title: string, map: Map<string, number>) => {
  process.stdout.write(`\n${title} (of ${Math.round(totalMs)} ms profiled)\n`)
  for (const [key, ms] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${String(Math.round(ms)).padStart(8)} ms ${((ms / totalMs) * 100).toFixed(1).padStart(5)}%  ${key}\n`)
  }
}
print('self time by function', byFunction)
print('self time by file', byFile)
