//! Liveness: heartbeats, presence, and the sweep that notices dead and stalled agents.
//!
//! An agent (through `maestro run` or `maestro heartbeat`) beats its session every few seconds.
//! A session that has beaten at least once and then stays silent for longer than TTL + grace
//! is failed with reason `agent_disconnected`: its open task statuses fail too, its leases
//! are released and `notify:session_failed` goes out. Sessions that never beat (older
//! clients) are never failed this way.
//!
//! Every server runs the sweep. Each expiry is handled in a transaction that re-checks the
//! presence record, so when several servers find the same silent session only one of them
//! fails it — exactly once.
//!
//! Silence is measured from the later of the last beat and the moment this sweeper last
//! started or recovered from a backend outage: after a server restart or a Redis outage, live
//! agents whose beats could not get through are given a full TTL to beat again.
//!
//! The sweep reads only what is due: every presence write also sets the session's expiry and
//! stall deadlines (`ports::Deadline`), and a pass reads those indexes up to now, so its cost
//! does not grow with the number of idle sessions. A sweeper indexes what is stored when it
//! starts (records written before the indexes existed, or by an older server).

use std::time::Duration;

use maestro_protocol::{Heartbeat, Presence, Session};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::claims::release_all;
use super::runners::RUNNER_LOST;
use super::sessions::{close_task_statuses, emit_session_appended, timeline_entry};
use super::{Domain, check_id, load_session};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, ReaderExt, Txn, TxnExt, transact};
use crate::util::now_ms;

/// Timing of heartbeats and sweeps.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    pub ttl_ms: u64,
    pub grace_ms: u64,
    pub stall_after_ms: u64,
    pub sweep_interval_ms: u64,
}

/// Why the server failed a session whose agent went silent.
pub const DISCONNECTED: &str = "agent_disconnected";

fn presence_event(tx: &mut dyn Txn, p: &Presence) {
    tx.emit(&p.project_id, "session:presence", p, Some(&p.session_id));
}

/// Most due records one sweep handles per index; the rest wait for the next pass.
pub const SWEEP_BATCH: usize = 1_000;

/// Sets `p`'s expiry and stall deadlines (cleared when offline, or already stalled), with
/// silence counted from no earlier than `floor`.
fn schedule_presence(tx: &mut dyn Txn, p: &Presence, cfg: LivenessConfig, floor: i64) {
    let expiry = p
        .online
        .then(|| p.last_seen.max(floor) + (p.ttl_ms + cfg.grace_ms) as i64 + 1);
    let stall = (p.online && !p.stalled)
        .then(|| p.last_progress.max(floor) + cfg.stall_after_ms as i64 + 1);
    tx.schedule(Deadline::PresenceExpiry, &p.session_id, expiry);
    tx.schedule(Deadline::PresenceStall, &p.session_id, stall);
}

/// Removes a session's presence record and its deadlines (the session is being deleted).
pub(crate) fn delete_presence(tx: &mut dyn Txn, session_id: &str) {
    tx.delete(Collection::Presence, session_id);
    tx.schedule(Deadline::PresenceExpiry, session_id, None);
    tx.schedule(Deadline::PresenceStall, session_id, None);
}

