import { describe, expect, it } from "vitest";

import {
  ProjectState,
  appendById,
  applyAppended,
  mergeOlder,
  mergeSession,
  needsYou,
  pendingApprovals,
  sessionTitle,
} from "./store";
import { changeCount } from "./review/tab";
import type { Approval, Envelope, Session, Snapshot, Task } from "./types";

const P = "proj_1";

// Entities as the server sends them: every field it always writes is present.
function task(id: string, title: string, status = "todo"): Task {
  return {
    id,
    projectId: P,
    parentId: null,
    title,
    description: "",
    status,
    priority: "medium",
    createdAt: 1,
    updatedAt: 1,
    startedAt: null,
    completedAt: null,
    initialPrompt: "",
    sessionIds: [],
    skillIds: [],
    agentIds: [],
    dependencies: [],
    referenceTaskIds: [],
  };
}

function session(id: string, extra: Partial<Session> = {}): Session {
  return {
    id,
    projectId: P,
    taskIds: [],
    name: id,
    env: {},
    status: "working",
    startedAt: 1,
    lastActivity: 1,
    completedAt: null,
    hostname: "",
    platform: "",
    events: [],
    timeline: [],
    docs: [],
    ...extra,
  };
}

function ev(seq: number, event: string, data: unknown, projectId: string | null = P): Envelope {
  return { type: event, event, data, timestamp: 1000 + seq, seq, projectId };
}

function snapshot(seq: number, tasks: Task[] = [], sessions: Session[] = []): Snapshot {
  return {
    ok: true,
    projects: [{ id: P, name: "p", workingDir: "/tmp/p", description: "", createdAt: 1, updatedAt: 1 }],
    tasks,
    sessions,
    teamMembers: [],
    seqs: { [P]: seq, global: 0 },
  };
}

