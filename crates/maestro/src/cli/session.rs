//! `maestro session …` and `maestro report …`.
//!
//! `register`, `complete`, `needs-input` and `resume-working` are what agent hooks call
//! (SessionStart, SessionEnd, Stop/Notification, UserPromptSubmit). Outside a Maestro
//! session (no `MAESTRO_SESSION_ID`) they do nothing and exit 0, as upstream's did, so an
//! agent started by hand is not disturbed by its hooks. They print nothing on stdout (their
//! status line goes to stderr): agent tools feed a hook's stdout to the model or parse it.

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use maestro_client::{Client, SessionQuery};
use maestro_protocol::{
    AGENT_TOOLS, AddDoc, AppendTimeline, CreateSession, NeedsInput, Session, SpawnRequest,
    TimelineEvent, UpdateSession,
};
use serde_json::json;

use super::context::Context;
use super::output::{CmdResult, emit, exit, fmt_time, kv, now_ms, table, truncate};
use super::task::read_doc;

/// Hook commands' status line, on stderr. An agent tool puts a hook's stdout into the
/// model's context (Claude Code's SessionStart and UserPromptSubmit) or parses it as JSON
/// (Codex, Gemini CLI), so stdout stays empty unless `--json` asked for data.
macro_rules! hook_note {
    ($($arg:tt)*) => {
        eprintln!($($arg)*)
    };
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions of the current project (all projects' without one).
    List {
        /// Only sessions working on this task.
        #[arg(long, value_name = "TASK_ID")]
        task: Option<String>,
        /// Only sessions that have not completed.
        #[arg(long)]
        active: bool,
        /// Only sessions of this team member.
        #[arg(long, value_name = "ID")]
        team_member_id: Option<String>,
    },
    /// Show a session [default: the current one].
    Info {
        /// Session id.
        session_id: Option<String>,
    },
    /// Mark the current session working, creating it if the server does not know it
    /// (SessionStart hook).
    Register,
    /// Mark the current session completed (SessionEnd hook).
    Complete,
    /// Flag the current session as waiting for a human (Stop hook).
    NeedsInput {
        /// What the agent is waiting for.
        #[arg(long, default_value = "Session is waiting for user input")]
        message: String,
    },
    /// Clear the needs-input flag and mark the session working (UserPromptSubmit hook).
    ResumeWorking,
    /// Report the current session's progress, completion, blocker or error.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The current session's docs.
    #[command(subcommand)]
    Docs(SessionDocs),
    /// Follow sessions live until they all finish (comma-separated ids).
    Watch {
        /// Session ids, comma-separated.
        session_ids: String,
        /// Stop after this many milliseconds (0 = never).
        #[arg(long, default_value_t = 0, value_name = "MS")]
        timeout: u64,
    },
    /// Ask the server to spawn a new agent session on a task.
    Spawn {
        /// Task for the new session.
        #[arg(long, value_name = "TASK_ID")]
        task: String,
        /// Skill to load: maestro-worker (execute) or maestro-orchestrator (coordinate).
        #[arg(long, default_value = "maestro-worker")]
        skill: String,
        /// Session name [default: derived from the skill and task].
        #[arg(long)]
        name: Option<String>,
        /// Why this session is spawned.
        #[arg(long)]
        reason: Option<String>,
        /// Agent to run [default: the team member's, else claude-code].
        #[arg(long, value_parser = PossibleValuesParser::new(AGENT_TOOLS))]
        agent_tool: Option<String>,
        /// Model (sonnet, opus, haiku or a native name).
        #[arg(long)]
        model: Option<String>,
        /// Team member to run the session as.
        #[arg(long, value_name = "ID")]
        team_member_id: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ReportCommand {
    /// Work progress.
    Progress {
        /// What is happening.
        message: String,
    },
    /// Done: notes the summary and marks the session completed.
    Complete {
        /// What was done.
        summary: String,
    },
    /// A blocker.
    Blocked {
        /// What the session is blocked on.
        reason: String,
    },
    /// An error.
    Error {
        /// What went wrong.
        description: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionDocs {
    /// Attach a doc to the current session.
    Add {
        /// The doc's title.
        title: String,
        /// Path of the document.
        #[arg(long = "file", value_name = "PATH")]
        file: String,
        /// Content [default: the file's content].
        #[arg(long)]
        content: Option<String>,
    },
    /// List the current session's docs.
    List,
}

pub async fn run(ctx: &Context, cmd: SessionCommand) -> CmdResult<i32> {
    let client = ctx.client()?;
    let c = &client;
    let e = |err: maestro_client::Error| ctx.err(err);
    match cmd {
        SessionCommand::List {
            task,
            active,
            team_member_id,
        } => {
            let q = SessionQuery {
                project_id: ctx.project_id.clone(),
                task_id: task,
                active: active.then_some(true),
                ..Default::default()
            };
            let mut sessions = c.list_sessions(&q).await.map_err(e)?;
            if let Some(tm) = &team_member_id {
                sessions.retain(|s| team_member(s).as_deref() == Some(tm.as_str()));
            }
            emit(ctx.json, &sessions, || {
                if sessions.is_empty() {
                    say!("No sessions found.");
                    return;
                }
                let rows: Vec<_> = sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            truncate(&s.name, 40),
                            s.status.clone(),
                            team_member(s).unwrap_or_else(|| "-".into()),
                            s.task_ids.len().to_string(),
                        ]
                    })
                    .collect();
                table(&["ID", "Name", "Status", "Team Member", "Tasks"], &rows);
            });
        }
        SessionCommand::Info { session_id } => {
            let id = match session_id {
                Some(id) => id,
                None => ctx.session()?.to_owned(),
            };
            let s = c.get_session(&id).await.map_err(e)?;
            emit(ctx.json, &s, || show(&s));
        }
        SessionCommand::Register => {
            let Some(id) = hook_session(ctx, "register") else {
                return Ok(exit::OK);
            };
            super::transcript::note_from_hook();
            register(ctx, c, id, None).await?;
            emit(
                ctx.json,
                &json!({ "sessionId": id, "status": "registered" }),
                || {
                    hook_note!("Session {id} registered (working).");
                },
            );
        }
        SessionCommand::Complete => {
            let Some(id) = hook_session(ctx, "complete") else {
                return Ok(exit::OK);
            };
            let mut req = UpdateSession {
                status: Some("completed".into()),
                ..Default::default()
            };
            req.other.insert("completedAt".into(), json!(now_ms()));
            c.update_session(id, &req).await.map_err(e)?;
            emit(
                ctx.json,
                &json!({ "sessionId": id, "status": "completed" }),
                || {
                    hook_note!("Session {id} completed.");
                },
            );
        }
        SessionCommand::NeedsInput { message } => {
            let Some(id) = hook_session(ctx, "needs-input") else {
                return Ok(exit::OK);
            };
            super::transcript::note_from_hook();
            let now = now_ms();
            let entry: TimelineEvent = serde_json::from_value(json!({
                "id": format!("evt-{now}"),
                "type": "needs_input",
                "timestamp": now,
                "message": message,
            }))
            .expect("a valid timeline entry");
            let req = UpdateSession {
                needs_input: Some(NeedsInput {
                    active: true,
                    message: Some(message.clone()),
                    since: Some(now),
                }),
                timeline: Some(vec![entry]),
                ..Default::default()
            };
            c.update_session(id, &req).await.map_err(e)?;
            emit(
                ctx.json,
                &json!({ "sessionId": id, "needsInput": true }),
                || {
                    hook_note!("Session {id} is waiting for input: {message}");
                },
            );
        }
        SessionCommand::ResumeWorking => {
            let Some(id) = hook_session(ctx, "resume-working") else {
                return Ok(exit::OK);
            };
            super::transcript::note_from_hook();
            let req = UpdateSession {
                status: Some("working".into()),
                needs_input: Some(NeedsInput::default()),
                ..Default::default()
            };
            c.update_session(id, &req).await.map_err(e)?;
            emit(
                ctx.json,
                &json!({ "sessionId": id, "status": "working" }),
                || {
                    hook_note!("Session {id} is working again.");
                },
            );
        }
        SessionCommand::Report(r) => report(ctx, r).await?,
        SessionCommand::Docs(SessionDocs::Add {
            title,
            file,
            content,
        }) => {
            let id = ctx.session()?;
            let content = match content {
                Some(c) => c,
                None => read_doc(&file)?,
            };
            let req = AddDoc {
                title: Some(title),
                file_path: Some(file),
                content: Some(content),
                task_id: None,
            };
            let s = c.add_session_doc(id, &req).await.map_err(e)?;
            let doc = s.docs.last().cloned();
            emit(ctx.json, &doc, || {
                if let Some(d) = &doc {
                    kv("Doc ID", &d.id);
                    kv("Title", &d.title);
                    kv("File", &d.file_path);
                }
            });
        }
        SessionCommand::Docs(SessionDocs::List) => {
            let id = ctx.session()?;
            let docs = c.session_docs(id).await.map_err(e)?;
            emit(ctx.json, &docs, || {
                if docs.is_empty() {
                    say!("No docs found for this session.");
                    return;
                }
                let rows: Vec<_> = docs
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.title.clone(),
                            d.file_path.clone(),
                            fmt_time(d.added_at),
                        ]
                    })
                    .collect();
                table(&["ID", "Title", "File Path", "Added At"], &rows);
            });
        }
        SessionCommand::Watch {
            session_ids,
            timeout,
        } => return super::watch::watch(ctx, c, &session_ids, timeout).await,
        SessionCommand::Spawn {
            task,
            skill,
            name,
            reason,
            agent_tool,
            model,
            team_member_id,
        } => {
            let t = c.get_task(&task).await.map_err(e)?;
            let mode = if skill == "maestro-orchestrator" {
                "coordinate"
            } else {
                "execute"
            };
            let role = match skill.as_str() {
                "maestro-worker" => "Worker",
                "maestro-orchestrator" => "Orchestrator",
                other => other,
            };
            let name = name.unwrap_or_else(|| format!("{role}: {}", truncate(&t.title, 30)));
            let req = SpawnRequest {
                project_id: Some(t.project_id.clone()),
                task_ids: Some(vec![t.id.clone()]),
                spawn_source: Some(
                    if ctx.session_id.is_some() {
                        "session"
                    } else {
                        "ui"
                    }
                    .into(),
                ),
                session_id: ctx.session_id.clone(),
                mode: Some(mode.into()),
                session_name: Some(name.clone()),
                skills: Some(vec![skill.clone()]),
                context: Some(json!({
                    "reason": reason.unwrap_or_else(|| format!("Execute task: {}", t.title)),
                })),
                team_member_id,
                agent_tool,
                model,
                ..Default::default()
            };
            // The key makes the POST safe to retry: a repeat gets the first answer.
            let key = idempotency_key();
            let r = c.spawn(&req, Some(&key)).await.map_err(e)?;
            emit(ctx.json, &r, || {
                say!("Spawning {skill} session: {name}");
                kv("   Task", &t.title);
                kv("   Session ID", &r.session_id);
            });
        }
    }
    Ok(exit::OK)
}

