import { beforeEach, describe, expect, it, vi } from "vitest";

// The server, answered by hand: each request waits until the test resolves or rejects it.
type Call = { method: string; path: string; body: unknown; resolve: (v: unknown) => void; reject: (e: Error) => void };
const calls: Call[] = [];
vi.mock("./api", () => ({
  api: (method: string, path: string, body?: unknown) =>
    new Promise((resolve, reject) => calls.push({ method, path, body, resolve, reject })),
}));

import type { NotifySettings, NotifyStatus } from "./generated/protocol";
import { changeNotifySettings, notifyStatus } from "./push";
import { utcOffsetMinutes } from "./quiet-hours";

const initial: NotifySettings = {
  kinds: { approvals: true, needsInput: true, failed: true, completed: true, machineOffline: true },
  quietHours: null,
  utcOffsetMinutes: utcOffsetMinutes(),
};

function status(settings: NotifySettings): NotifyStatus {
  return { settings, lastDeliveryAt: null, subscriptions: 1, visible: true };
}

/** Lets the promise chains run. */
const settle = () => new Promise((r) => setTimeout(r, 0));

describe("notification settings", () => {
  beforeEach(() => {
    calls.length = 0;
    notifyStatus.value = status(initial);
  });

  it("two quick changes both stick: shown at once, sent in order, the second built on the first", async () => {
    const first = changeNotifySettings((s) => ({ ...s, kinds: { ...s.kinds, completed: false } }));
    const second = changeNotifySettings((s) => ({
      ...s,
      quietHours: { start: 1320, end: 420, approvalsStillNotify: true },
    }));
    // Both show before the server answers.
    expect(notifyStatus.value?.settings.kinds.completed).toBe(false);
    expect(notifyStatus.value?.settings.quietHours?.start).toBe(1320);
    await settle();
    // One request at a time: the second waits for the first.
    expect(calls.map((c) => [c.method, c.path])).toEqual([["PUT", "/api/push/settings"]]);
    expect(calls[0].body).toMatchObject({ kinds: { completed: false }, quietHours: null });
    calls[0].resolve(calls[0].body);
    await first;
    // The first answer does not undo the second change, which is still on its way.
    expect(notifyStatus.value?.settings.quietHours?.start).toBe(1320);
    await settle();
    expect(calls).toHaveLength(2);
    expect(calls[1].body).toMatchObject({ kinds: { completed: false }, quietHours: { start: 1320 } });
    const kept = { ...(calls[1].body as NotifySettings), utcOffsetMinutes: 60 };
    calls[1].resolve(kept);
    await second;
    // What the server kept is shown once the last save is answered.
    expect(notifyStatus.value?.settings).toEqual(kept);
  });

  it("a failed save reads the settings again and says why", async () => {
    const failed = changeNotifySettings((s) => ({ ...s, kinds: { ...s.kinds, failed: false } }));
    expect(notifyStatus.value?.settings.kinds.failed).toBe(false);
    await settle();
    calls[0].reject(new Error("the server is unreachable"));
    await settle();
    expect(calls[1].method).toBe("GET");
    calls[1].resolve(status(initial));
    await expect(failed).rejects.toThrow("the server is unreachable");
    expect(notifyStatus.value?.settings.kinds.failed).toBe(true);
  });

  it("a failed save whose re-read finds another UTC offset still ends, and later changes still go out", async () => {
    const failed = changeNotifySettings((s) => ({ ...s, kinds: { ...s.kinds, failed: false } }));
    await settle();
    calls[0].reject(new Error("the server is unreachable"));
    await settle();
    expect(calls[1].method).toBe("GET");
    // The server still has the offset from before the device travelled.
    calls[1].resolve(status({ ...initial, utcOffsetMinutes: initial.utcOffsetMinutes + 60 }));
    await expect(failed).rejects.toThrow("the server is unreachable");
    const later = changeNotifySettings((s) => ({ ...s, kinds: { ...s.kinds, completed: false } }));
    await settle();
    const put = calls.slice(2).find((c) => c.method === "PUT");
    expect(put?.body).toMatchObject({ kinds: { completed: false }, utcOffsetMinutes: initial.utcOffsetMinutes });
    put?.resolve(put.body);
    await later;
  });
});
