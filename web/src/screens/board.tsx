// Board: a project's tasks by status column; task detail; create a task.

import { useEffect, useRef, useState } from "preact/hooks";

import { api, idempotencyKey } from "../api";
import { can } from "../auth";
import { clock, statusLabel } from "../format";
import { allStates, projects, stateOf, version } from "../live";
import { renderMarkdown } from "../markdown";
import { isTerminal } from "../store";
import {
  TASK_STATUSES,
  type CreateTask,
  type Session,
  type SpawnRequest,
  type SpawnResponse,
  type Task,
  type TaskDocEntry,
  type TimelineEvent,
  type UpdateTask,
} from "../types";
import { go } from "../router";
import { refreshRunners, runners, runnersSupported } from "../runners";
import { Empty, StatusBadge } from "../ui";

const BOARD_COLUMNS = ["todo", "in_progress", "in_review", "blocked", "completed"];

function pickProject(id: string | undefined): string | undefined {
  if (id) return id;
  const remembered = localStorage.getItem("maestro.board.project");
  if (remembered && projects.value.some((p) => p.id === remembered)) return remembered;
  return projects.value[0]?.id;
}

export function Board({ id }: { id?: string }) {
  void version.value;
  const projectId = pickProject(id);
  if (!projectId) return <div class="screen"><Empty>No project yet.</Empty></div>;
  localStorage.setItem("maestro.board.project", projectId);
  const st = stateOf(projectId);
  const tasks = [...(st?.tasks.values() ?? [])].sort((a, b) => a.createdAt - b.createdAt);
  const other = tasks.filter((t) => !BOARD_COLUMNS.includes(t.status));
  return (
    <div class="screen screen-wide">
      <div class="screen-head">
        <h1 class="screen-title">Board</h1>
        {can("operate") && (
          <a class="btn btn-primary btn-small" href={`#/new-task/${projectId}`}>
            New task
          </a>
        )}
      </div>
      {projects.value.length > 1 && (
        <div class="field">
          <label class="label" for="board-project">
            Project
          </label>
          <select
            id="board-project"
            value={projectId}
            onChange={(e) => go(`#/board/${(e.target as HTMLSelectElement).value}`)}
          >
            {projects.value.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name}
              </option>
            ))}
          </select>
        </div>
      )}
      {!st?.synced ? (
        <Empty>Loading…</Empty>
      ) : (
        <div class="columns">
          {BOARD_COLUMNS.map((col) => {
            const list = tasks.filter((t) => t.status === col);
            return (
              <section class="column" key={col} aria-labelledby={`col-${col}`} data-status={col}>
                <h2 class="column-title" id={`col-${col}`}>
                  {statusLabel(col)} <span class="count">{list.length}</span>
                </h2>
                <ul class="column-list">
                  {list.map((t) => (
                    <li key={t.id}>
                      <TaskCard t={t} />
                    </li>
                  ))}
                </ul>
                {list.length === 0 && <p class="empty small">None</p>}
              </section>
            );
          })}
        </div>
      )}
      {other.length > 0 && (
        <details class="section">
          <summary>Cancelled and archived ({other.length})</summary>
          <ul class="list">
            {other.map((t) => (
              <li key={t.id}>
                <TaskCard t={t} />
              </li>
            ))}
          </ul>
        </details>
      )}
      {st && st.activity.length > 0 && (
        <details class="section" open>
          <summary>Activity</summary>
          <ol class="activity" aria-label="Activity, newest first">
            {st.activity
              .slice(-100)
              .reverse()
              .map((a) => (
                <li key={a.seq} data-seq={a.seq}>
                  <time class="meta">{clock(a.timestamp)}</time> {a.label}
                </li>
              ))}
          </ol>
        </details>
      )}
    </div>
  );
}

