/** Shared output of `berth ls`, `berth tags`, `berth rm` and `berth reindex`: tables and times. */

/** An ISO time shown to the second, or "unknown" (never "now"). */
export function formatTime(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return 'unknown'
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? 'unknown' : date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** Left-aligned first column, the others right-aligned where `numeric`, two spaces between. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], numeric: readonly boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(row => row[i]!.length)))
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n') + '\n'
}

/** `sha256:0123456789ab` (12 hex digits), as docker shows image ids. */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':')
  return digest.slice(0, colon + 13)
}
