//! `maestro mail send|broadcast|reply|inbox|wait`.
//!
//! Sends are never retried (a repeated POST would deliver the mail twice); reads are.
//! `mail wait --ack` uses the server's read cursor, so each message is returned once even
//! without `--since`: it is `POST /api/mail/wait/:id` (a `GET` never moves the cursor), and,
//! like every write, never retried.

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use maestro_protocol::{MAIL_TYPES, MailMessage, SendMail, SentMail, WaitMail};
use serde_json::{Map, Value, json};

use super::context::{Context, split_ids};
use super::output::{CliError, CmdResult, emit, fmt_time, kv, table, truncate};

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Send mail to sessions (comma-separated ids) or to a team member's sessions.
    Send {
        /// Recipient session ids, comma-separated.
        to_session_ids: Option<String>,
        /// Kind of mail.
        #[arg(long = "type", value_parser = PossibleValuesParser::new(MAIL_TYPES))]
        kind: String,
        /// Subject line.
        #[arg(long)]
        subject: String,
        /// Body text (stored under the key upstream used for the type).
        #[arg(long)]
        message: Option<String>,
        /// Send to the active session(s) of this team member.
        #[arg(long, value_name = "ID")]
        to_team_member: Option<String>,
        /// Task the mail is about (body field `task_id`).
        #[arg(long, value_name = "TASK_ID")]
        task_id: Option<String>,
        /// Priority, free text (body field `priority`).
        #[arg(long)]
        priority: Option<String>,
        /// Status, free text (body field `status`).
        #[arg(long)]
        status: Option<String>,
        /// Requested action, free text (body field `action`).
        #[arg(long)]
        action: Option<String>,
        /// The mail this one answers.
        #[arg(long, value_name = "MAIL_ID")]
        reply_to: Option<String>,
    },
    /// Send mail to every session of the project.
    Broadcast {
        /// Kind of mail.
        #[arg(long = "type", value_parser = PossibleValuesParser::new(MAIL_TYPES))]
        kind: String,
        /// Subject line.
        #[arg(long)]
        subject: String,
        /// Body text.
        #[arg(long)]
        message: Option<String>,
    },
    /// Answer a mail (type response, subject "Re: …", to its sender).
    Reply {
        /// The mail to answer.
        mail_id: String,
        /// Body text.
        #[arg(long)]
        message: String,
    },
    /// List the current session's mail.
    Inbox {
        /// Only mail of this kind.
        #[arg(long = "type", value_parser = PossibleValuesParser::new(MAIL_TYPES))]
        kind: Option<String>,
        /// Only mail after this time (epoch ms).
        #[arg(long, value_name = "MS")]
        since: Option<i64>,
        /// Only mail past the session's read cursor.
        #[arg(long)]
        unread: bool,
    },
    /// Wait for mail (long-poll).
    Wait {
        /// Give up after this many milliseconds (1000..=120000).
        #[arg(long, default_value_t = 30_000, value_name = "MS")]
        timeout: u64,
        /// Only mail after this time (epoch ms).
        #[arg(long, value_name = "MS")]
        since: Option<i64>,
        /// Return only unread mail and mark what is returned as read.
        #[arg(long)]
        ack: bool,
    },
}