function TaskCard({ t }: { t: Task }) {
  return (
    <a class="task-card" href={`#/t/${t.id}`}>
      <span class="task-title">{t.title}</span>
      {t.priority !== "medium" && <span class={`prio prio-${t.priority}`}>{t.priority}</span>}
    </a>
  );
}

function findTask(id: string): Task | undefined {
  for (const st of allStates()) {
    const t = st.tasks.get(id);
    if (t) return t;
  }
  return undefined;
}

export function TaskDetail({ id }: { id: string }) {
  void version.value;
  const t = findTask(id);
  const [docs, setDocs] = useState<TaskDocEntry[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<TaskDocEntry[]>("GET", `/api/tasks/${encodeURIComponent(id)}/docs`)
      .then(setDocs)
      .catch(() => undefined);
  }, [id, t?.sessionIds?.length]);
  if (!t) {
    const loading = allStates().some((p) => !p.synced);
    return <div class="screen"><Empty>{loading ? "Loading…" : "This task does not exist (any more)."}</Empty></div>;
  }
  const st = stateOf(t.projectId);
  const sessions = [...(st?.sessions.values() ?? [])].filter(
    (s) => s.taskIds?.includes(t.id) || t.sessionIds?.includes(s.id),
  );
  const timeline: (TimelineEvent & { session: Session })[] = sessions
    .flatMap((s) => (s.timeline ?? []).filter((e) => e.taskId === t.id).map((e) => ({ ...e, session: s })))
    .sort((a, b) => b.timestamp - a.timestamp);
  async function move(status: string) {
    setError(null);
    try {
      await api("PATCH", `/api/tasks/${encodeURIComponent(t!.id)}`, { status } satisfies UpdateTask);
    } catch (err) {
      setError((err as Error).message);
    }
  }
  return (
    <div class="screen">
      <p class="crumb">
        <a class="link" href={`#/board/${t.projectId}`}>
          ← Board
        </a>
      </p>
      <h1 class="screen-title">{t.title}</h1>
      <div class="field">
        <label class="label" for="task-status">
          Status
        </label>
        {can("operate") ? (
          <select id="task-status" value={t.status} onChange={(e) => move((e.target as HTMLSelectElement).value)}>
            {TASK_STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusLabel(s)}
              </option>
            ))}
          </select>
        ) : (
          <span id="task-status">{statusLabel(t.status)}</span>
        )}
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <p class="meta">Priority: {t.priority}</p>
      {t.description && <div class="markdown">{renderMarkdown(t.description)}</div>}
      {can("operate") && (
        <a class="btn btn-primary" href={`#/spawn/${t.id}`}>
          Start an agent on this task
        </a>
      )}
      <section class="section" aria-labelledby="task-sessions">
        <h2 class="section-title" id="task-sessions">
          Sessions
        </h2>
        {sessions.length === 0 ? (
          <Empty>No session has worked on it.</Empty>
        ) : (
          <ul class="list">
            {sessions.map((s) => (
              <li key={s.id}>
                <a class="row-link" href={`#/s/${s.id}`}>
                  <div class="row-main">
                    <span class="row-title">{s.name}</span>
                    <StatusBadge session={s} />
                  </div>
                </a>
              </li>
            ))}
          </ul>
        )}
      </section>
      <section class="section" aria-labelledby="task-timeline">
        <h2 class="section-title" id="task-timeline">
          Timeline
        </h2>
        {timeline.length === 0 ? (
          <Empty>Nothing yet.</Empty>
        ) : (
          <ol class="timeline">
            {timeline.map((e) => (
              <li key={e.id} class="tl">
                <div class="tl-head">
                  <span class="tl-kind">
                    {statusLabel(e.type)} · {e.session.name}
                  </span>
                  <time class="meta">{clock(e.timestamp)}</time>
                </div>
                {e.message && <div class="tl-msg">{e.message}</div>}
              </li>
            ))}
          </ol>
        )}
      </section>
      <section class="section" aria-labelledby="task-docs">
        <h2 class="section-title" id="task-docs">
          Docs
        </h2>
        {docs.length === 0 ? (
          <Empty>No docs.</Empty>
        ) : (
          docs.map((d) => (
            <details key={d.id} class="doc">
              <summary>
                {d.title} <span class="meta">· {d.sessionName}</span>
              </summary>
              <div class="markdown">{d.content ? renderMarkdown(d.content) : null}</div>
            </details>
          ))
        )}
      </section>
    </div>
  );
}