describe("ProjectState", () => {
  it("applies events in order and drops duplicates", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    expect(st.apply(ev(1, "task:created", task("t1", "one")))).toBe("applied");
    expect(st.apply(ev(2, "task:created", task("t2", "two")))).toBe("applied");
    // A replay that overlaps what we have: the same seqs again change nothing.
    expect(st.apply(ev(1, "task:created", task("t1", "one again")))).toBe("duplicate");
    expect(st.apply(ev(2, "task:updated", task("t2", "two again")))).toBe("duplicate");
    expect(st.tasks.get("t1")?.title).toBe("one");
    expect(st.tasks.get("t2")?.title).toBe("two");
    expect(st.seq).toBe(2);
    expect(st.activity.map((a) => a.seq)).toEqual([1, 2]);
  });

  it("reports a gap instead of applying past it", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(5));
    expect(st.apply(ev(7, "task:created", task("t7", "seven")))).toBe("gap");
    expect(st.tasks.size).toBe(0);
    expect(st.seq).toBe(5);
    expect(st.apply(ev(6, "task:created", task("t6", "six")))).toBe("applied");
    expect(st.apply(ev(7, "task:created", task("t7", "seven")))).toBe("applied");
  });

  it("ignores events at or below a snapshot's seq (they are in it)", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(10, [task("t1", "from snapshot")]));
    expect(st.apply(ev(10, "task:deleted", { id: "t1" }))).toBe("duplicate");
    expect(st.tasks.has("t1")).toBe(true);
    expect(st.apply(ev(11, "task:deleted", { id: "t1" }))).toBe("applied");
    expect(st.tasks.has("t1")).toBe(false);
  });

  it("replaces its entities on resync, keeping only its project's", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    st.apply(ev(1, "task:created", task("gone", "gone")));
    const other = { ...task("x", "other project"), projectId: "proj_2" };
    st.replace(snapshot(40, [task("t1", "fresh"), other]));
    expect([...st.tasks.keys()]).toEqual(["t1"]);
    expect(st.seq).toBe(40);
    expect(st.synced).toBe(true);
  });

  it("applies what arrived during a sync above the snapshot, once", () => {
    const st = new ProjectState(P);
    const held = [
      ev(3, "task:created", task("t3", "in the snapshot")),
      ev(5, "task:created", task("t5", "after")),
      ev(4, "task:created", task("t4", "in the snapshot too")),
      ev(6, "task:updated", task("t5", "after, renamed")),
      ev(5, "task:created", task("t5", "after (again)")),
    ];
    expect(st.resync(snapshot(4, [task("t3", "in the snapshot"), task("t4", "four")]), held)).toBe("applied");
    expect(st.seq).toBe(6);
    expect(st.tasks.get("t4")?.title).toBe("four");
    expect(st.tasks.get("t5")?.title).toBe("after, renamed");
    expect(st.activity.map((a) => a.seq)).toEqual([5, 6]);
    // Something missing between the snapshot and what was held: resync again.
    const st2 = new ProjectState(P);
    expect(st2.resync(snapshot(4), [ev(6, "task:created", task("t6", "x"))])).toBe("gap");
  });

  it("ignores other projects' events", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    expect(st.apply(ev(1, "task:created", task("t1", "x"), "proj_2"))).toBe("foreign");
    expect(st.seq).toBe(0);
  });

  it("keeps presence across session updates and applies presence events", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0, [], [session("s1", { online: true, lastSeen: 50 })]));
    st.apply(ev(1, "session:updated", session("s1", { status: "idle" })));
    expect(st.sessions.get("s1")).toMatchObject({ status: "idle", online: true, lastSeen: 50 });
    st.apply(ev(2, "session:presence", { sessionId: "s1", projectId: P, online: false, lastSeen: 60, lastProgress: 55, stalled: true }));
    expect(st.sessions.get("s1")).toMatchObject({ online: false, lastSeen: 60, stalled: true });
    // Heartbeats advance the seq but are not activity lines.
    expect(st.seq).toBe(2);
    expect(st.activity.map((a) => a.event)).toEqual(["session:updated"]);
  });

  it("keeps a session's change stats from session:changes (Fleet's count)", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0, [], [session("s1", { metadata: { launcher: "runner" } })]));
    const stats = { sessionId: "s1", projectId: P, files: 12, additions: 340, deletions: 51, ahead: 1, behind: 0, computedAt: 9 };
    st.apply(ev(1, "session:changes", stats));
    expect(st.sessions.get("s1")?.metadata).toEqual({ launcher: "runner", changes: stats });
    expect(changeCount(st.sessions.get("s1")!)).toBe("12 files +340 −51");
    // Not an activity line; an unknown session is ignored.
    st.apply(ev(2, "session:changes", { ...stats, sessionId: "nope" }));
    expect(st.activity).toEqual([]);
    expect(st.seq).toBe(2);
  });

  it("marks what is worth a notification", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0, [], [session("s1")]));
    st.apply(ev(1, "session:updated", session("s1", { needsInput: { active: true, message: "?" } })));
    st.apply(ev(2, "session:updated", session("s1", { needsInput: { active: true, message: "??" } })));
    st.apply(ev(3, "session:updated", session("s1", { needsInput: { active: false } })));
    st.apply(ev(4, "session:updated", session("s1", { status: "failed" })));
    st.apply(ev(5, "session:updated", session("s1", { status: "failed" })));
    expect(st.activity.map((a) => a.alert)).toEqual(["needs_input", undefined, undefined, "failed", undefined]);
  });

  it("bounds the activity feed", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    for (let i = 1; i <= 400; i++) st.apply(ev(i, "task:created", task(`t${i}`, `${i}`)));
    expect(st.activity.length).toBe(300);
    expect(st.activity[0].seq).toBe(101);
    expect(st.activity.at(-1)?.seq).toBe(400);
  });
});

describe("needsYou", () => {
  it("lists waiting sessions oldest first, then failed and stalled ones", () => {
    const list = [
      session("late", { needsInput: { active: true, message: "b?", since: 300 } }),
      session("early", { needsInput: { active: true, message: "a?", since: 100 } }),
      session("answered", { needsInput: { active: false } }),
      session("ended", { status: "completed", needsInput: { active: true, since: 50 } }),
      session("broken", { status: "failed", lastActivity: 10 }),
      session("stuck", { stalled: true, lastActivity: 20 }),
      session("fine"),
    ];
    const { waiting, trouble } = needsYou(list);
    expect(waiting.map((s) => s.id)).toEqual(["early", "late"]);
    expect(trouble.map((s) => s.id)).toEqual(["stuck", "broken"]);
  });
});

describe("sessionTitle", () => {
  it("names spawned sessions after their task", () => {
    const tasks = new Map([["task_1_ab", task("task_1_ab", "Fix login")]]);
    expect(sessionTitle(session("s", { name: "Execute for task_1_ab" }), tasks)).toBe("Execute for “Fix login”");
    expect(sessionTitle(session("s", { name: "Execute for task_9_zz" }), tasks)).toBe("Execute for task_9_zz");
  });
});

