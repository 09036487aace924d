//! Task claims: leases with fencing tokens.
//!
//! A claim gives one session a task for a limited time. Every new lease on a task takes the
//! next value of the task's fencing counter, which only grows. Session-mode writes about the
//! task (status reports, timeline reports) may carry the token; one older than the task's
//! latest lease is refused with 409 and changes nothing, so a holder that was paused past its
//! lease cannot overwrite the work of the session that took over.
//!
//! The claim record of a task outlives its lease (holder cleared on release or expiry) so the
//! latest token is always known.

use maestro_protocol::{Claim, ClaimRequest, LeaseRequest, Released};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Domain, check_id, load_session, load_task, required};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, ReaderExt, Txn, TxnExt, transact};
use crate::util::now_ms;

/// Default and largest lease length.
pub const DEFAULT_LEASE_MS: u64 = 60_000;
pub const MAX_LEASE_MS: u64 = 3_600_000;
const MIN_LEASE_MS: u64 = 100;

/// The stored claim of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClaimRecord {
    pub task_id: String,
    pub project_id: String,
    /// `None` once released or expired.
    pub holder: Option<String>,
    pub fencing_token: u64,
    pub expires_at: i64,
}

impl ClaimRecord {
    fn active(&self, now: i64) -> Option<Claim> {
        let holder = self.holder.clone()?;
        (self.expires_at > now).then(|| Claim {
            task_id: self.task_id.clone(),
            project_id: self.project_id.clone(),
            holder,
            fencing_token: self.fencing_token,
            expires_at: self.expires_at,
        })
    }

    fn lapsed_holder(&self, now: i64) -> Option<String> {
        self.holder.clone().filter(|_| self.expires_at <= now)
    }
}

fn conflict(code: &'static str, message: impl Into<String>, details: serde_json::Value) -> Error {
    Error::Coded {
        status: axum::http::StatusCode::CONFLICT,
        code,
        message: message.into(),
        details: Some(details),
    }
}

fn lease_ms(ttl: Option<u64>) -> Result<u64> {
    match ttl {
        None => Ok(DEFAULT_LEASE_MS),
        Some(t) if (MIN_LEASE_MS..=MAX_LEASE_MS).contains(&t) => Ok(t),
        Some(_) => Err(Error::validation(format!(
            "ttlMs must be between {MIN_LEASE_MS} and {MAX_LEASE_MS}"
        ))),
    }
}

/// Emits the expiry of a lapsed lease and clears its holder.
fn expire(tx: &mut dyn Txn, rec: &mut ClaimRecord, holder: String) {
    tx.emit(
        &rec.project_id,
        "task:claim_expired",
        &json!({ "taskId": rec.task_id, "holder": holder, "fencingToken": rec.fencing_token }),
        Some(&holder),
    );
    rec.holder = None;
}

/// Refuses a session-mode write about `task_id` that a claim forbids: a stale fencing token,
/// or no token while another session holds the task.
pub(crate) fn check_fence(
    tx: &mut dyn Txn,
    task_id: &str,
    session_id: &str,
    token: Option<u64>,
    now: i64,
) -> Result<()> {
    let Some(rec) = tx.get::<ClaimRecord>(Collection::Claims, task_id)? else {
        return match token {
            Some(_) => Err(conflict(
                "STALE_FENCING_TOKEN",
                "This task has never been claimed; the fencing token is not valid",
                json!({ "taskId": task_id }),
            )),
            None => Ok(()),
        };
    };
    let active = rec.active(now);
    match token {
        Some(t) if t != rec.fencing_token => Err(conflict(
            "STALE_FENCING_TOKEN",
            format!(
                "Fencing token {t} is stale: the task's latest lease has token {}",
                rec.fencing_token
            ),
            json!({ "taskId": task_id, "holder": active.as_ref().map(|c| &c.holder) }),
        )),
        Some(_) if rec.holder.as_deref().is_some_and(|h| h != session_id) => Err(conflict(
            "STALE_FENCING_TOKEN",
            "The lease with this fencing token belongs to another session",
            json!({ "taskId": task_id }),
        )),
        None => match active {
            Some(c) if c.holder != session_id => Err(conflict(
                "TASK_CLAIMED",
                format!("Task is claimed by session '{}'", c.holder),
                json!({ "taskId": task_id, "holder": c.holder, "expiresAt": c.expires_at }),
            )),
            _ => Ok(()),
        },
        Some(_) => Ok(()),
    }
}

