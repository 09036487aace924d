// Hash routing (`#/fleet`, `#/s/<id>`, …): works from any path the server falls back on,
// including `/pair`, without the server knowing the app's routes.

import { signal } from "@preact/signals";

export interface Route {
  name: "needs" | "fleet" | "session" | "board" | "task" | "spawn" | "settings" | "new-task";
  id?: string;
  query: URLSearchParams;
}

export function parse(hash: string): Route {
  const [path, q] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const query = new URLSearchParams(q ?? "");
  switch (parts[0]) {
    case "fleet":
      return { name: "fleet", query };
    case "s":
      return { name: "session", id: parts[1], query };
    case "board":
      return { name: "board", id: parts[1], query };
    case "t":
      return { name: "task", id: parts[1], query };
    case "new-task":
      return { name: "new-task", id: parts[1], query };
    case "spawn":
      return { name: "spawn", id: parts[1], query };
    case "settings":
      return { name: "settings", query };
    default:
      return { name: "needs", query };
  }
}

export const route = signal<Route>(parse(location.hash));

window.addEventListener("hashchange", () => {
  route.value = parse(location.hash);
  window.scrollTo(0, 0);
});

export function go(hash: string): void {
  location.hash = hash;
}
