// The shell: header with the connection state, the current screen, the bottom navigation.

import { signedOut } from "./api";
import { can, me, unreachable } from "./auth";
import { clock } from "./format";
import { allStates, connection, version } from "./live";
import { route } from "./router";
import { needsYou, pendingApprovals } from "./store";
import { Board, NewTask, Spawn, TaskDetail } from "./screens/board";
import { Fleet } from "./screens/fleet";
import { NeedsYou } from "./screens/needs";
import { SessionScreen } from "./screens/session";
import { Settings, SignedOut } from "./screens/settings";

function ConnectionState() {
  const c = connection.value;
  const text =
    c.state === "live"
      ? "Live"
      : c.state === "connecting"
        ? "Connecting…"
        : c.state === "reconnecting"
          ? `Reconnecting${c.since ? ` · since ${clock(c.since)}` : "…"}`
          : `Offline since ${clock(c.since ?? Date.now())}`;
  return (
    <span class={`conn conn-${c.state}`} role="status" aria-live="polite" data-state={c.state}>
      <span class="dot" aria-hidden="true" />
      {text}
    </span>
  );
}

function Screen() {
  const r = route.value;
  switch (r.name) {
    case "fleet":
      return <Fleet />;
    case "session":
      return <SessionScreen id={r.id ?? ""} />;
    case "board":
      return <Board id={r.id} />;
    case "task":
      return <TaskDetail id={r.id ?? ""} />;
    case "new-task":
      return can("operate") ? <NewTask projectId={r.id} /> : <Board />;
    case "spawn":
      return can("operate") ? <Spawn taskId={r.id} /> : <Board />;
    case "settings":
      return <Settings />;
    default:
      return <NeedsYou />;
  }
}

const NAV = [
  { name: "needs", href: "#/", label: "Needs you" },
  { name: "fleet", href: "#/fleet", label: "Fleet" },
  { name: "board", href: "#/board", label: "Board" },
  { name: "settings", href: "#/settings", label: "Settings" },
] as const;

function current(name: string): boolean {
  const r = route.value.name;
  if (name === "board") return r === "board" || r === "task" || r === "new-task" || r === "spawn";
  if (name === "fleet") return r === "fleet" || r === "session";
  return r === name;
}

export function App() {
  if (signedOut.value) return <SignedOut />;
  if (!me.value) {
    return (
      <main class="screen" id="main">
        <p class="empty" role="status">
          {unreachable.value ? "Cannot reach the Maestro server; retrying…" : "Loading…"}
        </p>
      </main>
    );
  }
  void version.value;
  // Sessions waiting for an answer plus tool approvals waiting for a decision.
  const waiting =
    needsYou(allStates().flatMap((p) => [...p.sessions.values()])).waiting.length + pendingApprovals(allStates()).length;
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Maestro</span>
        <ConnectionState />
      </header>
      <main id="main" tabIndex={-1}>
        <Screen />
      </main>
      <nav class="bottom" aria-label="Main">
        {NAV.map((n) => (
          <a key={n.name} href={n.href} class="nav-item" aria-current={current(n.name) ? "page" : undefined}>
            <span class="nav-label">{n.label}</span>
            {n.name === "needs" && waiting > 0 && (
              <span class="nav-count" aria-label={`${waiting} waiting`}>
                {waiting}
              </span>
            )}
          </a>
        ))}
      </nav>
    </>
  );
}
