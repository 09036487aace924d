// Reviewing a session's work from the phone: what changed (files with +/−), each file's diff,
// comments on diff lines, and the review sent to the agent as one directive ("Send review") or
// an approval ("Looks good"). Loaded lazily by ./tab.tsx.

import { useEffect, useState } from "preact/hooks";

import "./changes.css";
import { ApiError, api } from "../api";
import { can } from "../auth";
import type {
  AddReviewComment,
  ChangedFile,
  Changes,
  DiffLine,
  FileDiff,
  Hunk,
  ReviewComment,
  ReviewSent,
  SendReview,
  Session,
} from "../types";
import { Empty } from "../ui";

const STATUS: Record<ChangedFile["status"], [string, string]> = {
  added: ["A", "added"],
  modified: ["M", "modified"],
  deleted: ["D", "deleted"],
  renamed: ["R", "renamed"],
};

/** Lines of the hunk kept with a comment, before the commented line (and the line itself). */
const CONTEXT_LINES = 3;

function enc(path: string): string {
  return encodeURIComponent(path);
}

export function ChangesView({ s }: { s: Session }) {
  const stamp = (s.metadata as { changes?: { computedAt?: number } } | null)?.changes?.computedAt ?? 0;
  const [changes, setChanges] = useState<Changes | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [comments, setComments] = useState<ReviewComment[]>([]);
  const loadComments = () =>
    api<ReviewComment[]>("GET", `/api/sessions/${s.id}/review/comments`)
      .then(setComments)
      .catch(() => {});
  useEffect(() => {
    let live = true;
    api<Changes>("GET", `/api/sessions/${s.id}/changes`)
      .then((c) => {
        if (!live) return;
        setChanges(c);
        setError(null);
      })
      .catch((err: ApiError) => live && setError(err.message));
    void loadComments();
    return () => {
      live = false;
    };
  }, [s.id, stamp]);

  if (error && !changes)
    return (
      <p class="error" role="alert">
        {error}
      </p>
    );
  if (!changes) return <Empty>Reading the changes…</Empty>;
  const file = open ? changes.files.find((f) => f.path === open) : undefined;
  return (
    <div class="review">
      <Summary c={changes} />
      {file ? (
        <DiffView s={s} file={file} comments={comments} onBack={() => setOpen(null)} onComment={loadComments} />
      ) : changes.files.length === 0 ? (
        <Empty>No changes against {changes.baseBranch ?? "the last commit"}.</Empty>
      ) : (
        <FileList c={changes} comments={comments} onOpen={setOpen} />
      )}
      {can("respond") && <ReviewBar s={s} comments={comments} onSent={loadComments} />}
    </div>
  );
}

function Summary({ c }: { c: Changes }) {
  return (
    <div class="rv-summary">
      <p class="rv-total">
        <strong>
          {c.totalFiles} file{c.totalFiles === 1 ? "" : "s"}
        </strong>{" "}
        <span class="rv-add">+{c.additions}</span> <span class="rv-del">−{c.deletions}</span>
      </p>
      <p class="meta">
        {c.branch ?? "detached HEAD"}
        {c.baseBranch && (
          <>
            {" "}
            against {c.baseBranch} · {c.ahead} ahead, {c.behind} behind
          </>
        )}
      </p>
      {c.truncated && <p class="meta">Only the first {c.files.length} files are listed.</p>}
    </div>
  );
}

