// Fleet: the machines that run agents, then every session by project, with live status,
// presence, task, team member and the machine that runs it.

import { signal } from "@preact/signals";
import { useEffect } from "preact/hooks";

import { allStates, projects, version } from "../live";
import { isTerminal, needsInput, sessionTitle } from "../store";
import type { Session } from "../types";
import { Empty, Presence, StatusBadge } from "../ui";
import { ago } from "../format";
import { now } from "../clock";
import { machineName, placement, refreshRunners, runners, runnersLoaded, runnersSupported } from "../runners";
import type { Runner } from "../types";
import { changeCount } from "../review/tab";

const showAll = signal(localStorage.getItem("maestro.fleet.all") === "1");

export function Fleet() {
  void version.value;
  const states = allStates();
  useEffect(() => void refreshRunners(), []);
  return (
    <div class="screen">
      <div class="screen-head">
        <h1 class="screen-title">Fleet</h1>
        <div class="segmented" role="group" aria-label="Which sessions">
          {(["active", "all"] as const).map((k) => (
            <button
              key={k}
              type="button"
              class="seg"
              aria-pressed={(k === "all") === showAll.value}
              onClick={() => {
                showAll.value = k === "all";
                localStorage.setItem("maestro.fleet.all", showAll.value ? "1" : "0");
              }}
            >
              {k === "active" ? "Active" : "All"}
            </button>
          ))}
        </div>
      </div>
      <Machines />
      {projects.value.length === 0 && <Empty>No project yet. Agents create one when they start.</Empty>}
      {projects.value.map((p) => {
        const st = states.find((s) => s.projectId === p.id);
        const sessions = [...(st?.sessions.values() ?? [])]
          .filter((s) => showAll.value || !isTerminal(s))
          .sort(order);
        return (
          <section class="section" key={p.id} aria-labelledby={`p-${p.id}`}>
            <div class="section-head">
              <h2 class="section-title" id={`p-${p.id}`}>
                {p.name}
              </h2>
              <a class="link small" href={`#/board/${p.id}`}>
                Board
              </a>
            </div>
            {!st?.synced ? (
              <Empty>Loading…</Empty>
            ) : sessions.length === 0 ? (
              <Empty>{showAll.value ? "No sessions." : "No active sessions."}</Empty>
            ) : (
              <ul class="list">
                {sessions.map((s) => (
                  <li key={s.id}>
                    <SessionRow s={s} />
                  </li>
                ))}
              </ul>
            )}
          </section>
        );
      })}
    </div>
  );
}

function Machines() {
  if (!runnersSupported.value) return null;
  const list = runners.value;
  return (
    <section class="section" aria-labelledby="machines-title">
      <h2 class="section-title" id="machines-title">
        Machines
      </h2>
      {list.length === 0 ? (
        <Empty>{runnersLoaded.value ? "No machine runs agents yet." : "Loading…"}</Empty>
      ) : (
        <ul class="list machines">
          {list.map((r) => (
            <li key={r.id}>
              <MachineRow r={r} />
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function MachineRow({ r }: { r: Runner }) {
  void now.value;
  return (
    <div class={`machine${r.online ? "" : " machine-off"}`} data-runner={r.id}>
      <div class="row-main">
        <span class="row-title">
          <span class={`dot ${r.online ? "dot-on" : "dot-off"}`} aria-hidden="true" /> {r.hostname}
          {r.local && <span class="tag">this server</span>}
        </span>
        <span class="meta machine-load">
          {r.online ? `${r.running} of ${r.capacity} running` : `offline · seen ${ago(r.lastSeen, now.value)}`}
        </span>
      </div>
      <div class="meta">
        <span class="sr-only">{r.online ? "Online. " : "Offline. "}</span>
        {r.agents.length ? `Agents: ${r.agents.join(", ")}` : "No agent found on its PATH"}
      </div>
    </div>
  );
}

/** Waiting first, then working, then the rest; most recent activity first within each. */
function order(a: Session, b: Session): number {
  const rank = (s: Session) => (needsInput(s) ? 0 : isTerminal(s) ? 2 : 1);
  return rank(a) - rank(b) || b.lastActivity - a.lastActivity;
}

function SessionRow({ s }: { s: Session }) {
  const st = allStates().find((p) => p.projectId === s.projectId);
  const task = s.taskIds?.length ? st?.tasks.get(s.taskIds[0]) : undefined;
  const memberId = s.teamMemberId ?? s.teamMemberIds?.[0];
  const member = memberId ? st?.members.get(memberId) : undefined;
  const machine = machineName(placement(s), runners.value);
  return (
    <a class="row-link" href={`#/s/${s.id}`}>
      <div class="row-main">
        <span class="row-title">{st ? sessionTitle(s, st.tasks) : s.name}</span>
        <StatusBadge session={s} />
      </div>
      <div class="meta">
        {task ? task.title : "No task"}
        {member ? ` · ${member.name}` : ""}
        {machine ? ` · on ${machine}` : ""}
      </div>
      {changeCount(s) && <div class="meta change-count">{changeCount(s)}</div>}
      <div class="meta">
        <Presence session={s} />
        {s.online === undefined && `active ${ago(s.lastActivity, now.value)}`}
      </div>
    </a>
  );
}
