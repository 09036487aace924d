// One project's live state, kept from `state:sync` snapshots and the events after them.
//
// The rules come from docs/realtime.md ("Reconnecting without losing anything"): events of a
// project carry a gap-free `seq`; an event at or below the last applied `seq` is a duplicate
// (a replay overlapping what we had, or a snapshot that already contains it) and is dropped;
// an event beyond `seq + 1` means something was lost, and the caller must resync. Pure logic,
// no DOM and no socket, so the unit tests drive it directly.

import type {
  Approval,
  ChangeStats,
  Envelope,
  MailMessage,
  Presence,
  Project,
  Session,
  SessionAppended,
  Snapshot,
  Task,
  TeamMember,
  TimelinePage,
} from "./types";

/** How many activity entries and mail messages a project keeps in memory. */
export const ACTIVITY_LIMIT = 300;
export const MAIL_LIMIT = 500;

/**
 * How many of a session's latest timeline entries and events a `session:updated` carries
 * (the server's `SESSION_UPDATE_TAIL`): a payload with this many may have been cut.
 */
export const SESSION_UPDATE_TAIL = 50;

/** One line of the activity feed: an event as it was applied. */
export interface Activity {
  seq: number;
  event: string;
  timestamp: number;
  label: string;
  sessionId?: string;
  /** Worth telling the human about: a session began waiting, failed or completed. */
  alert?: "needs_input" | "failed" | "completed";
}

export type ApplyResult = "applied" | "duplicate" | "gap" | "foreign";

export class ProjectState {
  readonly projectId: string;
  project: Project | null = null;
  tasks = new Map<string, Task>();
  sessions = new Map<string, Session>();
  members = new Map<string, TeamMember>();
  mail: MailMessage[] = [];
  activity: Activity[] = [];
  /** The highest `seq` applied (or contained in the last snapshot); 0 before any. */
  seq = 0;
  /** Whether a snapshot has been loaded: until then the state is empty, not "no tasks". */
  synced = false;
  /**
   * Pending tool approvals by id. Snapshots do not carry them: they come from
   * `GET /api/approvals?projectId=…` ({@link syncApprovals}) and the `approval:*` events.
   */
  approvals = new Map<string, Approval>();
  /** The `seq` of the event that added each pending approval (0 when fetched). */
  private approvalSeq = new Map<string, number>();
  /**
   * The server's length of each session's timeline, when known (a snapshot, `session:created`,
   * `session:appended` or a fetched page said so). A session without one may hold only the tail
   * a `session:updated` carried; see {@link hasEarlier}.
   */
  timelineTotal = new Map<string, number>();
  /** Ids known to be decided or cancelled: never pending again, whatever arrives late. */
  private closed = new Set<string>();

  constructor(projectId: string) {
    this.projectId = projectId;
  }

  /** Replaces everything with a `state:sync` snapshot. Activity and mail are kept. */
  replace(snapshot: Snapshot): void {
    this.project = snapshot.projects.find((p) => p.id === this.projectId) ?? this.project;
    this.tasks = new Map(
      snapshot.tasks.filter((t) => t.projectId === this.projectId).map((t) => [t.id, t]),
    );
    const before = this.sessions;
    this.sessions = new Map(
      snapshot.sessions
        .filter((s) => s.projectId === this.projectId)
        .map((s) => [s.id, mergeSession(before.get(s.id), s)]),
    );
    this.timelineTotal = new Map(
      snapshot.sessions
        .filter((s) => s.projectId === this.projectId)
        .map((s) => [s.id, (s.timeline ?? []).length]),
    );
    this.members = new Map(
      snapshot.teamMembers
        .filter((m) => m.projectId === this.projectId)
        .map((m) => [m.id, m]),
    );
    this.seq = snapshot.seqs[this.projectId] ?? 0;
    this.synced = true;
  }

  /**
   * Replaces the state with a snapshot, then applies the events that arrived while it was
   * being fetched: those the snapshot already contains (`seq` at or below its head) are
   * dropped. Returns `"gap"` if one of them skips a `seq` (resync again), else `"applied"`.
   */
  resync(snapshot: Snapshot, held: Envelope[]): "applied" | "gap" {
    this.replace(snapshot);
    for (const e of [...held].sort((a, b) => a.seq - b.seq)) {
      if (this.apply(e) === "gap") return "gap";
    }
    return "applied";
  }

