// The wire shapes the app reads and sends. They are generated from crates/maestro-protocol into
// ./generated/protocol.ts by `cargo xtask types` (CI fails when that file drifts from the Rust
// types); this module re-exports the ones the app uses and adds what exists only in the app.

import type { EventEnvelope, StateSnapshot } from "./generated/protocol";

export type {
  AddReviewComment,
  ChangedFile,
  Changes,
  ChangeStats,
  DiffLine,
  FileDiff,
  Hunk,
  ReviewComment,
  ReviewSent,
  SendReview,
  Approval,
  ApprovalDecideAction,
  ApprovalDecision,
  CreateTask,
  DecideApproval,
  DocEntry,
  MailMessage,
  Me,
  NeedsInput,
  PairRequest,
  Paired,
  Presence,
  Project,
  ReplyInput,
  Runner,
  Scope,
  SendMail,
  Session,
  SessionAppended,
  SessionEvent,
  SocketAuth,
  SpawnRequest,
  SpawnResponse,
  StateSyncRequest,
  StopRequest,
  StopSession,
  Task,
  TaskDocEntry,
  TeamMember,
  TimelineEvent,
  TimelinePage,
  TokenUsage,
  TranscriptEntry,
  TranscriptPage,
  SessionTranscript,
  UpdateTask,
} from "./generated/protocol";

/** Milliseconds since the Unix epoch, the unit of every timestamp on the wire. */
export type Millis = number;

/**
 * Every server event: upstream's frame plus `seq` and `projectId`. What `data` holds depends on
 * `event` (a `Task` for `task:updated`, a `Presence` for `session:presence`, …): the store reads
 * it per event.
 */
export type Envelope = Omit<EventEnvelope, "data"> & { data: any };

/** The ack of `state:sync`: the snapshot with the ack's `ok`. */
export type Snapshot = StateSnapshot & { ok: true };

export const TASK_STATUSES = [
  "todo",
  "in_progress",
  "in_review",
  "blocked",
  "completed",
  "cancelled",
  "archived",
] as const;

/** Session statuses after which an agent is done. */
export const TERMINAL_SESSION_STATUSES = ["completed", "failed", "stopped"];
