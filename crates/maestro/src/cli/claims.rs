//! `maestro claim|renew|release` (task leases with fencing tokens) and `maestro heartbeat`.
//!
//! A server that predates these endpoints answers 404 for the route; the commands then say
//! the server does not support them instead of reporting a missing task.

use clap::Args;
use serde_json::{Value, json};

use super::context::Context;
use super::output::{CliError, CmdResult, emit, fmt_time, kv};

#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// The task to claim.
    pub task_id: String,
    /// Lease length in milliseconds; renew before it runs out.
    #[arg(long = "ttl", default_value_t = 60_000, value_name = "MS")]
    pub ttl_ms: u64,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The claimed task.
    pub task_id: String,
    /// The fencing token `maestro claim` returned.
    #[arg(long = "token", value_name = "N")]
    pub fencing_token: u64,
    /// New lease length in milliseconds, from now.
    #[arg(long = "ttl", default_value_t = 60_000, value_name = "MS")]
    pub ttl_ms: u64,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The claimed task.
    pub task_id: String,
    /// The fencing token `maestro claim` returned.
    #[arg(long = "token", value_name = "N")]
    pub fencing_token: u64,
}

const CLAIMS: (&str, &str) = ("task claims", "POST /api/tasks/:id/claim");

pub async fn claim(ctx: &Context, a: ClaimArgs) -> CmdResult {
    let session = ctx.session()?;
    let client = ctx.client()?;
    match client.claim_task(&a.task_id, session, a.ttl_ms).await {
        Ok(lease) => {
            emit(ctx.json, &lease, || {
                say!("Claimed task {}.", a.task_id);
                kv("Holder", &lease.holder);
                kv("Fencing Token", lease.fencing_token);
                kv("Expires At", fmt_time(lease.expires_at));
            });
            Ok(())
        }
        Err(e) => Err(claim_error(ctx, e, &a.task_id)),
    }
}

pub async fn renew(ctx: &Context, a: RenewArgs) -> CmdResult {
    let session = ctx.session()?;
    let client = ctx.client()?;
    match client
        .renew_claim(&a.task_id, session, a.fencing_token, a.ttl_ms)
        .await
    {
        Ok(lease) => {
            emit(ctx.json, &lease, || {
                say!("Renewed the claim on task {}.", a.task_id);
                kv("Fencing Token", lease.fencing_token);
                kv("Expires At", fmt_time(lease.expires_at));
            });
            Ok(())
        }
        Err(e) => Err(claim_error(ctx, e, &a.task_id)),
    }
}

pub async fn release(ctx: &Context, a: ReleaseArgs) -> CmdResult {
    let session = ctx.session()?;
    let client = ctx.client()?;
    match client
        .release_claim(&a.task_id, session, a.fencing_token)
        .await
    {
        Ok(reply) => {
            let data = if reply.is_null() {
                json!({ "taskId": a.task_id, "released": true })
            } else {
                reply
            };
            emit(ctx.json, &data, || {
                say!("Released the claim on task {}.", a.task_id);
            });
            Ok(())
        }
        Err(e) => Err(claim_error(ctx, e, &a.task_id)),
    }
}

pub async fn heartbeat(ctx: &Context) -> CmdResult {
    let session = ctx.session()?;
    let client = ctx.client()?;
    match client.heartbeat(session).await {
        Ok(reply) => {
            emit(ctx.json, &reply, || {
                say!("Heartbeat sent for session {session}.");
                if let Some(ttl) = reply.get("ttlMs").and_then(Value::as_u64) {
                    kv("TTL", format!("{ttl} ms"));
                }
            });
            Ok(())
        }
        Err(e) if e.is_route_missing() => Err(CliError::unsupported(
            "heartbeats",
            "POST /api/sessions/:id/heartbeat",
        )),
        Err(e) => Err(ctx.err(e)),
    }
}

/// Explains a failed claim call: unsupported server, or who holds the task.
fn claim_error(ctx: &Context, e: maestro_client::Error, task_id: &str) -> CliError {
    if e.is_route_missing() {
        return CliError::unsupported(CLAIMS.0, CLAIMS.1);
    }
    let mut err = ctx.err(e);
    if err.code == "conflict" {
        let details = err.details.clone().unwrap_or(Value::Null);
        let holder = details
            .get("holder")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(holder) = holder {
            let until = details
                .get("expiresAt")
                .and_then(Value::as_i64)
                .map(|t| format!(" until {}", fmt_time(t)))
                .unwrap_or_default();
            err.message = format!(
                "Task {task_id} is held by session {holder}{until}: {}",
                err.message
            );
        }
        err = err.with_hint("Wait for the lease to expire or be released, then claim again.");
    }
    err
}
