// Maestro's Socket.IO namespaces with the official JavaScript client: handshakes, rooms and
// events, every client event with its ack (including the error acks), and a human's reply to
// a session that needs input. docs/realtime.md is the protocol under test.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { connect, startServer } from "./helpers.mjs";

const ENVELOPE = ["data", "event", "projectId", "seq", "timestamp", "type"];

function assertEnvelope(name, payload) {
  assert.deepEqual(Object.keys(payload).sort(), ENVELOPE, JSON.stringify(payload));
  assert.equal(payload.type, name);
  assert.equal(payload.event, name);
  assert.ok(Number.isInteger(payload.seq) && payload.seq >= 1);
  assert.ok(Number.isInteger(payload.timestamp));
}

function assertError(ack, code) {
  assert.equal(ack.ok, false, JSON.stringify(ack));
  assert.equal(ack.error.code, code, JSON.stringify(ack));
  assert.equal(typeof ack.error.message, "string");
  assert.ok(ack.error.message.length > 0);
}

describe("socket.io-client against maestro", () => {
  let server;
  let a;
  let b;

  before(async () => {
    server = await startServer();
    a = await server.ok("POST", "/api/projects", { name: "a" });
    b = await server.ok("POST", "/api/projects", { name: "b" });
  });
  after(async () => {
    // SIGTERM with sockets still open: a clean, prompt exit.
    const exit = await server?.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
  });

  test("connects to /ui and /mobile over both transports", async () => {
    // The default: HTTP long-polling first, then the upgrade to WebSocket.
    const ui = await connect(server, "/ui", { transports: ["polling", "websocket"] }).connected();
    const ack = await ui.call("state:sync");
    assert.equal(ack.ok, true);
    // The client upgrades by itself; events and acks keep flowing across the switch.
    const engine = ui.socket.io.engine;
    if (engine.transport.name !== "websocket") {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no upgrade to websocket")), 5000);
        engine.once("upgrade", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    assert.equal(engine.transport.name, "websocket");
    assert.equal((await ui.call("subscribe", { sessionIds: ["s1"] })).ok, true);
    ui.close();
    const polling = await connect(server, "/mobile", {
      transports: ["polling"],
      auth: { projectId: a.id },
    }).connected();
    assert.equal((await polling.call("state:sync")).projects[0].id, a.id);
    polling.close();
    // A real token in the handshake is accepted (a local client needs none).
    const { token } = await server.ok("POST", "/api/auth/tokens", { scope: "read", name: "interop" });
    const ws = await connect(server, "/mobile", { auth: { token, projectId: a.id } }).connected();
    ws.close();
  });

  test("refuses bad handshakes with connect_error", async () => {
    const refused = async (ns, options) => {
      try {
        await connect(server, ns, options).connected();
      } catch (err) {
        return err.message;
      }
      throw new Error(`expected ${ns} to refuse ${JSON.stringify(options)}`);
    };
    assert.match(await refused("/mobile", {}), /^VALIDATION_ERROR: /);
    assert.match(await refused("/mobile", { auth: { projectId: "proj_missing" } }), /^NOT_FOUND: /);
    assert.match(await refused("/ui", { auth: { lastSeq: 4 } }), /^VALIDATION_ERROR: /);
    assert.match(
      await refused("/mobile", { auth: { projectId: a.id, lastSeq: "x" } }),
      /^VALIDATION_ERROR: /,
    );
    // A token, when given, is checked even from this machine.
    assert.match(await refused("/ui", { auth: { token: "tok_1_x.wrong" } }), /^UNAUTHORIZED: /);
    // A foreign origin is refused before the handshake (HTTP 403), so the client only sees
    // its transport fail.
    assert.match(
      await refused("/ui", { extraHeaders: { origin: "https://evil.example" } }),
      /websocket error|xhr poll error/,
    );
    const foreign = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, {
      headers: { origin: "https://evil.example" },
    });
    assert.equal(foreign.status, 403);
    // Another page on this machine (a dev server on another port) is not the owner.
    assert.match(
      await refused("/ui", { extraHeaders: { origin: "http://localhost:5173" } }),
      /websocket error|xhr poll error/,
    );
    // The server's own pages and the desktop app are.
    for (const origin of [server.url, "tauri://localhost"]) {
      const ok = await connect(server, "/ui", { extraHeaders: { origin } }).connected();
      ok.close();
    }
  });

  test("delivers events to the right sockets and rooms", async () => {
    const s1 = await server.ok("POST", "/api/sessions", { projectId: a.id, taskIds: [], name: "s1" });
    const s2 = await server.ok("POST", "/api/sessions", { projectId: a.id, taskIds: [], name: "s2" });
    const phone = await connect(server, "/mobile", { auth: { projectId: a.id } }).connected();
    const desk = await connect(server, "/ui").connected();
    const follower = await connect(server, "/ui").connected();
    const sub = await follower.call("subscribe", { sessionIds: [s1.id] });
    assert.deepEqual(sub, { ok: true, sessionIds: [s1.id] });

    const t = await server.ok("POST", "/api/tasks", { projectId: a.id, title: "in a" });
    for (const c of [phone, desk, follower]) {
      const [e] = await c.expect("task:created");
      assertEnvelope("task:created", e);
      assert.deepEqual(e.data, t);
      assert.equal(e.projectId, a.id);
    }
    await server.ok("POST", "/api/tasks", { projectId: b.id, title: "in b" });
    await desk.expect("task:created");
    await follower.expect("task:created");
    await phone.quiet();

    await server.ok("POST", `/api/sessions/${s2.id}/timeline`, { message: "on s2", type: "note" });
    await phone.expect("session:appended", "session:updated");
    await desk.expect("session:appended", "session:updated");
    await follower.quiet();
    await server.ok("POST", `/api/sessions/${s1.id}/timeline`, { message: "on s1", type: "note" });
    for (const c of [phone, desk, follower]) {
      // The appended entry on its own, then the session (with a bounded timeline).
      const [appended, updated] = await c.expect("session:appended", "session:updated");
      assert.equal(appended.data.sessionId, s1.id);
      assert.equal(appended.data.timeline.at(-1).message, "on s1");
      assert.equal(updated.data.id, s1.id);
    }

    await server.ok("PUT", `/api/projects/${b.id}`, { description: "b" });
    await server.ok("PUT", `/api/projects/${a.id}`, { description: "a" });
    const [mine] = await phone.expect("project:updated");
    assert.equal(mine.data.id, a.id);
    assert.equal(mine.projectId, null);
    const [first, second] = await desk.expect("project:updated", "project:updated");
    assert.equal(second.seq, first.seq + 1, "gap-free global sequence");
    await follower.expect("project:updated", "project:updated");

    assert.deepEqual(await follower.call("unsubscribe", { sessionIds: [s1.id] }), {
      ok: true,
      sessionIds: [],
    });
    assert.deepEqual(await follower.call("unsubscribe"), { ok: true, sessionIds: null });
    for (const c of [phone, desk, follower]) c.close();
  });

  test("acks every client event, and errors for bad input", async () => {
    const t = await server.ok("POST", "/api/tasks", { projectId: a.id, title: "work" });
    const s = await server.ok("POST", "/api/sessions", { projectId: a.id, taskIds: [], name: "s" });
    const other = await server.ok("POST", "/api/sessions", { projectId: b.id, taskIds: [], name: "o" });
    const ui = await connect(server, "/ui").connected();
    const phone = await connect(server, "/mobile", { auth: { projectId: a.id } }).connected();

    // subscribe / unsubscribe
    assertError(await ui.call("subscribe", {}), "VALIDATION_ERROR");
    assertError(await ui.call("subscribe", { sessionIds: ["../x"] }), "VALIDATION_ERROR");
    assertError(await ui.call("subscribe", "nope"), "VALIDATION_ERROR");
    assert.equal((await ui.call("subscribe", { sessionIds: [s.id] })).ok, true);
    assert.equal((await ui.call("unsubscribe", {})).ok, true);

    // state:sync
    const all = await ui.call("state:sync");
    assert.equal(all.ok, true);
    assert.deepEqual(Object.keys(all).sort(), ["ok", "projects", "seqs", "sessions", "tasks", "teamMembers"]);
    assert.ok(all.projects.some((p) => p.id === a.id) && all.projects.some((p) => p.id === b.id));
    assert.ok(all.tasks.some((x) => x.id === t.id));
    assert.ok(Number.isInteger(all.seqs.global) && Number.isInteger(all.seqs[a.id]));
    const mine = await phone.call("state:sync");
    assert.deepEqual(mine.projects.map((p) => p.id), [a.id]);
    assert.deepEqual(Object.keys(mine.seqs).sort(), [a.id, "global"].sort());
    assert.ok(mine.sessions.every((x) => x.projectId === a.id));
    assert.ok(mine.teamMembers.length >= 5);
    assertError(await phone.call("state:sync", { projectId: b.id }), "FORBIDDEN");
    assertError(await ui.call("state:sync", { projectId: "proj_none" }), "NOT_FOUND");

    // events:replay: what state:sync's seq says is complete, and the gap before it
    const head = mine.seqs[a.id];
    const replay = await phone.call("events:replay", { afterSeq: head - 2 });
    assert.equal(replay.ok, true);
    assert.equal(replay.recovered, true);
    assert.deepEqual(replay.events.map((e) => e.seq), [head - 1, head]);
    for (const e of replay.events) assertEnvelope(e.event, e);
    assert.equal(replay.headSeq, head);
    assert.equal(replay.hasMore, false);
    assertError(await phone.call("events:replay", {}), "VALIDATION_ERROR");
    assertError(await phone.call("events:replay", { afterSeq: -1 }), "VALIDATION_ERROR");
    assertError(await phone.call("events:replay", { afterSeq: 0, projectId: b.id }), "FORBIDDEN");

    // mail:send
    const sent = await phone.call("mail:send", {
      projectId: a.id,
      fromSessionId: "user",
      toSessionId: s.id,
      type: "directive",
      subject: "hello",
    });
    assert.equal(sent.ok, true);
    assert.equal(sent.mail.toSessionId, s.id);
    assertError(
      await phone.call("mail:send", { projectId: a.id, fromSessionId: "u", type: "bogus", subject: "x" }),
      "VALIDATION_ERROR",
    );
    assertError(
      await phone.call("mail:send", { projectId: b.id, fromSessionId: "u", type: "query", subject: "x" }),
      "FORBIDDEN",
    );
    assertError(
      await ui.call("mail:send", {
        projectId: a.id, fromSessionId: "u", type: "query", subject: "x", toSessionId: "sess_none",
      }),
      "NOT_FOUND",
    );

    // session:spawn (body of POST /api/sessions/spawn; its codes are upstream's)
    const spawned = await phone.call("session:spawn", { taskIds: [t.id], idempotencyKey: "js-1" });
    assert.equal(spawned.ok, true, JSON.stringify(spawned));
    assert.equal(spawned.session.status, "spawning");
    assert.equal(spawned.session.projectId, a.id);
    const again = await phone.call("session:spawn", { taskIds: [t.id], idempotencyKey: "js-1" });
    assert.equal(again.sessionId, spawned.sessionId);
    assertError(await ui.call("session:spawn", { projectId: a.id }), "invalid_task_ids");
    assertError(await phone.call("session:spawn", { projectId: b.id, taskIds: [t.id] }), "FORBIDDEN");

    // session:stop
    const stopped = await phone.call("session:stop", { sessionId: spawned.sessionId });
    assert.equal(stopped.ok, true);
    assert.equal(stopped.session.status, "stopped");
    assertError(await phone.call("session:stop", {}), "VALIDATION_ERROR");
    assertError(await phone.call("session:stop", { sessionId: "sess_none" }), "NOT_FOUND");
    assertError(await phone.call("session:stop", { sessionId: other.id }), "FORBIDDEN");

    // session:reply-input: only while the session waits for input (as the agent's hook says),
    // and only one line of text.
    assertError(await ui.call("session:reply-input", { sessionId: s.id, message: "yes" }), "NOT_WAITING");
    await server.ok("PATCH", `/api/sessions/${s.id}`, { needsInput: { active: true, message: "Go on?" } });
    assertError(await ui.call("session:reply-input", { sessionId: s.id, message: "yes\nno" }), "VALIDATION_ERROR");
    assertError(await ui.call("session:reply-input", { sessionId: s.id, message: "\u001b[Ayes" }), "VALIDATION_ERROR");
    const reply = await ui.call("session:reply-input", { sessionId: s.id, message: "yes" });
    assert.equal(reply.ok, true);
    assert.equal(reply.mail.type, "directive");
    assertError(await ui.call("session:reply-input", { sessionId: s.id }), "VALIDATION_ERROR");
    assertError(await ui.call("session:reply-input", { sessionId: "sess_none", message: "x" }), "NOT_FOUND");
    assertError(
      await ui.call("session:reply-input", { sessionId: spawned.sessionId, message: "x" }),
      "CONFLICT",
    );
    assertError(await phone.call("session:reply-input", { sessionId: other.id, message: "x" }), "FORBIDDEN");

    // an event the server does not know
    assertError(await ui.call("no:such-event", {}), "NOT_FOUND");
    ui.close();
    phone.close();
  });

  test("session:reply-input from the phone reaches the agent and the desktop", async () => {
    const s = await server.ok("POST", "/api/sessions", { projectId: a.id, taskIds: [], name: "asker" });
    await server.ok("PATCH", `/api/sessions/${s.id}`, {
      needsInput: { active: true, message: "Which database?" },
    });
    // The agent parks in mail/wait, as `maestro mail wait --ack` does (a POST: a GET never
    // moves the read cursor).
    const waiting = server.ok("POST", `/api/mail/wait/${s.id}`, { timeout: 10000 });
    const desk = await connect(server, "/ui").connected();
    await desk.call("subscribe", { sessionIds: [s.id] });
    const phone = await connect(server, "/mobile", { auth: { projectId: a.id } }).connected();

    const ack = await phone.call("session:reply-input", { sessionId: s.id, message: "Postgres" });
    assert.equal(ack.ok, true, JSON.stringify(ack));

    const mail = await waiting;
    assert.equal(mail.length, 1);
    assert.equal(mail[0].id, ack.mail.id);
    assert.equal(mail[0].type, "directive");
    assert.equal(mail[0].fromSessionId, "user");
    assert.equal(mail[0].toSessionId, s.id);
    assert.equal(mail[0].body.message, "Postgres");

    const [, , , input] = await desk.expect(
      "session:appended",
      "session:updated",
      "mail:received",
      "session:input",
    );
    assert.deepEqual(Object.keys(input.data).sort(), ["mailId", "message", "sessionId", "timestamp"]);
    assert.equal(input.data.sessionId, s.id);
    assert.equal(input.data.message, "Postgres");
    assert.equal(input.data.mailId, ack.mail.id);

    const after = await server.ok("GET", `/api/sessions/${s.id}`);
    assert.equal(after.needsInput.active, false);
    const last = after.timeline.at(-1);
    assert.equal(last.type, "user_reply");
    assert.equal(last.message, "Postgres");
    desk.close();
    phone.close();
  });
});