function FileList({
  c,
  comments,
  onOpen,
}: {
  c: Changes;
  comments: ReviewComment[];
  onOpen: (path: string) => void;
}) {
  return (
    <ul class="list rv-files" aria-label="Changed files">
      {c.files.map((f) => {
        const [letter, word] = STATUS[f.status];
        const n = comments.filter((k) => k.path === f.path).length;
        return (
          <li key={f.path}>
            <button type="button" class="rv-file" onClick={() => onOpen(f.path)}>
              <span class={`rv-status rv-${f.status}`} aria-hidden="true">
                {letter}
              </span>
              <span class="rv-path">
                <span class="sr-only">{word}: </span>
                {f.path}
                {f.oldPath && <span class="meta"> (was {f.oldPath})</span>}
                {f.untracked && <span class="tag">new</span>}
              </span>
              <span class="rv-counts">
                {f.binary ? (
                  "binary"
                ) : f.tooLarge ? (
                  "large"
                ) : (
                  <>
                    <span class="rv-add">+{f.additions}</span> <span class="rv-del">−{f.deletions}</span>
                  </>
                )}
                {n > 0 && <span class="rv-ncomments"> · {n} 💬</span>}
              </span>
            </button>
          </li>
        );
      })}
    </ul>
  );
}

type Target = { line: number; side: "new" | "old"; context: string; key: string };

function lineKey(l: DiffLine): string {
  return l.kind === "del" ? `o${l.old}` : `n${l.new}`;
}

function marker(l: DiffLine): string {
  return l.kind === "add" ? "+" : l.kind === "del" ? "−" : " ";
}

/** The hunk's header and the lines before `i` (at most CONTEXT_LINES), then the line itself. */
function contextOf(h: Hunk, i: number): string {
  const from = Math.max(0, i - CONTEXT_LINES);
  const lines = h.lines.slice(from, i + 1).map((l) => `${l.kind === "add" ? "+" : l.kind === "del" ? "-" : " "}${l.text}`);
  return [h.header, ...lines].join("\n");
}

function DiffView({
  s,
  file,
  comments,
  onBack,
  onComment,
}: {
  s: Session;
  file: ChangedFile;
  comments: ReviewComment[];
  onBack: () => void;
  onComment: () => Promise<void>;
}) {
  const [diff, setDiff] = useState<FileDiff | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [target, setTarget] = useState<Target | null>(null);
  useEffect(() => {
    let live = true;
    setDiff(null);
    api<FileDiff>("GET", `/api/sessions/${s.id}/diff?path=${enc(file.path)}`)
      .then((d) => live && setDiff(d))
      .catch((err: ApiError) => live && setError(err.message));
    return () => {
      live = false;
    };
  }, [s.id, file.path, file.additions, file.deletions]);
  const mine = comments.filter((k) => k.path === file.path);
  const responder = can("respond");
  return (
    <section class="rv-diff" aria-label={`Diff of ${file.path}`}>
      <div class="rv-diff-head">
        <button type="button" class="btn btn-ghost btn-small" onClick={onBack}>
          ← Files
        </button>
        <h2 class="rv-diff-title">{file.path}</h2>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {!diff && !error && <Empty>Loading the diff…</Empty>}
      {diff?.note && <p class="meta rv-note">{diff.note}</p>}
      {diff?.hunks.map((h, hi) => (
        <div class="rv-hunk" key={hi}>
          <div class="rv-hunk-head">{h.header}</div>
          {h.lines.map((l, i) => {
            const key = lineKey(l);
            const side = l.kind === "del" ? "old" : "new";
            const num = (l.kind === "del" ? l.old : l.new) ?? 0;
            const here = mine.filter((k) => k.side === side && k.line === num);
            return (
              <div key={`${hi}-${i}`}>
                <button
                  type="button"
                  class={`rv-line rv-line-${l.kind}${target?.key === key ? " rv-line-on" : ""}`}
                  disabled={!responder}
                  onClick={() => setTarget({ line: num, side, context: contextOf(h, i), key })}
                >
                  <span class="sr-only">{l.kind === "add" ? "Added" : l.kind === "del" ? "Removed" : "Unchanged"} line: </span>
                  <span class="rv-ln">{l.old ?? ""}</span>
                  <span class="rv-ln">{l.new ?? ""}</span>
                  <span class="rv-mk">{marker(l)}</span>
                  <span class="rv-tx">{l.text}</span>
                </button>
                {here.map((k) => (
                  <CommentCard key={k.id} s={s} k={k} onChange={onComment} />
                ))}
                {target?.key === key && (
                  <CommentForm s={s} path={file.path} target={target} onDone={() => setTarget(null)} onAdded={onComment} />
                )}
              </div>
            );
          })}
        </div>
      ))}
    </section>
  );
}