  /**
   * Applies one event of this project. Global (`project:*`) events have their own sequence and
   * are applied with {@link applyGlobal}.
   */
  apply(e: Envelope): ApplyResult {
    if (e.projectId !== this.projectId) return "foreign";
    if (e.seq <= this.seq) return "duplicate";
    if (e.seq !== this.seq + 1) return "gap";
    this.seq = e.seq;
    this.reduce(e);
    return "applied";
  }

  /**
   * Replaces the pending approvals with a fetched list (the truth after a (re)sync). `fromSeq`
   * is this state's `seq` when the request went out: approvals added by events after it are
   * newer than the list and kept; ones decided meanwhile stay out.
   */
  syncApprovals(list: Approval[], fromSeq = this.seq): void {
    const next = new Map<string, Approval>();
    const seqs = new Map<string, number>();
    for (const a of list) {
      if (a.projectId === this.projectId && a.status === "pending" && !this.closed.has(a.id)) {
        next.set(a.id, a);
        seqs.set(a.id, 0);
      }
    }
    for (const [id, a] of this.approvals) {
      const seq = this.approvalSeq.get(id) ?? 0;
      if (seq > fromSeq && !next.has(id)) {
        next.set(id, a);
        seqs.set(id, seq);
      }
    }
    this.approvals = next;
    this.approvalSeq = seqs;
  }

  /** Takes a decided (or cancelled) approval out of the pending list, for good. */
  closeApproval(a: Approval): void {
    if (a.status === "pending") return;
    this.closed.add(a.id);
    if (this.closed.size > 1000) this.closed.delete(this.closed.values().next().value as string);
    this.approvals.delete(a.id);
    this.approvalSeq.delete(a.id);
  }

  /** A global event about this project (`project:updated`, …); deduplicated by the caller. */
  applyGlobal(e: Envelope): void {
    const d = e.data ?? {};
    if (e.event === "project:created" || e.event === "project:updated") {
      if (d.id === this.projectId) this.project = d as Project;
    }
  }

  private reduce(e: Envelope): void {
    const d = e.data ?? {};
    let label = e.event;
    let sessionId: string | undefined;
    let alert: Activity["alert"];
    switch (e.event) {
      case "task:created":
      case "task:updated":
        this.tasks.set(d.id, d as Task);
        label = `${e.event === "task:created" ? "Task created" : "Task updated"}: ${d.title}`;
        break;
      case "task:deleted":
        label = `Task deleted: ${this.tasks.get(d.id)?.title ?? d.id}`;
        this.tasks.delete(d.id);
        break;
      case "session:created":
      case "session:updated": {
        const before = this.sessions.get(d.id);
        // `session:updated` carries only the latest entries (and docs without content): merge.
        const merged = mergeSession(before, d as Session);
        this.sessions.set(d.id, merged);
        const length = (merged.timeline ?? []).length;
        const carried = (d.timeline ?? []).length;
        const known = this.timelineTotal.get(d.id);
        if (e.event === "session:created" || carried < SESSION_UPDATE_TAIL) {
          // Not cut: the payload is the whole timeline.
          this.timelineTotal.set(d.id, Math.max(carried, length));
        } else if (known !== undefined) {
          // Possibly cut: the total grew by what this payload added.
          this.timelineTotal.set(d.id, known + length - (before?.timeline ?? []).length);
        }
        sessionId = d.id;
        label = sessionLabel(before, merged, e.event === "session:created");
        alert = sessionAlert(before, merged);
        break;
      }
      case "session:appended": {
        const a = d as SessionAppended;
        const s = this.sessions.get(a.sessionId);
        if (s) {
          this.sessions.set(a.sessionId, applyAppended(s, a));
          this.timelineTotal.set(a.sessionId, a.timelineLength);
        }
        return; // the `session:updated` that follows makes the activity line
      }
      case "session:transcript":
        // The Transcript tab shows these (it listens through live.ts); no activity line.
        return;
      case "session:deleted":
        label = `Session deleted: ${this.sessions.get(d.id)?.name ?? d.id}`;
        this.sessions.delete(d.id);
        this.timelineTotal.delete(d.id);
        break;
      case "session:presence": {
        const p = d as Presence;
        const s = this.sessions.get(p.sessionId);
        if (s) {
          this.sessions.set(p.sessionId, {
            ...s,
            online: p.online,
            lastSeen: p.lastSeen,
            lastProgress: p.lastProgress,
            stalled: p.stalled,
          });
        }
        return; // heartbeats are not activity worth a line
      }
      case "session:changes": {
        // What Fleet shows ("12 files +340 −51"); the server keeps it in `metadata.changes`.
        const c = d as ChangeStats;
        const s = this.sessions.get(c.sessionId);
        if (s) {
          const meta = s.metadata && typeof s.metadata === "object" && !Array.isArray(s.metadata) ? s.metadata : {};
          this.sessions.set(c.sessionId, { ...s, metadata: { ...meta, changes: c } as Session["metadata"] });
        }
        return; // not activity worth a line
      }
      case "review:comment":
      case "review:comment_deleted":
        return; // the Changes tab reads the comments itself
      case "team_member:created":
      case "team_member:updated":
      case "team_member:archived":
      case "team_member:unarchived":
        this.members.set(d.id, d as TeamMember);
        label = `Team member ${e.event.split(":")[1]}: ${d.name}`;
        break;
      case "team_member:deleted":
        this.members.delete(d.id);
        label = "Team member deleted";
        break;
      case "mail:received": {
        const m = d as MailMessage;
        this.mail.push(m);
        if (this.mail.length > MAIL_LIMIT) this.mail.splice(0, this.mail.length - MAIL_LIMIT);
        sessionId = m.toSessionId ?? undefined;
        label = `Mail (${m.type}): ${m.subject}`;
        break;
      }
      case "approval:requested": {
        const a = d as Approval;
        if (a.status === "pending" && !this.closed.has(a.id)) {
          if (!this.approvals.has(a.id)) this.approvalSeq.set(a.id, e.seq);
          this.approvals.set(a.id, a);
        }
        sessionId = a.sessionId;
        label = `${a.sessionName} asks to run ${a.toolName}`;
        break;
      }
      case "approval:decided": {
        const a = d as Approval;
        this.closeApproval(a);
        sessionId = a.sessionId;
        label = `${a.toolName} ${a.status} for ${a.sessionName}${a.decidedBy ? ` by ${a.decidedBy}` : ""}`;
        break;
      }
      case "session:input":
        sessionId = d.sessionId;
        label = "Reply delivered";
        break;
      default:
        if (d && typeof d === "object" && typeof d.sessionId === "string") sessionId = d.sessionId;
        label = e.event;
    }
    this.activity.push({ seq: e.seq, event: e.event, timestamp: e.timestamp, label, sessionId, alert });
    if (this.activity.length > ACTIVITY_LIMIT) {
      this.activity.splice(0, this.activity.length - ACTIVITY_LIMIT);
    }
  }

