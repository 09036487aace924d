//! Tool approvals: an agent's permission request, answered once by a human or by a rule.
//!
//! Records:
//! - `Approvals`, owned by the session: every request, pending or ended.
//! - `PendingApprovals`, owned by the project: one small record per pending request, removed
//!   when it ends. What "everything waiting for a human" and "cancel this session's pending
//!   requests" read, so neither grows with the history.
//! - `ApprovalRules`: one record per (session, tool, input) a human answered `allow_session`.
//!
//! Exactly one decision wins: deciding reads the approval and writes it in one transaction
//! (Redis `WATCH`, the local backend's single writer), so a second decision, from any server,
//! finds it decided and gets 409 with the first decision. A decision that repeats the winner's
//! `requestId` gets the winner's answer instead (a phone retrying after a lost response).
//!
//! Waiting is push-based, like mail's: [`Domain::wait_approval`] subscribes to the event stream
//! before it reads, and wakes on the `approval:decided` event of its approval.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use maestro_protocol::{
    Approval, ApprovalDecision, ApprovalStatus, CreateApproval, DecideApproval, SUMMARY_MAX,
    Session, summarize,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{Domain, check_id, load_session};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, Txn, TxnExt, transact};
use crate::util::hash::sha256_hex;
use crate::util::{new_id, now_ms, one_line as cut};

/// Largest tool input, serialised.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// Longest reason, in characters.
pub const MAX_REASON: usize = 2_000;
/// Longest single wait, in milliseconds (the CLI waits again until its own timeout).
pub const MAX_WAIT_MS: u64 = 120_000;
/// Default wait.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

pub const REQUESTED: &str = "approval:requested";
pub const DECIDED: &str = "approval:decided";

/// The pending marker of an approval, owned by its project.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingRecord {
    approval_id: String,
    session_id: String,
}

/// An `allow_session` answer, matched by later identical requests of the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleRecord {
    session_id: String,
    tool_name: String,
    approval_id: String,
    created_at: i64,
}

/// Counts a parked waiter for as long as it lives.
struct Parked(Arc<AtomicI64>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keys sorted at every level, so two equal inputs serialise alike whatever their key order.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The rule id for `tool_name` with `input` in `session_id`.
fn rule_id(session_id: &str, tool_name: &str, input: &Value) -> String {
    let key = json!([session_id, tool_name, canonical(input)]).to_string();
    sha256_hex(key.as_bytes())
}

/// The id of the approval a request with `request_id` creates: the same key names the same
/// approval, so a retried request finds what the first one made.
fn idempotent_id(session_id: &str, request_id: &str) -> String {
    let digest = sha256_hex(format!("{session_id}\0{request_id}").as_bytes());
    format!("appr_{}", &digest[..32])
}

/// A trimmed, non-empty reason on one line, cut to [`MAX_REASON`].
fn clean_reason(reason: Option<&str>) -> Option<String> {
    reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| cut(r, MAX_REASON))
}

fn decided_conflict(approval: &Approval) -> Error {
    let how = match approval.status {
        ApprovalStatus::Cancelled => "cancelled".to_owned(),
        status => format!(
            "{} by {}",
            if status == ApprovalStatus::Allowed {
                "allowed"
            } else {
                "denied"
            },
            approval.decided_by.as_deref().unwrap_or("someone")
        ),
    };
    Error::Coded {
        status: axum::http::StatusCode::CONFLICT,
        code: "APPROVAL_DECIDED",
        message: format!("Approval '{}' was already {how}", approval.id),
        details: Some(serde_json::to_value(approval).expect("approvals serialise")),
    }
}

