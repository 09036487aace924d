// One project's live state, kept from `state:sync` snapshots and the events after them.
//
// The rules come from docs/realtime.md ("Reconnecting without losing anything"): events of a
// project carry a gap-free `seq`; an event at or below the last applied `seq` is a duplicate
// (a replay overlapping what we had, or a snapshot that already contains it) and is dropped;
// an event beyond `seq + 1` means something was lost, and the caller must resync. Pure logic,
// no DOM and no socket, so the unit tests drive it directly.

import type {
  Approval,
  Envelope,
  MailMessage,
  Presence,
  Project,
  Session,
  Snapshot,
  Task,
  TeamMember,
} from "./types";

/** How many activity entries and mail messages a project keeps in memory. */
export const ACTIVITY_LIMIT = 300;
export const MAIL_LIMIT = 500;

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
    this.sessions = new Map(
      snapshot.sessions.filter((s) => s.projectId === this.projectId).map((s) => [s.id, s]),
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
        // Presence is filled in on read and arrives on its own event; keep the last known.
        const merged: Session = {
          ...d,
          online: d.online ?? before?.online,
          lastSeen: d.lastSeen ?? before?.lastSeen,
          lastProgress: d.lastProgress ?? before?.lastProgress,
          stalled: d.stalled ?? before?.stalled,
        };
        this.sessions.set(d.id, merged);
        sessionId = d.id;
        label = sessionLabel(before, merged, e.event === "session:created");
        alert = sessionAlert(before, merged);
        break;
      }
      case "session:deleted":
        label = `Session deleted: ${this.sessions.get(d.id)?.name ?? d.id}`;
        this.sessions.delete(d.id);
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
