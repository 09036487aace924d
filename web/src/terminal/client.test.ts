import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { BACKOFF_MS, TerminalClient, controlOf, inControl, terminalUrl, type SocketLike } from "./client";
import { KEY_BAR, keyBytes } from "./keys";

/** A socket the test drives: what the client sent, and server messages to deliver. */
class FakeSocket implements SocketLike {
  binaryType = "blob";
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: (string | Uint8Array)[] = [];
  closed = false;
  constructor(readonly url: string) {}
  send(data: string | Uint8Array): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(data);
  }
  close(): void {
    this.closed = true;
    this.readyState = 3;
  }
  // The server's side:
  opened(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  text(m: object): void {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  binary(s: string): void {
    this.onmessage?.({ data: new TextEncoder().encode(s).buffer });
  }
  drop(): void {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: "" });
  }
  texts(): any[] {
    return this.sent.filter((x): x is string => typeof x === "string").map((x) => JSON.parse(x));
  }
  bytes(): string[] {
    return this.sent.filter((x): x is Uint8Array => typeof x !== "string").map((x) => new TextDecoder().decode(x));
  }
}

/** Records what reaches xterm, in order. */
function sink() {
  const log: string[] = [];
  return {
    log,
    reset: () => log.push("reset"),
    write: (d: Uint8Array) => log.push(`write:${new TextDecoder().decode(d)}`),
    resize: (c: number, r: number) => log.push(`resize:${c}x${r}`),
  };
}

const HELLO = { type: "hello", cols: 120, rows: 40, hostConnected: true, canType: true, controller: null, viewerId: "v3" };