/// Stores a claim record with its lapse deadline (none once nobody holds the task).
fn put_claim(tx: &mut dyn Txn, rec: &ClaimRecord) {
    tx.put(Collection::Claims, &rec.task_id, Some(&rec.project_id), rec);
    tx.schedule(
        Deadline::ClaimExpiry,
        &rec.task_id,
        rec.holder.as_ref().map(|_| rec.expires_at),
    );
}

/// Releases every lease `session_id` holds in `project_id` (the session has ended).
pub(crate) fn release_all(
    tx: &mut dyn Txn,
    project_id: &str,
    session_id: &str,
    reason: &str,
) -> Result<()> {
    let records: Vec<ClaimRecord> = tx.list(Collection::Claims, Some(project_id))?;
    for mut rec in records {
        if rec.holder.as_deref() != Some(session_id) {
            continue;
        }
        rec.holder = None;
        put_claim(tx, &rec);
        tx.emit(
            project_id,
            "task:claim_released",
            &json!({ "taskId": rec.task_id, "holder": session_id, "fencingToken": rec.fencing_token, "reason": reason }),
            Some(session_id),
        );
    }
    Ok(())
}

impl Domain {
    /// Claims `task_id` for a session: the lease, or 409 with the current holder.
    pub async fn claim_task(&self, task_id: String, req: ClaimRequest) -> Result<Claim> {
        check_id("taskId", &task_id)?;
        let session_id = required(req.session_id.as_deref(), "sessionId is required")?;
        check_id("sessionId", &session_id)?;
        let ttl = lease_ms(req.ttl_ms)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let task = load_task(tx, &task_id)?;
            let session = load_session(tx, &session_id)?;
            if session.project_id != task.project_id {
                return Err(Error::validation("Session and task belong to different projects"));
            }
            if session.is_terminal() {
                return Err(Error::Conflict(format!(
                    "Session '{session_id}' has ended ({}); it cannot claim tasks",
                    session.status
                )));
            }
            let mut rec: Option<ClaimRecord> = tx.get(Collection::Claims, &task_id)?;
            if let Some(r) = &rec
                && let Some(current) = r.active(now)
            {
                if current.holder == session_id {
                    return Ok(current);
                }
                return Err(conflict(
                    "TASK_CLAIMED",
                    format!("Task is claimed by session '{}'", current.holder),
                    json!({ "taskId": task_id, "holder": current.holder, "expiresAt": current.expires_at }),
                ));
            }
            if let Some(r) = rec.as_mut()
                && let Some(old) = r.lapsed_holder(now)
            {
                expire(tx, r, old);
            }
            let token = tx.next_counter(&format!("fence:{task_id}"))?;
            let record = ClaimRecord {
                task_id: task_id.clone(),
                project_id: task.project_id.clone(),
                holder: Some(session_id.clone()),
                fencing_token: token,
                expires_at: now + ttl as i64,
            };
            put_claim(tx, &record);
            let claim = record.active(now).expect("just created");
            tx.emit(&task.project_id, "task:claimed", &claim, Some(&session_id));
            Ok(claim)
        })
        .await
    }

    /// Extends the caller's lease.
    pub async fn renew_claim(&self, task_id: String, req: LeaseRequest) -> Result<Claim> {
        check_id("taskId", &task_id)?;
        let (session_id, token) = lease_args(&req)?;
        let ttl = lease_ms(req.ttl_ms)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut rec = holder_record(tx, &task_id, &session_id, token, now)?;
            rec.expires_at = now + ttl as i64;
            put_claim(tx, &rec);
            Ok(rec.active(now).expect("renewed"))
        })
        .await
    }

    /// Gives the caller's lease up.
    pub async fn release_claim(&self, task_id: String, req: LeaseRequest) -> Result<Released> {
        check_id("taskId", &task_id)?;
        let (session_id, token) = lease_args(&req)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut rec = holder_record(tx, &task_id, &session_id, token, now)?;
            rec.holder = None;
            let project = rec.project_id.clone();
            put_claim(tx, &rec);
            tx.emit(
                &project,
                "task:claim_released",
                &json!({ "taskId": task_id, "holder": session_id, "fencingToken": token, "reason": "released" }),
                Some(&session_id),
            );
            Ok(Released {
                released: true,
                task_id: task_id.clone(),
            })
        })
        .await
    }

    /// The task's current lease, if any.
    pub fn get_claim(&self, task_id: &str) -> Result<Option<Claim>> {
        check_id("taskId", task_id)?;
        let mut r = self.reader()?;
        load_task(&mut *r, task_id)?;
        let rec: Option<ClaimRecord> = r.get(Collection::Claims, task_id)?;
        Ok(rec.and_then(|r| r.active(now_ms())))
    }

    /// Ends leases whose time is up; returns how many. Reads only the leases that are due
    /// (the claim deadline index), at most `limit` of them.
    pub(crate) async fn reap_claims(&self, now: i64, limit: usize) -> Result<usize> {
        let due = self.store.due(Deadline::ClaimExpiry, now, limit)?;
        let mut reaped = 0;
        for task_id in due {
            let done = transact(&*self.store, move |tx| {
                let Some(mut rec) = tx.get::<ClaimRecord>(Collection::Claims, &task_id)? else {
                    tx.schedule(Deadline::ClaimExpiry, &task_id, None);
                    return Ok(false);
                };
                let Some(old) = rec.lapsed_holder(now) else {
                    // Renewed or reaped meanwhile: the deadline is the record's again.
                    let due = rec.holder.as_ref().map(|_| rec.expires_at);
                    tx.schedule(Deadline::ClaimExpiry, &task_id, due);
                    return Ok(false);
                };
                expire(tx, &mut rec, old);
                put_claim(tx, &rec);
                Ok(true)
            })
            .await?;
            reaped += usize::from(done);
        }
        Ok(reaped)
    }

    /// Indexes every held lease's deadline (leases stored before the index existed).
    pub(crate) async fn reindex_claims(&self) -> Result<usize> {
        let held: Vec<ClaimRecord> = self
            .reader()?
            .list::<ClaimRecord>(Collection::Claims, None)?
            .into_iter()
            .filter(|c| c.holder.is_some())
            .collect();
        let n = held.len();
        if n > 0 {
            transact(&*self.store, move |tx| {
                for rec in &held {
                    tx.schedule(Deadline::ClaimExpiry, &rec.task_id, Some(rec.expires_at));
                }
                Ok(())
            })
            .await?;
        }
        Ok(n)
    }
}

