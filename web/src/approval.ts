// Tool approvals: how a tool's input is shown, and how a decision reads. Pure; the card and the
// decision call are in ui-approval.tsx.

import type { Approval } from "./types";

export interface Line {
  sign: "-" | "+" | " ";
  text: string;
}

/** How a tool's input reads best: a shell command, a file edit, or the JSON. */
export type InputView =
  | { kind: "command"; command: string; note?: string }
  | { kind: "edit"; path: string; lines: Line[] }
  | { kind: "json"; text: string };

const SHELL_TOOLS = /^(bash|shell|local_shell|run_shell_command|exec(_command)?|terminal)$/i;

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function diffLines(oldText: string | undefined, newText: string | undefined): Line[] {
  const out: Line[] = [];
  if (oldText) for (const l of oldText.split("\n")) out.push({ sign: "-", text: l });
  if (newText !== undefined) for (const l of newText.split("\n")) out.push({ sign: "+", text: l });
  return out;
}

/** Reads an approval's input: the command of a shell tool, the file and change of an edit tool. */
export function inputView(toolName: string, input: unknown): InputView {
  const o = input && typeof input === "object" && !Array.isArray(input) ? (input as Record<string, unknown>) : null;
  if (o) {
    const cmd = Array.isArray(o.command) ? o.command.map(String).join(" ") : str(o.command) ?? str(o.cmd);
    if (cmd !== undefined && (SHELL_TOOLS.test(toolName) || Object.keys(o).length <= 3)) {
      return { kind: "command", command: cmd, note: str(o.description) };
    }
    const path = str(o.file_path) ?? str(o.path) ?? str(o.filePath) ?? str(o.absolute_path);
    if (path !== undefined) {
      let lines: Line[] | null = null;
      if (Array.isArray(o.edits)) {
        lines = o.edits.flatMap((e: any, i: number) => [
          ...(i > 0 ? [{ sign: " " as const, text: "…" }] : []),
          ...diffLines(str(e?.old_string), str(e?.new_string)),
        ]);
      } else if ("old_string" in o || "new_string" in o) {
        lines = diffLines(str(o.old_string), str(o.new_string));
      } else if ("content" in o) {
        lines = diffLines(undefined, str(o.content) ?? JSON.stringify(o.content));
      }
      if (lines) return { kind: "edit", path, lines };
    }
  }
  return { kind: "json", text: JSON.stringify(input, null, 2) ?? String(input) };
}

/** "allowed by Pixel", "denied by local: too risky", "cancelled (session ended)". */
export function outcome(a: Approval): string {
  const how = a.decision === "allow_session" ? "allowed for the session" : a.status;
  const by = a.decidedBy ? ` by ${a.decidedBy}` : "";
  const why = a.reason ? `: ${a.reason}` : "";
  return `${how}${by}${why}`;
}