function CommentCard({ s, k, onChange }: { s: Session; k: ReviewComment; onChange: () => Promise<void> }) {
  const [busy, setBusy] = useState(false);
  return (
    <div class={`rv-comment${k.sentAt ? " rv-comment-sent" : ""}`}>
      <p class="rv-comment-body">{k.body}</p>
      <p class="meta">
        {k.sentAt ? "Sent to the agent" : "Not sent yet"}
        {!k.sentAt && can("respond") && (
          <>
            {" · "}
            <button
              type="button"
              class="link-button"
              disabled={busy}
              onClick={async () => {
                setBusy(true);
                try {
                  await api("DELETE", `/api/sessions/${s.id}/review/comments/${k.id}`);
                  await onChange();
                } finally {
                  setBusy(false);
                }
              }}
            >
              Delete
            </button>
          </>
        )}
      </p>
    </div>
  );
}

function CommentForm({
  s,
  path,
  target,
  onDone,
  onAdded,
}: {
  s: Session;
  path: string;
  target: Target;
  onDone: () => void;
  onAdded: () => Promise<void>;
}) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <form
      class="rv-form"
      onSubmit={async (e) => {
        e.preventDefault();
        if (!text.trim()) return;
        setBusy(true);
        try {
          await api("POST", `/api/sessions/${s.id}/review/comments`, {
            path,
            line: target.line,
            side: target.side,
            context: target.context,
            body: text,
          } satisfies AddReviewComment);
          await onAdded();
          onDone();
        } catch (err) {
          setError((err as Error).message);
        } finally {
          setBusy(false);
        }
      }}
    >
      <label class="label" for="rv-comment-text">
        Comment on {target.side === "old" ? "removed " : ""}line {target.line}
      </label>
      <textarea
        id="rv-comment-text"
        rows={3}
        value={text}
        onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        ref={(el) => el?.focus()}
      />
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="rv-form-actions">
        <button type="submit" class="btn btn-primary btn-small" disabled={busy || !text.trim()}>
          Add comment
        </button>
        <button type="button" class="btn btn-ghost btn-small" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function ReviewBar({ s, comments, onSent }: { s: Session; comments: ReviewComment[]; onSent: () => Promise<void> }) {
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const unsent = comments.filter((k) => !k.sentAt).length;
  const send = async (approve: boolean) => {
    setBusy(true);
    setNote(null);
    try {
      const sent = await api<ReviewSent>("POST", `/api/sessions/${s.id}/review/send`, {
        approve,
        message: message.trim() || undefined,
      } satisfies SendReview);
      setMessage("");
      setNote(
        approve
          ? "Approval sent to the agent."
          : `Review sent to the agent (${sent.comments.length} comment${sent.comments.length === 1 ? "" : "s"}).`,
      );
      await onSent();
    } catch (err) {
      setNote((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="rv-bar">
      <label class="label" for="rv-message">
        Review {unsent > 0 ? `· ${unsent} comment${unsent === 1 ? "" : "s"} to send` : ""}
      </label>
      <textarea
        id="rv-message"
        rows={2}
        placeholder="A general remark (optional)"
        value={message}
        onInput={(e) => setMessage((e.target as HTMLTextAreaElement).value)}
      />
      <div class="rv-form-actions">
        <button
          type="button"
          class="btn btn-primary"
          disabled={busy || (unsent === 0 && !message.trim())}
          onClick={() => send(false)}
        >
          Send review
        </button>
        <button type="button" class="btn" disabled={busy} onClick={() => send(true)}>
          Looks good
        </button>
      </div>
      {note && (
        <p class="meta" role="status">
          {note}
        </p>
      )}
    </div>
  );
}