fn lease_args(req: &LeaseRequest) -> Result<(String, u64)> {
    let session_id = required(req.session_id.as_deref(), "sessionId is required")?;
    check_id("sessionId", &session_id)?;
    let token = req
        .fencing_token
        .ok_or_else(|| Error::validation("fencingToken is required"))?;
    Ok((session_id, token))
}

/// The claim record, if `session_id` holds the live lease with `token`.
fn holder_record(
    tx: &mut dyn Txn,
    task_id: &str,
    session_id: &str,
    token: u64,
    now: i64,
) -> Result<ClaimRecord> {
    load_task(tx, task_id)?;
    let rec: ClaimRecord = tx.get(Collection::Claims, task_id)?.ok_or_else(|| {
        conflict(
            "NO_LEASE",
            "This task is not claimed",
            json!({ "taskId": task_id }),
        )
    })?;
    if rec.fencing_token != token {
        return Err(conflict(
            "STALE_FENCING_TOKEN",
            format!(
                "Fencing token {token} is stale: the latest lease has token {}",
                rec.fencing_token
            ),
            json!({ "taskId": task_id }),
        ));
    }
    match rec.active(now) {
        Some(c) if c.holder == session_id => Ok(rec),
        Some(c) => Err(conflict(
            "TASK_CLAIMED",
            format!("Task is claimed by session '{}'", c.holder),
            json!({ "taskId": task_id, "holder": c.holder }),
        )),
        None => Err(conflict(
            "LEASE_EXPIRED",
            "The lease has expired; claim the task again",
            json!({ "taskId": task_id }),
        )),
    }
}