function approval(id: string, extra: Partial<Approval> = {}): Approval {
  return {
    id,
    sessionId: "s1",
    projectId: P,
    sessionName: "Agent",
    agentTool: "claude-code",
    toolName: "Bash",
    input: { command: "rm -rf build/" },
    summary: "rm -rf build/",
    status: "pending",
    createdAt: 100,
    ...extra,
  };
}

describe("approvals", () => {
  const decided = (id: string, status: Approval["status"] = "allowed") =>
    approval(id, { status, decision: status === "allowed" ? "allow" : "deny", decidedBy: "phone", decidedAt: 200 });

  it("a request adds once, even replayed or repeated", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    expect(st.apply(ev(1, "approval:requested", approval("a1")))).toBe("applied");
    // The replay that overlaps (same seq), then the same approval again at a later seq.
    expect(st.apply(ev(1, "approval:requested", approval("a1")))).toBe("duplicate");
    expect(st.apply(ev(2, "approval:requested", approval("a1")))).toBe("applied");
    expect([...st.approvals.keys()]).toEqual(["a1"]);
    expect(st.activity.at(-1)?.label).toBe("Agent asks to run Bash");
  });

  it("a decision or a cancellation takes it out of the pending list", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    st.apply(ev(1, "approval:requested", approval("a1")));
    st.apply(ev(2, "approval:requested", approval("a2", { createdAt: 50 })));
    st.apply(ev(3, "approval:requested", approval("a3", { createdAt: 70 })));
    st.apply(ev(4, "approval:decided", decided("a1")));
    st.apply(ev(5, "approval:decided", decided("a3", "cancelled")));
    expect(pendingApprovals([st]).map((a) => a.id)).toEqual(["a2"]);
  });

  it("decided before requested (out of order) ends with nothing pending", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    st.apply(ev(1, "approval:decided", decided("a1", "denied")));
    st.apply(ev(2, "approval:requested", approval("a1")));
    expect(st.approvals.size).toBe(0);
    // Nor does a fetch that still lists it bring it back.
    st.syncApprovals([approval("a1")]);
    expect(st.approvals.size).toBe(0);
  });

  it("a sync replaces the list, keeping what arrived after the request went out", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    st.apply(ev(1, "approval:requested", approval("old")));
    const from = st.seq;
    st.apply(ev(2, "approval:requested", approval("newer")));
    st.syncApprovals(
      [approval("f2", { createdAt: 30 }), approval("f1", { createdAt: 10 }), approval("x", { projectId: "proj_2" })],
      from,
    );
    expect(pendingApprovals([st]).map((a) => a.id)).toEqual(["f1", "f2", "newer"]);
    // Without newer events, the fetched list is the whole truth.
    st.syncApprovals([approval("f1")]);
    expect([...st.approvals.keys()]).toEqual(["f1"]);
  });

  it("lists a session's approvals, oldest first, across projects", () => {
    const a = new ProjectState(P);
    a.syncApprovals([approval("a2", { createdAt: 5 }), approval("a1", { createdAt: 9, sessionId: "s2" })]);
    const b = new ProjectState("proj_2");
    b.syncApprovals([approval("b1", { projectId: "proj_2", createdAt: 1 })]);
    expect(pendingApprovals([a, b]).map((x) => x.id)).toEqual(["b1", "a2", "a1"]);
    expect(pendingApprovals([a, b], "s2").map((x) => x.id)).toEqual(["a1"]);
  });
});

