// The session screen's Changes tab, loaded as its own chunk (with its styles) the first time it
// opens; and Fleet's "12 files +340 −51".

import { lazyView } from "../lazy";
import type { Session } from "../types";

export const ChangesTab = lazyView<{ s: Session }>(() => import("./changes").then((m) => m.ChangesView), "the changes");

/** "12 files +340 −51", from what the server keeps with the session (`metadata.changes`). */
export function changeCount(s: Session): string | null {
  const c = (s.metadata as { changes?: { files?: number; additions?: number; deletions?: number } } | null)?.changes;
  if (!c || typeof c.files !== "number") return null;
  return `${c.files} file${c.files === 1 ? "" : "s"} +${c.additions ?? 0} −${c.deletions ?? 0}`;
}
