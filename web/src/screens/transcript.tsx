// The session screen's Transcript tab (its own chunk, loaded when the tab opens): what the agent
// wrote in its own transcript, as the server keeps it (`GET /api/sessions/:id/transcript`), newest
// last, live through `session:transcript` events. Tool calls are one line each (a <details> the
// reader expands for input and output); edits show their diff.

import { useEffect, useRef, useState } from "preact/hooks";

import { api } from "../api";
import { onTranscript } from "../live";
import type { SessionTranscript, TokenUsage, TranscriptEntry, TranscriptPage } from "../types";
import { Empty } from "../ui";

const PAGE = 100;
/** Diffs this short are shown open. */
const OPEN_DIFF_LINES = 12;

export function TranscriptView({ sessionId }: { sessionId: string }) {
  const [entries, setEntries] = useState<TranscriptEntry[]>([]);
  const [page, setPage] = useState<TranscriptPage | null>(null);
  const [older, setOlder] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const last = useRef(0);
  const fetching = useRef(false);

  const merge = (more: TranscriptEntry[]) => {
    if (more.length === 0) return;
    setEntries((held) => {
      const seen = new Set(held.map((e) => e.seq));
      const next = [...held, ...more.filter((e) => !seen.has(e.seq))].sort((a, b) => a.seq - b.seq);
      last.current = Math.max(last.current, next.at(-1)?.seq ?? 0);
      return next;
    });
  };

  /** Reads everything after the newest entry held (after a gap or a batch too large for an event). */
  const catchUp = async () => {
    if (fetching.current) return;
    fetching.current = true;
    try {
      for (;;) {
        const p = await api<TranscriptPage>(
          "GET",
          `/api/sessions/${encodeURIComponent(sessionId)}/transcript?after=${last.current}&limit=${PAGE}`,
        );
        setPage(p);
        merge(p.entries);
        if (!p.hasMore || p.entries.length === 0) break;
      }
    } catch (err) {
      setError((err as Error).message);
    } finally {
      fetching.current = false;
    }
  };

  useEffect(() => {
    let live = true;
    setEntries([]);
    last.current = 0;
    api<TranscriptPage>("GET", `/api/sessions/${encodeURIComponent(sessionId)}/transcript?limit=${PAGE}`)
      .then((p) => {
        if (!live) return;
        setPage(p);
        setOlder(p.hasMore);
        merge(p.entries);
        last.current = Math.max(last.current, p.last);
      })
      .catch((err: Error) => live && setError(err.message));
    const off = onTranscript((t: SessionTranscript) => {
      if (t.sessionId !== sessionId) return;
      if (t.truncated || t.from > last.current + 1) void catchUp();
      else merge(t.entries);
    });
    return () => {
      live = false;
      off();
    };
  }, [sessionId]);

  const loadOlder = async () => {
    const first = entries[0]?.seq;
    if (!first) return;
    try {
      const p = await api<TranscriptPage>(
        "GET",
        `/api/sessions/${encodeURIComponent(sessionId)}/transcript?before=${first}&limit=${PAGE}`,
      );
      setOlder(p.hasMore);
      merge(p.entries);
    } catch (err) {
      setError((err as Error).message);
    }
  };

  if (error)
    return (
      <p class="error" role="alert">
        The transcript could not be loaded: {error}
      </p>
    );
  if (!page) return <Empty>Loading the transcript…</Empty>;
  if (entries.length === 0)
    return (
      <Empty>
        No transcript yet. It appears here when the agent runs under Maestro (a spawn, or <code>maestro run</code>)
        with its hooks installed.
      </Empty>
    );
  const results = new Map<string, TranscriptEntry>();
  const calls = new Set<string>();
  for (const e of entries) {
    if (e.kind === "tool_result" && e.callId) results.set(e.callId, e);
    if ((e.kind === "tool_call" || e.kind === "edit") && e.callId) calls.add(e.callId);
  }
  return (
    <div class="transcript">
      <p class="meta">
        {entries.length} of {page.last - page.first + 1} entries
        {page.malformed > 0 ? ` · ${page.malformed} unreadable lines skipped` : ""}
      </p>
      {older && (
        <button class="btn" type="button" onClick={() => void loadOlder()}>
          Show earlier
        </button>
      )}
      <ol class="tr-list" aria-label="Transcript">
        {entries.map((e) =>
          e.kind === "tool_result" && e.callId && calls.has(e.callId) ? null : (
            <li key={e.seq} class={`tr tr-${e.kind}`} data-seq={e.seq}>
              <Entry e={e} result={e.callId ? results.get(e.callId) : undefined} />
            </li>
          ),
        )}
      </ol>
    </div>
  );
}

