// Tool approvals with the official client (issue 16): an agent's permission hook
// (`maestro approve`, fed the payload Claude Code documents) asks; the request reaches a phone on
// /mobile and the desktop app on /ui; both try to decide at once; exactly one decision wins, and
// the hook prints that decision in Claude Code's format.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, test } from "node:test";

import { WAIT_MS, binary, connect, startServer } from "./helpers.mjs";

/** Runs `maestro approve` as a hook runner would; resolves to {code, stdout, stderr}. */
function hook(server, sessionId, command) {
  const child = spawn(binary(), ["approve", "--tool", "claude-code"], {
    env: {
      PATH: process.env.PATH,
      HOME: server.dataDir,
      MAESTRO_SERVER_URL: server.url,
      MAESTRO_SESSION_ID: sessionId,
    },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  child.stdin.end(
    JSON.stringify({
      session_id: "c1aude-0001",
      transcript_path: "/tmp/t.jsonl",
      cwd: "/tmp",
      permission_mode: "default",
      hook_event_name: "PermissionRequest",
      tool_name: "Bash",
      tool_input: { command, description: "clean up" },
    }),
  );
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the hook did not finish within ${WAIT_MS} ms: ${stderr}`));
    }, WAIT_MS);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done };
}

/** Skips events until one named `name`; resolves to its payload. */
async function until(client, name) {
  for (;;) {
    const e = await client.next();
    if (e.name === name) return e.payload;
  }
}

describe("approvals over Socket.IO", () => {
  let server;
  let project;
  let session;

  before(async () => {
    server = await startServer();
    project = await server.ok("POST", "/api/projects", { name: "approvals" });
    session = await server.ok("POST", "/api/sessions", {
      projectId: project.id,
      name: "cleaner",
      taskIds: [],
    });
  });
  after(async () => {
    await server?.stop();
  });

  test("a request reaches /mobile and /ui; of two racing decisions one wins and reaches the hook", async () => {
    const phone = await connect(server, "/mobile", { auth: { projectId: project.id } }).connected();
    const desktop = await connect(server, "/ui").connected();

    const { done } = hook(server, session.id, "rm -rf build/");
    const seen = await until(phone, "approval:requested");
    assert.equal(seen.data.toolName, "Bash");
    assert.equal(seen.data.input.command, "rm -rf build/");
    assert.equal(seen.data.status, "pending");
    const onDesktop = await until(desktop, "approval:requested");
    assert.equal(onDesktop.data.id, seen.data.id);

    const [fromPhone, fromDesktop] = await Promise.all([
      phone.call("approval:decide", { approvalId: seen.data.id, decision: "allow", requestId: "phone-1" }),
      desktop.call("approval:decide", {
        approvalId: seen.data.id,
        decision: "deny",
        reason: "not today",
        requestId: "desk-1",
      }),
    ]);
    const acks = [fromPhone, fromDesktop];
    const winners = acks.filter((a) => a.ok);
    const losers = acks.filter((a) => !a.ok);
    assert.equal(winners.length, 1, JSON.stringify(acks));
    assert.equal(losers[0].error.code, "APPROVAL_DECIDED", JSON.stringify(losers[0]));
    const won = winners[0].approval;

    const { code, stdout, stderr } = await done;
    assert.equal(code, 0, stderr);
    const out = JSON.parse(stdout);
    assert.equal(out.hookSpecificOutput.hookEventName, "PermissionRequest");
    if (won.decision === "allow") {
      assert.deepEqual(out.hookSpecificOutput.decision, { behavior: "allow" });
    } else {
      assert.deepEqual(out.hookSpecificOutput.decision, { behavior: "deny", message: "not today" });
    }
    const decided = await until(phone, "approval:decided");
    assert.equal(decided.data.id, won.id);
    assert.equal(decided.data.decision, won.decision);

    // The same tap again answers as the first time; the loser's retry still loses.
    const repeat = fromPhone.ok ? fromPhone : fromDesktop;
    const again = await (repeat === fromPhone ? phone : desktop).call("approval:decide", {
      approvalId: won.id,
      decision: won.decision,
      reason: won.reason ?? undefined,
      requestId: won.decisionRequestId,
    });
    assert.equal(again.ok, true, JSON.stringify(again));
    assert.equal(again.approval.decidedAt, won.decidedAt);
    phone.close();
    desktop.close();
  });

  test("a read-only device sees requests but may not decide", async () => {
    const token = (await server.ok("POST", "/api/auth/tokens", { scope: "read", name: "viewer" })).token;
    const viewer = await connect(server, "/mobile", { auth: { token, projectId: project.id } }).connected();
    const { child, done } = hook(server, session.id, "make deploy");
    const seen = await until(viewer, "approval:requested");
    const ack = await viewer.call("approval:decide", { approvalId: seen.data.id, decision: "allow" });
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, "FORBIDDEN");
    const still = await server.ok("GET", `/api/approvals/${seen.data.id}`);
    assert.equal(still.status, "pending");
    // The agent gives up (its tool killed the hook): the request is withdrawn, and says so.
    child.kill("SIGTERM");
    const { code, stdout } = await done;
    assert.equal(code, 0);
    assert.equal(stdout.trim(), "");
    const withdrawn = await until(viewer, "approval:decided");
    assert.equal(withdrawn.data.id, seen.data.id);
    assert.equal(withdrawn.data.status, "cancelled");
    viewer.close();
  });
});
