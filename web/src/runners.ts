// The machines that run agents (docs/runners.md): read with `GET /api/runners`, kept current by
// `runner:updated` events, which reach every project's `/mobile` connection (global scope).
// Read again whenever a screen that shows them opens, since a phone with no project has no
// connection to hear events on.

import { signal } from "@preact/signals";

import { api, ApiError } from "./api";
import type { Runner, Session } from "./types";

export const runners = signal<Runner[]>([]);
/** False when the server has no runners route (an older server): the pickers are not shown. */
export const runnersSupported = signal(true);
/** Set once the first list has arrived (or failed). */
export const runnersLoaded = signal(false);

/** Local first, then online, then by hostname. */
export function sortRunners(list: Runner[]): Runner[] {
  return [...list].sort(
    (a, b) =>
      Number(b.local) - Number(a.local) ||
      Number(b.online) - Number(a.online) ||
      a.hostname.localeCompare(b.hostname) ||
      a.id.localeCompare(b.id),
  );
}

/**
 * The list with `r` put in (replacing the runner with its id); an older copy does not win.
 * `local` means "on the answering server's machine": only `GET /api/runners` can say that (an
 * event is the same for every listener), so a runner already listed keeps its `local`.
 */
export function upsertRunner(list: Runner[], r: Runner): Runner[] {
  const old = list.find((x) => x.id === r.id);
  if (old && old.lastSeen > r.lastSeen) return list;
  return sortRunners([...list.filter((x) => x.id !== r.id), { ...r, local: old ? old.local : r.local }]);
}

let inFlight: Promise<void> | null = null;

/** Reads the list; calls while a read is under way share it. */
export function refreshRunners(): Promise<void> {
  inFlight ??= readRunners().finally(() => (inFlight = null));
  return inFlight;
}

async function readRunners(): Promise<void> {
  try {
    runners.value = sortRunners(await api<Runner[]>("GET", "/api/runners"));
    runnersSupported.value = true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) runnersSupported.value = false;
  } finally {
    runnersLoaded.value = true;
  }
}

/** A `runner:updated` event's data. */
export function onRunnerUpdated(data: unknown): void {
  const r = data as Runner;
  if (!r || typeof r !== "object" || typeof r.id !== "string") return;
  runners.value = upsertRunner(runners.value, r);
}

/** What a session's metadata says about who runs it. */
export interface Placement {
  launcher?: string;
  runnerId?: string;
  machineId?: string;
  runnerHost?: string;
}

export function placement(s: Session): Placement {
  const m = s.metadata;
  if (!m || typeof m !== "object" || Array.isArray(m)) return {};
  const str = (k: string) => (typeof m[k] === "string" ? (m[k] as string) : undefined);
  return { launcher: str("launcher"), runnerId: str("runnerId"), machineId: str("machineId"), runnerHost: str("runnerHost") };
}

/** The machine's name for people: the runner's hostname, else what the session recorded. */
export function machineName(p: Placement, list: Runner[]): string | undefined {
  const r = list.find((x) => (p.runnerId && x.id === p.runnerId) || (p.machineId && x.machineId === p.machineId));
  return r?.hostname ?? p.runnerHost ?? (p.machineId ? p.machineId.slice(0, 8) : undefined);
}
