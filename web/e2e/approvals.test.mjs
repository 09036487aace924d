// End to end: tool approvals. An agent's permission hook (`maestro approve --tool claude-code`,
// as Claude Code runs it) asks; the phone shows the request on Needs you at 390×844 and the
// tap answers the hook.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

let server;
let browser;
let project;
let session;
/** Whether the binary has `maestro approve`; without it the hook is played with REST calls. */
let hasCli = false;

before(async () => {
  server = await startServer();
  browser = await launch();
  project = await server.ok("POST", "/api/projects", { name: "approvals" });
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Clean up" });
  session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [task.id],
    name: "Agent Hook",
    status: "working",
  });
  hasCli = (await server.cli(["approve", "--help"])).code === 0;
  if (!hasCli) console.log("# `maestro approve` is missing from this binary: the hook is played over REST");
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Claude Code's PermissionRequest hook payload for a Bash command. */
function payload(command, description = "Clean the build") {
  return {
    session_id: "abc",
    transcript_path: "/tmp/t.jsonl",
    cwd: "/tmp",
    permission_mode: "default",
    hook_event_name: "PermissionRequest",
    tool_name: "Bash",
    tool_input: { command, description },
  };
}

/**
 * Asks as the agent's hook does; resolves to {code, stdout, stderr} once it is answered. With
 * the CLI, that is the real process; without, the REST calls it makes and an equivalent stdout.
 */