impl Domain {
    /// Records a heartbeat. A session the server had given up on comes back to life.
    pub async fn heartbeat(&self, session_id: String, req: Heartbeat) -> Result<Presence> {
        check_id("sessionId", &session_id)?;
        let now = now_ms();
        let cfg = self.info.liveness;
        let ttl = cfg.ttl_ms;
        let progress = req.progress.unwrap_or(false);
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &session_id)?;
            let revived = session.status == "failed"
                && session.failure_reason.as_deref() == Some(DISCONNECTED);
            if session.is_terminal() && !revived {
                return Err(Error::Conflict(format!(
                    "Session '{session_id}' has ended ({}); start a new session",
                    session.status
                )));
            }
            let before: Option<Presence> = tx.get(Collection::Presence, &session_id)?;
            let mut p = before.clone().unwrap_or(Presence {
                session_id: session_id.clone(),
                project_id: session.project_id.clone(),
                online: false,
                last_seen: now,
                last_progress: now,
                stalled: false,
                ttl_ms: ttl,
            });
            p.last_seen = now;
            p.ttl_ms = ttl;
            p.online = true;
            if progress {
                p.last_progress = now;
                p.stalled = false;
            }
            tx.put(
                Collection::Presence,
                &session_id,
                Some(&session.project_id),
                &p,
            );
            schedule_presence(tx, &p, cfg, 0);
            if revived {
                session.status = "working".into();
                session.completed_at = None;
                session.failure_reason = None;
                session.last_activity = now;
                let entry = timeline_entry(
                    "progress",
                    Some("Heartbeat resumed: the agent is alive again".into()),
                    None,
                    None,
                    now,
                );
                session.timeline.push(entry.clone());
                tx.put(Collection::Sessions, &session_id, None, &session);
                emit_session_appended(tx, &session, &[entry], &[], &[]);
            }
            let changed = before
                .as_ref()
                .is_none_or(|b| !b.online || (progress && b.stalled));
            if changed {
                presence_event(tx, &p);
            }
            Ok(p)
        })
        .await
    }

    /// Fills in `online`, `lastSeen`, `lastProgress`, `stalled` from presence records.
    pub(crate) fn with_presence(&self, sessions: &mut [Session]) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut r = self.reader()?;
        let records: Vec<Presence> = if sessions.len() == 1 {
            r.get(Collection::Presence, &sessions[0].id)?
                .into_iter()
                .collect()
        } else {
            let mut projects: Vec<&str> = sessions.iter().map(|s| s.project_id.as_str()).collect();
            projects.sort_unstable();
            projects.dedup();
            let mut all = Vec::new();
            for p in projects {
                all.extend(r.list::<Presence>(Collection::Presence, Some(p))?);
            }
            all
        };
        for s in sessions.iter_mut() {
            if let Some(p) = records.iter().find(|p| p.session_id == s.id) {
                s.online = Some(p.online);
                s.last_seen = Some(p.last_seen);
                s.last_progress = Some(p.last_progress.max(s.last_activity));
                s.stalled = Some(p.stalled);
            }
        }
        Ok(())
    }

    /// Runs the sweep every `sweep_interval_ms` until `stop`.
    pub async fn run_sweeper(self, stop: CancellationToken) {
        let cfg = self.info.liveness;
        let mut epoch = now_ms();
        let mut indexed = false;
        let mut healthy = true;
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.sweep_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !indexed {
                match self.reindex(epoch).await {
                    Ok(()) => indexed = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot index deadlines yet; retrying");
                        continue;
                    }
                }
            }
            match self.sweep_once(now_ms(), epoch).await {
                Ok(()) => {
                    if !healthy {
                        // Beats could not get through while we were blind: start the clock over.
                        epoch = now_ms();
                        healthy = true;
                        tracing::info!("liveness sweep recovered; silence is measured from now");
                    }
                }
                Err(e) => {
                    if healthy {
                        tracing::warn!(error = %e, "liveness sweep failed; retrying");
                    }
                    healthy = false;
                }
            }
        }
    }

    /// Indexes the deadlines of what is stored: online presences (silence counted from
    /// `epoch` at the earliest), held leases, remembered idempotent answers. Run once when a
    /// sweeper starts; setting a deadline again is harmless.
    pub async fn reindex(&self, epoch: i64) -> Result<()> {
        let cfg = self.info.liveness;
        let online: Vec<Presence> = self
            .reader()?
            .list::<Presence>(Collection::Presence, None)?
            .into_iter()
            .filter(|p| p.online)
            .collect();
        let presences = online.len();
        if presences > 0 {
            transact(&*self.store, move |tx| {
                for p in &online {
                    schedule_presence(tx, p, cfg, epoch);
                }
                Ok(())
            })
            .await?;
        }
        let leases = self.reindex_claims().await?;
        let answers = self.reindex_idempotency().await?;
        tracing::debug!(presences, leases, answers, "deadlines indexed");
        Ok(())
    }

    /// One pass: fail silent sessions, flag stalled ones, reap lapsed leases, forget old
    /// idempotent answers. Reads only what is due.
    pub async fn sweep_once(&self, now: i64, epoch: i64) -> Result<()> {
        for id in self.store.due(Deadline::PresenceExpiry, now, SWEEP_BATCH)? {
            self.expire_session(id, now, epoch).await?;
        }
        for id in self.store.due(Deadline::PresenceStall, now, SWEEP_BATCH)? {
            self.mark_stalled(id, now, epoch).await?;
        }
        self.expire_runners(now, SWEEP_BATCH).await?;
        self.reap_claims(now, SWEEP_BATCH).await?;
        self.forget_idempotency(now, SWEEP_BATCH).await?;
        Ok(())
    }

    async fn expire_session(&self, session_id: String, now: i64, epoch: i64) -> Result<()> {
        let cfg = self.info.liveness;
        let grace = cfg.grace_ms;
        transact(&*self.store, move |tx| {
            let Some(mut p) = tx.get::<Presence>(Collection::Presence, &session_id)? else {
                tx.schedule(Deadline::PresenceExpiry, &session_id, None);
                tx.schedule(Deadline::PresenceStall, &session_id, None);
                return Ok(());
            };
            // Re-check inside the transaction: another server may have handled it, or the
            // agent may have beaten meanwhile (or the server restarted since: the deadline
            // moves to a full TTL after that).
            if !p.online || now - p.last_seen.max(epoch) <= (p.ttl_ms + grace) as i64 {
                schedule_presence(tx, &p, cfg, epoch);
                return Ok(());
            }
            p.online = false;
            tx.put(Collection::Presence, &session_id, Some(&p.project_id.clone()), &p);
            schedule_presence(tx, &p, cfg, epoch);
            let Some(mut session) = tx.get::<Session>(Collection::Sessions, &session_id)? else {
                return Ok(());
            };
            if session.is_terminal() {
                presence_event(tx, &p);
                return Ok(());
            }
            let silent = (now - p.last_seen) / 1000;
            // A runner beats for its sessions, itself first: when it has not beaten since the
            // session's last beat (or for half a TTL, when a live runner beats every third),
            // the runner is what went silent.
            let runner_lost = match super::runners::meta_str(&session, "runnerId") {
                Some(rid) => tx
                    .get::<maestro_protocol::Runner>(Collection::Runners, rid)?
                    .is_none_or(|r| {
                        r.last_seen <= p.last_seen || now - r.last_seen > (p.ttl_ms / 2) as i64
                    }),
                None => false,
            };
            let (reason, message) = if runner_lost {
                (
                    RUNNER_LOST,
                    format!(
                        "The runner on {} has been silent for {silent} s: its agents are lost",
                        session.hostname
                    ),
                )
            } else {
                (
                    DISCONNECTED,
                    format!("No heartbeat for {silent} s: the agent is gone"),
                )
            };
            session.status = "failed".into();
            session.completed_at = Some(now);
            session.failure_reason = Some(reason.into());
            session.last_activity = now;
            let entry = timeline_entry(
                "error",
                Some(message),
                None,
                Some(json!({ "reason": reason })),
                now,
            );
            session.timeline.push(entry.clone());
            close_task_statuses(tx, &session, "failed", now)?;
            release_all(tx, &session.project_id, &session_id, "session_failed")?;
            super::approvals::cancel_pending(
                tx,
                &session.project_id,
                &session_id,
                "the agent stopped responding",
                now,
            )?;
            super::sessions::clear_needs_input(&mut session);
            tx.put(Collection::Sessions, &session_id, None, &session);
            let scope = session.project_id.clone();
            emit_session_appended(tx, &session, &[entry], &[], &[]);
            tx.emit(
                &scope,
                "notify:session_failed",
                &json!({ "sessionId": session_id, "name": session.name, "reason": reason }),
                Some(&session_id),
            );
            presence_event(tx, &p);
            tracing::info!(session.id = %session_id, silent_s = silent, "agent stopped beating; session failed");
            Ok(())
        })
        .await
    }

    async fn mark_stalled(&self, session_id: String, now: i64, epoch: i64) -> Result<()> {
        let stall = self.info.liveness.stall_after_ms as i64;
        transact(&*self.store, move |tx| {
            let Some(mut p) = tx.get::<Presence>(Collection::Presence, &session_id)? else {
                tx.schedule(Deadline::PresenceStall, &session_id, None);
                return Ok(());
            };
            let Some(session) = tx.get::<Session>(Collection::Sessions, &session_id)? else {
                tx.schedule(Deadline::PresenceStall, &session_id, None);
                return Ok(());
            };
            let last = p.last_progress.max(session.last_activity).max(epoch);
            if p.stalled || !p.online || session.is_terminal() {
                tx.schedule(Deadline::PresenceStall, &session_id, None);
                return Ok(());
            }
            if now - last <= stall {
                // Progress (or activity) since: due a full stall time after it.
                tx.schedule(Deadline::PresenceStall, &session_id, Some(last + stall + 1));
                return Ok(());
            }
            p.stalled = true;
            tx.schedule(Deadline::PresenceStall, &session_id, None);
            tx.put(
                Collection::Presence,
                &session_id,
                Some(&p.project_id.clone()),
                &p,
            );
            tx.emit(
                &p.project_id,
                "session:stalled",
                &json!({ "sessionId": session_id, "name": session.name, "lastProgress": last }),
                Some(&session_id),
            );
            presence_event(tx, &p);
            Ok(())
        })
        .await
    }
}
