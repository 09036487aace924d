// The session screen's Terminal tab: xterm.js fed by ./client.ts. This module (with xterm.js, its
// fit addon and its CSS) is its own chunk, loaded only when the tab opens, so the start-up
// budget never pays for it.
//
// Size: the host's terminal decides cols × rows (every viewer sees the same screen). A viewer
// that is not in control sees it at a readable font size and pans when it is wider than the
// phone; a viewer in control makes the host take the size that fits this screen.

import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";

import { now } from "../clock";
import { mirrorStyles } from "./csp-styles";
import { TerminalClient, controlOf, inControl, terminalUrl, type TermState } from "./client";
import { KEY_BAR, keyBytes } from "./keys";

const FONT_SIZE = 13;

/** Dark in both themes: agents' output (and its ANSI colours) is written for a dark terminal. */
const THEME = {
  background: "#0f1318",
  foreground: "#e6e9ef",
  cursor: "#e6e9ef",
  cursorAccent: "#0f1318",
  selectionBackground: "#3b5bdb80",
};

export function TerminalView({ sessionId, finished }: { sessionId: string; finished: boolean }) {
  const frame = useRef<HTMLDivElement>(null);
  const root = useRef<HTMLDivElement>(null);
  const [client, setClient] = useState<TerminalClient | null>(null);
  const term = useRef<Terminal | null>(null);
  const [follow, setFollow] = useState(true);
  const followRef = useRef(follow);
  followRef.current = follow;

  useEffect(() => {
    const el = frame.current!;
    // The tab was opened to look at the terminal: bring all of it (bars, screen, keys) into view.
    root.current?.scrollIntoView({ block: "start" });
    const t = new Terminal({
      fontSize: FONT_SIZE,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace',
      lineHeight: 1.15,
      theme: THEME,
      scrollback: 2_000,
      disableStdin: true,
      cursorInactiveStyle: "outline",
      // Off: its live region reads out every redraw, which an agent's full-screen UI makes
      // constant. The rows are text in the DOM either way.
      screenReaderMode: false,
    });
    const fit = new FitAddon();
    t.loadAddon(fit);
    const unmirror = mirrorStyles(el);
    t.open(el);
    term.current = t;

    /** Where the user scrolled the scrollback to, kept while Follow is off. */
    let held: number | null = null;
    /** Writes not yet parsed: a scroll meanwhile is xterm following output, not the user. */
    let pending = 0;
    const c = new TerminalClient(terminalUrl(sessionId, location), {
      // xterm parses writes later, in order; resize and reset take effect at once. Queue them
      // behind what is already written, so each lands between the right bytes.
      reset: () => t.write(new Uint8Array(0), () => t.reset()),
      resize: (cols, rows) =>
        t.write(new Uint8Array(0), () => {
          if (cols > 0 && rows > 0 && (cols !== t.cols || rows !== t.rows)) t.resize(cols, rows);
        }),
      write: (data) => {
        if (!followRef.current && held === null) held = t.buffer.active.viewportY;
        pending++;
        t.write(data, () => {
          pending--;
          if (followRef.current) {
            held = null;
            t.scrollToBottom();
            showCursor(t, el);
          } else if (held !== null) {
            t.scrollToLine(held);
          }
        });
      },
    });
    t.onScroll(() => {
      if (!followRef.current && pending === 0) held = t.buffer.active.viewportY;
    });
    t.onData((d) => void c.input(d));
    setClient(c);
    c.start();

    const refit = () => {
      const d = fit.proposeDimensions();
      if (d && Number.isFinite(d.cols) && Number.isFinite(d.rows)) c.setFitted(d.cols, d.rows);
    };
    const ro = new ResizeObserver(refit);
    ro.observe(el);
    refit();

    // A phone that slept may hold a socket that looks open and is dead; the network coming
    // back should not wait for the backoff.
    let hiddenAt = 0;
    const onVisible = () => {
      if (document.visibilityState === "hidden") hiddenAt = Date.now();
      else if (Date.now() - hiddenAt > 5_000) c.reconnectNow();
    };
    const onOnline = () => c.reconnectNow();
    document.addEventListener("visibilitychange", onVisible);
    window.addEventListener("online", onOnline);
    return () => {
      document.removeEventListener("visibilitychange", onVisible);
      window.removeEventListener("online", onOnline);
      ro.disconnect();
      c.dispose();
      t.dispose();
      unmirror();
      term.current = null;
    };
  }, [sessionId]);

  useEffect(() => client?.setFinished(finished), [client, finished]);

  const s = client?.state.value;
  // Once the agent has ended there is nothing to type into.
  const over = finished || Boolean(s?.exit);
  const typing = s && !over ? inControl(s) : false;
  // Before the screen says "You have control" (a layout effect), or the first keys are lost.
  useLayoutEffect(() => {
    const t = term.current;
    if (!t) return;
    t.options.disableStdin = !typing;
    t.options.cursorBlink = typing;
  }, [typing]);

  useEffect(() => {
    const t = term.current;
    if (follow && t) t.scrollToBottom();
  }, [follow]);

  const send = (bytes: string) => {
    if (!client?.input(bytes)) return;
    term.current?.scrollToBottom();
  };

  const paste = async () => {
    let text: string | null = null;
    try {
      text = await navigator.clipboard.readText();
    } catch {
      // No permission or no clipboard API (plain http): ask instead.
    }
    if (!text) text = window.prompt("Text to paste into the terminal");
    if (text && term.current && client && inControl(client.state.value)) term.current.paste(text);
  };

  return (
    <div class="term" ref={root}>
      <div class="term-bar">
        <LinkStatus s={s} />
        <button
          type="button"
          class="btn btn-small btn-ghost follow"
          aria-pressed={follow}
          onClick={() => setFollow(!follow)}
          title="Keep the newest output in view"
        >
          {follow ? "Following" : "Follow"}
        </button>
      </div>
      {s && s.canType && s.link === "live" && !over && (
        <div class="term-control">
          <span class="meta" data-control={controlOf(s)}>
            {controlText(s)}
          </span>
          {typing ? (
            <button type="button" class="btn btn-small" onClick={() => client!.releaseControl()}>
              Release
            </button>
          ) : (
            <button
              type="button"
              class="btn btn-small btn-primary"
              disabled={!s.hostConnected}
              onClick={() => {
                client!.takeControl();
                term.current?.focus();
              }}
            >
              Take control
            </button>
          )}
        </div>
      )}
      {s && !s.canType && s.link === "live" && !over && <p class="meta term-control">Read only: {controlText(s)}</p>}
      <div class="term-frame" ref={frame} data-cols={s?.cols} data-rows={s?.rows} />
      {s?.error && (
        <p class="error term-error" role="alert">
          {s.error.code === "not_in_control" ? "Take control to type: another viewer or the desk has it." : s.error.message}{" "}
          <button type="button" class="link btn-link" onClick={() => client!.dismissError()}>
            Dismiss
          </button>
        </p>
      )}
      {s?.canType && !over && (
        <div class="keybar" role="group" aria-label="Keys">
          {KEY_BAR.map((k) => (
            <button
              key={k.key}
              type="button"
              class={`key key-${k.key}`}
              aria-label={k.name}
              disabled={!typing}
              // Keeps the focus (and the phone's keyboard) on the terminal.
              onMouseDown={(e) => e.preventDefault()}
              onClick={() => send(keyBytes(k.key, term.current?.modes.applicationCursorKeysMode ?? false))}
            >
              {k.label}
            </button>
          ))}
          <button
            type="button"
            class="key key-paste"
            disabled={!typing}
            onMouseDown={(e) => e.preventDefault()}
            onClick={() => void paste()}
          >
            Paste
          </button>
        </div>
      )}
    </div>
  );
}

