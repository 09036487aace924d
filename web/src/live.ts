// Live data: one Socket.IO connection to `/mobile` per project (see docs/realtime.md).
//
// Why one per project rather than `/ui`: `/mobile` is the namespace meant for a phone, its
// `lastSeq` replay covers exactly one project, and a device whose scope is limited still gets
// a namespace built for it. Each project has its own Engine.IO connection (its own Manager):
// Socket.IO joins a namespace once per connection, and the handshake's `auth` names one
// project, so two projects cannot share one. A developer has a handful of projects.
//
// Each connection: on first connect `state:sync`; afterwards the server replays what we missed
// from the `lastSeq` we pass in the handshake (read on every reconnect). `replay:incomplete` or
// a gap in `seq` means the journal could not fill it: resync. Events that arrive while a sync
// is in flight are held, then applied above the snapshot's `seq` (duplicates dropped).

import { batch, effect, signal } from "@preact/signals";
import { Manager, type Socket } from "socket.io-client";

import { api, signedOut } from "./api";
import { onRunnerUpdated, refreshRunners } from "./runners";
import { ProjectState } from "./store";
import type { ClientVisibility } from "./generated/protocol";
import type { Approval, Envelope, Project, SessionTranscript, Snapshot, SocketAuth, StateSyncRequest } from "./types";

export type LinkStatus = "connecting" | "live" | "down";

export interface Connection {
  state: "connecting" | "live" | "reconnecting" | "offline";
  /** When the connection was lost (ms), for "offline since HH:MM". */
  since: number | null;
}

export const projects = signal<Project[]>([]);
/** Bumped whenever any project's state changes; views read it to re-render. */
export const version = signal(0);
export const connection = signal<Connection>({ state: "connecting", since: null });
/** How the last recovery went, for tests and the settings screen. */
export const stats = { syncs: 0, replayed: 0 };
// Read by the end-to-end tests (and handy in a debugger): how the app recovered.
(window as unknown as { __maestroStats: typeof stats }).__maestroStats = stats;

const links = new Map<string, Link>();
let globalSeq = 0;
let lostAt: number | null = null;

const transcriptListeners = new Set<(t: SessionTranscript) => void>();

/** Calls `fn` with every `session:transcript` event from now on; returns the unsubscribe. */
export function onTranscript(fn: (t: SessionTranscript) => void): () => void {
  transcriptListeners.add(fn);
  return () => transcriptListeners.delete(fn);
}

export function stateOf(projectId: string): ProjectState | undefined {
  return links.get(projectId)?.state;
}

export function allStates(): ProjectState[] {
  return [...links.values()].map((l) => l.state);
}

class Link {
  readonly state: ProjectState;
  readonly socket: Socket;
  status: LinkStatus = "connecting";
  private syncing: Envelope[] | null = null;

  constructor(readonly projectId: string) {
    this.state = new ProjectState(projectId);
    const mgr = new Manager(location.origin, {
      transports: ["websocket", "polling"],
      reconnectionDelay: 500,
      reconnectionDelayMax: 5_000,
    });
    this.socket = mgr.socket("/mobile", {
      auth: (cb: (auth: object) => void) =>
        cb(
          this.state.synced
            ? ({ projectId: this.projectId, lastSeq: this.state.seq } satisfies SocketAuth)
            : ({ projectId: this.projectId } satisfies SocketAuth),
        ),
    });
    this.socket.on("connect", () => {
      this.status = "live";
      reportVisibility();
      if (!this.state.synced) void this.sync();
      // Runner events missed while away are not replayed one by one: read the list again.
      void refreshRunners();
      refreshConnection();
    });
    this.socket.on("disconnect", () => {
      this.status = "down";
      refreshConnection();
    });
    this.socket.on("connect_error", (err: Error) => {
      this.status = "down";
      if (/^(UNAUTHORIZED|FORBIDDEN: not authorised)/.test(err.message)) signedOut.value = true;
      else probeCredential();
      refreshConnection();
    });
    this.socket.on("replay:incomplete", () => void this.sync());
    this.socket.onAny((name: string, payload: unknown) => this.onEvent(name, payload));
  }

