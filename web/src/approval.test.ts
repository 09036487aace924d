import { describe, expect, it } from "vitest";

import { inputView, outcome } from "./approval";
import type { Approval } from "./types";

describe("inputView", () => {
  it("shows a shell tool's command", () => {
    expect(inputView("Bash", { command: "rm -rf build/", description: "Clean" })).toEqual({
      kind: "command",
      command: "rm -rf build/",
      note: "Clean",
    });
    expect(inputView("shell", { command: ["git", "status"], workdir: "/x" })).toMatchObject({
      kind: "command",
      command: "git status",
    });
  });

  it("shows an edit as the file and its change", () => {
    const v = inputView("Edit", { file_path: "src/a.ts", old_string: "a\nb", new_string: "c" });
    expect(v).toEqual({
      kind: "edit",
      path: "src/a.ts",
      lines: [
        { sign: "-", text: "a" },
        { sign: "-", text: "b" },
        { sign: "+", text: "c" },
      ],
    });
    expect(inputView("write_file", { path: "n.txt", content: "hi" })).toEqual({
      kind: "edit",
      path: "n.txt",
      lines: [{ sign: "+", text: "hi" }],
    });
    const multi = inputView("MultiEdit", {
      file_path: "f",
      edits: [
        { old_string: "x", new_string: "y" },
        { old_string: "p", new_string: "q" },
      ],
    });
    expect(multi.kind === "edit" && multi.lines.map((l) => l.sign + l.text)).toEqual(["-x", "+y", " …", "-p", "+q"]);
  });

  it("pretty-prints anything else", () => {
    expect(inputView("WebFetch", { url: "https://x", prompt: "read", extra: 1, more: 2 })).toEqual({
      kind: "json",
      text: JSON.stringify({ url: "https://x", prompt: "read", extra: 1, more: 2 }, null, 2),
    });
    expect(inputView("Read", "plain")).toEqual({ kind: "json", text: '"plain"' });
  });
});

describe("outcome", () => {
  const base = { status: "denied", decision: "deny", decidedBy: "Pixel", reason: "too risky" } as Approval;
  it("says what was decided, by whom and why", () => {
    expect(outcome(base)).toBe("denied by Pixel: too risky");
    expect(outcome({ ...base, status: "allowed", decision: "allow_session", reason: null })).toBe(
      "allowed for the session by Pixel",
    );
    expect(outcome({ ...base, status: "cancelled", decision: null, decidedBy: null, reason: null })).toBe("cancelled");
  });
});
