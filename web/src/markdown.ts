// A small Markdown renderer for agents' docs that builds Preact nodes, never HTML strings: text
// is always a text node, so a doc cannot inject markup or script. Covers what agents write:
// headings, paragraphs, lists, block quotes, fenced code, rules, inline code, bold, italics
// and links (http, https and mailto only).

import { h, type ComponentChild } from "preact";

type Block =
  | { kind: "heading"; level: number; text: string }
  | { kind: "para"; text: string }
  | { kind: "code"; text: string }
  | { kind: "list"; ordered: boolean; items: string[] }
  | { kind: "quote"; text: string }
  | { kind: "rule" };

export function parseBlocks(src: string): Block[] {
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  const out: Block[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^\s*$/.test(line)) {
      i++;
      continue;
    }
    const fence = /^\s*(```|~~~)/.exec(line);
    if (fence) {
      const body: string[] = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence (or the end)
      out.push({ kind: "code", text: body.join("\n") });
      continue;
    }
    const heading = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      out.push({ kind: "heading", level: heading[1].length, text: heading[2] });
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      out.push({ kind: "rule" });
      i++;
      continue;
    }
    if (/^\s*>/.test(line)) {
      const body: string[] = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*>\s?/, ""));
      out.push({ kind: "quote", text: body.join(" ") });
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+/;
    if (item.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const items: string[] = [];
      while (i < lines.length && (item.test(lines[i]) || /^\s{2,}\S/.test(lines[i]))) {
        if (item.test(lines[i])) items.push(lines[i].replace(item, ""));
        else items[items.length - 1] += " " + lines[i].trim();
        i++;
      }
      out.push({ kind: "list", ordered, items });
      continue;
    }
    const para: string[] = [];
    while (
      i < lines.length &&
      !/^\s*$/.test(lines[i]) &&
      !/^(#{1,6}\s|\s*(```|~~~)|\s*>)/.test(lines[i]) &&
      !item.test(lines[i])
    ) {
      para.push(lines[i++].trim());
    }
    out.push({ kind: "para", text: para.join(" ") });
  }
  return out;
}

/** Inline formatting: `code`, **bold**, *italic* / _italic_, [text](url). */
export function inline(text: string): ComponentChild[] {
  const out: ComponentChild[] = [];
  const re = /`([^`]+)`|\*\*(.+?)\*\*|(?<![\w*])\*(?!\s)(.+?)\*(?!\w)|(?<!\w)_(?!\s)(.+?)_(?!\w)|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) out.push(h("code", null, m[1]));
    else if (m[2] !== undefined) out.push(h("strong", null, inline(m[2])));
    else if (m[3] !== undefined) out.push(h("em", null, inline(m[3])));
    else if (m[4] !== undefined) out.push(h("em", null, inline(m[4])));
    else if (safeUrl(m[6])) {
      out.push(h("a", { href: m[6], target: "_blank", rel: "noopener noreferrer" }, inline(m[5])));
    } else out.push(m[0]);
    last = re.lastIndex;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Only links that cannot run script: http(s), mailto, or a relative path. */
export function safeUrl(url: string): boolean {
  if (/^(https?:|mailto:)/i.test(url)) return true;
  return !/^[a-z][a-z0-9+.-]*:/i.test(url) && !url.startsWith("//");
}

export function renderMarkdown(src: string): ComponentChild[] {
  return parseBlocks(src).map((b, i) => {
    switch (b.kind) {
      case "heading":
        // Docs sit under the page's own h1/h2: start at h3.
        return h(`h${Math.min(b.level + 2, 6)}`, { key: i }, inline(b.text));
      case "para":
        return h("p", { key: i }, inline(b.text));
      case "code":
        return h("pre", { key: i }, h("code", null, b.text));
      case "list":
        return h(
          b.ordered ? "ol" : "ul",
          { key: i },
          b.items.map((t, j) => h("li", { key: j }, inline(t))),
        );
      case "quote":
        return h("blockquote", { key: i }, inline(b.text));
      case "rule":
        return h("hr", { key: i });
    }
  });
}
