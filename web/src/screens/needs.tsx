// Needs you, the home screen: tool approvals first, then sessions waiting for an answer (both
// oldest first), answered inline; then failed and stalled sessions.

import { useState } from "preact/hooks";

import { can } from "../auth";
import { now } from "../clock";
import { ago, statusLabel } from "../format";
import { allStates, emitIn, projects, version } from "../live";
import { needsYou, pendingApprovals, question, sessionTitle } from "../store";
import { inline } from "../markdown";
import type { ReplyInput, Session } from "../types";
import { Empty, Presence, Section, StatusBadge } from "../ui";
import { ApprovalCard, settled } from "../ui-approval";

function title(s: Session): string {
  const st = allStates().find((p) => p.projectId === s.projectId);
  return st ? sessionTitle(s, st.tasks) : s.name;
}

function projectName(id: string): string {
  return projects.value.find((p) => p.id === id)?.name ?? id;
}

function memberName(s: Session): string | undefined {
  const id = s.teamMemberId ?? s.teamMemberIds?.[0];
  if (!id) return undefined;
  return allStates().find((p) => p.projectId === s.projectId)?.members.get(id)?.name;
}

export function NeedsYou() {
  void version.value;
  const sessions = allStates().flatMap((p) => [...p.sessions.values()]);
  const { waiting, trouble } = needsYou(sessions);
  const synced = allStates().every((p) => p.synced);
  // Decisions this device lost to another (shown with who won) stay in place until dismissed.
  const approvals = [...pendingApprovals(allStates()), ...settled.value].sort((a, b) => a.createdAt - b.createdAt);
  return (
    <div class="screen">
      <h1 class="screen-title">Needs you</h1>
      {approvals.length > 0 && (
        <ul class="cards approvals" aria-label="Asking for permission">
          {approvals.map((a) => (
            <li key={a.id}>
              <ApprovalCard approval={a} />
            </li>
          ))}
        </ul>
      )}
      {waiting.length === 0 && approvals.length === 0 && (
        <Empty>{synced ? "No agent is waiting for you." : "Loading…"}</Empty>
      )}
      <ul class="cards" aria-label="Waiting for your answer">
        {waiting.map((s) => (
          <li key={s.id}>
            <AskCard session={s} />
          </li>
        ))}
      </ul>
      {trouble.length > 0 && (
        <Section title="Failed or stalled" id="trouble-title">
          <ul class="cards">
            {trouble.map((s) => (
              <li key={s.id}>
                <a class="card card-link card-bad" href={`#/s/${s.id}`}>
                  <div class="card-head">
                    <strong class="card-title">{title(s)}</strong>
                    <StatusBadge session={s} />
                  </div>
                  <div class="meta">
                    {projectName(s.projectId)}
                    {memberName(s) ? ` · ${memberName(s)}` : ""}
                    {s.failureReason ? ` · ${statusLabel(s.failureReason)}` : ""}
                  </div>
                  <Presence session={s} />
                </a>
              </li>
            ))}
          </ul>
        </Section>
      )}
    </div>
  );
}

function AskCard({ session: s }: { session: Session }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const asked = question(s);
  const recent = (s.timeline ?? []).filter((t) => t.type !== "needs_input").slice(-3);
  const inputId = `reply-${s.id}`;
  async function send(e: Event) {
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
  }
  return (
    <article class="card card-ask" aria-label={`${title(s)} asks`}>
      <div class="card-head">
        <a class="card-title link" href={`#/s/${s.id}`}>
          {title(s)}
        </a>
        <span class="meta">{ago(s.needsInput?.since ?? s.lastActivity, now.value)}</span>
      </div>
      <div class="meta">
        {projectName(s.projectId)}
        {memberName(s) ? ` · ${memberName(s)}` : ""}
      </div>
      {recent.length > 0 && (
        <ol class="mini-timeline" aria-label="Latest activity">
          {recent.map((t) => (
            <li key={t.id}>
              <span class="tl-kind">{statusLabel(t.type)}</span> {t.message}
            </li>
          ))}
        </ol>
      )}
      <blockquote class="question">{asked ? inline(asked) : "The agent is waiting for input."}</blockquote>
      {can("respond") ? (
        <form class="reply" onSubmit={send}>
          <label class="sr-only" for={inputId}>
            Your answer to {title(s)}
          </label>
          {/* One line: the answer is typed into the agent's terminal, then Enter. */}
          <input
            id={inputId}
            type="text"
            enterkeyhint="send"
            autocomplete="off"
            placeholder="Your answer (one line)…"
            value={text}
            onInput={(e) => setText((e.target as HTMLInputElement).value)}
          />
          <div class="row">
            <a class="btn btn-ghost" href={`#/s/${s.id}`}>
              Open
            </a>
            <button class="btn btn-primary" type="submit" disabled={busy || !text.trim()}>
              {busy ? "Sending…" : "Send answer"}
            </button>
          </div>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
        </form>
      ) : (
        <a class="btn btn-ghost" href={`#/s/${s.id}`}>
          Open
        </a>
      )}
    </article>
  );
}