/// Ends every pending approval of `session_id` in `project_id` as cancelled (the session
/// ended, or its agent is gone); each gets an `approval:decided` event.
pub(crate) fn cancel_pending(
    tx: &mut dyn Txn,
    project_id: &str,
    session_id: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    let pending: Vec<PendingRecord> = tx.list(Collection::PendingApprovals, Some(project_id))?;
    for rec in pending.into_iter().filter(|p| p.session_id == session_id) {
        tx.delete(Collection::PendingApprovals, &rec.approval_id);
        let Some(mut approval) = tx.get::<Approval>(Collection::Approvals, &rec.approval_id)?
        else {
            continue;
        };
        if !approval.status.is_pending() {
            continue;
        }
        approval.status = ApprovalStatus::Cancelled;
        approval.reason = Some(reason.to_owned());
        approval.decided_at = Some(now);
        tx.put(Collection::Approvals, &approval.id, None, &approval);
        tx.emit(project_id, DECIDED, &approval, Some(session_id));
    }
    Ok(())
}

/// Deletes every approval record of `session_id` (the session is being deleted).
pub(crate) fn delete_all(tx: &mut dyn Txn, session_id: &str) -> Result<()> {
    let approvals: Vec<Approval> = tx.list(Collection::Approvals, Some(session_id))?;
    for approval in approvals {
        tx.delete(Collection::Approvals, &approval.id);
        tx.delete(Collection::PendingApprovals, &approval.id);
        tx.delete(
            Collection::ApprovalRules,
            &rule_id(session_id, &approval.tool_name, &approval.input),
        );
    }
    Ok(())
}

