// Reconnect with `lastSeq`: the gap is replayed before live events, with no duplicate and no
// hole at the seam; a gap older than the journal is reported (`recovered: false`) so the
// client resyncs with `state:sync`.

import assert from "node:assert/strict";
import { test } from "node:test";

import { connect, inParallel, startServer } from "./helpers.mjs";

/** Creates `n` tasks in `project`, several requests at a time: `n` `task:created` events. */
function createTasks(server, project, n, prefix) {
  return inParallel(
    Array.from({ length: n }, (_, i) => () =>
      server.ok("POST", "/api/tasks", { projectId: project, title: `${prefix} ${i}` }),
    ),
  );
}

test("a client away for 500 events gets exactly those, then live ones", async () => {
  const server = await startServer();
  try {
    const p = await server.ok("POST", "/api/projects", { name: "replay" });
    let phone = await connect(server, "/mobile", { auth: { projectId: p.id } }).connected();
    await server.ok("POST", "/api/tasks", { projectId: p.id, title: "seen" });
    const [seen] = await phone.expect("task:created");
    const lastSeq = seen.seq;
    phone.close();

    await createTasks(server, p.id, 500, "missed");

    // Reconnect while more is being written: those 20 come after the 500, once each.
    const writing = createTasks(server, p.id, 20, "during");
    phone = await connect(server, "/mobile", { auth: { projectId: p.id, lastSeq } }).connected();
    await writing;
    const seqs = [];
    while (seqs.length < 520) {
      const e = await phone.next();
      assert.equal(e.name, "task:created", JSON.stringify(e));
      assert.equal(e.payload.projectId, p.id);
      seqs.push(e.payload.seq);
    }
    assert.deepEqual(
      seqs,
      Array.from({ length: 520 }, (_, i) => lastSeq + 1 + i),
      "every event once, in order",
    );
    await phone.quiet();

    await server.ok("POST", "/api/tasks", { projectId: p.id, title: "live" });
    const [live] = await phone.expect("task:created");
    assert.equal(live.seq, lastSeq + 521);
    await phone.quiet();
    phone.close();
  } finally {
    await server.stop();
  }
});

test("a gap older than the journal yields recovered: false", async () => {
  const server = await startServer({ JOURNAL_CAPACITY: "50" });
  try {
    const p = await server.ok("POST", "/api/projects", { name: "small journal" });
    await createTasks(server, p.id, 120, "t");

    const phone = await connect(server, "/mobile", {
      auth: { projectId: p.id, lastSeq: 10 },
    }).connected();
    const [notice] = await phone.expect("replay:incomplete");
    assert.deepEqual(notice, { recovered: false, projectId: p.id, headSeq: 120, lastSeq: 10 });
    await phone.quiet();

    const replay = await phone.call("events:replay", { afterSeq: 10 });
    assert.equal(replay.ok, true);
    assert.equal(replay.recovered, false);
    assert.deepEqual(replay.events, []);
    assert.equal(replay.headSeq, 120);

    // The client resyncs; live events continue right after the snapshot's seq.
    const state = await phone.call("state:sync");
    assert.equal(state.seqs[p.id], 120);
    assert.equal(state.tasks.length, 120);
    await server.ok("POST", "/api/tasks", { projectId: p.id, title: "after" });
    const [next] = await phone.expect("task:created");
    assert.equal(next.seq, 121);

    // Within the journal, replay still works.
    const recent = await phone.call("events:replay", { afterSeq: 100 });
    assert.equal(recent.recovered, true);
    assert.deepEqual(
      recent.events.map((e) => e.seq),
      Array.from({ length: 21 }, (_, i) => 101 + i),
    );
    phone.close();
  } finally {
    await server.stop();
  }
});
