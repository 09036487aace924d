//! `maestro approve`: an agent tool's permission hook. Reads the tool's payload on stdin, asks
//! the server (an approval the phone and the desktop app see at once), waits for the decision
//! on the server's long-poll (woken by the decision's event, no polling loop), and prints the
//! answer in the tool's own format.
//!
//! It never hangs the agent: outside a Maestro session it answers "ask" at once (the tool
//! prompts at its terminal as if no hook ran); when the server cannot be reached, or nobody
//! decides within `--timeout`, it answers the `--fallback` (default: ask). A wait it gives up
//! (timeout, SIGINT, SIGTERM — tools kill hooks that outlive their own timeout) withdraws the
//! request, so the phone stops showing it.
//!
//! With `--answered-at-terminal` it is the hook of the events that say the agent moved past
//! its permission dialog (the tool ran or failed, the turn ended, a new prompt came): Claude
//! Code shows its own dialog while the permission hook waits, and does not stop the hook when
//! the person at the desk answers there. Whatever this session still has pending (for that
//! tool call, when the event names one) is withdrawn as `answered_at_terminal`, so it leaves
//! every phone and a late answer from one is refused rather than recorded.

use std::io::Read;
use std::time::Duration;

use maestro_client::Client;
use maestro_protocol::{ANSWERED_AT_TERMINAL, Approval, ApprovalStatus, CreateApproval, summarize};
use serde_json::Value;

use super::agent_tools::{AgentTool, PermissionRequest, Verdict, parse_permission_request};
use super::context::Context;

/// Largest hook payload read from stdin.
const MAX_STDIN: u64 = 4 * 1024 * 1024;
/// Longest single long-poll (the server's limit is 120 s).
const WAIT_SLICE: Duration = Duration::from_secs(60);
/// How long one request may take beyond its long-poll before the server counts as gone.
const REQUEST_SLACK: Duration = Duration::from_secs(10);

/// What to answer when no human decides: the one type `maestro approve --fallback` and
/// `maestro hooks install --fallback` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// Let the tool ask at its own terminal.
    Ask,
    /// Let the tool run (fail open).
    Allow,
    /// Refuse the tool (fail closed).
    Deny,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The agent tool whose permission hook calls this (its stdin and stdout formats).
    #[arg(long, value_enum)]
    pub tool: AgentTool,
    /// What to answer when the server cannot be reached or nobody decides in time.
    #[arg(
        long,
        value_enum,
        env = "MAESTRO_APPROVAL_FALLBACK",
        default_value = "ask"
    )]
    pub fallback: Fallback,
    /// Seconds to wait for a decision before answering the fallback.
    #[arg(long, env = "MAESTRO_APPROVAL_TIMEOUT", default_value_t = 600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// Withdraw this session's pending requests as answered at the agent's own terminal (the
    /// hook of the events that follow a permission dialog); reads that event's payload.
    #[arg(long, conflicts_with = "mcp")]
    pub answered_at_terminal: bool,
    /// Serve Claude Code's `--permission-prompt-tool` over MCP (stdio) instead of reading one
    /// hook payload: for `claude -p`, which calls no permission hook.
    #[arg(long)]
    pub mcp: bool,
}

impl Fallback {
    /// The command-line spelling (`ask`, `allow`, `deny`).
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Ask => "ask",
            Fallback::Allow => "allow",
            Fallback::Deny => "deny",
        }
    }

    fn verdict(self, why: &str) -> Verdict {
        match self {
            Fallback::Ask => Verdict::Ask,
            Fallback::Allow => Verdict::Allow,
            Fallback::Deny => Verdict::Deny {
                reason: format!("Maestro: {why}; denied by the configured fallback"),
            },
        }
    }
}

