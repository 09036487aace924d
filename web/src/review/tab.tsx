// The session screen's Changes tab: loads the review screen (its own chunk, with its styles) the
// first time the tab opens, so the initial JavaScript stays within budget.

import type { FunctionComponent } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { Session } from "../types";
import { Empty } from "../ui";

type ChangesViewType = FunctionComponent<{ s: Session }>;
let changesView: ChangesViewType | null = null;

export function ChangesTab({ s }: { s: Session }) {
  const [View, setView] = useState<ChangesViewType | null>(() => changesView);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (View) return;
    let live = true;
    import("./changes")
      .then((m) => {
        changesView = m.ChangesView;
        if (live) setView(() => m.ChangesView);
      })
      .catch((err: Error) => live && setError(err.message));
    return () => {
      live = false;
    };
  }, []);
  if (error)
    return (
      <p class="error" role="alert">
        The changes could not be loaded: {error}
      </p>
    );
  if (!View) return <Empty>Loading the changes…</Empty>;
  return <View s={s} />;
}

/** "12 files +340 −51", from what the server keeps with the session (`metadata.changes`). */
export function changeCount(s: Session): string | null {
  const c = (s.metadata as { changes?: { files?: number; additions?: number; deletions?: number } } | null)?.changes;
  if (!c || typeof c.files !== "number") return null;
  return `${c.files} file${c.files === 1 ? "" : "s"} +${c.additions ?? 0} −${c.deletions ?? 0}`;
}