function setup() {
  const sockets: FakeSocket[] = [];
  const out = sink();
  const client = new TerminalClient("ws://h/api/sessions/s1/terminal", out, (u) => {
    const s = new FakeSocket(u);
    sockets.push(s);
    return s;
  });
  client.start();
  const last = () => sockets[sockets.length - 1];
  return { client, out, sockets, last };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("terminal client", () => {
  it("builds the socket URL from the page's protocol", () => {
    expect(terminalUrl("sess_1", { protocol: "http:", host: "127.0.0.1:3000" })).toBe(
      "ws://127.0.0.1:3000/api/sessions/sess_1/terminal",
    );
    expect(terminalUrl("a/b", { protocol: "https:", host: "m.example" })).toBe("wss://m.example/api/sessions/a%2Fb/terminal");
  });

  it("hello sizes the terminal, and the next binary frame replaces the screen", () => {
    const { client, out, last } = setup();
    expect(last().binaryType).toBe("arraybuffer");
    expect(client.state.value.link).toBe("connecting");
    last().opened();
    last().text(HELLO);
    expect(client.state.value).toMatchObject({ link: "live", cols: 120, rows: 40, hostConnected: true, canType: true });
    last().binary("SCREEN");
    last().binary("live 1");
    last().binary("live 2");
    expect(out.log).toEqual(["resize:120x40", "reset", "write:SCREEN", "write:live 1", "write:live 2"]);
  });

  it("snapshot resets right before the next binary frame, not before", () => {
    const { out, last } = setup();
    last().opened();
    last().text(HELLO);
    last().binary("SCREEN");
    out.log.length = 0;
    last().text({ type: "snapshot" });
    expect(out.log).toEqual([]);
    last().binary("FRESH");
    last().binary("more");
    expect(out.log).toEqual(["reset", "write:FRESH", "write:more"]);
  });

  it("follows resize, host, exit and error messages", () => {
    const { client, out, last } = setup();
    last().opened();
    last().text(HELLO);
    last().text({ type: "resize", cols: 100, rows: 30 });
    expect(out.log.at(-1)).toBe("resize:100x30");
    expect(client.state.value).toMatchObject({ cols: 100, rows: 30 });
    last().text({ type: "exit", code: 130, signal: null });
    last().text({ type: "host", connected: false });
    expect(client.state.value).toMatchObject({ hostConnected: false, exit: { code: 130, signal: null } });
    last().text({ type: "error", code: "forbidden", message: "operate needed" });
    expect(client.state.value.error).toEqual({ code: "forbidden", message: "operate needed" });
    client.dismissError();
    expect(client.state.value.error).toBeNull();
    // Garbage is ignored.
    last().onmessage?.({ data: "not json" });
    last().text({ type: "whatever" });
  });

  it("tracks control: nobody, you, the desk, another device", () => {
    const { client, last } = setup();
    last().opened();
    last().text(HELLO);
    expect(controlOf(client.state.value)).toBe("nobody");
    client.takeControl();
    expect(last().texts()).toEqual([{ type: "take-control" }]);
    // Not in control until the server says so.
    expect(inControl(client.state.value)).toBe(false);
    last().text({ type: "control", controller: "v3" });
    expect(controlOf(client.state.value)).toBe("you");
    expect(inControl(client.state.value)).toBe(true);
    last().text({ type: "control", controller: "desk" });
    expect(controlOf(client.state.value)).toBe("desk");
    last().text({ type: "control", controller: "v9" });
    expect(controlOf(client.state.value)).toBe("other");
    client.releaseControl();
    expect(last().texts().at(-1)).toEqual({ type: "release-control" });
  });

  it("sends keystrokes as binary UTF-8 only while in control", () => {
    const { client, last } = setup();
    last().opened();
    last().text(HELLO);
    expect(client.input("ls\r")).toBe(false);
    last().text({ type: "control", controller: "v3" });
    expect(client.input("echo hi")).toBe(true);
    expect(client.input(keyBytes("enter"))).toBe(true);
    expect(client.input("é")).toBe(true);
    expect(last().bytes()).toEqual(["echo hi", "\r", "é"]);
    const raw = last().sent.at(-1) as Uint8Array;
    expect([...raw]).toEqual([0xc3, 0xa9]);
    last().text({ type: "control", controller: "desk" });
    expect(client.input("x")).toBe(false);
    expect(last().bytes()).toHaveLength(3);
  });

  it("sends the fitted size once in control, and not before", () => {
    const { client, out, last } = setup();
    last().opened();
    last().text(HELLO);
    client.setFitted(47, 30);
    expect(last().texts()).toEqual([]);
    expect(out.log.at(-1)).toBe("resize:120x40");
    last().text({ type: "control", controller: "v3" });
    expect(last().texts()).toEqual([{ type: "resize", cols: 47, rows: 30 }]);
    expect(out.log.at(-1)).toBe("resize:47x30");
    // The same size again sends nothing; a new one (rotation) is sent.
    client.setFitted(47, 30);
    client.setFitted(90, 20);
    expect(last().texts()).toEqual([
      { type: "resize", cols: 47, rows: 30 },
      { type: "resize", cols: 90, rows: 20 },
    ]);
  });

  it("reconnects with backoff, resets on the new snapshot, and control is per connection", () => {
    const { client, out, sockets, last } = setup();
    last().opened();
    last().text(HELLO);
    last().text({ type: "control", controller: "v3" });
    last().binary("OLD");
    last().drop();
    expect(client.state.value.link).toBe("retrying");
    expect(client.state.value.retryAt).toBe(Date.now() + BACKOFF_MS[0]);
    expect(inControl(client.state.value)).toBe(false);
    expect(client.input("x")).toBe(false);
    vi.advanceTimersByTime(BACKOFF_MS[0] - 1);
    expect(sockets).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(2);
    // Fails twice: the waits double.
    last().drop();
    vi.advanceTimersByTime(BACKOFF_MS[1] - 1);
    expect(sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(3);
    last().drop();
    vi.advanceTimersByTime(BACKOFF_MS[2]);
    expect(sockets).toHaveLength(4);
    out.log.length = 0;
    last().opened();
    last().text({ ...HELLO, viewerId: "v7", controller: "v3" });
    // v3 was our old id: now someone else's as far as this connection knows.
    expect(controlOf(client.state.value)).toBe("other");
    last().binary("NEW");
    expect(out.log).toEqual(["resize:120x40", "reset", "write:NEW"]);
    // A hello resets the backoff.
    last().drop();
    expect(client.state.value.retryAt).toBe(Date.now() + BACKOFF_MS[0]);
  });

  it("caps the backoff", () => {
    const { sockets, last } = setup();
    for (let i = 0; i < 10; i++) {
      last().drop();
      vi.advanceTimersByTime(BACKOFF_MS[Math.min(i, BACKOFF_MS.length - 1)]);
    }
    expect(sockets).toHaveLength(11);
    const before = Date.now();
    last().drop();
    vi.advanceTimersByTime(BACKOFF_MS.at(-1)!);
    expect(Date.now() - before).toBe(15_000);
    expect(sockets).toHaveLength(12);
  });

  it("ignores a replaced socket, stops after dispose, and stays closed once the session ended", () => {
    const { client, sockets, last } = setup();
    const first = last();
    first.opened();
    client.reconnectNow();
    expect(first.closed).toBe(true);
    expect(sockets).toHaveLength(2);
    first.text(HELLO); // late message from the old socket
    expect(client.state.value.link).toBe("connecting");
    first.drop();
    expect(sockets).toHaveLength(2);

    client.setFinished(true);
    last().drop();
    expect(client.state.value.link).toBe("ended");
    vi.advanceTimersByTime(60_000);
    expect(sockets).toHaveLength(2);
    // Resumed: connect again.
    client.setFinished(false);
    expect(sockets).toHaveLength(3);
    client.dispose();
    expect(last().closed).toBe(true);
    vi.advanceTimersByTime(60_000);
    expect(sockets).toHaveLength(3);
  });
});

describe("key bar", () => {
  it("sends what a terminal sends for each key", () => {
    expect(keyBytes("esc")).toBe("\x1b");
    expect(keyBytes("tab")).toBe("\t");
    expect(keyBytes("ctrl-c")).toBe("\x03");
    expect(keyBytes("up")).toBe("\x1b[A");
    expect(keyBytes("down")).toBe("\x1b[B");
    expect(keyBytes("right")).toBe("\x1b[C");
    expect(keyBytes("left")).toBe("\x1b[D");
    expect(keyBytes("enter")).toBe("\r");
  });

  it("sends application-mode arrows when the program asked for them", () => {
    expect(keyBytes("up", true)).toBe("\x1bOA");
    expect(keyBytes("left", true)).toBe("\x1bOD");
    expect(keyBytes("esc", true)).toBe("\x1b");
  });

  it("has the keys a phone keyboard lacks", () => {
    expect(KEY_BAR.map((k) => k.label)).toEqual(["Esc", "Tab", "Ctrl-C", "↑", "↓", "←", "→", "Enter"]);
  });
});