/// Runs the hook; always answers the tool (exit code of the rendered verdict).
pub async fn approve(ctx: &Context, args: ApproveArgs) -> i32 {
    if args.mcp {
        return super::approve_mcp::serve(ctx, &args).await;
    }
    if args.answered_at_terminal {
        answered_at_terminal(ctx).await;
        // Silent, and never in the agent's way.
        return 0;
    }
    let verdict = decide(ctx, &args).await;
    let (stdout, code) = super::agent_tools::render_verdict(args.tool, &verdict);
    if !stdout.is_empty() {
        println!("{stdout}");
    }
    code
}

async fn decide(ctx: &Context, args: &ApproveArgs) -> Verdict {
    // Outside a Maestro session the hook stays out of the way.
    if ctx.session_id.is_none() {
        return Verdict::Ask;
    }
    let request = match read_request(args.tool) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("maestro approve: {e:#}");
            return args.fallback.verdict("unreadable hook payload");
        }
    };
    ask(ctx, args, &request).await
}

/// Files `request` on the server for this session and waits for a human's answer (or the
/// fallback). Without a session the answer is "ask".
pub(super) async fn ask(ctx: &Context, args: &ApproveArgs, request: &PermissionRequest) -> Verdict {
    let Some(session) = ctx.session_id.clone() else {
        return Verdict::Ask;
    };
    let client = match ctx.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("maestro approve: {}", e.message);
            return args.fallback.verdict("bad server URL");
        }
    };
    // Listen before the request exists: a tool that kills the hook right after the request
    // shows up must find the handler in place (else SIGTERM's default action kills us without
    // withdrawing it).
    let interrupt = Interrupt::listen();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let create = CreateApproval {
        agent_tool: args.tool.name().to_owned(),
        tool_name: request.tool_name.clone(),
        input: request.input.clone(),
        summary: Some(request.summary.clone()),
        // A retried create (after a lost answer) finds the approval the first one made.
        request_id: Some(request_key()),
    };
    let created =
        tokio::time::timeout(REQUEST_SLACK, client.create_approval(&session, &create)).await;
    let approval = match created {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            eprintln!(
                "maestro approve: cannot ask {}: {}",
                ctx.server,
                ctx.err(e).message
            );
            return args.fallback.verdict("the server could not be asked");
        }
        Err(_) => {
            eprintln!("maestro approve: {} did not answer", ctx.server);
            return args.fallback.verdict("the server did not answer");
        }
    };
    let waited = tokio::select! {
        w = wait(&client, &approval.id, deadline) => w,
        _ = interrupt.wait() => Waited::Interrupted,
    };
    match waited {
        Waited::Ended(a) => verdict_of(&a, args.fallback),
        Waited::TimedOut => {
            withdraw(&client, &approval.id, "nobody decided in time").await;
            eprintln!("maestro approve: nobody decided within {} s", args.timeout);
            args.fallback.verdict("nobody decided in time")
        }
        Waited::Interrupted => {
            withdraw(&client, &approval.id, "the agent stopped waiting").await;
            args.fallback.verdict("interrupted")
        }
        Waited::Unreachable(message) => {
            eprintln!("maestro approve: lost the server while waiting: {message}");
            args.fallback.verdict("the server was lost while waiting")
        }
    }
}

enum Waited {
    Ended(Box<Approval>),
    TimedOut,
    Interrupted,
    Unreachable(String),
}

/// Long-polls until the approval ends or `deadline` passes.
async fn wait(client: &Client, id: &str, deadline: tokio::time::Instant) -> Waited {
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Waited::TimedOut;
        }
        let slice = left.min(WAIT_SLICE);
        let polled = tokio::time::timeout(
            slice + REQUEST_SLACK,
            client.wait_approval(id, slice.as_millis() as u64),
        )
        .await;
        match polled {
            Ok(Ok(a)) if a.status != ApprovalStatus::Pending => return Waited::Ended(Box::new(a)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Waited::Unreachable(e.to_string()),
            Err(_) => return Waited::Unreachable("a wait got no answer".into()),
        }
    }
}