  /**
   * Whether the server has older timeline entries than this state holds for the session (or may
   * have: a session known only from a cut `session:updated`).
   */
  hasEarlier(sessionId: string): boolean {
    const s = this.sessions.get(sessionId);
    if (!s) return false;
    const total = this.timelineTotal.get(sessionId);
    return total === undefined ? (s.timeline ?? []).length >= SESSION_UPDATE_TAIL : total > (s.timeline ?? []).length;
  }

  /**
   * The `before` to ask `GET /api/sessions/:id/timeline` for the entries preceding those held:
   * `undefined` (the latest page) while the timeline's length is unknown.
   */
  earlierBefore(sessionId: string): number | undefined {
    const total = this.timelineTotal.get(sessionId);
    if (total === undefined) return undefined;
    return Math.max(0, total - (this.sessions.get(sessionId)?.timeline ?? []).length);
  }

  /** Adds a fetched page of a session's timeline (older entries go in front). */
  addTimelinePage(sessionId: string, page: TimelinePage): void {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    this.sessions.set(sessionId, { ...s, timeline: mergeOlder(s.timeline ?? [], page.items) });
    this.timelineTotal.set(sessionId, Math.max(page.total, (this.sessions.get(sessionId)?.timeline ?? []).length));
  }
}

/** `kept`, then the entries of `incoming` whose id it lacks, in their order. */
export function appendById<T extends { id: string }>(kept: T[], incoming: T[]): T[] {
  const ids = new Set(kept.map((x) => x.id));
  const added = incoming.filter((x) => !ids.has(x.id) && (ids.add(x.id), true));
  return added.length ? [...kept, ...added] : kept;
}

/**
 * Merges older entries (a fetched page, oldest first) into `kept`: each entry of `older` that
 * `kept` lacks goes before the first entry of `older` that it has (before everything if none).
 */
export function mergeOlder<T extends { id: string }>(kept: T[], older: T[]): T[] {
  const ids = new Set(kept.map((x) => x.id));
  const out: T[] = [];
  let i = 0;
  for (const x of older) {
    if (ids.has(x.id)) {
      // Copy what we hold up to and including this entry, so that what follows stays after it.
      while (i < kept.length) {
        const k = kept[i++];
        out.push(k);
        if (k.id === x.id) break;
      }
    } else {
      ids.add(x.id);
      out.push(x);
    }
  }
  while (i < kept.length) out.push(kept[i++]);
  return out;
}

