// Fails the build when the JavaScript that index.html loads at start-up is over budget.
//
// "Initial load" = every <script src> and <link rel="modulepreload"> in dist/index.html, plus
// the static imports those modules make (followed recursively); lazily imported chunks are not
// counted. Each file is measured gzipped (level 9), as a server or CDN would send it.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const BUDGET_KIB = 60;
const dist = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const html = readFileSync(join(dist, "index.html"), "utf8");

const entries = [
  ...html.matchAll(/<script[^>]*\bsrc="([^"]+)"/g),
  ...html.matchAll(/<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"/g),
].map((m) => m[1]);

const seen = new Set();
const queue = entries.map((src) => join(dist, src.replace(/^\//, "")));
let total = 0;
const rows = [];
while (queue.length > 0) {
  const file = queue.shift();
  if (seen.has(file)) continue;
  seen.add(file);
  if (!existsSync(file)) {
    console.error(`budget: ${file} is referenced by index.html but missing`);
    process.exit(1);
  }
  const code = readFileSync(file);
  const gz = gzipSync(code, { level: 9 }).length;
  total += gz;
  rows.push([file.slice(dist.length + 1), code.length, gz]);
  // Static imports between chunks: `import … from "./x.js"` or `import "./x.js"`.
  for (const m of code.toString("utf8").matchAll(/\bimport\s*(?:[\w*{}\s,$]+from\s*)?["']([^"']+\.js)["']/g)) {
    queue.push(resolve(dirname(file), m[1]));
  }
}

for (const [name, raw, gz] of rows) {
  console.log(`budget: ${name}: ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzipped`);
}
const kib = total / 1024;
console.log(`budget: initial JS ${kib.toFixed(1)} KiB gzipped (budget ${BUDGET_KIB} KiB)`);
if (entries.length === 0) {
  console.error("budget: index.html loads no script; the measurement would be meaningless");
  process.exit(1);
}
if (kib > BUDGET_KIB) {
  console.error(`budget: over budget by ${(kib - BUDGET_KIB).toFixed(1)} KiB`);
  process.exit(1);
}
