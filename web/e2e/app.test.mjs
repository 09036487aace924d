// End to end: the built app, served by the real binary, in Debian's Chromium at 390×844.
// Build the app (`npm run build`) and the binary (`cargo build -p maestro`) first; `cargo
// xtask test` does both.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";

import { io } from "socket.io-client";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

let server;
let browser;
let project;

before(async () => {
  server = await startServer();
  browser = await launch();
  project = await server.ok("POST", "/api/projects", { name: "demo" });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function openPage(hash = "#/") {
  const context = await phone(browser);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(server.url + "/" + hash);
  await live(page);
  return { context, page, errors };
}

/** A session as an agent makes it: registered on a task (the REST route the CLI uses). */
async function agentSession(name, taskTitle) {
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: taskTitle });
  const session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [task.id],
    name,
    status: "working",
  });
  return { task, session };
}

test("a task created over the API appears on the board without a reload", async () => {
  const { context, page, errors } = await openPage(`#/board/${project.id}`);
  try {
    await page.locator(".column").first().waitFor();
    const marker = await page.evaluate(() => (window.__marker = Math.random()));
    await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Appears live" });
    const card = page.locator('.column[data-status="todo"] .task-card', { hasText: "Appears live" });
    await card.waitFor({ timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => window.__marker), marker, "the page was not reloaded");
    // Moving it (PATCH from the task page) moves it on the board.
    await card.click();
    await page.locator("#task-status").selectOption("in_progress");
    await page.locator('a.link', { hasText: "Board" }).click();
    await page
      .locator('.column[data-status="in_progress"] .task-card', { hasText: "Appears live" })
      .waitFor({ timeout: WAIT_MS });
    const tasks = await server.ok("GET", `/api/tasks?projectId=${project.id}`);
    assert.equal(tasks.find((t) => t.title === "Appears live").status, "in_progress");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("needs-input shows on Needs you and the reply reaches the agent", async () => {
  const { session } = await agentSession("Agent Q", "Choose a database");
  const { context, page, errors } = await openPage("#/");
  try {
    // The agent's Stop hook, as a real agent runs it.
    const hook = await server.cli(["session", "needs-input", "--message", "Postgres or SQLite?"], {
      MAESTRO_SESSION_ID: session.id,
      MAESTRO_PROJECT_ID: project.id,
    });
    assert.equal(hook.code, 0, hook.stderr);
    const card = page.locator("article.card-ask", { hasText: "Agent Q" });
    await card.locator(".question", { hasText: "Postgres or SQLite?" }).waitFor({ timeout: WAIT_MS });

    // The agent waits for mail, as `maestro mail wait` does; a socket watches the session.
    const watcher = io(server.url + "/mobile", {
      auth: { projectId: project.id },
      transports: ["websocket"],
      forceNew: true,
    });
    const input = new Promise((resolve) => watcher.on("session:input", resolve));
    await new Promise((resolve) => watcher.on("connect", resolve));
    const waiting = server.cli(["mail", "wait", "--json", "--timeout", "15000"], {
      MAESTRO_SESSION_ID: session.id,
      MAESTRO_PROJECT_ID: project.id,
    });

    await card.locator("input[type=text]").fill("SQLite, keep it simple");
    await card.getByRole("button", { name: "Send answer" }).click();

    const got = await waiting;
    assert.equal(got.code, 0, got.stderr);
    const mail = JSON.parse(got.stdout);
    assert.ok(JSON.stringify(mail).includes("SQLite, keep it simple"), got.stdout);
    const event = await input;
    assert.equal(event.data.sessionId, session.id);
    assert.equal(event.data.message, "SQLite, keep it simple");
    watcher.close();

    // Answered: it leaves Needs you.
    await card.waitFor({ state: "detached", timeout: WAIT_MS });
    const s = await server.ok("GET", `/api/sessions/${session.id}`);
    assert.equal(s.needsInput.active, false);
    assert.equal(s.timeline.at(-1).type, "user_reply");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("an answer from the phone is typed into the agent that `maestro run` hosts", async () => {
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Pick a port" });
  // The agent: says it is ready, asks (the needs-input hook), then reads one line from its
  // terminal, which is where `maestro run` types replies.
  const script =
    'echo "ready $MAESTRO_SESSION_ID"; "$MAESTRO_BIN_SELF" session needs-input --message "Which port?"; ' +
    'read line; echo "got: $line"';
  const child = spawn(server.binary, ["run", "--project", project.id, "--task", task.id, "--", "sh", "-c", script], {
    env: { ...server.env, MAESTRO_BIN_SELF: server.binary },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  const seen = (pattern) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const m = out.match(pattern);
        if (m) return resolve(m);
      };
      child.stdout.on("data", (d) => {
        out += d;
        check();
      });
      check();
      setTimeout(() => reject(new Error(`no ${pattern} in: ${out}`)), WAIT_MS * 2);
    });
  const ready = seen(/ready (sess_\S+)/);
  const got = seen(/got: (.*)/);
  const { context, page, errors } = await openPage("#/");
  try {
    await ready;
    const card = page.locator("article.card-ask", { hasText: "Which port?" });
    await card.locator(".question", { hasText: "Which port?" }).waitFor({ timeout: WAIT_MS });
    await card.locator("input[type=text]").fill("8080");
    await card.getByRole("button", { name: "Send answer" }).click();
    assert.equal((await got)[1].trim(), "8080");
    assert.deepEqual(errors, []);
  } finally {
    child.kill("SIGTERM");
    await context.close();
  }
});

test("offline while 50 events happen: back online, all 50 shown once, in order", async () => {
  const { context, page, errors } = await openPage(`#/board/${project.id}`);
  try {
    await page.locator(".column").first().waitFor();
    await context.setOffline(true);
    await page.locator('.conn[data-state="offline"]', { hasText: "Offline since" }).waitFor({ timeout: WAIT_MS });
    const syncsBefore = await page.evaluate(() => window.__maestroStats?.syncs);

    const titles = Array.from({ length: 50 }, (_, i) => `Offline ${String(i).padStart(2, "0")}`);
    const seqs = [];
    const watcher = io(server.url + "/mobile", { auth: { projectId: project.id }, transports: ["websocket"], forceNew: true });
    watcher.on("task:created", (e) => seqs.push(e.seq));
    await new Promise((resolve) => watcher.on("connect", resolve));
    for (const title of titles) await server.ok("POST", "/api/tasks", { projectId: project.id, title });
    while (seqs.length < 50) await new Promise((r) => setTimeout(r, 20));
    watcher.close();

    await context.setOffline(false);
    await live(page);
    const todo = page.locator('.column[data-status="todo"] .task-card', { hasText: "Offline " });
    await page.waitForFunction(() => document.querySelectorAll('.column[data-status="todo"] .task-card').length >= 50);
    const shown = (await todo.locator(".task-title").allTextContents()).filter((t) => t.startsWith("Offline "));
    assert.deepEqual(shown, titles, "every task once, in creation order");

    // The activity feed lists the 50 events once each, newest first, by consecutive seq.
    const feed = await page.locator(".activity li").evaluateAll((els) =>
      els.map((el) => ({ seq: Number(el.dataset.seq), text: el.textContent })),
    );
    const offline = feed.filter((f) => f.text.includes("Task created: Offline "));
    assert.equal(offline.length, 50, JSON.stringify(feed.slice(0, 5)));
    assert.deepEqual(
      offline.map((f) => f.seq).reverse(),
      seqs,
      "the seqs the server sent, each once, in order",
    );
    assert.deepEqual(
      offline.map((f) => f.text.replace(/^.*Task created: /, "")).reverse(),
      titles,
    );
    // Recovered by replay from lastSeq, not by a fresh snapshot.
    assert.equal(await page.evaluate(() => window.__maestroStats?.syncs), syncsBefore);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("spawning from the phone creates exactly one session on a double tap and a retry", async () => {
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Spawn once" });
  const { context, page, errors } = await openPage(`#/spawn/${task.id}`);
  try {
    // The first answer is lost on the way back (the server did spawn): the phone shows an
    // error, the user taps again, and the same idempotency key makes that a replay.
    const keys = [];
    await page.route("**/api/sessions/spawn", async (route) => {
      keys.push(route.request().headers()["idempotency-key"]);
      if (keys.length === 1) {
        await route.fetch();
        await route.abort("connectionreset");
      } else {
        await route.continue();
      }
    });
    const button = page.getByRole("button", { name: "Start agent" });
    await button.waitFor();
    await button.dblclick();
    await page.getByRole("alert").waitFor({ timeout: WAIT_MS });
    assert.equal(keys.length, 1, "a double tap sends one request");
    await button.click();
    await page.waitForURL(/#\/s\//, { timeout: WAIT_MS });
    assert.equal(keys.length, 2);
    assert.ok(keys[0] && keys[0] === keys[1], JSON.stringify(keys));
    const sessions = await server.ok("GET", `/api/sessions?projectId=${project.id}&taskId=${task.id}`);
    assert.equal(sessions.length, 1, JSON.stringify(sessions.map((s) => s.id)));
    assert.ok(page.url().endsWith(`#/s/${sessions[0].id}`));
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("coming back after the phone slept shows what happened, without a reload", async () => {
  const context = await phone(browser);
  const page = await context.newPage();
  // Every Socket.IO WebSocket goes through here, so the test can make one look open while it
  // carries nothing: what a phone's socket is like after the phone slept.
  const links = [];
  await page.routeWebSocket(/\/socket\.io\//, (ws) => {
    const upstream = ws.connectToServer();
    const link = { dead: false };
    links.push(link);
    upstream.onMessage((m) => !link.dead && ws.send(m));
    ws.onMessage((m) => !link.dead && upstream.send(m));
  });
  try {
    await page.goto(`${server.url}/#/board/${project.id}`);
    await live(page);
    await page.locator(".column").first().waitFor();
    const marker = await page.evaluate(() => (window.__marker = Math.random()));
    const setVisibility = (state) =>
      page.evaluate((s) => {
        Object.defineProperty(document, "visibilityState", { configurable: true, get: () => s });
        document.dispatchEvent(new Event("visibilitychange"));
      }, state);

    for (const l of links) l.dead = true;
    await setVisibility("hidden");
    const titles = ["Slept 0", "Slept 1", "Slept 2"];
    for (const title of titles) await server.ok("POST", "/api/tasks", { projectId: project.id, title });
    // The app reconnects when it was hidden for more than 5 s (a short glance keeps the socket).
    await new Promise((r) => setTimeout(r, 5_200));
    const before = links.length;
    await setVisibility("visible");
    const cards = page.locator(".task-card", { hasText: "Slept " });
    await cards.nth(2).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(await cards.locator(".task-title").allTextContents(), titles);
    assert.ok(links.length > before, "a new connection was opened");
    assert.equal(await page.evaluate(() => window.__marker), marker, "no reload");
  } finally {
    await context.close();
  }
});

test("the installed app opens without a network, and says it cannot reach the server", async () => {
  const { context, page, errors } = await openPage("#/fleet");
  try {
    await page.evaluate(async () => {
      await navigator.serviceWorker.ready;
      if (!navigator.serviceWorker.controller) {
        await new Promise((r) => navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }));
      }
    });
    await context.setOffline(true);
    await page.reload();
    await page.getByRole("status").filter({ hasText: "Cannot reach the Maestro server" }).waitFor({ timeout: WAIT_MS });
    await context.setOffline(false);
    // Back online: it gets in by itself.
    await live(page);
    await page.getByRole("heading", { name: "Fleet" }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("in the background, a session that needs input raises a notification", async () => {
  const { session } = await agentSession("Agent Ping", "Background work");
  const context = await phone(browser);
  await context.grantPermissions(["notifications"], { origin: server.url });
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/#/settings`);
    await live(page);
    await page.locator('[data-testid="notifications"]', { hasText: "On:" }).waitFor();
    // Record what the app asks the service worker to show.
    await page.evaluate(async () => {
      const reg = await navigator.serviceWorker.ready;
      window.__shown = [];
      reg.showNotification = async (title, options) => {
        window.__shown.push({ title, tag: options?.tag, body: options?.body });
      };
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    });
    await server.cli(["session", "needs-input", "--message", "Merge now?"], { MAESTRO_SESSION_ID: session.id });
    await page.waitForFunction(() => window.__shown.length > 0, null, { timeout: WAIT_MS });
    const shown = await page.evaluate(() => window.__shown);
    assert.deepEqual(shown, [{ title: "Agent Ping needs your answer", tag: `s:${session.id}`, body: "Merge now?" }]);
  } finally {
    await context.close();
  }
});

test("stop asks first, then stops the agent", async () => {
  const { session } = await agentSession("Agent Stop", "Long job");
  const { context, page, errors } = await openPage(`#/s/${session.id}`);
  try {
    await page.getByRole("button", { name: "Stop…" }).click();
    await page.getByRole("button", { name: "Stop the agent" }).click();
    await page.locator(".badge", { hasText: "stopped" }).waitFor({ timeout: WAIT_MS });
    const s = await server.ok("GET", `/api/sessions/${session.id}`);
    assert.equal(s.status, "stopped");
    // An ended session offers no steering.
    assert.equal(await page.getByRole("button", { name: "Send directive" }).count(), 0);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("every screen: no serious accessibility violation; screenshots light and dark", async () => {
  const { task, session } = await agentSession("Agent Docs", "Write the design doc");
  await server.ok("POST", `/api/sessions/${session.id}/docs`, {
    title: "Design",
    filePath: "docs/design.md",
    content: "# Design\n\nA **bold** plan with `code` and a [link](https://example.com).\n\n- one\n- two\n\n<script>alert(1)</script>",
  });
  const waiting = await agentSession("Agent Waiting", "Pick a name");
  await server.cli(["session", "needs-input", "--message", "Should the CLI be called `mstr` or `maestro`?"], {
    MAESTRO_SESSION_ID: waiting.session.id,
  });
  // A second project: its sessions show on Needs you and Fleet next to the first one's.
  const second = await server.ok("POST", "/api/projects", { name: "second" });
  const otherTask = await server.ok("POST", "/api/tasks", { projectId: second.id, title: "Elsewhere" });
  const other = await server.ok("POST", "/api/sessions", {
    projectId: second.id,
    taskIds: [otherTask.id],
    name: "Agent Elsewhere",
    status: "working",
  });
  await server.cli(["session", "needs-input", "--message", "Ship it today?"], { MAESTRO_SESSION_ID: other.id });
  const failed = await agentSession("Agent Failed", "Flaky build");
  await server.ok("PATCH", `/api/sessions/${failed.session.id}`, { status: "failed" });
  // A tool approval (an edit, shown as a diff) on Needs you and on its session's screen.
  await server.ok("POST", `/api/sessions/${session.id}/approvals`, {
    agentTool: "claude-code",
    toolName: "Edit",
    input: { file_path: "docs/design.md", old_string: "A plan", new_string: "A **bold** plan\nwith steps" },
  });

  const screens = [
    ["needs-you", "#/", "article.card-ask"],
    ["fleet", "#/fleet", ".row-link"],
    ["session", `#/s/${session.id}`, "article.card-approval"],
    ["session-docs", `#/s/${session.id}`, null],
    ["board", `#/board/${project.id}`, ".column"],
    ["task", `#/t/${task.id}`, "#task-status"],
    ["new-task", `#/new-task/${project.id}`, "#nt-title"],
    ["spawn", `#/spawn/${task.id}`, "#sp-member"],
    ["settings", "#/settings", ".facts"],
  ];
  for (const scheme of ["light", "dark"]) {
    const { context, page, errors } = await openPage("#/");
    try {
      await page.emulateMedia({ colorScheme: scheme });
      for (const [name, hash, ready] of screens) {
        await page.evaluate((h) => (location.hash = h), hash);
        if (ready) await page.locator(ready).first().waitFor({ timeout: WAIT_MS });
        if (name === "needs-you") {
          await page.locator("article.card-ask", { hasText: "Ship it today?" }).waitFor({ timeout: WAIT_MS });
          await page.locator("article.card-ask", { hasText: "mstr" }).waitFor({ timeout: WAIT_MS });
          await page.locator("article.card-approval", { hasText: "docs/design.md" }).waitFor({ timeout: WAIT_MS });
        }
        if (name === "fleet") {
          await page.locator(".section", { hasText: "second" }).locator(".row-link", { hasText: "Agent Elsewhere" }).waitFor();
        }
        if (name === "session-docs") {
          await page.getByRole("tab", { name: /Docs/ }).click();
          await page.locator(".markdown strong", { hasText: "bold" }).waitFor();
          // Raw HTML in a doc is shown as text, never run or parsed.
          assert.equal(await page.locator(".markdown script").count(), 0);
          await page.locator(".markdown", { hasText: "<script>alert(1)</script>" }).waitFor();
        }
        const violations = await axe(page);
        assert.deepEqual(violations, [], `${name} (${scheme}): ${JSON.stringify(violations, null, 1)}`);
        // Touch targets: every button, link and field in the main area is at least 44 px tall.
        const small = await page.evaluate(() =>
          [...document.querySelectorAll("main button, main a.btn, nav a, main input, main select, main textarea")]
            .filter((el) => el.getBoundingClientRect().height > 0 && el.getBoundingClientRect().height < 44)
            .map((el) => el.outerHTML.slice(0, 80)),
        );
        assert.deepEqual(small, [], `${name}: targets under 44 px`);
        await shot(page, `${name}-${scheme}`);
      }
      // The theme setting overrides the system's: Dark in a light system, then back.
      if (scheme === "light") {
        const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
        assert.equal(await background(), "rgb(246, 247, 249)");
        await page.getByRole("radio", { name: "Dark" }).click();
        assert.equal(await background(), "rgb(17, 20, 24)");
        await page.reload();
        await live(page);
        assert.equal(await background(), "rgb(17, 20, 24)", "the choice is remembered");
        await page.getByRole("radio", { name: "System" }).click();
        assert.equal(await background(), "rgb(246, 247, 249)");
      }
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  }
});
