//! Mail between sessions: send, inbox, long-poll wait, read cursors.
//!
//! Every message gets a per-project `seq`. A session's read cursor is the highest `seq` it has
//! acknowledged, so `wait` with `ack` (`POST /api/mail/wait/:id`; a `GET` never acknowledges)
//! hands each message to the session exactly once, even with several waiters: the read and the
//! cursor move happen in one transaction.
//!
//! `wait` subscribes to the event stream *before* it reads the inbox, so a message stored
//! between the read and the wait still wakes it.
//!
//! A project's mail is stored in `seq` order (the `seq` is taken in the transaction that
//! creates the message, and transactions on one project's counter are serialized), so
//! "everything after the cursor" is read newest first and stops at the cursor: its cost is
//! the unread part of the project's mail, not the mailbox's history.
//!
//! `createdAt` strictly increases with `seq` within a project: a message gets the current
//! time, or one millisecond after the project's newest message if that is not earlier. So
//! `since=<the last createdAt seen>` never skips a message stored in the same millisecond
//! (or by a server whose clock is behind), and a `since` read also walks back from the newest
//! message and stops once it is past `since`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use maestro_protocol::EventRecord;
use maestro_protocol::ids::prefix;
use maestro_protocol::{
    AckMail, MAIL_TYPES, MailCursor, MailDeleted, MailMessage, SendMail, SentMail, Session,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{Domain, check_id, load_project, load_session};
use crate::error::{Error, Result};
use crate::ports::{Collection, Reader, ReaderExt, Txn, TxnExt, transact};
use crate::util::{new_id, now_ms};

/// Shortest and longest `wait` timeouts, in milliseconds (upstream's bounds).
pub const WAIT_TIMEOUT_MS: (u64, u64) = (1_000, 120_000);
/// Default `wait` timeout.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

const ACTIVE: &[&str] = &["spawning", "idle", "working"];

/// Query of `GET /api/mail/inbox/:id`.
#[derive(Debug, Clone, Default)]
pub struct InboxQuery {
    pub project_id: Option<String>,
    pub kind: Option<String>,
    /// Only messages created after this time (ms, exclusive).
    pub since: Option<i64>,
    /// Only messages after the session's read cursor.
    pub unread: bool,
}

/// What `GET /api/mail/wait/:id` (never `ack`) and `POST /api/mail/wait/:id` (always `ack`)
/// wait for.
#[derive(Debug, Clone, Default)]
pub struct WaitQuery {
    pub project_id: Option<String>,
    pub timeout_ms: u64,
    pub since: Option<i64>,
    /// Return only unread messages and move the read cursor past them.
    pub ack: bool,
}

/// Live counters of the mail feature, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct MailMetrics {
    /// Requests parked in `wait` right now: their mailbox was read empty and they wait for
    /// mail to arrive.
    pub waiters: AtomicI64,
}

struct WaiterGuard(Arc<MailMetrics>);

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A validation error in upstream's mail style: one message, a detail per problem.
fn invalid(message: &str, problems: Vec<(String, String)>) -> Error {
    Error::Validation {
        message: message.into(),
        details: Some(Value::Array(
            problems
                .into_iter()
                .map(|(path, message)| json!({ "path": path, "message": message }))
                .collect(),
        )),
    }
}

/// The problem of a `type` outside [`MAIL_TYPES`], worded as upstream (zod quotes each option).
fn bad_type() -> (String, String) {
    let options: Vec<String> = MAIL_TYPES.iter().map(|t| format!("\"{t}\"")).collect();
    (
        "type".into(),
        format!("Invalid option: expected one of {}", options.join("|")),
    )
}

fn id_ok(problems: &mut Vec<(String, String)>, path: &str, id: &str) {
    if !maestro_protocol::ids::is_valid_id(id) {
        problems.push((
            path.into(),
            "ID must be alphanumeric with hyphens/underscores only".into(),
        ));
    }
}