function LinkStatus({ s }: { s: TermState | undefined }) {
  let text: string;
  let tone: string;
  if (!s || s.link === "connecting") {
    text = "Connecting…";
    tone = "connecting";
  } else if (s.link === "retrying") {
    const secs = Math.max(0, Math.ceil(((s.retryAt ?? 0) - now.value) / 1000));
    text = secs > 0 ? `Reconnecting in ${secs} s…` : "Reconnecting…";
    tone = "reconnecting";
  } else if (s.link === "ended") {
    text = "Session ended";
    tone = "done";
  } else if (s.exit) {
    text = s.exit.signal != null ? `Agent ended by ${signalName(s.exit.signal)}` : `Agent exited (code ${s.exit.code ?? "?"})`;
    tone = "done";
  } else if (!s.hostConnected) {
    text = "Live · the agent's machine is not connected";
    tone = "reconnecting";
  } else {
    text = `Live · ${s.cols}×${s.rows}`;
    tone = "live";
  }
  return (
    <span class={`conn conn-${tone} term-link`} role="status" aria-live="polite" data-link={s?.link ?? "connecting"}>
      <span class="dot" aria-hidden="true" />
      {text}
    </span>
  );
}

const SIGNALS: Record<number, string> = { 1: "SIGHUP", 2: "SIGINT", 9: "SIGKILL", 15: "SIGTERM" };

/** `9` → `signal 9 (SIGKILL)`; a name stays as it is. */
function signalName(signal: number | string): string {
  if (typeof signal === "string") return signal;
  return SIGNALS[signal] ? `signal ${signal} (${SIGNALS[signal]})` : `signal ${signal}`;
}

function controlText(s: TermState): string {
  switch (controlOf(s)) {
    case "you":
      return "You have control";
    case "desk":
      return "The desk has control";
    case "other":
      return "Another device has control";
    default:
      return "Nobody has control";
  }
}

/** Scrolls the frame (when the host's screen is bigger than the phone's) to the cursor. */
function showCursor(t: Terminal, frame: HTMLElement): void {
  if (frame.scrollHeight <= frame.clientHeight && frame.scrollWidth <= frame.clientWidth) return;
  const screen = t.element;
  if (!screen) return;
  const lineH = screen.clientHeight / t.rows;
  const cellW = screen.clientWidth / t.cols;
  const y = t.buffer.active.cursorY * lineH;
  const x = t.buffer.active.cursorX * cellW;
  if (y < frame.scrollTop || y + lineH > frame.scrollTop + frame.clientHeight) {
    frame.scrollTop = Math.max(0, y - frame.clientHeight / 2);
  }
  if (x < frame.scrollLeft || x + cellW > frame.scrollLeft + frame.clientWidth) {
    frame.scrollLeft = Math.max(0, x - frame.clientWidth / 2);
  }
}
