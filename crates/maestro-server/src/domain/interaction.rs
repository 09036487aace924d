//! A human answering an agent: `session:reply-input` from the desktop or the phone.
//!
//! One transaction does all of it, so the agent, the session's record and every screen agree:
//! the reply goes into the session's timeline (`user_reply`), `needsInput` is cleared, the agent
//! gets the reply as a `directive` mail from `user` (what `maestro mail wait` returns), and the
//! session's room gets `session:input`. Events, in order: `session:appended` (the `user_reply`
//! entry), `session:updated`, `mail:received`, `session:input`.
//!
//! A reply is not keystrokes. Scope `respond` may answer a question, not drive a terminal
//! (that is `operate`), yet a runner types the reply into its agent's terminal. So a reply is
//! accepted only while the session waits for input (`needsInput.active`; 409 `NOT_WAITING`
//! otherwise), and only as one line of text: a line break or any other control character
//! (C0, DEL, C1 — `ESC` included, so no escape sequence) is refused with 400, never silently
//! stripped, so what the human sent is exactly what the agent gets.

use axum::http::StatusCode;
use maestro_protocol::ids::prefix;
use maestro_protocol::{
    NeedsInput, ReplyDelivered, ReplyInput, SendMail, SessionInput, TimelineEvent,
};
use serde_json::{Map, Value, json};

use super::mail::{store_mail, validate_send};
use super::sessions::emit_session_appended;
use super::{Domain, check_id, load_session, required};
use crate::error::{Error, Result};
use crate::ports::{Collection, TxnExt, transact};
use crate::util::{new_id, now_ms};

/// The sender id of mail written by a human through a screen (not by an agent's session).
pub const USER_SENDER: &str = "user";

/// Longest reply accepted, in characters.
pub const MAX_REPLY_CHARS: usize = 100_000;

/// Longest mail subject derived from a reply (the mail API allows 500).
const SUBJECT_CHARS: usize = 120;

/// Refuses what a reply may not be (see the module docs): empty, too long, more than one line,
/// or holding a control character.
fn check_reply(message: &str) -> Result<()> {
    if message.trim().is_empty() {
        return Err(Error::validation("message is required"));
    }
    if message.chars().count() > MAX_REPLY_CHARS {
        return Err(Error::validation(format!(
            "message is longer than {MAX_REPLY_CHARS} characters"
        )));
    }
    if message.contains(['\n', '\r']) {
        return Err(Error::validation(
            "message must be one line: a reply is typed to the agent as one line",
        ));
    }
    if let Some(c) = message.chars().find(|c| c.is_control()) {
        return Err(Error::validation(format!(
            "message must not contain control characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(())
}

/// The directive's subject: the reply's first line, shortened.
fn subject_of(message: &str) -> String {
    let first = message.lines().map(str::trim).find(|l| !l.is_empty());
    let first = first.unwrap_or("Reply");
    if first.chars().count() <= SUBJECT_CHARS {
        first.to_owned()
    } else {
        let cut: String = first.chars().take(SUBJECT_CHARS - 1).collect();
        format!("{cut}…")
    }
}

impl Domain {
    /// Delivers a human's reply to a session (see the module docs). A session that has ended
    /// (`completed`, `failed`, `stopped`) is refused with 409 `CONFLICT`: no agent would read
    /// the reply; one that is not waiting for input with 409 `NOT_WAITING`.
    pub async fn reply_input(&self, req: ReplyInput) -> Result<ReplyDelivered> {
        let session_id = required(req.session_id.as_deref(), "sessionId is required")?;
        check_id("sessionId", &session_id)?;
        let message = req.message.unwrap_or_default();
        check_reply(&message)?;
        let now = now_ms();
        let entry_id = new_id(prefix::EVENT);
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &session_id)?;
            if session.is_terminal() {
                return Err(Error::Conflict(format!(
                    "Session '{session_id}' has ended ({}); no agent would read the reply",
                    session.status
                )));
            }
            if !session.needs_input.as_ref().is_some_and(|n| n.active) {
                return Err(Error::Coded {
                    status: StatusCode::CONFLICT,
                    code: "NOT_WAITING",
                    message: format!(
                        "Session '{session_id}' is not waiting for input; a reply answers the \
                         question the agent asked"
                    ),
                    details: None,
                });
            }
            let asked = session.needs_input.as_ref().and_then(|n| n.message.clone());
            let entry = TimelineEvent {
                id: entry_id.clone(),
                kind: "user_reply".into(),
                timestamp: now,
                message: Some(message.clone()),
                task_id: None,
                metadata: asked.as_ref().map(|q| json!({ "inReplyTo": q })),
                extra: Map::new(),
            };
            session.timeline.push(entry.clone());
            session.needs_input = Some(NeedsInput {
                active: false,
                message: None,
                since: None,
            });
            session.last_activity = now;
            tx.put(Collection::Sessions, &session.id, None, &session);
            let scope = session.project_id.clone();
            emit_session_appended(tx, &session, std::slice::from_ref(&entry), &[], &[]);

            let mut body = Map::new();
            body.insert("message".into(), Value::String(message.clone()));
            if let Some(q) = &asked {
                body.insert("inReplyTo".into(), Value::String(q.clone()));
            }
            let directive = SendMail {
                project_id: scope.clone(),
                from_session_id: USER_SENDER.into(),
                kind: "directive".into(),
                subject: subject_of(&message),
                to_session_id: Some(session.id.clone()),
                to_team_member_id: None,
                reply_to_mail_id: None,
                body: Some(body),
            };
            validate_send(&directive)?;
            let mail = store_mail(tx, &directive, now)?.pop().ok_or_else(|| {
                Error::Internal("a directive to one session stored nothing".into())
            })?;

            tx.emit(
                &scope,
                "session:input",
                &SessionInput {
                    session_id: session.id.clone(),
                    message: message.clone(),
                    mail_id: mail.id.clone(),
                    timestamp: now,
                },
                Some(&session.id),
            );
            Ok(ReplyDelivered { session, mail })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_one_line_of_text() {
        check_reply("yes, go ahead — ünïcode and emoji 🎉 are text").unwrap();
        for bad in [
            "",
            "  ",
            "two\nlines",
            "line\r",
            "tab\there",
            "\u{1b}[31mred",
            "bell\u{7}",
            "nul\u{0}",
            "del\u{7f}",
            "c1\u{9b}31m",
        ] {
            let e = check_reply(bad).unwrap_err();
            assert_eq!(e.code(), "VALIDATION_ERROR", "{bad:?}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(subject_of("yes, go ahead"), "yes, go ahead");
        assert_eq!(subject_of("\n  \nsecond line\nthird"), "second line");
        let long = "x".repeat(500);
        let s = subject_of(&long);
        assert_eq!(s.chars().count(), SUBJECT_CHARS);
        assert!(s.ends_with('…'));
    }
}