/// Whether `mail` is addressed to `session` (directly, or a broadcast it did not send).
fn is_for(mail: &MailMessage, session: &str) -> bool {
    match &mail.to_session_id {
        Some(to) => to == session,
        None => mail.from_session_id != session,
    }
}

fn is_for_value(data: &Value, project: &str, session: &str) -> bool {
    if data["projectId"].as_str() != Some(project) {
        return false;
    }
    match data["toSessionId"].as_str() {
        Some(to) => to == session,
        None => data["fromSessionId"].as_str() != Some(session),
    }
}

fn cursor_of(r: &mut (impl Reader + ?Sized), session: &str) -> Result<u64> {
    Ok(r.get::<MailCursor>(Collection::MailCursors, session)?
        .map_or(0, |c| c.cursor))
}

fn set_cursor(tx: &mut dyn Txn, session: &str, project: &str, cursor: u64) {
    tx.put(
        Collection::MailCursors,
        session,
        Some(project),
        &MailCursor {
            session_id: session.into(),
            project_id: project.into(),
            cursor,
        },
    );
}

/// The messages for `session` in the event that woke a waiter and in those already queued
/// behind it (newer than `since`); `None` when they cannot be read as messages or some events
/// were missed, and the inbox must be read again.
fn woken_by(
    first: &EventRecord,
    events: &mut tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
    project: &str,
    session: &str,
    since: Option<i64>,
) -> Option<Vec<MailMessage>> {
    let newer = |m: &MailMessage| since.is_none_or(|s| m.created_at > s);
    let mut found: Vec<MailMessage> = vec![serde_json::from_value(first.data.clone()).ok()?];
    loop {
        match events.try_recv() {
            Ok(ev) if ev.event == "mail:received" && is_for_value(&ev.data, project, session) => {
                found.push(serde_json::from_value(ev.data.clone()).ok()?);
            }
            Ok(_) => {}
            // Some events were missed: only a fresh read is complete.
            Err(TryRecvError::Lagged(_)) => return None,
            Err(_) => break,
        }
    }
    found.retain(newer);
    Some(found).filter(|f| !f.is_empty())
}

/// The `createdAt` of the next message of `project`: `now`, or one millisecond after the
/// project's newest message if that is not earlier (see the module's notes). The newest
/// message read here is the newest there is at commit: every message's transaction also
/// takes the project's mail `seq` counter, so two of them cannot both commit on one reading.
fn next_created_at(tx: &mut dyn Txn, project: &str, now: i64) -> Result<i64> {
    let mut first = true;
    let newest: Vec<MailMessage> =
        tx.newest_while(Collection::Mail, project, |_: &MailMessage| {
            std::mem::replace(&mut first, false)
        })?;
    Ok(newest
        .first()
        .map_or(now, |m| now.max(m.created_at.saturating_add(1))))
}

/// How far back of `since` a `since` read looks before it stops. Mail stored before
/// `createdAt` was made to increase with `seq` (by an earlier version, in one millisecond or
/// by transactions that overlapped) can be out of order by as long as those transactions
/// took; a minute covers that with room.
const SINCE_MARGIN_MS: i64 = 60_000;

/// `err`, or the project's own 404 when the project does not exist (which explains `err`).
fn unless_no_project(tx: &mut dyn Txn, project: &str, err: Error) -> Error {
    match load_project(tx, project) {
        Ok(_) => err,
        Err(e) => e,
    }
}

/// 404 for a `toSessionId` that is not a session of the project.
fn no_recipient(to: &str, project: &str) -> Error {
    Error::Coded {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "NOT_FOUND",
        message: format!(
            "Recipient session '{to}' not found in project '{project}': mail is only stored for \
             sessions that exist (check the id, or send to a team member with toTeamMemberId)"
        ),
        details: Some(json!([{ "path": "toSessionId", "message": "no such session" }])),
    }
}