impl Domain {
    /// Creates a pending approval for `session_id` and tells every client, or answers it at
    /// once when an `allow_session` rule of the session matches. Returns the approval and
    /// whether this call created it (`false`: the `requestId` was seen before).
    pub async fn create_approval(
        &self,
        session_id: String,
        req: CreateApproval,
    ) -> Result<(Approval, bool)> {
        check_id("sessionId", &session_id)?;
        let agent_tool = super::required(Some(&req.agent_tool), "agentTool is required")?;
        let tool_name = super::required(Some(&req.tool_name), "toolName is required")?;
        if agent_tool.len() > 64 || tool_name.len() > 256 {
            return Err(Error::validation(
                "agentTool (64) or toolName (256 characters) is too long",
            ));
        }
        let input_len = serde_json::to_vec(&req.input).map(|v| v.len()).unwrap_or(0);
        if input_len > MAX_INPUT_BYTES {
            return Err(Error::PayloadTooLarge {
                limit: MAX_INPUT_BYTES,
            });
        }
        if let Some(key) = &req.request_id
            && (key.is_empty() || key.len() > 200)
        {
            return Err(Error::validation("requestId must be 1-200 characters"));
        }
        let summary = match req.summary.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => cut(s, SUMMARY_MAX),
            _ => summarize(&tool_name, &req.input),
        };
        let id = match &req.request_id {
            Some(key) => idempotent_id(&session_id, key),
            None => new_id("appr"),
        };
        let rule = rule_id(&session_id, &tool_name, &req.input);
        let (approval, created) = transact(&*self.store, move |tx| {
            if req.request_id.is_some()
                && let Some(existing) = tx.get::<Approval>(Collection::Approvals, &id)?
            {
                return Ok((existing, false));
            }
            let session: Session = load_session(tx, &session_id)?;
            if session.is_terminal() {
                return Err(Error::Conflict(format!(
                    "Session '{session_id}' has ended ({})",
                    session.status
                )));
            }
            let now = now_ms();
            let mut approval = Approval {
                id: id.clone(),
                session_id: session_id.clone(),
                project_id: session.project_id.clone(),
                session_name: session.name.clone(),
                agent_tool: agent_tool.clone(),
                tool_name: tool_name.clone(),
                input: req.input.clone(),
                summary: summary.clone(),
                status: ApprovalStatus::Pending,
                decision: None,
                reason: None,
                decided_by: None,
                request_id: req.request_id.clone(),
                decision_request_id: None,
                created_at: now,
                decided_at: None,
            };
            let scope = session.project_id.clone();
            if tx.get_raw(Collection::ApprovalRules, &rule)?.is_some() {
                approval.status = ApprovalStatus::Allowed;
                approval.decision = Some(ApprovalDecision::AllowSession);
                approval.decided_by = Some("rule".into());
                approval.decided_at = Some(now);
                tx.insert(Collection::Approvals, &id, Some(&session_id), &approval);
                tx.emit(&scope, DECIDED, &approval, Some(&session_id));
            } else {
                tx.insert(Collection::Approvals, &id, Some(&session_id), &approval);
                tx.insert(
                    Collection::PendingApprovals,
                    &id,
                    Some(&scope),
                    &PendingRecord {
                        approval_id: id.clone(),
                        session_id: session_id.clone(),
                    },
                );
                tx.emit(&scope, REQUESTED, &approval, Some(&session_id));
            }
            Ok((approval, true))
        })
        .await?;
        if created {
            tracing::info!(
                target: "maestro::audit",
                approval_id = %approval.id,
                session_id = %approval.session_id,
                tool = %approval.tool_name,
                status = ?approval.status,
                "approval requested"
            );
        }
        Ok((approval, created))
    }

    pub fn get_approval(&self, id: &str) -> Result<Approval> {
        check_id("id", id)?;
        self.reader()?
            .get(Collection::Approvals, id)?
            .ok_or_else(|| Error::not_found("Approval", id))
    }

    /// The approvals of `session_id`, oldest first; only those in `status` when given.
    pub fn session_approvals(
        &self,
        session_id: &str,
        status: Option<ApprovalStatus>,
    ) -> Result<Vec<Approval>> {
        check_id("sessionId", session_id)?;
        let mut r = self.reader()?;
        load_session(&mut *r, session_id)?;
        let mut all: Vec<Approval> = r.list(Collection::Approvals, Some(session_id))?;
        if let Some(status) = status {
            all.retain(|a| a.status == status);
        }
        Ok(all)
    }

    /// Every pending approval (of `project_id` when given), oldest first.
    pub fn pending_approvals(&self, project_id: Option<&str>) -> Result<Vec<Approval>> {
        if let Some(p) = project_id {
            check_id("projectId", p)?;
        }
        let mut r = self.reader()?;
        let pending: Vec<PendingRecord> = r.list(Collection::PendingApprovals, project_id)?;
        let mut out = Vec::with_capacity(pending.len());
        for rec in pending {
            if let Some(a) = r.get::<Approval>(Collection::Approvals, &rec.approval_id)?
                && a.status.is_pending()
            {
                out.push(a);
            }
        }
        out.sort_by_key(|a| a.created_at);
        Ok(out)
    }

    /// Decides a pending approval: the first decision wins, later ones get 409 with it.
    pub async fn decide_approval(
        &self,
        id: String,
        req: DecideApproval,
        decided_by: String,
    ) -> Result<Approval> {
        check_id("id", &id)?;
        let reason = clean_reason(req.reason.as_deref());
        if let Some(key) = &req.request_id
            && (key.is_empty() || key.len() > 200)
        {
            return Err(Error::validation("requestId must be 1-200 characters"));
        }
        let (approval, won) = transact(&*self.store, move |tx| {
            let mut approval: Approval = tx
                .get(Collection::Approvals, &id)?
                .ok_or_else(|| Error::not_found("Approval", &id))?;
            if !approval.status.is_pending() {
                if req.request_id.is_some() && approval.decision_request_id == req.request_id {
                    return Ok((approval, false));
                }
                return Err(decided_conflict(&approval));
            }
            let now = now_ms();
            approval.status = req.decision.status();
            approval.decision = Some(req.decision);
            approval.reason = reason.clone();
            approval.decided_by = Some(decided_by.clone());
            approval.decision_request_id = req.request_id.clone();
            approval.decided_at = Some(now);
            tx.put(Collection::Approvals, &id, None, &approval);
            tx.delete(Collection::PendingApprovals, &id);
            if req.decision == ApprovalDecision::AllowSession {
                tx.put(
                    Collection::ApprovalRules,
                    &rule_id(&approval.session_id, &approval.tool_name, &approval.input),
                    Some(&approval.session_id),
                    &RuleRecord {
                        session_id: approval.session_id.clone(),
                        tool_name: approval.tool_name.clone(),
                        approval_id: id.clone(),
                        created_at: now,
                    },
                );
            }
            tx.emit(
                &approval.project_id,
                DECIDED,
                &approval,
                Some(&approval.session_id),
            );
            Ok((approval, true))
        })
        .await?;
        if won {
            tracing::info!(
                target: "maestro::audit",
                approval_id = %approval.id,
                decision = ?approval.decision,
                by = %approval.decided_by.as_deref().unwrap_or(""),
                "approval decided"
            );
        }
        Ok(approval)
    }

    /// Withdraws a pending approval (the agent stopped waiting: its hook timed out or was
    /// interrupted). An approval that already ended is returned as it is.
    pub async fn cancel_approval(&self, id: String, reason: Option<String>) -> Result<Approval> {
        check_id("id", &id)?;
        let reason =
            clean_reason(reason.as_deref()).unwrap_or_else(|| "withdrawn by the agent".to_owned());
        transact(&*self.store, move |tx| {
            let mut approval: Approval = tx
                .get(Collection::Approvals, &id)?
                .ok_or_else(|| Error::not_found("Approval", &id))?;
            if !approval.status.is_pending() {
                return Ok(approval);
            }
            approval.status = ApprovalStatus::Cancelled;
            approval.reason = Some(reason.clone());
            approval.decided_at = Some(now_ms());
            tx.put(Collection::Approvals, &id, None, &approval);
            tx.delete(Collection::PendingApprovals, &id);
            tx.emit(
                &approval.project_id,
                DECIDED,
                &approval,
                Some(&approval.session_id),
            );
            Ok(approval)
        })
        .await
    }

    /// Long-poll: the approval as soon as it is no longer pending, or as it is after
    /// `timeout_ms`.
    pub async fn wait_approval(&self, id: &str, timeout_ms: u64) -> Result<Approval> {
        check_id("id", id)?;
        if timeout_ms > MAX_WAIT_MS {
            return Err(Error::validation(format!(
                "timeout must be at most {MAX_WAIT_MS} ms"
            )));
        }
        let deadline = self.long_poll_deadline(timeout_ms);
        // Counted as parked once the approval has been read pending (as mail waits are).
        let mut parked: Option<Parked> = None;
        // Subscribe first: a decision stored after this point wakes us.
        let mut events = self.store.subscribe();
        loop {
            let current = self.get_approval(id)?;
            if !current.status.is_pending() {
                return Ok(current);
            }
            parked.get_or_insert_with(|| {
                self.approval_waiters.fetch_add(1, Ordering::Relaxed);
                Parked(self.approval_waiters.clone())
            });
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) | Ok(Err(RecvError::Closed)) => return self.get_approval(id),
                    // Missed some: read again.
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Ok(ev)) => {
                        if ev.event == DECIDED
                            && ev.data.get("id").and_then(Value::as_str) == Some(id)
                        {
                            if let Ok(decided) = serde_json::from_value::<Approval>(ev.data.clone())
                            {
                                return Ok(decided);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_in_any_key_order_share_a_rule() {
        let a = json!({"command": "ls", "opts": {"x": 1, "y": [2, {"b": 1, "a": 2}]}});
        let b = json!({"opts": {"y": [2, {"a": 2, "b": 1}], "x": 1}, "command": "ls"});
        assert_eq!(rule_id("s", "Bash", &a), rule_id("s", "Bash", &b));
        assert_ne!(rule_id("s", "Bash", &a), rule_id("t", "Bash", &a));
        assert_ne!(rule_id("s", "Bash", &a), rule_id("s", "Edit", &a));
        assert_ne!(
            rule_id("s", "Bash", &a),
            rule_id("s", "Bash", &json!({"command": "ls -la"}))
        );
    }

    #[test]
    fn a_request_id_names_one_approval_per_session() {
        assert_eq!(idempotent_id("s", "k"), idempotent_id("s", "k"));
        assert_ne!(idempotent_id("s", "k"), idempotent_id("t", "k"));
        assert!(maestro_protocol::ids::is_valid_id(&idempotent_id("s", "k")));
    }
}