export function NewTask({ projectId }: { projectId?: string }) {
  const pid = pickProject(projectId);
  const [title, setTitle] = useState("");
  const [description, setDescription] = useState("");
  const [priority, setPriority] = useState("medium");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!pid) return <div class="screen"><Empty>No project yet.</Empty></div>;
  return (
    <div class="screen">
      <h1 class="screen-title">New task</h1>
      <form
        class="form"
        onSubmit={async (e) => {
          e.preventDefault();
          if (!title.trim() || busy) return;
          setBusy(true);
          setError(null);
          try {
            await api("POST", "/api/tasks", { projectId: pid, title: title.trim(), description, priority } satisfies CreateTask);
            go(`#/board/${pid}`);
          } catch (err) {
            setError((err as Error).message);
            setBusy(false);
          }
        }}
      >
        <label class="label" for="nt-title">
          Title
        </label>
        <input id="nt-title" value={title} required onInput={(e) => setTitle((e.target as HTMLInputElement).value)} />
        <label class="label" for="nt-desc">
          Description (Markdown)
        </label>
        <textarea id="nt-desc" rows={5} value={description} onInput={(e) => setDescription((e.target as HTMLTextAreaElement).value)} />
        <label class="label" for="nt-prio">
          Priority
        </label>
        <select id="nt-prio" value={priority} onChange={(e) => setPriority((e.target as HTMLSelectElement).value)}>
          <option value="low">low</option>
          <option value="medium">medium</option>
          <option value="high">high</option>
        </select>
        <button class="btn btn-primary" type="submit" disabled={busy || !title.trim()}>
          {busy ? "Creating…" : "Create task"}
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
      </form>
    </div>
  );
}