/// Cancels the request so nobody answers a question nobody waits for (best effort).
async fn withdraw(client: &Client, id: &str, reason: &str) {
    let _ = tokio::time::timeout(REQUEST_SLACK, client.cancel_approval(id, reason)).await;
}

fn verdict_of(approval: &Approval, fallback: Fallback) -> Verdict {
    match approval.status {
        ApprovalStatus::Allowed => Verdict::Allow,
        ApprovalStatus::Denied => Verdict::Deny {
            reason: approval.reason.clone().unwrap_or_else(|| {
                format!(
                    "Denied from Maestro by {}",
                    approval.decided_by.as_deref().unwrap_or("a human")
                )
            }),
        },
        // The session was stopped, deleted or lost: whatever the fallback, nothing runs.
        ApprovalStatus::Cancelled => Verdict::Deny {
            reason: format!(
                "Maestro: the request was cancelled ({})",
                approval.reason.as_deref().unwrap_or("the session ended")
            ),
        },
        ApprovalStatus::Pending => fallback.verdict("no decision"),
    }
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STDIN {
        anyhow::bail!("hook payload is larger than {MAX_STDIN} bytes");
    }
    Ok(bytes)
}

fn read_request(tool: AgentTool) -> anyhow::Result<PermissionRequest> {
    parse_permission_request(tool, &read_stdin()?)
}

/// Withdraws the session's pending requests that the person at the terminal answered.
async fn answered_at_terminal(ctx: &Context) {
    let Some(session) = ctx.session_id.as_deref() else {
        return;
    };
    // A payload that names a tool call narrows the withdrawal to that call (another may
    // still be waiting); one that does not (Stop, UserPromptSubmit) means the turn moved on.
    let payload: Value = read_stdin()
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let call = payload["tool_name"]
        .as_str()
        .map(|name| (name, summarize(name, &payload["tool_input"])));
    let Ok(client) = ctx.client() else { return };
    let pending = tokio::time::timeout(REQUEST_SLACK, client.session_approvals(session, true));
    let pending = match pending.await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            eprintln!("maestro approve: cannot list pending requests: {e}");
            return;
        }
        Err(_) => return,
    };
    for a in pending.iter().filter(|a| answered_call(a, call.as_ref())) {
        withdraw(&client, &a.id, ANSWERED_AT_TERMINAL).await;
    }
}

/// Whether pending approval `a` is the tool call the event reports (any, when it names none).
fn answered_call(a: &Approval, call: Option<&(&str, String)>) -> bool {
    call.is_none_or(|(name, summary)| a.tool_name == *name && a.summary == *summary)
}

/// A fresh idempotency key for this hook call.
fn request_key() -> String {
    let n: u128 = fastrand::u128(..);
    format!("approve-{n:032x}")
}

/// SIGINT and SIGTERM, listened for from when it is made.
struct Interrupt {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Resolves on the first SIGINT or SIGTERM since [`Interrupt::listen`].
    async fn wait(mut self) {
        async fn next(sig: &mut Option<tokio::signal::unix::Signal>) {
            match sig {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => {}
            _ = next(&mut self.int) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_request_is_denied_whatever_the_fallback() {
        let approval: Approval = serde_json::from_value(serde_json::json!({
            "id": "appr_1", "sessionId": "s", "projectId": "p", "sessionName": "n",
            "agentTool": "claude-code", "toolName": "Bash", "input": {"command": "rm -rf /"},
            "summary": "rm -rf /", "status": "cancelled", "reason": "session ended",
            "createdAt": 1,
        }))
        .unwrap();
        for fallback in [Fallback::Ask, Fallback::Allow, Fallback::Deny] {
            match verdict_of(&approval, fallback) {
                Verdict::Deny { reason } => assert!(reason.contains("session ended"), "{reason}"),
                other => panic!("{fallback:?} gave {other:?}"),
            }
        }
    }
}