describe("long sessions (session:appended, cut session:updated)", () => {
  const entry = (i: number) => ({ id: `evt_${i}`, type: "progress", timestamp: i, message: `m${i}` });
  const entries = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => entry(from + k));
  const appended = (id: string, from: number, to: number, total: number) => ({
    sessionId: id,
    projectId: P,
    timeline: entries(from, to),
    events: [],
    docs: [],
    status: "working",
    lastActivity: 99,
    timelineLength: total,
    eventsLength: 0,
    docsLength: 0,
  });

  it("appends session:appended items once, even when replayed", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0, [], [session("s1", { timeline: entries(0, 3) })]));
    expect(st.apply(ev(1, "session:appended", appended("s1", 3, 4, 4)))).toBe("applied");
    expect(st.sessions.get("s1")?.timeline.map((t) => t.id)).toEqual(["evt_0", "evt_1", "evt_2", "evt_3"]);
    expect(st.sessions.get("s1")?.lastActivity).toBe(99);
    // The same item again under a new seq (a client retry, a replay after resync): no duplicate.
    expect(st.apply(ev(2, "session:appended", appended("s1", 2, 4, 4)))).toBe("applied");
    expect(st.sessions.get("s1")?.timeline).toHaveLength(4);
    // No activity line of its own: the session:updated that follows makes it.
    expect(st.activity).toHaveLength(0);
    expect(st.hasEarlier("s1")).toBe(false);
  });

  it("never replaces a longer timeline with the shorter tail of session:updated", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0, [], [session("s1", { timeline: entries(0, 120), docs: [{ id: "doc_1", title: "t", filePath: "/f", content: "# body", addedAt: 1 }] })]));
    // The server cut the timeline to the last 50, one of them new; docs come without content.
    const tail = session("s1", { status: "idle", timeline: entries(71, 121), docs: [{ id: "doc_1", title: "t", filePath: "/f", addedAt: 1 }] });
    expect(st.apply(ev(1, "session:updated", tail))).toBe("applied");
    const s = st.sessions.get("s1")!;
    expect(s.timeline.map((t) => t.id)).toEqual(entries(0, 121).map((t) => t.id));
    expect(s.status).toBe("idle");
    expect(s.docs[0].content).toBe("# body");
    expect(st.hasEarlier("s1")).toBe(false);
    expect(st.timelineTotal.get("s1")).toBe(121);
  });

  it("knows when it holds only a tail, and pages older entries in front", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0));
    // First seen through a cut session:updated: 50 entries, the total unknown.
    expect(st.apply(ev(1, "session:updated", session("s1", { timeline: entries(150, 200) })))).toBe("applied");
    expect(st.hasEarlier("s1")).toBe(true);
    expect(st.earlierBefore("s1")).toBeUndefined();
    // The latest page tells the total; it overlaps what we hold.
    st.addTimelinePage("s1", { items: entries(100, 200), total: 200, start: 100 });
    expect(st.sessions.get("s1")?.timeline.map((t) => t.id)).toEqual(entries(100, 200).map((t) => t.id));
    expect(st.earlierBefore("s1")).toBe(100);
    st.addTimelinePage("s1", { items: entries(0, 100), total: 200, start: 0 });
    expect(st.sessions.get("s1")?.timeline.map((t) => t.id)).toEqual(entries(0, 200).map((t) => t.id));
    expect(st.hasEarlier("s1")).toBe(false);
    // An appended event sets the total; a later cut update keeps everything.
    st.apply(ev(2, "session:appended", appended("s1", 200, 201, 201)));
    st.apply(ev(3, "session:updated", session("s1", { timeline: entries(151, 201) })));
    expect(st.sessions.get("s1")?.timeline).toHaveLength(201);
    expect(st.hasEarlier("s1")).toBe(false);
  });

  it("merges pages and appends by id", () => {
    const a = entries(0, 3);
    expect(appendById(a, [entry(2), entry(3)]).map((t) => t.id)).toEqual(["evt_0", "evt_1", "evt_2", "evt_3"]);
    expect(appendById(a, [entry(1)])).toBe(a);
    expect(mergeOlder(entries(5, 8), entries(2, 6)).map((t) => t.id)).toEqual(
      ["evt_2", "evt_3", "evt_4", "evt_5", "evt_6", "evt_7"],
    );
    expect(mergeOlder(entries(5, 8), entries(0, 2)).map((t) => t.id)).toEqual(
      ["evt_0", "evt_1", "evt_5", "evt_6", "evt_7"],
    );
  });

  it("leaves status and needs-input to the session:updated that follows (it raises the alert)", () => {
    const st = new ProjectState(P);
    st.replace(snapshot(0, [], [session("s1", { timeline: entries(0, 2) })]));
    const ask = { active: true, message: "?" };
    st.apply(ev(1, "session:appended", { ...appended("s1", 2, 3, 3), needsInput: ask, status: "idle" }));
    expect(st.sessions.get("s1")?.needsInput).toBeUndefined();
    expect(st.sessions.get("s1")?.status).toBe("working");
    st.apply(ev(2, "session:updated", session("s1", { timeline: entries(0, 3), needsInput: ask })));
    expect(st.activity.at(-1)?.alert).toBe("needs_input");
    expect(st.sessions.get("s1")?.timeline).toHaveLength(3);
    const s = session("s1");
    expect(applyAppended(s, appended("s1", 0, 1, 1)).timeline).toHaveLength(1);
    expect(mergeSession(undefined, s)).toBe(s);
  });
});
