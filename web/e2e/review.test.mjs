// End to end: reviewing an agent's work from the phone (docs/review.md). A real git repository
// with changes; the phone opens the session's Changes tab, opens a diff, comments on a line and
// sends the review; the agent, waiting in `maestro mail wait`, gets it as one directive.
// Fleet shows the session's change count. Screenshots light and dark.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

let server;
let browser;
let dir;
let project;
let session;

function git(...args) {
  execFileSync("git", ["-C", dir, "-c", "user.name=T", "-c", "user.email=t@example.com", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "maestro-web-review-"));
  git("init", "-q", "-b", "main");
  const lines = (p, n) => Array.from({ length: n }, (_, i) => `${p} ${i + 1}`).join("\n") + "\n";
  writeFileSync(join(dir, "app.js"), lines("const line", 30));
  writeFileSync(join(dir, "old.txt"), "gone soon\n");
  git("add", "-A");
  git("commit", "-q", "-m", "initial");
  // The agent's work: a change in the middle of a file, a long line, a deletion, a new file.
  const changed = lines("const line", 30)
    .replace("const line 12\n", "const line twelve = computeSomethingRatherLongThatWrapsOnAPhoneScreen(alpha, beta, gamma);\n")
    .replace("const line 20\n", "");
  writeFileSync(join(dir, "app.js"), changed);
  rmSync(join(dir, "old.txt"));
  mkdirSync(join(dir, "docs"));
  writeFileSync(join(dir, "docs", "notes on ünïcode.md"), "# Notes\n\nNew file.\n");
  server = await startServer({ RUNNER: "off" });
  browser = await launch();
  project = await server.ok("POST", "/api/projects", { name: "review", workingDir: dir });
  session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [],
    name: "refactor agent",
    status: "working",
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("open Changes, open a diff, comment on a line, send the review: the agent gets it", async () => {
  const context = await phone(browser);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${server.url}/#/s/${session.id}?tab=changes`);
    await live(page);
    const files = page.getByRole("list", { name: "Changed files" });
    await files.waitFor({ timeout: WAIT_MS });
    assert.match(await page.locator(".rv-total").innerText(), /3 files \+4 −3/);
    const rows = await files.locator(".rv-file").allInnerTexts();
    assert.equal(rows.length, 3, rows.join(" | "));
    assert.ok(rows.some((r) => r.includes("notes on ünïcode.md")), rows.join(" | "));
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `review-files-${scheme}`);
    }
    await page.emulateMedia({ colorScheme: "light" });
    assert.deepEqual(await axe(page), []);

    // The diff: line numbers, +/− markers as text, the long line wrapped within the screen.
    await files.locator(".rv-file", { hasText: "app.js" }).click();
    const added = page.locator(".rv-line-add", { hasText: "computeSomething" });
    await added.waitFor({ timeout: WAIT_MS });
    assert.equal(await added.locator(".rv-mk").innerText(), "+");
    assert.equal((await added.locator(".rv-ln").nth(1).innerText()).trim(), "12");
    const box = await added.boundingBox();
    assert.ok(box.x + box.width <= 390, `the line fits the screen: ${JSON.stringify(box)}`);
    const removed = page.locator(".rv-line-del", { hasText: "const line 20" });
    assert.equal(await removed.locator(".rv-mk").innerText(), "−");

    // Comment on the added line.
    await added.click();
    await page.locator("#rv-comment-text").fill("Name this something shorter, please.");
    await page.getByRole("button", { name: "Add comment" }).click();
    await page.locator(".rv-comment", { hasText: "Name this something shorter" }).waitFor({ timeout: WAIT_MS });
    assert.match(await page.locator(".rv-bar .label").innerText(), /1 comment to send/);
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `review-diff-${scheme}`);
    }
    await page.emulateMedia({ colorScheme: "light" });
    assert.deepEqual(await axe(page), []);

    // The agent waits for mail; the phone sends the review.
    const waiting = server.cli(["mail", "wait", "--json", "--timeout", "15000"], {
      MAESTRO_SESSION_ID: session.id,
      MAESTRO_PROJECT_ID: project.id,
    });
    await page.getByRole("button", { name: "Send review" }).click();
    await page.locator(".rv-bar [role=status]", { hasText: "Review sent" }).waitFor({ timeout: WAIT_MS });
    const got = await waiting;
    assert.equal(got.code, 0, got.stderr);
    const text = got.stdout;
    assert.ok(text.includes("directive"), text);
    assert.ok(text.includes("app.js:12"), text);
    assert.ok(text.includes("Name this something shorter, please."), text);
    assert.ok(text.includes("computeSomethingRatherLong"), "the hunk's context goes along: " + text);
    // The phone marks it sent.
    await page.locator(".rv-comment-sent", { hasText: "Sent to the agent" }).waitFor({ timeout: WAIT_MS });
    const kept = await server.ok("GET", `/api/sessions/${session.id}/review/comments`);
    assert.equal(kept.length, 1);
    assert.ok(kept[0].sentAt);

    // Looks good: a short directive too.
    await page.getByRole("button", { name: "Looks good" }).click();
    await page.locator(".rv-bar [role=status]", { hasText: "Approval sent" }).waitFor({ timeout: WAIT_MS });
    const inbox = await server.ok("GET", `/api/mail/inbox/${session.id}?projectId=${project.id}`);
    assert.equal(inbox.at(-1).subject, "Review: looks good");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("Fleet shows each session's change count", async () => {
  const context = await phone(browser);
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/#/fleet`);
    await live(page);
    const row = page.locator(".row-link", { hasText: "refactor agent" });
    await row.locator(".change-count").waitFor({ timeout: WAIT_MS });
    assert.equal(await row.locator(".change-count").innerText(), "3 files +4 −3");
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `review-fleet-${scheme}`);
    }
  } finally {
    await context.close();
  }
});
