// Small shared pieces of the screens.

import type { ComponentChildren } from "preact";

import { ago } from "./format";
import { now } from "./clock";
import type { Session } from "./types";

export function StatusBadge({ session }: { session: Session }) {
  const waiting = session.needsInput?.active && !["completed", "failed", "stopped"].includes(session.status);
  const label = waiting ? "needs input" : session.stalled && session.status === "working" ? "stalled" : session.status;
  const tone = waiting
    ? "warn"
    : label === "failed" || label === "stalled"
      ? "bad"
      : label === "working"
        ? "good"
        : label === "completed"
          ? "done"
          : "muted";
  return <span class={`badge badge-${tone}`}>{label}</span>;
}

export function Presence({ session }: { session: Session }) {
  void now.value;
  if (session.online === undefined && session.lastSeen === undefined) return null;
  // A finished agent's presence lapses a little later: "online" would mislead until then.
  if (["completed", "failed", "stopped"].includes(session.status)) return null;
  return (
    <span class="presence">
      <span class={`dot ${session.online ? "dot-on" : "dot-off"}`} aria-hidden="true" />
      {session.online ? "online" : "offline"}
      {session.lastSeen ? ` · seen ${ago(session.lastSeen, now.value)}` : ""}
    </span>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

export function Section({ title, children, id }: { title: string; children: ComponentChildren; id?: string }) {
  return (
    <section class="section" aria-labelledby={id}>
      <h2 id={id} class="section-title">
        {title}
      </h2>
      {children}
    </section>
  );
}
