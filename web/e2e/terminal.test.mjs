// End to end: runners and the live terminal from the phone (docs/runners.md). The real binary
// runs its own runner with an agents file that adds a `shell` agent (an interactive bash); the
// phone spawns it, watches its terminal, takes control, types, and stops it.
//
// The terminal page runs under the server's real Content-Security-Policy (no `bypassCSP`):
// xterm.js writes `<style>` elements that the policy refuses, and the app must render anyway.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, test } from "node:test";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

let server;
let browser;
let project;
let task;
let local;
let dir;
/** The shell session the first test starts; the second shows it on Fleet. */
let sessionId;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "maestro-web-terminal-"));
  const agents = join(dir, "agents.toml");
  writeFileSync(
    agents,
    '[agents.shell]\ncommand = ["bash", "--norc", "--noprofile", "-i"]\nprompt = "none"\n\n' +
      '[agents.missing]\ncommand = ["surely-not-installed-agent"]\nprompt = "none"\n',
  );
  server = await startServer({ RUNNER: "on", AGENTS_FILE: agents, STOP_GRACE_MS: "300" });
  browser = await launch();
  project = await server.ok("POST", "/api/projects", { name: "terminal", workingDir: dir });
  task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Say hi from a shell" });
  // The server's own runner registers at start-up.
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const list = await server.ok("GET", "/api/runners");
    local = list.find((r) => r.local && r.online);
    if (local?.agents.includes("shell")) break;
    if (Date.now() > deadline) throw new Error(`no local runner with the shell agent: ${JSON.stringify(list)}`);
    await sleep(50);
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The terminal's rows as text (xterm's DOM renderer keeps one element per row). */
function screenText(page) {
  return page.locator(".term-frame .xterm-rows").innerText();
}

