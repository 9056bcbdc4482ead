/**
 * `text` with control characters (terminal escape sequences, newlines, bidi
 * overrides) shown as `\u001b`-style escapes: record fields such as a member's
 * `problem` are written by whoever can write to etcd, and must not rewrite the
 * operator's terminal or forge status lines.
 */
export function printable(text: string): string {
  return text.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
