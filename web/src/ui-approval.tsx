// A tool approval as a card — who asks, what would run, Allow / Deny / Always for this session —
// shared by Needs you and the session screen; and sending a decision from this device.

import { signal } from "@preact/signals";
import { useRef, useState } from "preact/hooks";

import { api, ApiError, idempotencyKey } from "./api";
import { inputView, outcome } from "./approval";
import { can } from "./auth";
import { now } from "./clock";
import { ago } from "./format";
import { projects, stateOf, version } from "./live";
import type { Approval, ApprovalDecision, DecideApproval } from "./types";

/**
 * Approvals this device tried to decide after someone else had (a 409): shown with who won
 * until dismissed, although they left the pending list.
 */
export const settled = signal<Approval[]>([]);

function close(a: Approval): void {
  stateOf(a.projectId)?.closeApproval(a);
  version.value++;
}

/**
 * Sends a decision (`POST /api/approvals/:id/decision`; the same `requestId` on a retry of the
 * same tap decides once). The approval leaves the pending list at once (its `approval:decided`
 * event would take it out too). A 409 puts the winning decision in {@link settled}.
 */
async function decide(a: Approval, decision: ApprovalDecision, requestId: string, reason?: string): Promise<void> {
  const body: DecideApproval = { decision, requestId, ...(reason ? { reason } : {}) };
  try {
    close(await api<Approval>("POST", `/api/approvals/${encodeURIComponent(a.id)}/decision`, body));
  } catch (err) {
    if (err instanceof ApiError && err.code === "APPROVAL_DECIDED" && err.details) {
      const won = err.details as Approval;
      settled.value = [...settled.value.filter((x) => x.id !== won.id), won];
      close(won);
    }
    throw err;
  }
}

function newRequestId(): string {
  // randomUUID exists only in secure contexts; a phone on the LAN over http has not got it.
  return crypto.randomUUID?.() ?? idempotencyKey();
}

function Input({ a }: { a: Approval }) {
  const v = inputView(a.toolName, a.input);
  if (v.kind === "command") {
    return (
      <>
        {v.note && <p class="meta">{v.note}</p>}
        <pre class="approval-input" role="region" aria-label="Command" tabIndex={0}>
          <code>{v.command}</code>
        </pre>
      </>
    );
  }
  if (v.kind === "edit") {
    return (
      <>
        <p class="approval-path">
          <code>{v.path}</code>
        </p>
        <pre class="approval-input" role="region" aria-label={`Change to ${v.path}`} tabIndex={0}>
          <code>
            {v.lines.map((l, i) => (
              <span key={i} class={l.sign === "+" ? "diff-add" : l.sign === "-" ? "diff-del" : undefined}>
                {`${l.sign} ${l.text}\n`}
              </span>
            ))}
          </code>
        </pre>
      </>
    );
  }
  return (
    <pre class="approval-input" role="region" aria-label="Input" tabIndex={0}>
      <code>{v.text}</code>
    </pre>
  );
}

export function ApprovalCard({ approval: a }: { approval: Approval }) {
  void now.value;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [denying, setDenying] = useState(false);
  const [reason, setReason] = useState("");
  // The decision last tried: a retry of the same tap sends the same requestId, so it decides once.
  const attempt = useRef<{ decision: ApprovalDecision; requestId: string } | null>(null);
  // Set synchronously: a double tap lands before the disabled buttons are rendered.
  const inflight = useRef(false);
  const project = projects.value.find((p) => p.id === a.projectId)?.name ?? a.projectId;
  const done = a.status !== "pending";

  async function send(decision: ApprovalDecision) {
    if (inflight.current) return;
    inflight.current = true;
    if (attempt.current?.decision !== decision) attempt.current = { decision, requestId: newRequestId() };
    setBusy(true);
    setError(null);
    try {
      await decide(a, decision, attempt.current.requestId, decision === "deny" ? reason.trim() : undefined);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "APPROVAL_DECIDED")) setError((err as Error).message);
    } finally {
      inflight.current = false;
      setBusy(false);
    }
  }

  const reasonId = `deny-reason-${a.id}`;
  return (
    <article class="card card-approval" aria-label={`${a.sessionName} asks to run ${a.toolName}`} data-approval={a.id}>
      <div class="card-head">
        <a class="card-title link" href={`#/s/${a.sessionId}`}>
          {a.sessionName}
        </a>
        <span class="meta">{ago(a.createdAt, now.value)}</span>
      </div>
      <div class="meta">
        {project} · {a.agentTool}
      </div>
      <p class="asks">
        asks to run <strong>{a.toolName}</strong>
      </p>
      <Input a={a} />
      {done ? (
        <div class="row">
          <p class="note approval-outcome" role="status">
            Already {outcome(a)}
          </p>
          <button
            class="btn btn-ghost"
            type="button"
            onClick={() => (settled.value = settled.value.filter((x) => x.id !== a.id))}
          >
            OK
          </button>
        </div>
      ) : !can("respond") ? (
        <p class="note">This device may only read; it cannot answer.</p>
      ) : denying ? (
        <form
          class="reply"
          onSubmit={(e) => {
            e.preventDefault();
            void send("deny");
          }}
        >
          <label class="label" for={reasonId}>
            Reason (optional)
          </label>
          <input
            id={reasonId}
            type="text"
            placeholder="Told to the agent"
            value={reason}
            onInput={(e) => setReason((e.target as HTMLInputElement).value)}
          />
          <div class="row">
            <button class="btn btn-ghost" type="button" disabled={busy} onClick={() => setDenying(false)}>
              Back
            </button>
            <button class="btn btn-danger" type="submit" disabled={busy}>
              {busy ? "Sending…" : "Deny"}
            </button>
          </div>
        </form>
      ) : (
        <div class="approval-actions">
          <button class="btn btn-danger-ghost" type="button" disabled={busy} onClick={() => setDenying(true)}>
            Deny…
          </button>
          <button class="btn btn-primary" type="button" disabled={busy} onClick={() => void send("allow")}>
            {busy ? "Sending…" : "Allow"}
          </button>
          <button class="btn btn-wide" type="button" disabled={busy} onClick={() => void send("allow_session")}>
            Always for this session
          </button>
        </div>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </article>
  );
}
