import type { VNode } from "preact";
import { describe, expect, it } from "vitest";

import { inline, parseBlocks, renderMarkdown, safeUrl } from "./markdown";

describe("parseBlocks", () => {
  it("recognises headings, lists, code, quotes and paragraphs", () => {
    const blocks = parseBlocks("# Title\n\nSome *text*\ncontinued.\n\n- a\n- b\n\n```\nx < y\n```\n> quoted\n\n1. one\n2. two\n\n---");
    expect(blocks.map((b) => b.kind)).toEqual(["heading", "para", "list", "code", "quote", "list", "rule"]);
    expect(blocks[1]).toEqual({ kind: "para", text: "Some *text* continued." });
    expect(blocks[3]).toEqual({ kind: "code", text: "x < y" });
    expect(blocks[5]).toMatchObject({ ordered: true, items: ["one", "two"] });
  });
});

describe("inline", () => {
  it("formats code, bold, italics and links", () => {
    const out = inline("a `b` **c** *d* [e](https://x.example)") as (string | VNode<any>)[];
    const tags = out.filter((n): n is VNode<any> => typeof n === "object").map((n) => n.type);
    expect(tags).toEqual(["code", "strong", "em", "a"]);
    const link = out.find((n) => typeof n === "object" && n.type === "a") as VNode<any>;
    expect(link.props.href).toBe("https://x.example");
    expect(link.props.rel).toBe("noopener noreferrer");
  });

  it("never makes a link that runs script", () => {
    expect(safeUrl("javascript:alert(1)")).toBe(false);
    expect(safeUrl("JaVaScRiPt:alert(1)")).toBe(false);
    expect(safeUrl("data:text/html,x")).toBe(false);
    expect(safeUrl("//evil.example")).toBe(false);
    expect(safeUrl("docs/a.md")).toBe(true);
    const out = inline("[x](javascript:alert(1))");
    expect(out.every((n) => typeof n === "string")).toBe(true);
  });
});

describe("renderMarkdown", () => {
  it("keeps raw HTML as text", () => {
    const [p] = renderMarkdown('<img src=x onerror="alert(1)">') as VNode<any>[];
    expect(p.type).toBe("p");
    expect(p.props.children).toEqual(['<img src=x onerror="alert(1)">']);
  });
});