/// Checks a send request's fields (upstream's rules and messages), before any transaction.
pub(crate) fn validate_send(req: &SendMail) -> Result<()> {
    let mut problems = Vec::new();
    id_ok(&mut problems, "projectId", &req.project_id);
    id_ok(&mut problems, "fromSessionId", &req.from_session_id);
    for (path, v) in [
        ("toSessionId", &req.to_session_id),
        ("toTeamMemberId", &req.to_team_member_id),
        ("replyToMailId", &req.reply_to_mail_id),
    ] {
        if let Some(v) = v {
            id_ok(&mut problems, path, v);
        }
    }
    if !MAIL_TYPES.contains(&req.kind.as_str()) {
        problems.push(bad_type());
    }
    let len = req.subject.chars().count();
    if len == 0 {
        problems.push((
            "subject".into(),
            "Too small: expected string to have >=1 characters".into(),
        ));
    } else if len > 500 {
        problems.push((
            "subject".into(),
            "Too big: expected string to have <=500 characters".into(),
        ));
    }
    if !problems.is_empty() {
        return Err(invalid("Invalid request body", problems));
    }
    Ok(())
}

/// Stores `req` inside `tx` — one message, or one per live session of `toTeamMemberId` — and
/// emits `mail:received` for each. The request must have passed [`validate_send`]. Other
/// operations that deliver mail as part of their own transaction (a reply to a session that
/// needs input) come through here too.
pub(crate) fn store_mail(tx: &mut dyn Txn, req: &SendMail, now: i64) -> Result<Vec<MailMessage>> {
    let project = req.project_id.as_str();
    // The project only has to exist: checked with the commit rather than read (on Redis, a
    // round trip less for every message).
    tx.require(Collection::Projects, project, "Project");
    let mut dead: Option<Session> = None;
    let recipients: Vec<Option<String>> = match (&req.to_session_id, &req.to_team_member_id) {
        (Some(to), _) => {
            // A mistyped recipient is an error the sender hears about now, not mail stored for
            // nobody (upstream stored it); see docs/compatibility.md.
            let s = tx
                .get::<Session>(Collection::Sessions, to)?
                .filter(|s| s.project_id == project);
            let Some(s) = s else {
                return Err(unless_no_project(tx, project, no_recipient(to, project)));
            };
            if s.is_terminal() {
                dead = Some(s);
            }
            vec![Some(to.clone())]
        }
        (None, Some(member)) => {
            let sessions: Vec<Session> = tx.list(Collection::Sessions, Some(project))?;
            let ids: Vec<Option<String>> = sessions
                .into_iter()
                .filter(|s| ACTIVE.contains(&s.status.as_str()))
                .filter(|s| {
                    s.team_member_id.as_deref() == Some(member)
                        || s.team_member_ids
                            .as_ref()
                            .is_some_and(|ids| ids.contains(member))
                })
                .map(|s| Some(s.id))
                .collect();
            if ids.is_empty() {
                let none = Error::not_found("Active session for team member", member);
                return Err(unless_no_project(tx, project, none));
            }
            ids
        }
        (None, None) => vec![None],
    };
    // One reading of the project's newest message; each message stored here after it is one
    // millisecond later than the one before.
    let mut clock = next_created_at(tx, project, now)?;
    let mut stamp = || {
        let t = clock;
        clock += 1;
        t
    };
    let mut sent = Vec::with_capacity(recipients.len());
    for to in recipients {
        let mail = MailMessage {
            id: new_id(prefix::MAIL),
            project_id: project.to_owned(),
            from_session_id: req.from_session_id.clone(),
            to_session_id: to.clone(),
            reply_to_mail_id: req.reply_to_mail_id.clone(),
            kind: req.kind.clone(),
            subject: req.subject.clone(),
            body: Value::Object(req.body.clone().unwrap_or_default()),
            created_at: stamp(),
            seq: tx.next_counter(&format!("mail:{project}"))?,
        };
        tx.put(Collection::Mail, &mail.id, Some(project), &mail);
        tx.emit(project, "mail:received", &mail, to.as_deref());
        sent.push(mail);
    }
    // The recipient's agent has ended: nobody will read this. Tell the sender.
    if let (Some(dead), Some(original)) = (dead, sent.first())
        && req.kind != "notification"
    {
        let reason = dead
            .failure_reason
            .clone()
            .unwrap_or_else(|| dead.status.clone());
        let bounce = MailMessage {
            id: new_id(prefix::MAIL),
            project_id: project.to_owned(),
            from_session_id: dead.id.clone(),
            to_session_id: Some(req.from_session_id.clone()),
            reply_to_mail_id: Some(original.id.clone()),
            kind: "notification".into(),
            subject: format!("Undeliverable: {}", req.subject),
            body: serde_json::json!({
                "message": format!("Session '{}' has ended ({reason}); your message will not be read.", dead.id),
                "bounced": true,
                "originalMailId": original.id,
                "recipientStatus": dead.status,
                "reason": reason,
            }),
            created_at: stamp(),
            seq: tx.next_counter(&format!("mail:{project}"))?,
        };
        tx.put(Collection::Mail, &bounce.id, Some(project), &bounce);
        tx.emit(
            project,
            "mail:received",
            &bounce,
            Some(&req.from_session_id),
        );
    }
    Ok(sent)
}

