// The key bar: the keys a phone's keyboard lacks, as the bytes a terminal sends for them.
//
// Arrows depend on the terminal's cursor-key mode (DECCKM): programs that switch it on (vim,
// less, most full-screen TUIs) expect `ESC O A`; a shell at its prompt expects `ESC [ A`.

export type Key = "esc" | "tab" | "ctrl-c" | "up" | "down" | "left" | "right" | "enter";

export const KEY_BAR: { key: Key; label: string; name: string }[] = [
  { key: "esc", label: "Esc", name: "Escape" },
  { key: "tab", label: "Tab", name: "Tab" },
  { key: "ctrl-c", label: "Ctrl-C", name: "Control C" },
  { key: "up", label: "↑", name: "Up" },
  { key: "down", label: "↓", name: "Down" },
  { key: "left", label: "←", name: "Left" },
  { key: "right", label: "→", name: "Right" },
  { key: "enter", label: "Enter", name: "Enter" },
];

const ARROW = { up: "A", down: "B", right: "C", left: "D" } as const;

/** What the terminal sends for `key`; `applicationCursor` is the terminal's DECCKM mode. */
export function keyBytes(key: Key, applicationCursor = false): string {
  switch (key) {
    case "esc":
      return "\x1b";
    case "tab":
      return "\t";
    case "ctrl-c":
      return "\x03";
    case "enter":
      return "\r";
    default:
      return (applicationCursor ? "\x1bO" : "\x1b[") + ARROW[key];
  }
}