export function Spawn({ taskId }: { taskId?: string }) {
  void version.value;
  const t = taskId ? findTask(taskId) : undefined;
  const st = t ? stateOf(t.projectId) : undefined;
  const members = [...(st?.members.values() ?? [])].filter((m) => m.status !== "archived");
  const [memberId, setMemberId] = useState<string>("");
  const [machineId, setMachineId] = useState<string>("");
  const [agentTool, setAgentTool] = useState<string>("");
  const [worktree, setWorktree] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // One key per visit to this screen: a second tap (or a retry after a lost answer) reuses it,
  // and the server starts the agent once.
  const [key] = useState(idempotencyKey);
  const inFlight = useRef(false);
  useEffect(() => void refreshRunners(), []);
  if (!t) return <div class="screen"><Empty>Pick a task on the board first.</Empty></div>;
  const chosen = members.find((m) => m.id === memberId) ?? members.find((m) => m.isDefault) ?? members[0];
  const running = [...(st?.sessions.values() ?? [])].filter((s) => s.taskIds?.includes(t.id) && !isTerminal(s));
  // Machines: the online runners, the server's own first (the list is sorted so). The default is
  // the project's machine when it names one (the server's default too), else the server's own.
  const online = runners.value.filter((r) => r.online);
  const projectMachine = projects.value.find((p) => p.id === t.projectId)?.machineId;
  const machine =
    online.find((r) => r.machineId === machineId) ?? online.find((r) => r.machineId === projectMachine) ?? online[0];
  // Agents: what that machine has; the team member's tool first when it has it.
  const agents = machine?.agents ?? [];
  const preferred = chosen?.agentTool ?? "claude-code";
  const tool = agents.includes(agentTool) ? agentTool : agents.includes(preferred) ? preferred : agents[0];
  const pickers = runnersSupported.value && online.length > 0;
  const projectMachineOff =
    projectMachine && !online.some((r) => r.machineId === projectMachine)
      ? (runners.value.find((r) => r.machineId === projectMachine)?.hostname ?? projectMachine.slice(0, 8))
      : null;
  return (
    <div class="screen">
      <h1 class="screen-title">Start an agent</h1>
      <p class="meta">on “{t.title}”</p>
      {running.length > 0 && (
        <p class="note">
          {running.length} session{running.length > 1 ? "s are" : " is"} already working on it.
        </p>
      )}
      <form
        class="form"
        onSubmit={async (e) => {
          e.preventDefault();
          if (inFlight.current || !chosen) return;
          inFlight.current = true;
          setBusy(true);
          setError(null);
          try {
            const res = await api<SpawnResponse>(
              "POST",
              "/api/sessions/spawn",
              {
                projectId: t.projectId,
                taskIds: [t.id],
                teamMemberId: chosen.id,
                spawnSource: "ui",
                ...(pickers && machine ? { machineId: machine.machineId, worktree } : {}),
                ...(pickers && tool ? { agentTool: tool } : {}),
              } satisfies SpawnRequest,
              { "idempotency-key": key },
            );
            go(`#/s/${res.sessionId}`);
          } catch (err) {
            setError((err as Error).message);
            inFlight.current = false;
            setBusy(false);
          }
        }}
      >
        <label class="label" for="sp-member">
          Team member
        </label>
        <select id="sp-member" value={chosen?.id ?? ""} onChange={(e) => setMemberId((e.target as HTMLSelectElement).value)}>
          {members.map((m) => (
            <option key={m.id} value={m.id}>
              {m.name} — {m.role}
            </option>
          ))}
        </select>
        {pickers ? (
          <>
            <label class="label" for="sp-machine">
              Machine
            </label>
            {projectMachineOff && (
              <p class="note" id="sp-machine-note">
                This project's machine, {projectMachineOff}, is offline: pick another, or wait for it.
              </p>
            )}
            <select
              id="sp-machine"
              value={machine?.machineId ?? ""}
              onChange={(e) => setMachineId((e.target as HTMLSelectElement).value)}
            >
              {online.map((r) => (
                <option key={r.id} value={r.machineId}>
                  {r.hostname}
                  {r.local ? " (this server)" : ""} — {r.running} of {r.capacity} running
                </option>
              ))}
            </select>
            <label class="label" for="sp-agent">
              Agent
            </label>
            {agents.length > 0 ? (
              <select id="sp-agent" value={tool} onChange={(e) => setAgentTool((e.target as HTMLSelectElement).value)}>
                {agents.map((a) => (
                  <option key={a} value={a}>
                    {a}
                  </option>
                ))}
              </select>
            ) : (
              <p class="error" id="sp-agent">
                No agent program was found on {machine?.hostname}'s PATH: an agent started there fails at once.
              </p>
            )}
            <label class="check" for="sp-worktree">
              <input
                id="sp-worktree"
                type="checkbox"
                checked={worktree}
                onChange={(e) => setWorktree((e.target as HTMLInputElement).checked)}
              />
              <span>
                New git worktree
                <span class="meta check-hint">on branch maestro/&lt;session&gt;, so it works apart from the checkout</span>
              </span>
            </label>
            {chosen?.model && <p class="meta">Model: {chosen.model}</p>}
          </>
        ) : (
          chosen && (
            <p class="meta">
              Agent: {chosen.agentTool ?? "default tool"}
              {chosen.model ? ` · model ${chosen.model}` : ""}
              {runnersSupported.value && runners.value.length > 0 ? " · no machine is online" : ""}
            </p>
          )
        )}
        <button class="btn btn-primary" type="submit" disabled={busy || !chosen}>
          {busy ? "Starting…" : "Start agent"}
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
      </form>
    </div>
  );
}