/**
 * Merges a session as an event carried it into what we held. `session:updated` carries only the
 * last {@link SESSION_UPDATE_TAIL} timeline entries and events, and docs without content: the
 * entries we hold are kept (never replaced by the shorter tail), new ones are appended by id, a
 * doc keeps the content we had; presence (filled in on read, sent on its own event) keeps the
 * last known. Everything else comes from the incoming session.
 */
export function mergeSession(before: Session | undefined, d: Session): Session {
  if (!before) return d;
  const beforeDocs = new Map((before.docs ?? []).map((x) => [x.id, x]));
  return {
    ...d,
    timeline: appendById(before.timeline ?? [], d.timeline ?? []),
    events: appendById(before.events ?? [], d.events ?? []),
    docs: (d.docs ?? []).map((x) => (x.content == null && beforeDocs.get(x.id)?.content != null ? { ...x, content: beforeDocs.get(x.id)!.content } : x)),
    online: d.online ?? before.online,
    lastSeen: d.lastSeen ?? before.lastSeen,
    lastProgress: d.lastProgress ?? before.lastProgress,
    stalled: d.stalled ?? before.stalled,
  };
}

/**
 * Applies `session:appended`: its items are appended (skipping ids already held). Status and
 * needs-input are left to the `session:updated` that always follows, so that it still sees the
 * change (and raises the needs-input alert).
 */
export function applyAppended(s: Session, a: SessionAppended): Session {
  return {
    ...s,
    timeline: appendById(s.timeline ?? [], a.timeline),
    events: appendById(s.events ?? [], a.events),
    docs: appendById(s.docs ?? [], a.docs),
    lastActivity: Math.max(s.lastActivity, a.lastActivity),
  };
}

function sessionAlert(before: Session | undefined, after: Session): Activity["alert"] {
  if (needsInput(after) && !(before && needsInput(before))) return "needs_input";
  if (before?.status !== after.status && (after.status === "failed" || after.status === "completed")) {
    return after.status;
  }
  return undefined;
}

function sessionLabel(before: Session | undefined, after: Session, created: boolean): string {
  if (created) return `Session started: ${after.name}`;
  if (after.needsInput?.active && !before?.needsInput?.active) {
    return `${after.name} needs input`;
  }
  if (before && before.status !== after.status) return `${after.name}: ${after.status}`;
  return `${after.name} updated`;
}

/** Whether a session is waiting for a human. */
export function needsInput(s: Session): boolean {
  return s.needsInput?.active === true && !["completed", "failed", "stopped"].includes(s.status);
}

/** Whether a session's agent is done. */
export function isTerminal(s: Session): boolean {
  return ["completed", "failed", "stopped"].includes(s.status);
}

/** The agent's latest question: the needs-input flag's message, else the latest entry. */
export function question(s: Session): string {
  if (s.needsInput?.message) return s.needsInput.message;
  const entry = [...(s.timeline ?? [])].reverse().find((t) => t.type === "needs_input");
  return entry?.message ?? "";
}

/**
 * The Needs-you list: sessions waiting for input, oldest first; then failed and stalled ones,
 * newest first.
 */
export function needsYou(sessions: Session[]): { waiting: Session[]; trouble: Session[] } {
  const waiting = sessions
    .filter(needsInput)
    .sort((a, b) => (a.needsInput?.since ?? a.lastActivity) - (b.needsInput?.since ?? b.lastActivity));
  const trouble = sessions
    .filter((s) => !needsInput(s) && (s.status === "failed" || (s.stalled === true && !isTerminal(s))))
    .sort((a, b) => b.lastActivity - a.lastActivity);
  return { waiting, trouble };
}

/** Pending approvals of these projects (of one session, if given), oldest first. */
export function pendingApprovals(states: ProjectState[], sessionId?: string): Approval[] {
  return states
    .flatMap((st) => [...st.approvals.values()])
    .filter((a) => !sessionId || a.sessionId === sessionId)
    .sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
}

/**
 * A session's name for people: spawned sessions are named after task ids ("Execute for
 * task_…"), so ids of tasks we know are replaced by their titles.
 */
export function sessionTitle(s: Session, tasks: Map<string, Task>): string {
  return s.name.replace(/\btask_[A-Za-z0-9_]+/g, (id) => {
    const t = tasks.get(id);
    return t ? `“${t.title}”` : id;
  });
}