  private onEvent(name: string, payload: unknown): void {
    if (name === "replay:incomplete") return;
    const e = payload as Envelope;
    if (!e || typeof e !== "object") return;
    // A runner's state is whole in every event (upserted by id): applied whatever its seq.
    if (e.event === "runner:updated") return onRunnerUpdated(e.data);
    if (typeof e.seq !== "number") return;
    if (e.projectId === null) {
      // Global events reach every project's connection: apply each once.
      if (e.seq <= globalSeq) return;
      globalSeq = e.seq;
      onGlobal(e);
      return;
    }
    if (this.syncing) {
      this.syncing.push(e);
      return;
    }
    const result = this.state.apply(e);
    if (result === "applied" && e.event === "session:transcript") {
      for (const fn of transcriptListeners) fn(e.data as SessionTranscript);
    }
    if (result === "applied") {
      stats.replayed++;
      version.value++;
      const last = this.state.activity.at(-1);
      if (last?.seq === e.seq && last.alert) notify(this.state, last.alert, last.sessionId);
      if (e.event === "approval:requested" && this.state.approvals.has(e.data?.id)) notifyApproval(e.data);
    } else if (result === "gap") {
      void this.sync();
    }
  }

  /** Replaces the state with a snapshot, then applies what arrived meanwhile. */
  async sync(): Promise<void> {
    if (this.syncing) return;
    this.syncing = [];
    try {
      const snap = (await this.socket.timeout(15_000).emitWithAck("state:sync", {} satisfies StateSyncRequest)) as
        | Snapshot
        | { ok: false };
      if (!snap.ok) throw new Error("state:sync refused");
      stats.syncs++;
      const held = this.syncing;
      this.syncing = null;
      batch(() => {
        const result = this.state.resync(snap, held);
        const p = snap.projects.find((x) => x.id === this.projectId);
        if (p) upsertProject(p);
        version.value++;
        if (result === "gap") void this.sync();
      });
      void this.syncApprovals();
    } catch {
      this.syncing = null;
      // Disconnected mid-sync: the next connect syncs again (state is still unsynced) or
      // replays; a refused sync is retried on the next reconnect.
    }
  }

  /**
   * Snapshots carry no approvals: after each one, the pending list is read afresh (it is the
   * truth after a reconnect or a `replay:incomplete`); events newer than the request are kept.
   */
  async syncApprovals(): Promise<void> {
    const from = this.state.seq;
    try {
      const list = await api<Approval[]>("GET", `/api/approvals?projectId=${encodeURIComponent(this.projectId)}`);
      this.state.syncApprovals(list, from);
      version.value++;
    } catch {
      // Read again on the next sync; the events keep the list current meanwhile.
    }
  }

  /** An action over the socket; resolves to the ack or throws its error. */
  async emit<T>(event: string, payload: object): Promise<T> {
    const ack = (await this.socket.timeout(15_000).emitWithAck(event, payload)) as {
      ok: boolean;
      error?: { code: string; message: string };
    };
    if (!ack.ok) throw new Error(ack.error?.message ?? `${event} failed`);
    return ack as T;
  }
}

const ALERT_TEXT = { needs_input: "needs your answer", failed: "failed", completed: "completed" };

/**
 * A system notification while the app is open but not looked at (another tab, the screen
 * off), when the user allowed them in Settings. One per session at a time (`tag`).
 */
function notify(state: ProjectState, alert: keyof typeof ALERT_TEXT, sessionId?: string): void {
  if (!sessionId || document.visibilityState === "visible") return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const s = state.sessions.get(sessionId);
  if (!s) return;
  const body = alert === "needs_input" ? (s.needsInput?.message ?? "") : (s.failureReason ?? "");
  void navigator.serviceWorker?.ready
    .then((reg) =>
      reg.showNotification(`${s.name} ${ALERT_TEXT[alert]}`, {
        body,
        // The same tag as the server's push about this session: one replaces the other.
        tag: `s:${sessionId}`,
        data: { url: alert === "needs_input" ? `/#/s/${sessionId}?reply` : `/#/s/${sessionId}` },
      }),
    )
    .catch(() => undefined);
}

/** The same for a tool approval: "Agent asks to run Bash", the command as the body. */
function notifyApproval(a: Approval): void {
  if (document.visibilityState === "visible") return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  void navigator.serviceWorker?.ready
    .then((reg) =>
      reg.showNotification(`${a.sessionName} asks to run ${a.toolName}`, {
        body: a.summary,
        tag: `s:${a.sessionId}`,
        data: { url: "/#/" },
      }),
    )
    .catch(() => undefined);
}

let probedAt = 0;

/**
 * A refused Engine.IO request (a revoked device, an expired cookie) reaches socket.io-client
 * as a bare transport error; asking `GET /api/auth/me` tells that apart from a network
 * problem (a 401 there signs the app out). At most every 5 s.
 */
function probeCredential(): void {
  if (!navigator.onLine || Date.now() - probedAt < 5_000) return;
  probedAt = Date.now();
  void api("GET", "/api/auth/me").catch(() => undefined);
}

