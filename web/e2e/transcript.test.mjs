// End to end: the session screen's Transcript tab (docs/runners.md, "Transcripts"). A real
// `maestro run` hosts an agent (a shell script) that writes a Claude Code transcript (the
// project's hand-written sample) and runs its SessionStart hook, as Claude Code would; the host
// follows the file and uploads it; the phone shows it, newest last, with tool calls collapsed
// to one line (expanded here for their input and output) and the edit as a diff. A later
// upload arrives live.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const sample = resolve(here, "../../crates/maestro-server/tests/fixtures/transcripts/claude-code.jsonl");

let server;
let browser;
let dir;
let sessionId;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "maestro-web-transcript-"));
  server = await startServer({ RUNNER: "off" });
  browser = await launch();
  const project = await server.ok("POST", "/api/projects", { name: "transcript", workingDir: dir });
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Fix the add test" });
  const session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [task.id],
    name: "calc fixer",
  });
  sessionId = session.id;
  const transcript = join(dir, "claude.jsonl");
  const agent =
    'cp "$SAMPLE" "$T" && ' +
    'printf \'{"session_id":"c1","transcript_path":"%s","hook_event_name":"SessionStart"}\' "$T" | "$MAESTRO" session register';
  const run = await server.cli(["run", "--", "sh", "-c", agent], {
    MAESTRO_SESSION_ID: sessionId,
    SAMPLE: sample,
    T: transcript,
    MAESTRO: server.binary,
  });
  assert.equal(run.code, 0, run.stderr);
  // The host uploads what is left of the file before `maestro run` returns.
  const page = await server.ok("GET", `/api/sessions/${sessionId}/transcript?after=0`);
  assert.equal(page.last, 9, JSON.stringify(page));
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the Transcript tab: messages, a tool call expanded, an edit as a diff, live entries", async () => {
  const context = await phone(browser);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${server.url}/#/s/${sessionId}`);
    await live(page);
    // Its own chunk, loaded when the tab opens.
    const chunk = page.waitForResponse((r) => /\/assets\/transcript-[^/]+\.js$/.test(r.url()));
    await page.getByRole("tab", { name: "Transcript" }).click();
    assert.equal((await chunk).status(), 200);
    const list = page.getByRole("list", { name: "Transcript" });
    await list.waitFor({ timeout: WAIT_MS });

    // Newest last: the prompt first, the agent's final message last.
    const items = list.locator(":scope > li");
    assert.match(await items.first().innerText(), /summary/);
    assert.match(await list.locator(".tr-user").first().innerText(), /The add test fails\. Fix it\./);
    assert.match(await items.last().innerText(), /Fixed: `add` no longer adds 1/);
    assert.match(await items.last().innerText(), /Tokens: in 1,700/);
    // The tool call is one line, its result folded into it (✗: the tests failed).
    const bash = list.locator("details.tr-tool", { hasText: "cargo test" });
    assert.equal(await bash.count(), 1);
    assert.equal(await bash.evaluate((d) => d.open), false);
    const summary = bash.locator("summary");
    assert.match(await summary.innerText(), /✗\s*Bash\s*cargo test/);
    const box = await summary.boundingBox();
    assert.ok(box.height < 50, `one line: ${box.height}px`);
    assert.equal(await list.locator(".tr-tool_result").count(), 0, "results sit with their calls");
    await summary.click();
    assert.equal(await bash.evaluate((d) => d.open), true);
    assert.match(await bash.innerText(), /"description": "Run the tests"/);
    assert.match(await bash.innerText(), /Output \(failed\)[\s\S]*test add \.\.\. FAILED[\s\S]*… 5 more lines/);

    // The edit: its diff, markers as characters (not colour alone).
    const edit = list.locator("details.tr-edit");
    assert.equal(await edit.evaluate((d) => d.open), true);
    assert.match(await edit.locator("summary").innerText(), /✓\s*Edit\s*\/work\/calc\/src\/lib\.rs/);
    assert.equal(await edit.locator(".tr-del .tr-dt").innerText(), "    a + b + 1");
    assert.equal(await edit.locator(".tr-add .tr-dt").innerText(), "    a + b");
    assert.equal(await edit.locator(".tr-add .tr-dm").innerText(), "+");
    // Nothing is wider than the phone.
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 390, `page is ${wide}px wide`);

    assert.deepEqual(await axe(page), []);
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.evaluate(() => window.scrollTo(0, 0));
      await shot(page, `transcript-${scheme}`);
      await edit.scrollIntoViewIfNeeded();
      await shot(page, `transcript-edit-${scheme}`);
    }
    await page.emulateMedia({ colorScheme: "light" });

    // A new batch arrives live, at the end.
    await server.ok("POST", `/api/sessions/${sessionId}/transcript`, {
      path: "/elsewhere/next.jsonl",
      start: 0,
      end: 10,
      entries: [{ kind: "assistant", text: "A live entry." }],
    });
    await list.locator(":scope > li", { hasText: "A live entry." }).waitFor({ timeout: WAIT_MS });
    assert.match(await items.last().innerText(), /A live entry\./);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
