// The viewer's side of a session's live terminal (docs/runners.md, "The terminal protocol"),
// without a DOM: the WebSocket, its messages, who has control, reconnecting. The xterm.js view
// (./view.tsx) gives it a `TerminalSink` and renders its `state`; the unit tests give it a fake
// socket.
//
// Ordering rule: after `hello` or `snapshot` the next binary frame is a whole screen, so the sink
// is reset right before that frame is written (never earlier, or live output still in flight
// from before would land on the fresh screen).

import { signal } from "@preact/signals";

/** Where the bytes go: the xterm.js terminal, in order. */
export interface TerminalSink {
  reset(): void;
  write(data: Uint8Array): void;
  resize(cols: number, rows: number): void;
}

/** The part of the browser's `WebSocket` the client uses. */
export interface SocketLike {
  binaryType: string;
  /** 1 while open, as `WebSocket.OPEN`. */
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type LinkState = "connecting" | "live" | "retrying" | "ended";

export interface TermState {
  link: LinkState;
  /** When the next attempt starts (ms), while `retrying`. */
  retryAt: number | null;
  hostConnected: boolean;
  /** This device may take control and type (`operate`). */
  canType: boolean;
  /** `desk`, a viewer id, or nobody. */
  controller: string | null;
  /** Our viewer id on the current connection. */
  viewerId: string | null;
  cols: number;
  rows: number;
  /** How the agent ended: its exit code, or the signal (a number, or a name) that ended it. */
  exit: { code: number | null; signal: number | string | null } | null;
  error: { code: string; message: string } | null;
}

export const INITIAL: TermState = {
  link: "connecting",
  retryAt: null,
  hostConnected: false,
  canType: false,
  controller: null,
  viewerId: null,
  cols: 80,
  rows: 24,
  exit: null,
  error: null,
};

/** Waits between reconnect attempts: doubling from 0.5 s, at most 15 s. */
export const BACKOFF_MS = [500, 1_000, 2_000, 4_000, 8_000, 15_000];

export type Control = "you" | "desk" | "other" | "nobody";

/** Who holds the keyboard, as this viewer sees it. */
export function controlOf(s: TermState): Control {
  if (s.controller === null) return "nobody";
  if (s.controller === "desk") return "desk";
  return s.viewerId !== null && s.controller === s.viewerId ? "you" : "other";
}

export function inControl(s: TermState): boolean {
  return s.link === "live" && controlOf(s) === "you";
}

/** `ws:`/`wss:` URL of a session's terminal on this page's origin. */
export function terminalUrl(sessionId: string, loc: { protocol: string; host: string }): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/api/sessions/${encodeURIComponent(sessionId)}/terminal`;
}

const encoder = new TextEncoder();

export class TerminalClient {
  readonly state = signal<TermState>({ ...INITIAL });
  private socket: SocketLike | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** A whole screen comes next: reset before writing it. */
  private screenNext = false;
  private fitted: { cols: number; rows: number } | null = null;
  private disposed = false;
  /** The session is over: a closed socket is not reopened. */
  private finished = false;

  constructor(
    private readonly url: string,
    private readonly sink: TerminalSink,
    private readonly open: (url: string) => SocketLike = (u) => new WebSocket(u) as unknown as SocketLike,
  ) {}

  start(): void {
    this.connect();
  }

  dispose(): void {
    this.disposed = true;
    this.clearTimer();
    const s = this.socket;
    this.socket = null;
    s?.close(1000, "closed");
  }

  /** Tells whether the session has ended: then a closed connection stays closed. */
  setFinished(finished: boolean): void {
    this.finished = finished;
    if (!finished && this.state.value.link === "ended") this.reconnectNow();
  }

  /** Drops the current connection (it may be dead after the phone slept) and opens another. */
  reconnectNow(): void {
    if (this.disposed) return;
    this.clearTimer();
    const s = this.socket;
    this.socket = null;
    s?.close(1000, "reconnecting");
    this.attempt = 0;
    this.connect();
  }

  takeControl(): void {
    this.sendText({ type: "take-control" });
  }

  releaseControl(): void {
    this.sendText({ type: "release-control" });
  }

  /** Keystrokes (xterm's `onData`, the key bar, a paste): sent only while in control. */
  input(data: string): boolean {
    const s = this.socket;
    if (!inControl(this.state.value) || !data || s?.readyState !== 1) return false;
    s.send(encoder.encode(data));
    return true;
  }

  /**
   * The size that fits this screen. While in control, the host's terminal takes it (the server
   * tells the host and every viewer); otherwise the host's size stands.
   */
  setFitted(cols: number, rows: number): void {
    if (!(cols > 0 && rows > 0)) return;
    this.fitted = { cols, rows };
    this.applyFit();
  }

  dismissError(): void {
    this.update({ error: null });
  }

  private connect(): void {
    if (this.disposed) return;
    this.screenNext = false;
    this.update({ link: "connecting", retryAt: null });
    let s: SocketLike;
    try {
      s = this.open(this.url);
    } catch {
      this.retry();
      return;
    }
    s.binaryType = "arraybuffer";
    this.socket = s;
    s.onmessage = (ev) => {
      if (this.socket !== s) return;
      if (typeof ev.data === "string") this.onText(ev.data);
      else this.onBinary(toBytes(ev.data));
    };
    s.onclose = () => {
      if (this.socket !== s) return;
      this.socket = null;
      this.retry();
    };
    s.onerror = () => undefined; // a close follows
  }

  private retry(): void {
    if (this.disposed) return;
    if (this.finished) {
      this.update({ link: "ended", retryAt: null, controller: null, viewerId: null });
      return;
    }
    const wait = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt++;
    this.update({ link: "retrying", retryAt: Date.now() + wait, controller: null, viewerId: null });
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, wait);
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A text message from the server. */
  private onText(raw: string): void {
    let m: any;
    try {
      m = JSON.parse(raw);
    } catch {
      return;
    }
    if (!m || typeof m !== "object") return;
    switch (m.type) {
      case "hello":
        // A working connection: the next drop starts the backoff from the beginning.
        this.attempt = 0;
        this.screenNext = true;
        this.sink.resize(m.cols, m.rows);
        this.update({
          link: "live",
          retryAt: null,
          cols: m.cols,
          rows: m.rows,
          hostConnected: m.hostConnected === true,
          canType: m.canType === true,
          controller: m.controller ?? null,
          viewerId: m.viewerId ?? null,
          error: null,
        });
        break;
      case "snapshot":
        this.screenNext = true;
        break;
      case "resize":
        this.sink.resize(m.cols, m.rows);
        this.update({ cols: m.cols, rows: m.rows });
        break;
      case "host":
        this.update({ hostConnected: m.connected === true, ...(m.connected === true ? { exit: null } : {}) });
        break;
      case "control":
        this.update({ controller: m.controller ?? null });
        this.applyFit();
        break;
      case "exit":
        this.update({ exit: { code: m.code ?? null, signal: m.signal ?? null } });
        break;
      case "error":
        this.update({ error: { code: String(m.code ?? "error"), message: String(m.message ?? m.code ?? "error") } });
        break;
    }
  }

  private onBinary(bytes: Uint8Array): void {
    if (this.screenNext) {
      this.screenNext = false;
      this.sink.reset();
    }
    this.sink.write(bytes);
  }

  private applyFit(): void {
    const s = this.state.value;
    const f = this.fitted;
    if (!f || !inControl(s) || (f.cols === s.cols && f.rows === s.rows)) return;
    this.sendText({ type: "resize", cols: f.cols, rows: f.rows });
    this.sink.resize(f.cols, f.rows);
    this.update({ cols: f.cols, rows: f.rows });
  }

  private sendText(m: object): void {
    if (this.socket?.readyState === 1) this.socket.send(JSON.stringify(m));
  }

  private update(patch: Partial<TermState>): void {
    this.state.value = { ...this.state.value, ...patch };
  }
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data as ArrayBuffer);
}