function upsertProject(p: Project): void {
  const list = projects.value.filter((x) => x.id !== p.id);
  list.push(p);
  list.sort((a, b) => a.name.localeCompare(b.name));
  projects.value = list;
}

function onGlobal(e: Envelope): void {
  const d = e.data ?? {};
  if (e.event === "project:deleted") {
    projects.value = projects.value.filter((p) => p.id !== d.id);
    links.get(d.id)?.socket.close();
    links.delete(d.id);
  } else if (e.event === "project:created" || e.event === "project:updated") {
    upsertProject(d as Project);
    links.get(d.id)?.state.applyGlobal(e);
  }
  version.value++;
}

function refreshConnection(): void {
  const all = [...links.values()];
  const online = navigator.onLine;
  const live = online && all.length > 0 && all.every((l) => l.status === "live");
  let next: Connection;
  if (live) {
    lostAt = null;
    next = { state: "live", since: null };
  } else {
    const everLive = all.some((l) => l.state.synced);
    if (everLive && lostAt === null) lostAt = Date.now();
    if (!online) next = { state: "offline", since: lostAt ?? Date.now() };
    else if (everLive) next = { state: "reconnecting", since: lostAt };
    else next = { state: "connecting", since: null };
  }
  const cur = connection.value;
  if (cur.state !== next.state || cur.since !== next.since) connection.value = next;
}

/** Reads the project list and opens a connection for every project not yet followed. */
export async function refreshProjects(): Promise<void> {
  const list = await api<Project[]>("GET", "/api/projects");
  list.sort((a, b) => a.name.localeCompare(b.name));
  projects.value = list;
  for (const p of list) {
    if (!links.has(p.id)) links.set(p.id, new Link(p.id));
  }
  for (const [id, link] of links) {
    if (!list.some((p) => p.id === id)) {
      link.socket.close();
      links.delete(id);
    }
  }
  if (list.length === 0) connection.value = { state: "live", since: null };
  refreshConnection();
}

/** Reconnects every connection now (each replays from its `lastSeq`). */
function reconnectAll(): void {
  for (const l of links.values()) {
    l.socket.disconnect();
    l.socket.connect();
  }
}

export function emitIn<T>(projectId: string, event: string, payload: object): Promise<T> {
  const link = links.get(projectId);
  if (!link) return Promise.reject(new Error("not connected to this project"));
  return link.emit<T>(event, payload);
}

let hiddenAt = 0;

/** How often a visible app says so again (the server forgets it after 15 s). */
const VISIBILITY_EVERY_MS = 5_000;

/**
 * Tells the server whether this app is on screen, over one live connection (the device is
 * what counts, not the project): while it is, the server sends this device no push for what
 * it already shows.
 */
function reportVisibility(): void {
  const link = [...links.values()].find((l) => l.socket.connected);
  if (!link) return;
  const visible = document.visibilityState === "visible";
  link.socket.emit("client:visibility", { visible } satisfies ClientVisibility);
}

/** Keeps the connections honest across network loss and the phone sleeping. */
export function startLive(): Promise<void> {
  // Signed out (revoked, logged out): stop knocking; pairing again loads the app afresh.
  effect(() => {
    if (signedOut.value) for (const l of links.values()) l.socket.disconnect();
  });
  window.addEventListener("offline", () => {
    for (const l of links.values()) l.socket.disconnect();
    refreshConnection();
  });
  window.addEventListener("online", () => {
    for (const l of links.values()) l.socket.connect();
    refreshConnection();
    void refreshProjects().catch(() => undefined);
  });
  document.addEventListener("visibilitychange", () => {
    reportVisibility();
    if (document.visibilityState === "hidden") {
      hiddenAt = Date.now();
      return;
    }
    // A phone that slept may hold a socket that looks open but is dead: after more than a few
    // seconds away, reconnect; the handshake's lastSeq brings exactly what was missed.
    const away = Date.now() - hiddenAt;
    const down = [...links.values()].some((l) => !l.socket.connected);
    if (navigator.onLine && (away > 5_000 || down)) reconnectAll();
    void refreshProjects().catch(() => undefined);
  });
  setInterval(refreshConnection, 5_000);
  // The server forgets "visible" after 15 s unless it is said again.
  setInterval(() => {
    if (document.visibilityState === "visible") reportVisibility();
  }, VISIBILITY_EVERY_MS);
  // `/mobile` only hears about its own project: look for new projects now and then.
  setInterval(() => {
    if (document.visibilityState === "visible" && !signedOut.value) {
      void refreshProjects().catch(() => undefined);
    }
  }, 30_000);
  return refreshProjects();
}
