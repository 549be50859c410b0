/** Parses sizes like `5g`, `512m`, `100k`, `1048576` (binary units: 1k = 1024) into bytes. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(text)
  if (!match) throw new RangeError(`invalid size ${JSON.stringify(text)}: use a number of bytes or a number with k, m, g or t (e.g. 5g, 512m)`)
  const units: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }
  const value = Number(match[1]) * (units[(match[2] ?? '').toLowerCase()] ?? 1)
  if (!Number.isSafeInteger(Math.floor(value))) throw new RangeError(`size ${JSON.stringify(text)} is too large`)
  return Math.floor(value)
}