pub async fn run(ctx: &Context, cmd: MailCommand) -> CmdResult {
    let client = ctx.client()?;
    let c = &client;
    let e = |err: maestro_client::Error| ctx.err(err);
    match cmd {
        MailCommand::Send {
            to_session_ids,
            kind,
            subject,
            message,
            to_team_member,
            task_id,
            priority,
            status,
            action,
            reply_to,
        } => {
            let (from, project) = (ctx.session()?, ctx.project()?);
            let mut body = build_body(&kind, message.as_deref());
            for (k, v) in [
                ("task_id", task_id),
                ("priority", priority),
                ("status", status),
                ("action", action),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), Value::String(v));
                }
            }
            let base = SendMail {
                project_id: project.to_owned(),
                from_session_id: from.to_owned(),
                kind: kind.clone(),
                subject: subject.clone(),
                reply_to_mail_id: reply_to,
                body: Some(body),
                ..Default::default()
            };
            let mut sent: Vec<MailMessage> = Vec::new();
            if let Some(tm) = to_team_member {
                let req = SendMail {
                    to_team_member_id: Some(tm),
                    ..base
                };
                match c.send_mail(&req).await.map_err(e)? {
                    SentMail::One(m) => sent.push(m),
                    SentMail::Many(ms) => sent.extend(ms),
                }
            } else {
                let ids = split_ids(to_session_ids.as_deref().unwrap_or(""));
                if ids.is_empty() {
                    return Err(CliError::usage(
                        "Name the recipients: maestro mail send <sessionId,…> or --to-team-member <id>.",
                    ));
                }
                for to in ids {
                    let req = SendMail {
                        to_session_id: Some(to),
                        ..base.clone()
                    };
                    match c.send_mail(&req).await.map_err(e)? {
                        SentMail::One(m) => sent.push(m),
                        SentMail::Many(ms) => sent.extend(ms),
                    }
                }
            }
            let data = if sent.len() == 1 {
                serde_json::to_value(&sent[0])
            } else {
                serde_json::to_value(&sent)
            }
            .expect("mail serialises");
            emit(ctx.json, &data, || {
                for m in &sent {
                    kv("Mail ID", &m.id);
                    kv("To", m.to_session_id.as_deref().unwrap_or("broadcast"));
                }
                kv("Type", &kind);
                kv("Subject", &subject);
            });
        }
        MailCommand::Broadcast {
            kind,
            subject,
            message,
        } => {
            let (from, project) = (ctx.session()?, ctx.project()?);
            let req = SendMail {
                project_id: project.to_owned(),
                from_session_id: from.to_owned(),
                kind: kind.clone(),
                subject: subject.clone(),
                body: Some(build_body(&kind, message.as_deref())),
                ..Default::default()
            };
            let sent = c.send_mail(&req).await.map_err(e)?;
            emit(ctx.json, &sent, || {
                if let SentMail::One(m) = &sent {
                    kv("Mail ID", &m.id);
                }
                kv("To", "broadcast (all sessions)");
                kv("Type", &kind);
                kv("Subject", &subject);
            });
        }
        MailCommand::Reply { mail_id, message } => {
            let (from, project) = (ctx.session()?, ctx.project()?);
            let original = c.get_mail(&mail_id).await.map_err(e)?;
            let mut body = Map::new();
            body.insert("answer".into(), Value::String(message));
            let req = SendMail {
                project_id: project.to_owned(),
                from_session_id: from.to_owned(),
                to_session_id: Some(original.from_session_id.clone()),
                reply_to_mail_id: Some(mail_id.clone()),
                kind: "response".into(),
                subject: format!("Re: {}", original.subject),
                body: Some(body),
                ..Default::default()
            };
            let sent = c.send_mail(&req).await.map_err(e)?;
            emit(ctx.json, &sent, || {
                if let SentMail::One(m) = &sent {
                    kv("Mail ID", &m.id);
                }
                kv("Reply To", &mail_id);
                kv("To", &original.from_session_id);
            });
        }
        MailCommand::Inbox {
            kind,
            since,
            unread,
        } => {
            let (id, project) = (ctx.session()?, ctx.project()?);
            let since = since.map(|s| s.to_string());
            let mut q: Vec<(&str, &str)> = vec![("projectId", project)];
            if let Some(k) = &kind {
                q.push(("type", k));
            }
            if let Some(s) = &since {
                q.push(("since", s));
            }
            if unread {
                q.push(("unread", "true"));
            }
            let messages = c.inbox(id, &q).await.map_err(e)?;
            emit(ctx.json, &messages, || {
                if messages.is_empty() {
                    say!("No mail in inbox.");
                    return;
                }
                let rows: Vec<_> = messages
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            m.kind.clone(),
                            m.from_session_id.clone(),
                            truncate(&m.subject, 40),
                            fmt_time(m.created_at),
                        ]
                    })
                    .collect();
                table(&["ID", "Type", "From", "Subject", "Time"], &rows);
            });
        }
        MailCommand::Wait {
            timeout,
            since,
            ack,
        } => {
            let (id, project) = (ctx.session()?, ctx.project()?);
            if !ctx.json {
                say!("[mail:wait] Waiting for mail (timeout: {timeout}ms)...");
            }
            let messages = if ack {
                let req = WaitMail {
                    project_id: Some(project.to_owned()),
                    timeout: Some(timeout),
                };
                c.wait_and_ack_mail(id, &req).await.map_err(e)?
            } else {
                let timeout = timeout.to_string();
                let since = since.map(|s| s.to_string());
                let mut q: Vec<(&str, &str)> = vec![("projectId", project), ("timeout", &timeout)];
                if let Some(s) = &since {
                    q.push(("since", s));
                }
                c.wait_mail(id, &q).await.map_err(e)?
            };
            emit(ctx.json, &messages, || {
                if messages.is_empty() {
                    say!("[mail:wait] Timeout — no new mail arrived.");
                    return;
                }
                say!("[mail:wait] Received {} message(s):", messages.len());
                for m in &messages {
                    say!("  [{}] {} (from {})", m.kind, m.subject, m.from_session_id);
                    if let Some(text) = body_text(&m.body) {
                        say!("    {text}");
                    }
                }
            });
        }
    }
    Ok(())
}

/// The body upstream's CLI built: the message under a key that depends on the type.
fn build_body(kind: &str, message: Option<&str>) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(m) = message {
        let key = match kind {
            "assignment" => "instructions",
            "query" => "question",
            "response" => "answer",
            "directive" => "details",
            _ => "message",
        };
        body.insert(key.into(), json!(m));
    }
    body
}

/// The human text of a body, whichever key holds it.
fn body_text(body: &Value) -> Option<&str> {
    [
        "message",
        "instructions",
        "question",
        "answer",
        "details",
        "text",
    ]
    .iter()
    .find_map(|k| body.get(*k).and_then(Value::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_use_upstream_keys() {
        assert_eq!(build_body("directive", Some("x"))["details"], "x");
        assert_eq!(build_body("query", Some("x"))["question"], "x");
        assert_eq!(build_body("status_update", Some("x"))["message"], "x");
        assert!(build_body("query", None).is_empty());
    }
}
