// One session: where it runs, timeline (live), terminal, docs, mail; reply, send a directive,
// stop and resume.

import { useEffect, useState } from "preact/hooks";

import { api } from "../api";
import { can } from "../auth";
import { clock, mailText, statusLabel } from "../format";
import { emitIn, projects, stateOf, allStates, version } from "../live";
import { inline, renderMarkdown } from "../markdown";
import { route } from "../router";
import { machineName, placement, refreshRunners, runners } from "../runners";
import { isTerminal, needsInput, pendingApprovals, question, sessionTitle } from "../store";
import type { DocEntry, MailMessage, ReplyInput, SendMail, Session, StopRequest, TimelinePage } from "../types";
import { Empty, Presence, Section, StatusBadge } from "../ui";
import { ApprovalCard, settled } from "../ui-approval";
import { lazyView } from "../lazy";
import { ChangesTab } from "../review/tab";

type Tab = "timeline" | "terminal" | "changes" | "transcript" | "docs" | "mail";
const TABS: Tab[] = ["timeline", "terminal", "changes", "transcript", "docs", "mail"];

function findSession(id: string): Session | undefined {
  for (const st of allStates()) {
    const s = st.sessions.get(id);
    if (s) return s;
  }
  return undefined;
}

export function SessionScreen({ id }: { id: string }) {
  void version.value;
  // The tab is kept in the URL (`#/s/<id>?tab=terminal`), so a reload stays on it.
  const [tab, setTabState] = useState<Tab>(() => {
    const t = route.value.query.get("tab") as Tab;
    return TABS.includes(t) ? t : "timeline";
  });
  const setTab = (t: Tab) => {
    setTabState(t);
    history.replaceState(null, "", `#/s/${id}${t === "timeline" ? "" : `?tab=${t}`}`);
  };
  useEffect(() => void refreshRunners(), []);
  const s = findSession(id);
  if (!s) {
    const loading = allStates().some((p) => !p.synced);
    return (
      <div class="screen">
        <Empty>{loading ? "Loading…" : "This session does not exist (any more)."}</Empty>
      </div>
    );
  }
  const st = stateOf(s.projectId);
  const task = s.taskIds?.length ? st?.tasks.get(s.taskIds[0]) : undefined;
  const memberId = s.teamMemberId ?? s.teamMemberIds?.[0];
  const member = memberId ? st?.members.get(memberId) : undefined;
  const project = projects.value.find((p) => p.id === s.projectId);
  return (
    <div class="screen">
      <div class="screen-head">
        <h1 class="screen-title">{st ? sessionTitle(s, st.tasks) : s.name}</h1>
        <StatusBadge session={s} />
      </div>
      <p class="meta">
        {project?.name}
        {task && (
          <>
            {" · "}
            <a class="link" href={`#/t/${task.id}`}>
              {task.title}
            </a>
          </>
        )}
        {member ? ` · ${member.name}` : ""}
      </p>
      <Placement s={s} />
      <Presence session={s} />
      {s.failureReason && <Failure reason={s.failureReason} />}
      <Lifecycle s={s} />
      {needsInput(s) && <Reply s={s} />}
      <Approvals s={s} />
      <div class="tabs" role="tablist" aria-label="Session details">
        {TABS.map((t) => (
          <button
            key={t}
            role="tab"
            id={`tab-${t}`}
            aria-selected={tab === t}
            aria-controls={`panel-${t}`}
            class="tab"
            onClick={() => setTab(t)}
          >
            {t === "timeline"
              ? "Timeline"
              : t === "terminal"
                ? "Terminal"
                : t === "changes"
                  ? "Changes"
                  : t === "transcript"
                    ? "Transcript"
                    : t === "docs"
                      ? `Docs (${s.docs?.length ?? 0})`
                      : "Mail"}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === "timeline" && <Timeline s={s} />}
        {tab === "terminal" && <TerminalTab s={s} />}
        {tab === "changes" && <ChangesTab s={s} />}
        {tab === "transcript" && <TranscriptTab s={s} />}
        {tab === "docs" && <Docs s={s} />}
        {tab === "mail" && <Mail s={s} />}
      </div>
      {!isTerminal(s) && <Actions s={s} />}
    </div>
  );
}

/** Who launched the agent and the machine it runs on. */
function Placement({ s }: { s: Session }) {
  const p = placement(s);
  const machine = machineName(p, runners.value);
  const m = s.metadata as Record<string, unknown> | null | undefined;
  const tool = m && typeof m === "object" && typeof m.agentTool === "string" ? m.agentTool : undefined;
  if (!p.launcher && !machine) return null;
  const by = p.launcher === "runner" ? "Runner" : p.launcher === "desktop" ? "Desktop app" : p.launcher;
  return (
    <p class="placement" data-launcher={p.launcher ?? ""}>
      {by && <span class="tag">{by}</span>}
      {machine ? (
        <span>
          on <strong class="machine-name">{machine}</strong>
        </span>
      ) : p.launcher === "runner" ? (
        <span class="meta">waiting for a machine to claim it</span>
      ) : null}
      {tool && <span class="meta">{tool}</span>}
    </p>
  );
}

/** A failure reason as `code: detail` (e.g. `agent_not_found: claude is not on PATH on laptop`). */
function Failure({ reason }: { reason: string }) {
  const i = reason.indexOf(":");
  const code = i > 0 && !/\s/.test(reason.slice(0, i)) ? reason.slice(0, i) : null;
  const detail = code ? reason.slice(i + 1).trim() : reason;
  const hint: Record<string, string> = {
    runner_lost: "The machine that ran it stopped answering.",
  };
  return (
    <div class="card card-bad failure" data-reason={reason}>
      <strong class="failure-title">Failed{code ? `: ${statusLabel(code)}` : ""}</strong>
      {detail && <p class="failure-detail">{code ? detail : statusLabel(detail)}</p>}
      {code && hint[code] && <p class="meta">{hint[code]}</p>}
    </div>
  );
}

/** Stop (confirmed first) while the agent runs; Resume once it has finished. */
function Lifecycle({ s }: { s: Session }) {
  const [confirm, setConfirm] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setConfirm(false), [s.status]);
  if (!can("operate")) return null;
  const p = placement(s);
  const done = isTerminal(s);
  if (done && !(p.launcher === "runner" || p.runnerId)) return null;
  const act = async (what: "stop" | "resume") => {
    setBusy(true);
    setError(null);
    try {
      const body: StopRequest = {}; // the server's grace period; resume takes no options
      await api("POST", `/api/sessions/${encodeURIComponent(s.id)}/${what}`, body);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
      setConfirm(false);
    }
  };
  return (
    <div class="lifecycle">
      <div class="row lifecycle-row">
        {done ? (
          <button class="btn btn-primary btn-small" type="button" disabled={busy} onClick={() => act("resume")}>
            {busy ? "Resuming…" : "Resume"}
          </button>
        ) : confirm ? (
          <>
            <span class="meta confirm-text">Stop this agent?</span>
            <button class="btn btn-ghost btn-small" type="button" onClick={() => setConfirm(false)}>
              Keep running
            </button>
            <button class="btn btn-danger btn-small" type="button" disabled={busy} onClick={() => act("stop")}>
              {busy ? "Stopping…" : "Stop the agent"}
            </button>
          </>
        ) : (
          <button class="btn btn-danger-ghost btn-small" type="button" onClick={() => setConfirm(true)}>
            Stop…
          </button>
        )}
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

/** xterm.js is its own chunk, loaded the first time a Terminal tab opens. */
const TerminalView = lazyView<{ sessionId: string; finished: boolean }>(
  () => import("../terminal/view").then((m) => m.TerminalView),
  "the terminal",
);

function TerminalTab({ s }: { s: Session }) {
  return <TerminalView sessionId={s.id} finished={isTerminal(s)} />;
}

/** The agent's own transcript, its own chunk. */
const TranscriptView = lazyView<{ sessionId: string }>(
  () => import("./transcript").then((m) => m.TranscriptView),
  "the transcript",
);

function TranscriptTab({ s }: { s: Session }) {
  return <TranscriptView sessionId={s.id} />;
}

function Approvals({ s }: { s: Session }) {
  // Approval events do not change the session object: read the version, or this is skipped.
  void version.value;
  const list = [...pendingApprovals(allStates(), s.id), ...settled.value.filter((a) => a.sessionId === s.id)];
  if (list.length === 0) return null;
  return (
    <Section title="Approvals" id="approvals-title">
      <ul class="cards">
        {list.map((a) => (
          <li key={a.id}>
            <ApprovalCard approval={a} />
          </li>
        ))}
      </ul>
    </Section>
  );
}

function Timeline({ s }: { s: Session }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const entries = [...(s.timeline ?? [])].reverse();
  const st = stateOf(s.projectId);
  // Live events carry only a session's latest entries: older ones are paged in on request.
  const earlier = st?.hasEarlier(s.id) ?? false;
  const loadEarlier = async () => {
    if (!st || busy) return;
    setBusy(true);
    setError(null);
    try {
      const before = st.earlierBefore(s.id);
      const q = before === undefined ? "" : `?before=${before}`;
      const page = await api<TimelinePage>("GET", `/api/sessions/${encodeURIComponent(s.id)}/timeline${q}`);
      st.addTimelinePage(s.id, page);
      version.value++;
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  if (entries.length === 0 && !earlier) return <Empty>Nothing yet.</Empty>;
  return (
    <>
      <ol class="timeline" aria-label="Timeline, newest first">
        {entries.map((t) => (
          <li key={t.id} class={`tl tl-${t.type}`}>
            <div class="tl-head">
              <span class="tl-kind">{statusLabel(t.type)}</span>
              <time class="meta">{clock(t.timestamp)}</time>
            </div>
            {t.message && <div class="tl-msg">{t.message}</div>}
          </li>
        ))}
      </ol>
      {earlier && (
        <button class="btn btn-ghost" type="button" disabled={busy} onClick={loadEarlier}>
          {busy ? "Loading…" : "Earlier entries"}
        </button>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </>
  );
}

function Docs({ s }: { s: Session }) {
  // `session:updated` carries docs without their content: read it when a doc lacks it.
  const [fetched, setFetched] = useState<Map<string, DocEntry>>(new Map());
  const missing = (s.docs ?? []).some((d) => d.content == null && !fetched.has(d.id));
  useEffect(() => {
    if (!missing) return;
    api<DocEntry[]>("GET", `/api/sessions/${encodeURIComponent(s.id)}/docs`)
      .then((list) => setFetched(new Map(list.map((d) => [d.id, d]))))
      .catch(() => undefined);
  }, [s.id, missing]);
  const docs = (s.docs ?? []).map((d) => (d.content == null ? (fetched.get(d.id) ?? d) : d));
  const [open, setOpen] = useState<string | null>(docs.length === 1 ? docs[0].id : null);
  if (docs.length === 0) return <Empty>No docs.</Empty>;
  return (
    <ul class="list">
      {docs.map((d) => (
        <li key={d.id} class="doc">
          <button
            type="button"
            class="row-link doc-toggle"
            aria-expanded={open === d.id}
            onClick={() => setOpen(open === d.id ? null : d.id)}
          >
            <span class="row-title">{d.title}</span>
            <span class="meta">{d.filePath}</span>
          </button>
          {open === d.id && (
            <div class="markdown">{d.content ? renderMarkdown(d.content) : <Empty>No content.</Empty>}</div>
          )}
        </li>
      ))}
    </ul>
  );
}

function Mail({ s }: { s: Session }) {
  const [fetched, setFetched] = useState<MailMessage[]>([]);
  useEffect(() => {
    api<MailMessage[]>(
      "GET",
      `/api/mail/inbox/${encodeURIComponent(s.id)}?projectId=${encodeURIComponent(s.projectId)}`,
    )
      .then(setFetched)
      .catch(() => undefined);
  }, [s.id]);
  const live = stateOf(s.projectId)?.mail.filter((m) => m.toSessionId === s.id || m.fromSessionId === s.id) ?? [];
  const byId = new Map<string, MailMessage>();
  for (const m of [...fetched, ...live]) byId.set(m.id, m);
  const thread = [...byId.values()].sort((a, b) => a.seq - b.seq || a.createdAt - b.createdAt);
  if (thread.length === 0) return <Empty>No mail.</Empty>;
  return (
    <ol class="mail" aria-label="Mail">
      {thread.map((m) => (
        <li key={m.id} class={`mail-item ${m.fromSessionId === s.id ? "mail-out" : "mail-in"}`}>
          <div class="tl-head">
            <span class="tl-kind">
              {m.fromSessionId === s.id ? "from agent" : `from ${m.fromSessionId}`} · {m.type}
            </span>
            <time class="meta">{clock(m.createdAt)}</time>
          </div>
          <div class="mail-subject">{m.subject}</div>
          {mailText(m.body) && <div class="tl-msg">{mailText(m.body)}</div>}
        </li>
      ))}
    </ol>
  );
}

function Reply({ s }: { s: Session }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // A needs-input notification opens `#/s/<id>?reply`: the answer box, ready to type in.
  const wantsReply = route.value.query.has("reply");
  useEffect(() => {
    if (wantsReply) document.getElementById("session-reply")?.focus();
  }, [wantsReply]);
  return (
    <div class="card card-ask">
      <blockquote class="question">{question(s) ? inline(question(s)) : "The agent is waiting for input."}</blockquote>
      {can("respond") && (
        <form
          class="reply"
          onSubmit={async (e) => {
            e.preventDefault();
            if (!text.trim() || busy) return;
            setBusy(true);
            setError(null);
            try {
              await emitIn(s.projectId, "session:reply-input", { sessionId: s.id, message: text } satisfies ReplyInput);
              setText("");
            } catch (err) {
              setError((err as Error).message);
            } finally {
              setBusy(false);
            }
          }}
        >
          <label class="sr-only" for="session-reply">
            Your answer
          </label>
          {/* One line: the answer is typed into the agent's terminal, then Enter. */}
          <input
            id="session-reply"
            type="text"
            enterkeyhint="send"
            autocomplete="off"
            placeholder="Your answer (one line)…"
            value={text}
            onInput={(e) => setText((e.target as HTMLInputElement).value)}
          />
          <button class="btn btn-primary" type="submit" disabled={busy || !text.trim()}>
            {busy ? "Sending…" : "Send answer"}
          </button>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
        </form>
      )}
    </div>
  );
}

function Actions({ s }: { s: Session }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  if (!can("respond")) return null;
  return (
    <section class="section" aria-labelledby="steer-title">
      <h2 class="section-title" id="steer-title">
        Steer
      </h2>
      <form
        class="reply"
        onSubmit={async (e) => {
          e.preventDefault();
          if (!text.trim() || busy) return;
          setBusy(true);
          setNote(null);
          try {
            const first = text.split("\n").find((l) => l.trim()) ?? "Directive";
            await api("POST", "/api/mail", {
              projectId: s.projectId,
              fromSessionId: "user",
              toSessionId: s.id,
              type: "directive",
              subject: first.slice(0, 120),
              body: { message: text },
            } satisfies SendMail);
            setText("");
            setNote("Directive sent.");
          } catch (err) {
            setNote((err as Error).message);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label class="label" for="directive">
          Send a directive
        </label>
        <textarea
          id="directive"
          rows={2}
          placeholder="e.g. Run the tests before you commit"
          value={text}
          onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        />
        <button class="btn" type="submit" disabled={busy || !text.trim()}>
          Send directive
        </button>
        {note && (
          <p class="note" role="status">
            {note}
          </p>
        )}
      </form>
    </section>
  );
}