function Entry({ e, result }: { e: TranscriptEntry; result?: TranscriptEntry }) {
  switch (e.kind) {
    case "user":
    case "assistant":
      return (
        <div class="tr-msg">
          <span class="tr-who">{e.kind === "user" ? "Prompt" : "Agent"}</span>
          <p class="tr-text">{e.text}</p>
          <Tokens t={e.tokens} />
        </div>
      );
    case "tool_call":
      return (
        <details class="tr-tool">
          <summary>
            <Outcome result={result} /> <b>{e.tool}</b> <span class="tr-sum">{e.summary}</span>
          </summary>
          {e.input && (
            <>
              <h4 class="tr-h">Input</h4>
              <pre class="tr-pre">{e.input}</pre>
            </>
          )}
          <Output result={result} />
          <Tokens t={e.tokens} />
        </details>
      );
    case "edit": {
      const lines = (e.diff ?? "").split("\n");
      return (
        <details class="tr-tool tr-edit" open={lines.length <= OPEN_DIFF_LINES}>
          <summary>
            <Outcome result={result} /> <b>{e.tool ?? "Edit"}</b> <span class="tr-sum">{e.path ?? e.summary}</span>
          </summary>
          <Diff lines={lines} />
          <Output result={result} />
          <Tokens t={e.tokens} />
        </details>
      );
    }
    case "tool_result":
      return (
        <details class="tr-tool">
          <summary>
            <Outcome result={e} /> <b>Result</b> <span class="tr-sum">{firstLine(e.output)}</span>
          </summary>
          <pre class="tr-pre">{e.output}</pre>
        </details>
      );
    case "tokens":
      return <Tokens t={e.tokens} />;
    default:
      return (
        <details class="tr-other">
          <summary>{e.label ?? "other"}</summary>
          <pre class="tr-pre">{e.text}</pre>
        </details>
      );
  }
}

function firstLine(s?: string | null): string {
  return (s ?? "").split("\n", 1)[0];
}

/** ✓, ✗ or … with words for screen readers: not colour alone. */
function Outcome({ result }: { result?: TranscriptEntry }) {
  if (!result)
    return (
      <span class="tr-mark" aria-label="no result yet">
        …
      </span>
    );
  return result.isError ? (
    <span class="tr-mark tr-bad" aria-label="failed">
      ✗
    </span>
  ) : (
    <span class="tr-mark tr-good" aria-label="done">
      ✓
    </span>
  );
}

function Output({ result }: { result?: TranscriptEntry }) {
  if (!result?.output) return null;
  return (
    <>
      <h4 class="tr-h">{result.isError ? "Output (failed)" : "Output"}</h4>
      <pre class="tr-pre">{result.output}</pre>
    </>
  );
}

/** A diff, one row per line: the +/− marker is a character of its own, the colour only helps. */
function Diff({ lines }: { lines: string[] }) {
  return (
    <div class="tr-diff">
      {lines.map((l, i) => {
        const kind = l.startsWith("@@")
          ? "hunk"
          : l.startsWith("+")
            ? "add"
            : l.startsWith("-")
              ? "del"
              : l.startsWith("***")
                ? "hunk"
                : "ctx";
        const mark = kind === "add" ? "+" : kind === "del" ? "−" : " ";
        const text = kind === "add" || kind === "del" || (kind === "ctx" && l.startsWith(" ")) ? l.slice(1) : l;
        return (
          <div key={i} class={`tr-dl tr-${kind}`}>
            <span class="tr-dm" aria-label={kind === "add" ? "added" : kind === "del" ? "removed" : undefined}>
              {kind === "hunk" ? "" : mark}
            </span>
            <span class="tr-dt">{text}</span>
          </div>
        );
      })}
    </div>
  );
}

function Tokens({ t }: { t?: TokenUsage | null }) {
  if (!t) return null;
  const n = (v?: number | null) => (v ?? 0).toLocaleString();
  const parts = [
    t.input != null && `in ${n(t.input)}`,
    t.output != null && `out ${n(t.output)}`,
    t.cached != null && `cached ${n(t.cached)}`,
    t.total != null && `total ${n(t.total)}`,
  ].filter(Boolean);
  return <p class="tr-tokens">Tokens: {parts.join(" · ")}</p>;
}