/// The session a hook command acts on; without one, says so on stderr and returns `None`.
fn hook_session<'a>(ctx: &'a Context, what: &str) -> Option<&'a str> {
    if ctx.session_id.is_none() {
        eprintln!("[session:{what}] no session (MAESTRO_SESSION_ID not set); nothing to do");
    }
    ctx.session_id.as_deref()
}

/// Marks `id` working, creating the session (named `name`, or after the mode and id) when
/// the server does not know it.
pub async fn register(
    ctx: &Context,
    c: &Client,
    id: &str,
    name: Option<&str>,
) -> CmdResult<Session> {
    let working = UpdateSession {
        status: Some("working".into()),
        ..Default::default()
    };
    match c.get_session(id).await {
        Ok(_) => return c.update_session(id, &working).await.map_err(|e| ctx.err(e)),
        Err(err) if err.status().is_some_and(|s| s.as_u16() == 404) => {}
        Err(err) => return Err(ctx.err(err)),
    }
    let project = ctx.project().map_err(|e| {
        e.with_hint("The server does not know this session; creating it needs its project.")
    })?;
    let short: String = id.chars().take(16).collect();
    let name = name.map_or_else(|| format!("{}: {short}", ctx.mode), str::to_owned);
    let req = CreateSession {
        id: Some(id.to_owned()),
        project_id: Some(project.to_owned()),
        task_ids: Some(ctx.task_ids.clone()),
        name: Some(name),
        status: Some("working".into()),
        metadata: Some(json!({ "mode": ctx.mode })),
        ..Default::default()
    };
    match c.create_session(&req).await {
        Ok(s) => Ok(s),
        // Created by someone else in between (e.g. a spawn): just mark it working.
        Err(err) if err.status().is_some_and(|s| s.as_u16() == 409) => {
            c.update_session(id, &working).await.map_err(|e| ctx.err(e))
        }
        Err(err) => Err(ctx.err(err)),
    }
}