function ask(command) {
  if (hasCli) {
    return new Promise((resolve) => {
      const p = spawn(server.binary, ["approve", "--tool", "claude-code"], {
        env: {
          ...server.env,
          MAESTRO_SESSION_ID: session.id,
          MAESTRO_PROJECT_ID: project.id,
          MAESTRO_SERVER_URL: server.url,
        },
        stdio: ["pipe", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      p.stdout.on("data", (d) => (stdout += d));
      p.stderr.on("data", (d) => (stderr += d));
      p.on("exit", (code) => resolve({ code, stdout, stderr }));
      p.stdin.end(JSON.stringify(payload(command)));
    });
  }
  return (async () => {
    const created = await server.ok("POST", `/api/sessions/${session.id}/approvals`, {
      agentTool: "claude-code",
      toolName: "Bash",
      input: { command, description: "Clean the build" },
    });
    const a = created.status === "pending" ? await server.ok("GET", `/api/approvals/${created.id}/wait?timeout=30000`) : created;
    const behavior = a.status === "allowed" ? "allow" : "deny";
    const decision = { behavior, ...(a.reason ? { message: a.reason } : {}) };
    const stdout = JSON.stringify({ hookSpecificOutput: { hookEventName: "PermissionRequest", decision } });
    return { code: 0, stdout, stderr: "" };
  })();
}

async function openPage(hash = "#/") {
  const context = await phone(browser);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(server.url + "/" + hash);
  await live(page);
  return { context, page, errors };
}

function card(page, command) {
  return page.locator("article.card-approval", { hasText: command });
}

test("Allow on the phone lets the hook run the command", async () => {
  const { context, page, errors } = await openPage("#/");
  try {
    const answered = ask("rm -rf build/");
    const c = card(page, "rm -rf build/");
    await c.waitFor({ timeout: WAIT_MS });
    // Who asks, for what, and the whole command, in a monospace block.
    await c.getByText("asks to run").waitFor();
    assert.equal(await c.locator(".card-title").textContent(), "Agent Hook");
    assert.equal(await c.locator("pre.approval-input").textContent(), "rm -rf build/");
    assert.match(await c.locator(".meta").nth(1).textContent(), /approvals · claude-code/);
    assert.match(await page.locator(".nav-count").textContent(), /^[1-9]/);
    const font = await c.locator("pre.approval-input code").evaluate((el) => getComputedStyle(el).fontFamily);
    assert.match(font, /mono/i);
    for (const name of ["Allow", "Deny…", "Always for this session"]) {
      const box = await c.getByRole("button", { name, exact: true }).boundingBox();
      assert.ok(box && box.height >= 44, `${name}: ${JSON.stringify(box)}`);
    }
    const violations = await axe(page);
    assert.deepEqual(violations, [], JSON.stringify(violations, null, 1));
    await shot(page, "approval-needs-you");

    await c.getByRole("button", { name: "Allow", exact: true }).click();
    const out = await answered;
    assert.equal(out.code, 0, out.stderr);
    assert.ok(out.stdout.includes('"behavior":"allow"'), out.stdout);
    await c.waitFor({ state: "detached", timeout: WAIT_MS });
    const [a] = await server.ok("GET", `/api/sessions/${session.id}/approvals`);
    assert.equal(a.status, "allowed");
    assert.ok(a.decisionRequestId, "the decision carried a requestId");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("Deny with a reason tells the hook why", async () => {
  const { context, page, errors } = await openPage("#/");
  try {
    const answered = ask("git push --force");
    const c = card(page, "git push --force");
    await c.waitFor({ timeout: WAIT_MS });
    await c.getByRole("button", { name: "Deny…" }).click();
    await c.getByLabel("Reason (optional)").fill("Never force-push main");
    await shot(page, "approval-deny");
    await c.getByRole("button", { name: "Deny", exact: true }).click();
    const out = await answered;
    assert.equal(out.code, 0, out.stderr);
    assert.ok(out.stdout.includes('"behavior":"deny"'), out.stdout);
    assert.ok(out.stdout.includes("Never force-push main"), out.stdout);
    await c.waitFor({ state: "detached", timeout: WAIT_MS });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("Always for this session: the same request is then allowed without asking", async () => {
  const { context, page, errors } = await openPage(`#/s/${session.id}`);
  try {
    // On the session screen this time: its Approvals section has the same card.
    const answered = ask("npm test");
    const c = card(page, "npm test");
    await c.waitFor({ timeout: WAIT_MS });
    await page.getByRole("heading", { name: "Approvals" }).waitFor();
    await c.getByRole("button", { name: "Always for this session" }).click();
    const out = await answered;
    assert.equal(out.code, 0, out.stderr);
    assert.ok(out.stdout.includes('"behavior":"allow"'), out.stdout);
    await c.waitFor({ state: "detached", timeout: WAIT_MS });

    // Asked again: answered at once by the rule, never shown.
    let shown = false;
    const watch = page.locator("article.card-approval").waitFor({ timeout: 3_000 }).then(
      () => (shown = true),
      () => undefined,
    );
    const t0 = Date.now();
    const again = await ask("npm test");
    assert.equal(again.code, 0, again.stderr);
    assert.ok(again.stdout.includes('"behavior":"allow"'), again.stdout);
    assert.ok(Date.now() - t0 < 5_000, "answered without waiting for a human");
    await watch;
    assert.equal(shown, false, "the repeated request did not appear");
    const all = await server.ok("GET", `/api/sessions/${session.id}/approvals`);
    assert.equal(all.filter((a) => a.status === "pending").length, 0, JSON.stringify(all));
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("decided elsewhere first: the phone says who decided", async () => {
  const { context, page, errors } = await openPage("#/");
  try {
    const answered = ask("make deploy");
    const c = card(page, "make deploy");
    await c.waitFor({ timeout: WAIT_MS });
    // Another device wins while this phone's tap is on its way: hold the tap, decide, release.
    const pending = (await server.ok("GET", `/api/approvals?projectId=${project.id}`)).find((a) => a.summary === "make deploy");
    await page.route("**/api/approvals/*/decision", async (route) => {
      await server.ok("POST", `/api/approvals/${pending.id}/decision`, { decision: "deny", reason: "not today" });
      await route.continue();
    });
    await c.getByRole("button", { name: "Allow", exact: true }).click();
    await page.getByRole("status").filter({ hasText: /Already denied by .*: not today/ }).waitFor({ timeout: WAIT_MS });
    const out = await answered;
    assert.ok(out.stdout.includes('"behavior":"deny"'), out.stdout);
    await page.getByRole("button", { name: "OK" }).click();
    await card(page, "make deploy").waitFor({ state: "detached", timeout: WAIT_MS });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("asked before the page opened, and while it was offline: both shown; a retried tap decides once", async () => {
  // Snapshots carry no approvals: this one comes from the fetch after the first sync.
  const first = ask("cargo publish");
  await new Promise((r) => setTimeout(r, 500));
  const { context, page, errors } = await openPage("#/");
  try {
    await card(page, "cargo publish").waitFor({ timeout: WAIT_MS });
    await context.setOffline(true);
    await page.locator('.conn[data-state="offline"]').waitFor({ timeout: WAIT_MS });
    const second = ask("cargo yank");
    await new Promise((r) => setTimeout(r, 300));
    await context.setOffline(false);
    await live(page);
    const c = card(page, "cargo yank");
    await c.waitFor({ timeout: WAIT_MS });
    // Oldest first.
    const order = await page.locator("article.card-approval pre").allTextContents();
    assert.deepEqual(order, ["cargo publish", "cargo yank"]);

    // The first try fails on the network: the tap is retried with the same requestId. (Had
    // the server decided, its approval:decided event would take the card away; a repeat of
    // the same requestId is answered as the first time, checked below.)
    const keys = [];
    await page.route("**/api/approvals/*/decision", async (route) => {
      keys.push(route.request().postDataJSON().requestId);
      if (keys.length === 1) await route.abort("connectionreset");
      else await route.continue();
    });
    await c.getByRole("button", { name: "Allow", exact: true }).dblclick();
    await c.getByRole("alert").waitFor({ timeout: WAIT_MS });
    assert.equal(keys.length, 1, "a double tap sends one request");
    await c.getByRole("button", { name: "Allow", exact: true }).click();
    await c.waitFor({ state: "detached", timeout: WAIT_MS });
    assert.equal(keys.length, 2);
    assert.ok(keys[0] && keys[0] === keys[1], JSON.stringify(keys));
    assert.ok((await second).stdout.includes('"behavior":"allow"'));
    const yank = (await server.ok("GET", `/api/sessions/${session.id}/approvals`)).find((a) => a.summary === "cargo yank");
    const again = await server.call("POST", `/api/approvals/${yank.id}/decision`, { decision: "allow", requestId: keys[0] });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(again.body.decisionRequestId, keys[0]);

    await card(page, "cargo publish").getByRole("button", { name: "Allow", exact: true }).click();
    assert.ok((await first).stdout.includes('"behavior":"allow"'));
    await page.getByText("No agent is waiting for you.").waitFor({ timeout: WAIT_MS });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