impl Domain {
    pub async fn send_mail(&self, req: SendMail) -> Result<SentMail> {
        validate_send(&req)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut sent = store_mail(tx, &req, now)?;
            Ok(if sent.len() == 1 {
                SentMail::One(sent.remove(0))
            } else {
                SentMail::Many(sent)
            })
        })
        .await
    }

    /// The project a mailbox request is about: the given one, or the session's.
    fn mailbox_project(&self, session: &str, project: Option<&str>) -> Result<String> {
        check_id("id", session)?;
        match project {
            Some(p) => {
                check_id("projectId", p)?;
                Ok(p.to_owned())
            }
            None => Ok(load_session(&mut *self.reader()?, session)?.project_id),
        }
    }

    /// Messages for `session`, oldest first.
    pub fn inbox(&self, session: &str, q: &InboxQuery) -> Result<Vec<MailMessage>> {
        let project = self.mailbox_project(session, q.project_id.as_deref())?;
        if let Some(k) = &q.kind
            && !MAIL_TYPES.contains(&k.as_str())
        {
            return Err(invalid("Invalid query parameters", vec![bad_type()]));
        }
        let mut r = self.reader()?;
        // With a cursor or a `since`, only the newest part of the mailbox is read.
        let since_floor = q
            .since
            .filter(|s| *s > 0)
            .map(|s| s.saturating_sub(SINCE_MARGIN_MS));
        let mail: Vec<MailMessage> = if q.unread || since_floor.is_some() {
            let cursor = if q.unread {
                cursor_of(&mut *r, session)?
            } else {
                0
            };
            r.newest_while(Collection::Mail, &project, |m: &MailMessage| {
                m.seq > cursor && since_floor.is_none_or(|f| m.created_at > f)
            })?
        } else {
            r.list(Collection::Mail, Some(&project))?
        };
        Ok(mail
            .into_iter()
            .filter(|m| is_for(m, session))
            .filter(|m| q.kind.as_ref().is_none_or(|k| &m.kind == k))
            .filter(|m| q.since.is_none_or(|s| m.created_at > s))
            .collect())
    }

    /// Takes the unread messages of `session` and moves its cursor past them, atomically.
    async fn claim_unread(&self, session: &str, project: &str) -> Result<Vec<MailMessage>> {
        let (session, project) = (session.to_owned(), project.to_owned());
        transact(&*self.store, move |tx| {
            let cursor = cursor_of(tx, &session)?;
            let unread: Vec<MailMessage> = tx
                .newest_while(Collection::Mail, &project, |m: &MailMessage| m.seq > cursor)?
                .into_iter()
                .filter(|m| is_for(m, &session))
                .collect();
            if let Some(last) = unread.last() {
                set_cursor(tx, &session, &project, last.seq);
            }
            Ok(unread)
        })
        .await
    }

    /// Long-poll: returns as soon as there is mail for `session`, or `[]` at the timeout.
    pub async fn wait_mail(&self, session: &str, q: WaitQuery) -> Result<Vec<MailMessage>> {
        let (lo, hi) = WAIT_TIMEOUT_MS;
        if q.timeout_ms < lo || q.timeout_ms > hi {
            let msg = if q.timeout_ms < lo {
                format!("Too small: expected number to be >={lo}")
            } else {
                format!("Too big: expected number to be <={hi}")
            };
            return Err(invalid(
                "Invalid query parameters",
                vec![("timeout".into(), msg)],
            ));
        }
        let project = self.mailbox_project(session, q.project_id.as_deref())?;
        // Counted as parked once the mailbox has been read empty and the request only waits
        // for an event, so a client that watches the gauge sends when the wait is really on.
        let mut parked: Option<WaiterGuard> = None;
        let deadline = self.long_poll_deadline(q.timeout_ms);
        // Subscribe first: anything stored after this point wakes us.
        let mut events = self.store.subscribe();
        loop {
            let found = if q.ack {
                self.claim_unread(session, &project).await?
            } else {
                self.inbox(
                    session,
                    &InboxQuery {
                        project_id: Some(project.clone()),
                        since: Some(q.since.unwrap_or(0)),
                        ..Default::default()
                    },
                )?
            };
            if !found.is_empty() {
                return Ok(found);
            }
            parked.get_or_insert_with(|| {
                self.mail_metrics.waiters.fetch_add(1, Ordering::Relaxed);
                WaiterGuard(self.mail_metrics.clone())
            });
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) | Ok(Err(RecvError::Closed)) => return Ok(Vec::new()),
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Ok(ev)) => {
                        if ev.event == "mail:received" && is_for_value(&ev.data, &project, session)
                        {
                            // Without `ack` the answer is the mail itself: everything stored
                            // since the (empty) read above comes as an event, so there is no
                            // need to list the project's mail again.
                            if !q.ack
                                && let Some(found) =
                                    woken_by(&ev, &mut events, &project, session, q.since)
                            {
                                return Ok(found);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Moves `session`'s read cursor to `upTo` (never backwards).
    pub async fn ack_mail(&self, session: String, req: AckMail) -> Result<MailCursor> {
        let project = self.mailbox_project(&session, req.project_id.as_deref())?;
        transact(&*self.store, move |tx| {
            let cursor = cursor_of(tx, &session)?.max(req.up_to);
            set_cursor(tx, &session, &project, cursor);
            Ok(MailCursor {
                session_id: session.clone(),
                project_id: project.clone(),
                cursor,
            })
        })
        .await
    }

    pub fn get_mail(&self, id: &str) -> Result<MailMessage> {
        check_id("id", id)?;
        self.reader()?
            .get(Collection::Mail, id)?
            .ok_or_else(|| Error::not_found("Mail", id))
    }

    pub async fn delete_mail(&self, id: String) -> Result<MailDeleted> {
        check_id("id", &id)?;
        transact(&*self.store, move |tx| {
            let mail: MailMessage = tx
                .get(Collection::Mail, &id)?
                .ok_or_else(|| Error::not_found("Mail", &id))?;
            tx.delete(Collection::Mail, &id);
            tx.emit(
                &mail.project_id,
                "mail:deleted",
                &json!({ "id": id }),
                mail.to_session_id.as_deref(),
            );
            Ok(MailDeleted {
                deleted: true,
                id: id.clone(),
            })
        })
        .await
    }
}
