/**
 * A stand-in for an upstream across the internet: Linux traffic control on the loopback device
 * limits what one TCP port sends to `mbit` Mbit/s, in the kernel, so shaping costs the processes
 * being measured no CPU. Everything else on loopback passes unshaped.
 *
 * Needs root and `tc` (iproute2). It takes over loopback's root qdisc for as long as it is on:
 * when one is already set (another tool's), nothing is changed and `shapePort` returns undefined.
 */
import { run } from './util.js'

export interface ShapedPort {
  readonly port: number
  readonly mbit: number
  /** Puts loopback back as it was (its default, no qdisc). Idempotent. */
  remove(): Promise<void>
}

let active: ShapedPort | undefined

/** Takes the shaping off if it is on: for an interrupted run's clean-up. */
export async function removeShaping(): Promise<void> {
  await active?.remove()
}

/** Limits the traffic sent from `port` (its responses) to `mbit` Mbit/s, or says why it cannot. */
export async function shapePort(port: number, mbit: number): Promise<ShapedPort | string> {
  const shown = await run('tc', ['qdisc', 'show', 'dev', 'lo'], { allowFailure: true }).catch((error: unknown) => ({
    code: 1,
    stdout: '',
    stderr: String(error),
  }))
  if (shown.code !== 0) return `tc is not usable here (${shown.stderr.trim().split('\n')[0]})`
  if (!/^qdisc noqueue 0: root/m.test(shown.stdout)) return `loopback already has a queueing discipline: ${shown.stdout.trim().split('\n')[0]}`
  // An HTB root whose default class does not exist sends unmatched packets straight through; the
  // filter puts the port's packets in the one class, which is limited. The burst covers loopback's
  // 64 KiB segments. (HTB rather than prio: not every kernel has sch_prio.)
  const commands = [
    ['qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '99', 'r2q', '1000'],
    ['class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:30', 'htb', 'rate', `${mbit}mbit`, 'ceil', `${mbit}mbit`, 'burst', '1mb', 'cburst', '1mb'],
    ['filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'sport', String(port), '0xffff', 'flowid', '1:30'],
  ]
  let removed = false
  const remove = async (): Promise<void> => {
    if (removed) return
    removed = true
    active = undefined
    await run('tc', ['qdisc', 'del', 'dev', 'lo', 'root'], { allowFailure: true })
  }
  // Known before the first command: an interrupted run must still put loopback back.
  active = { port, mbit, remove }
  for (const args of commands) {
    const result = await run('tc', args, { allowFailure: true })
    if (result.code !== 0) {
      await remove()
      return `tc ${args.join(' ')} failed: ${result.stderr.trim().split('\n')[0]}`
    }
  }
  return active
}
