//! Runners (the hosts that start and stop agents on a machine) and the terminal stream's
//! control messages. `docs/runners.md` describes the protocol.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Millis;
use crate::entities::Session;

/// A machine that runs agents: `maestro serve`'s own, or a `maestro runner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Runner {
    /// `run_…`, stable for a machine (derived from its machine id).
    pub id: String,
    pub machine_id: String,
    pub hostname: String,
    /// Agent entries whose program is on the runner's `PATH`.
    pub agents: Vec<String>,
    /// Agents it runs at once at most.
    pub capacity: u32,
    /// Agents it runs now.
    pub running: u32,
    /// Beating within its TTL.
    pub online: bool,
    pub last_seen: Millis,
    pub registered_at: Millis,
    /// The runner's `maestro` version.
    pub version: String,
    /// Runs on the same machine as the server that answers.
    #[serde(default)]
    pub local: bool,
}

/// `POST /api/runners`: a runner says who it is (again after every restart).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct RegisterRunner {
    pub machine_id: String,
    /// Tells runners of one machine apart (default `main`); with the machine id it makes the
    /// runner's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /api/runners/:id/heartbeat`: one beat for the runner and every session it hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct RunnerHeartbeat {
    #[serde(default)]
    pub session_ids: Vec<String>,
}

/// What a runner claimed: start (or resume) the agent of `session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Launch {
    pub session: Session,
    /// The agent entry to run (`claude-code`, `codex`, `gemini`, or one of the agents file).
    pub agent_tool: String,
    /// The directory to run in (the project's).
    pub cwd: String,
    /// Run in a fresh git worktree of `cwd` on branch `maestro/<session id>`.
    pub worktree: bool,
    /// The agent's environment (no provider keys: the runner adds its own environment).
    pub env: std::collections::BTreeMap<String, String>,
    /// The initial prompt.
    pub prompt: String,
    /// Start with the agent's resume command.
    pub resume: bool,
    /// Grows with every launch of the session; a report with an older one is refused.
    pub fencing_token: u64,
}

/// `POST /api/runners/:id/claim`: the launches this runner won (empty after the timeout).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Claimed {
    pub launches: Vec<Launch>,
}

/// `POST /api/runners/:id/launched`: what became of a claimed launch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LaunchReport {
    pub session_id: String,
    pub fencing_token: u64,
    /// The agent runs (its process id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// It could not start: `agent_not_found: claude is not on PATH on laptop`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The worktree it runs in, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// The branch the worktree was made from: what its changes are compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// The agent has exited: `completed` for status 0, `stopped` when Stop ended it, else
    /// `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<AgentExited>,
}

/// How an agent ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct AgentExited {
    /// The exit code (128+N after signal N).
    pub code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Stop ended it.
    #[serde(default)]
    pub stopped: bool,
}

/// `POST /api/sessions/:id/stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct StopRequest {
    /// Time between the steps of the signal ladder (default `STOP_GRACE_MS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

/// Payload of `session:stop_requested`: the host of the session's agent stops it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct StopRequested {
    pub session_id: String,
    pub grace_ms: u64,
}
