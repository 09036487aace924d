// The wire shapes the app reads, written by hand from crates/maestro-protocol/src (entities.rs,
// events.rs, mail.rs, team.rs, liveness.rs). Only the fields the app uses are listed; the
// server sends more.

export type Millis = number;

export interface Project {
  id: string;
  name: string;
  workingDir?: string;
  description?: string;
  createdAt: Millis;
  updatedAt: Millis;
}

export interface Task {
  id: string;
  projectId: string;
  parentId?: string | null;
  title: string;
  description?: string;
  status: string;
  priority: string;
  createdAt: Millis;
  updatedAt: Millis;
  sessionIds?: string[];
  teamMemberId?: string;
  teamMemberIds?: string[];
  taskSessionStatuses?: Record<string, string>;
}

export interface NeedsInput {
  active: boolean;
  message?: string;
  since?: Millis;
}

export interface TimelineEvent {
  id: string;
  type: string;
  timestamp: Millis;
  message?: string;
  taskId?: string;
  metadata?: unknown;
}

export interface DocEntry {
  id: string;
  title: string;
  filePath: string;
  content?: string;
  taskId?: string;
  addedAt: Millis;
}

export interface Session {
  id: string;
  projectId: string;
  taskIds?: string[];
  name: string;
  agentId?: string;
  status: string;
  startedAt: Millis;
  lastActivity: Millis;
  completedAt?: Millis | null;
  timeline?: TimelineEvent[];
  docs?: DocEntry[];
  needsInput?: NeedsInput;
  teamMemberId?: string;
  teamMemberIds?: string[];
  failureReason?: string;
  online?: boolean;
  lastSeen?: Millis;
  lastProgress?: Millis;
  stalled?: boolean;
}

export interface TeamMember {
  id: string;
  projectId: string;
  name: string;
  role: string;
  avatar: string;
  model?: string;
  agentTool?: string;
  status: string;
  isDefault: boolean;
}

export interface MailMessage {
  id: string;
  projectId: string;
  fromSessionId: string;
  toSessionId: string | null;
  replyToMailId: string | null;
  type: string;
  subject: string;
  body: unknown;
  createdAt: Millis;
  seq: number;
}

/** `session:presence`. */
export interface Presence {
  sessionId: string;
  projectId: string;
  online: boolean;
  lastSeen: Millis;
  lastProgress: Millis;
  stalled: boolean;
}

/** Every server event: upstream's frame plus `seq` and `projectId`. */
export interface Envelope {
  type: string;
  event: string;
  data: any;
  timestamp: Millis;
  seq: number;
  projectId: string | null;
}

/** The ack of `state:sync`. */
export interface Snapshot {
  ok: true;
  projects: Project[];
  tasks: Task[];
  sessions: Session[];
  teamMembers: TeamMember[];
  seqs: Record<string, number>;
}

/** `GET /api/auth/me`. */
export interface Me {
  kind: "local" | "token" | "device";
  scope: Scope;
  id?: string;
  name?: string;
  csrf?: string;
}

export type Scope = "read" | "respond" | "operate" | "admin";

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