/// `report …` / `session report …`: a timeline entry; `complete` also completes the session.
pub async fn report(ctx: &Context, cmd: ReportCommand) -> CmdResult {
    let id = ctx.session()?;
    let c = ctx.client()?;
    let (sub, kind, message) = match cmd {
        ReportCommand::Progress { message } => ("progress", "progress", message),
        ReportCommand::Complete { summary } => ("complete", "task_completed", summary),
        ReportCommand::Blocked { reason } => ("blocked", "task_blocked", reason),
        ReportCommand::Error { description } => ("error", "error", description),
    };
    let entry = AppendTimeline {
        message: Some(message),
        kind: Some(kind.into()),
        ..Default::default()
    };
    c.append_timeline(id, &entry)
        .await
        .map_err(|e| ctx.err(e))?;
    let completed = sub == "complete";
    if completed {
        let req = UpdateSession {
            status: Some("completed".into()),
            ..Default::default()
        };
        c.update_session(id, &req).await.map_err(|e| ctx.err(e))?;
    }
    let data = json!({ "subcommand": sub, "sessionId": id, "sessionCompleted": completed });
    emit(ctx.json, &data, || {
        say!("Reported {sub} for session {id}.");
        if completed {
            say!("Session {id} completed.");
        }
    });
    Ok(())
}

/// The team member a session runs as (top-level field, or spawn's metadata).
fn team_member(s: &Session) -> Option<String> {
    s.team_member_id.clone().or_else(|| {
        s.metadata
            .as_ref()?
            .get("teamMemberId")?
            .as_str()
            .map(str::to_owned)
    })
}

/// A random key for one logical request.
fn idempotency_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_ms() as u128);
    h.write_u32(std::process::id());
    format!("cli-{:016x}{:08x}", h.finish(), std::process::id())
}

fn show(s: &Session) {
    kv("ID", &s.id);
    kv("Name", &s.name);
    kv("Status", &s.status);
    kv("Project", &s.project_id);
    kv("Tasks", s.task_ids.join(", "));
    if let Some(ni) = s.needs_input.as_ref().filter(|n| n.active) {
        kv("Needs Input", ni.message.as_deref().unwrap_or("yes"));
    }
    kv("Last Activity", fmt_time(s.last_activity));
}
