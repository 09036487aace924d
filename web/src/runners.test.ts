import { describe, expect, it, vi } from "vitest";

// runners.ts reads the API module, which reads sessionStorage when it loads.
vi.hoisted(() => {
  (globalThis as { sessionStorage?: unknown }).sessionStorage ??= {
    getItem: () => null,
    setItem: () => undefined,
    removeItem: () => undefined,
  };
});

import { machineName, placement, sortRunners, upsertRunner } from "./runners";
import type { Runner, Session } from "./types";

function runner(id: string, patch: Partial<Runner> = {}): Runner {
  return {
    id,
    machineId: `m-${id}`,
    hostname: id,
    agents: ["shell"],
    capacity: 8,
    running: 0,
    online: true,
    lastSeen: 100,
    registeredAt: 1,
    version: "0.1.0",
    local: false,
    ...patch,
  };
}

describe("runners", () => {
  it("sorts the server's own machine first, then online ones, then by name", () => {
    const list = sortRunners([runner("b"), runner("a", { online: false }), runner("z", { local: true }), runner("c")]);
    expect(list.map((r) => r.id)).toEqual(["z", "b", "c", "a"]);
  });

  it("upserts runner:updated by id, ignores an older copy, and keeps `local` from the list", () => {
    let list = [runner("here", { local: true }), runner("box")];
    list = upsertRunner(list, runner("here", { local: false, running: 2, lastSeen: 200 }));
    expect(list.find((r) => r.id === "here")).toMatchObject({ running: 2, local: true });
    list = upsertRunner(list, runner("here", { running: 1, lastSeen: 150 }));
    expect(list.find((r) => r.id === "here")?.running).toBe(2);
    list = upsertRunner(list, runner("new", { hostname: "build-box" }));
    expect(list.map((r) => r.id)).toEqual(["here", "box", "new"]);
    list = upsertRunner(list, runner("box", { online: false, lastSeen: 300 }));
    expect(list.map((r) => r.id)).toEqual(["here", "new", "box"]);
  });

  it("reads where a session runs from its metadata", () => {
    const s = {
      metadata: { launcher: "runner", runnerId: "box", machineId: "m-box", runnerHost: "old-name", pid: 3 },
    } as unknown as Session;
    const p = placement(s);
    expect(p).toEqual({ launcher: "runner", runnerId: "box", machineId: "m-box", runnerHost: "old-name" });
    expect(machineName(p, [runner("box", { hostname: "laptop" })])).toBe("laptop");
    expect(machineName(p, [])).toBe("old-name");
    expect(machineName({ machineId: "0123456789abcdef" }, [])).toBe("01234567");
    expect(placement({ metadata: null } as unknown as Session)).toEqual({});
    expect(machineName({}, [runner("box")])).toBeUndefined();
  });
});