async function until(what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test("spawn a shell from the phone, type into its terminal, stop it", async () => {
  const context = await phone(browser, { bypassCSP: false });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const terminals = [];
  /** The terminal connections' text messages, both ways, for a failure's message. */
  const messages = [];
  /** Everything the terminal connections received, as text. */
  let received = "";
  page.on("websocket", (ws) => {
    if (!ws.url().endsWith("/terminal")) return;
    terminals.push(ws);
    ws.on("framereceived", (f) => {
      received += typeof f.payload === "string" ? f.payload : f.payload.toString("utf8");
      if (typeof f.payload === "string") messages.push(`${terminals.length} < ${f.payload}`);
    });
    ws.on("framesent", (f) => typeof f.payload === "string" && messages.push(`${terminals.length} > ${f.payload}`));
  });
  try {
    await page.goto(`${server.url}/#/spawn/${task.id}`);
    await live(page);

    // Spawn: the server's own machine is picked, its agents are offered, no worktree by default.
    const machine = page.locator("#sp-machine");
    await machine.waitFor({ timeout: WAIT_MS });
    assert.equal(await machine.inputValue(), local.machineId);
    assert.match(await machine.locator("option:checked").innerText(), /this server/);
    const agent = page.locator("#sp-agent");
    assert.deepEqual(await agent.locator("option").allInnerTexts(), local.agents);
    await agent.selectOption("shell");
    assert.equal(await page.locator("#sp-worktree").isChecked(), false);
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `spawn-pickers-${scheme}`);
    }
    await page.emulateMedia({ colorScheme: "light" });

    const spawned = page.waitForRequest("**/api/sessions/spawn");
    await page.getByRole("button", { name: "Start agent" }).click();
    const body = (await spawned).postDataJSON();
    assert.equal(body.machineId, local.machineId);
    assert.equal(body.agentTool, "shell");
    assert.equal(body.worktree, false);
    await page.waitForURL(/#\/s\/[^?]+/, { timeout: WAIT_MS });
    sessionId = decodeURIComponent(page.url().match(/#\/s\/([^?]+)/)[1]);

    // The session says who launched it and where.
    const placement = page.locator(".placement");
    await placement.locator(".machine-name", { hasText: local.hostname }).waitFor({ timeout: WAIT_MS });
    assert.match(await placement.innerText(), /Runner/);

    // The Terminal tab: xterm.js arrives as its own chunk, connects, shows bash's prompt.
    const chunk = page.waitForResponse((r) => /\/assets\/view-[^/]+\.js$/.test(r.url()));
    await page.getByRole("tab", { name: "Terminal" }).click();
    assert.equal((await chunk).status(), 200);
    await page.locator('.term-link[data-link="live"]').waitFor({ timeout: WAIT_MS });
    // bash's own prompt without a profile: `bash-5.2$ `, or `#` as root.
    await until("bash's prompt", async () => /bash-[\d.]+[$#]\s*$/m.test(await screenText(page)));
    // Rendered as a terminal despite the CSP: xterm's own rules (its monospace font) apply.
    const font = await page.locator(".term-frame .xterm-rows").evaluate((el) => getComputedStyle(el).fontFamily);
    assert.match(font, /monospace/, font);

    // Not in control yet: the key bar is there but does not type.
    const enter = page.getByRole("button", { name: "Enter", exact: true });
    assert.equal(await enter.isDisabled(), true);
    await page.getByRole("button", { name: "Take control" }).click();
    await page.locator('[data-control="you"]').waitFor({ timeout: WAIT_MS });
    // In control, the host's terminal takes the size that fits the phone.
    await until("the fitted size", async () => {
      const cols = Number(await page.locator(".term-frame").getAttribute("data-cols"));
      return cols > 20 && cols <= 60;
    });

    await page.locator(".term-frame .xterm-helper-textarea").focus();
    await page.keyboard.type("echo hi");
    await until("the typed command", async () => (await screenText(page)).includes("echo hi"));
    await enter.click();
    await until("hi on its own line", async () => /^hi\s*$/m.test(await screenText(page)));

    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `terminal-${scheme}`);
    }
    await page.emulateMedia({ colorScheme: "light" });

    // The network drops and comes back: a new connection, whose snapshot still shows the output.
    assert.equal(terminals.length, 1);
    await context.setOffline(true);
    await context.setOffline(false);
    await until("a second terminal connection", async () => terminals.length === 2);
    await page.locator('.term-link[data-link="live"]').waitFor({ timeout: WAIT_MS });
    await until("the snapshot after reconnecting", async () => /^hi\s*$/m.test(await screenText(page)));
    // Control belonged to the old connection: take it again, and typing works again.
    if ((await page.locator('[data-control="you"]').count()) === 0) {
      await page.getByRole("button", { name: "Take control" }).click();
      await page.locator('[data-control="you"]').waitFor({ timeout: WAIT_MS });
    }
    await page.locator(".term-frame .xterm-helper-textarea").focus();
    await page.keyboard.type("echo again");
    await enter.click();
    await until("again on its own line", async () => /^again\s*$/m.test(await screenText(page))).catch(async (e) => {
      throw new Error(`${e.message}; screen: ${JSON.stringify(await screenText(page))}; messages: ${messages.join(" | ")}`);
    });

    // Follow off: output goes on arriving while the screen stays where the user scrolled.
    const firstRow = async () => (await screenText(page)).split("\n")[0];
    await page.keyboard.type("seq 1 300");
    await enter.click();
    await until("the numbers", async () => /^300\s*$/m.test(await screenText(page)));
    // Typing scrolls to the bottom, as in any terminal: the output comes 2 s after the Enter.
    received = "";
    await page.keyboard.type("sleep 2; seq 1000 1100");
    await enter.click();
    await page.getByRole("button", { name: "Following" }).click();
    await page.locator(".term-frame .xterm-screen").hover();
    const before = await firstRow();
    for (let i = 0; i < 5; i++) await page.mouse.wheel(0, -300);
    await until("the scrollback to move", async () => (await firstRow()) !== before);
    const held = await firstRow();
    await until("the output to arrive", async () => received.includes("1100"));
    // xterm.js parses in a task after the message and draws on the next frames.
    await page.evaluate(() => new Promise((r) => setTimeout(() => requestAnimationFrame(() => requestAnimationFrame(r)), 0)));
    assert.equal(await firstRow(), held, "the screen stayed where it was scrolled");
    await page.getByRole("button", { name: "Follow", exact: true }).click();
    await until("the newest output in view", async () => /^1100\s*$/m.test(await screenText(page)));

    // Stop, confirmed first: the agent really ends, and the session says `stopped`.
    await page.getByRole("button", { name: "Stop…" }).click();
    await page.getByRole("button", { name: "Stop the agent" }).click();
    await page.locator(".screen-head .badge", { hasText: "stopped" }).waitFor({ timeout: WAIT_MS });
    const s = await server.ok("GET", `/api/sessions/${sessionId}`);
    assert.equal(s.status, "stopped");
    // The terminal noticed too: no longer a live agent.
    await until("the terminal to see the end", async () => !/^Live · \d/.test(await page.locator(".term-link").innerText()));
    // A finished runner session can be resumed.
    await page.getByRole("button", { name: "Resume" }).waitFor({ timeout: WAIT_MS });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, "session-runner-stopped-light");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("Fleet lists the machines, live, and which machine runs each session", async () => {
  assert.ok(sessionId, "the first test spawned a session");
  const context = await phone(browser);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${server.url}/#/fleet`);
    await live(page);
    const row = page.locator(`.machine[data-runner="${local.id}"]`);
    await row.waitFor({ timeout: WAIT_MS });
    const text = await row.innerText();
    assert.match(text, new RegExp(local.hostname));
    assert.match(text, /this server/);
    assert.match(text, /\d+ of \d+ running/);
    assert.match(text, /shell/);

    // Another machine joins: it appears without a reload (`runner:updated` on /mobile).
    await server.ok("POST", "/api/runners", {
      machineId: "e2e-build-box",
      hostname: "build-box",
      agents: ["codex"],
      capacity: 4,
      version: "e2e",
    });
    await page.locator(".machine", { hasText: "build-box" }).waitFor({ timeout: WAIT_MS });

    // The stopped shell session (under All) says where it ran.
    await page.getByRole("button", { name: "All" }).click();
    const session = page.locator(`a.row-link[href="#/s/${sessionId}"]`);
    await session.waitFor({ timeout: WAIT_MS });
    assert.match(await session.innerText(), new RegExp(`on ${local.hostname}`));

    const violations = await axe(page);
    assert.deepEqual(violations, [], JSON.stringify(violations, null, 1));
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      await shot(page, `fleet-machines-${scheme}`);
    }
    await page.getByRole("button", { name: "Active" }).click();
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("a read-only phone watches the terminal, with no key bar and no take-control", async () => {
  const spawned = await server.ok("POST", "/api/sessions/spawn", {
    projectId: project.id,
    taskIds: [task.id],
    agentTool: "shell",
    machineId: local.machineId,
  });
  // Paired with `respond`, through what looks like the tunnel (no local trust): it may not type.
  const pairing = await server.ok("POST", "/api/auth/pairings", { scope: "respond" });
  const context = await phone(browser, { bypassCSP: false, extraHTTPHeaders: { "X-Forwarded-For": "203.0.113.9" } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${server.url}/pair#c=${pairing.code}`);
    await page.locator("#device-name").fill("Watching phone");
    await page.getByRole("button", { name: "Pair" }).click();
    await live(page);
    await page.evaluate((id) => (location.hash = `#/s/${id}?tab=terminal`), spawned.sessionId);
    await page.locator('.term-link[data-link="live"]').waitFor({ timeout: WAIT_MS });
    await until("bash's prompt", async () => /bash-[\d.]+[$#]\s*$/m.test(await screenText(page)));
    await page.locator(".term-control", { hasText: "Read only" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Take control" }).count(), 0);
    assert.equal(await page.locator(".keybar").count(), 0);
    // Nor Stop: that needs operate.
    assert.equal(await page.getByRole("button", { name: "Stop…" }).count(), 0);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await server.ok("POST", `/api/sessions/${spawned.sessionId}/stop`, {});
  }
});

test("an agent that cannot start: the session says why", async () => {
  const spawned = await server.ok("POST", "/api/sessions/spawn", {
    projectId: project.id,
    taskIds: [task.id],
    agentTool: "missing",
    machineId: local.machineId,
  });
  const context = await phone(browser);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await page.goto(`${server.url}/#/s/${spawned.sessionId}`);
    await live(page);
    const failure = page.locator(".failure");
    await failure.waitFor({ timeout: WAIT_MS });
    assert.match(await failure.locator(".failure-title").innerText(), /Failed: agent not found/);
    assert.match(await failure.locator(".failure-detail").innerText(), /surely-not-installed-agent is not on PATH/);
    assert.deepEqual(await axe(page), []);
    await shot(page, "session-failed-light");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
