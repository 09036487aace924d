//! `maestro task …`: list, get, create, edit, update, complete, block, delete, children,
//! tree, report (the session's own status on a task) and docs.

use std::collections::HashMap;

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use maestro_client::{Client, TaskQuery};
use maestro_protocol::{
    AddDoc, AppendTimeline, CreateTask, TASK_PRIORITIES, TASK_STATUSES, Task, UpdateTask,
};
use serde_json::{Value, json};

use super::context::Context;
use super::output::{CliError, CmdResult, emit, fmt_time, kv, table};

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List tasks as a tree: the project's (all projects' without one, or with --all); with
    /// an id, that task and its children.
    List {
        /// Show this task and its subtasks instead.
        task_id: Option<String>,
        /// Only tasks with this status.
        #[arg(long, value_parser = PossibleValuesParser::new(TASK_STATUSES))]
        status: Option<String>,
        /// Only tasks with this priority.
        #[arg(long, value_parser = PossibleValuesParser::new(TASK_PRIORITIES))]
        priority: Option<String>,
        /// Every project's tasks, ignoring the project context.
        #[arg(long)]
        all: bool,
    },
    /// Show a task [default: the only task in MAESTRO_TASK_IDS].
    Get {
        /// Task id.
        id: Option<String>,
    },
    /// Create a task in the current project.
    Create {
        /// Title (or --title).
        title: Option<String>,
        /// Title (instead of the positional one).
        #[arg(short = 't', long = "title", value_name = "TITLE")]
        title_flag: Option<String>,
        /// Description.
        #[arg(
            short = 'd',
            long = "desc",
            visible_alias = "description",
            value_name = "TEXT"
        )]
        desc: Option<String>,
        /// Priority.
        #[arg(long, default_value = "medium", value_parser = PossibleValuesParser::new(TASK_PRIORITIES))]
        priority: String,
        /// Parent task (creates a subtask).
        #[arg(long, value_name = "TASK_ID")]
        parent: Option<String>,
    },
    /// Edit a task's title, description or priority.
    Edit {
        /// Task id.
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(short = 'd', long = "desc", value_name = "TEXT")]
        desc: Option<String>,
        /// New priority.
        #[arg(long, value_parser = PossibleValuesParser::new(TASK_PRIORITIES))]
        priority: Option<String>,
    },
    /// Update a task's status, priority or title (noted in the session's timeline).
    Update {
        /// Task id.
        id: String,
        /// New status.
        #[arg(long, value_parser = PossibleValuesParser::new(TASK_STATUSES))]
        status: Option<String>,
        /// New priority.
        #[arg(long, value_parser = PossibleValuesParser::new(TASK_PRIORITIES))]
        priority: Option<String>,
        /// New title.
        #[arg(long)]
        title: Option<String>,
    },
    /// Mark a task completed.
    Complete {
        /// Task id.
        id: String,
    },
    /// Mark a task blocked, with the reason.
    Block {
        /// Task id.
        id: String,
        /// What it is blocked on.
        #[arg(long)]
        reason: String,
    },
    /// Delete a task and its subtasks.
    Delete {
        /// Task id.
        id: String,
        /// Report how many subtasks went with it.
        #[arg(long)]
        cascade: bool,
    },
    /// List a task's subtasks.
    Children {
        /// Task id.
        task_id: String,
        /// All descendants, not only direct children.
        #[arg(long)]
        recursive: bool,
    },
    /// Show the project's tasks as a tree.
    Tree {
        /// Start from this task.
        #[arg(long, value_name = "TASK_ID")]
        root: Option<String>,
        /// Levels to show (1 = the roots only).
        #[arg(long, value_name = "N")]
        depth: Option<usize>,
        /// Only roots with this status.
        #[arg(long, value_parser = PossibleValuesParser::new(TASK_STATUSES))]
        status: Option<String>,
    },
    /// Report the current session's status on a task.
    #[command(subcommand)]
    Report(TaskReport),
    /// A task's docs.
    #[command(subcommand)]
    Docs(TaskDocs),
}

#[derive(Debug, Subcommand)]
pub enum TaskReport {
    /// Working on it.
    Progress {
        /// Task id.
        task_id: String,
        /// What is happening.
        message: String,
    },
    /// Done with it (the session goes on).
    Complete {
        /// Task id.
        task_id: String,
        /// What was done.
        summary: String,
    },
    /// Blocked on it.
    Blocked {
        /// Task id.
        task_id: String,
        /// What it is blocked on.
        reason: String,
    },
    /// Failed at it.
    Error {
        /// Task id.
        task_id: String,
        /// What went wrong.
        description: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskDocs {
    /// Attach a doc to a task, from the current session.
    Add {
        /// Task id.
        task_id: String,
        /// The doc's title.
        title: String,
        /// Path of the document.
        #[arg(long = "file", value_name = "PATH")]
        file: String,
        /// Content [default: the file's content].
        #[arg(long)]
        content: Option<String>,
    },
    /// List a task's docs (from every session).
    List {
        /// Task id.
        task_id: String,
    },
}

pub async fn run(ctx: &Context, cmd: TaskCommand) -> CmdResult {
    let client = ctx.client()?;
    let c = &client;
    let e = |err: maestro_client::Error| ctx.err(err);
    match cmd {
        TaskCommand::List {
            task_id,
            status,
            priority,
            all,
        } => {
            let tasks = match task_id {
                Some(id) => {
                    let mut tasks = vec![c.get_task(&id).await.map_err(e)?];
                    tasks.extend(c.task_children(&id).await.map_err(e)?);
                    tasks
                }
                None => {
                    let project_id = if all { None } else { ctx.project_id.clone() };
                    let q = TaskQuery {
                        project_id,
                        ..Default::default()
                    };
                    let mut tasks = c.list_tasks(&q).await.map_err(e)?;
                    tasks.retain(|t| status.as_ref().is_none_or(|s| &t.status == s));
                    tasks.retain(|t| priority.as_ref().is_none_or(|p| &t.priority == p));
                    tasks
                }
            };
            emit(ctx.json, &tasks, || {
                if tasks.is_empty() {
                    say!("No tasks found.");
                } else {
                    print_forest(&build_forest(&tasks, None, None));
                }
            });
        }
        TaskCommand::Get { id } => {
            let id = match id {
                Some(id) => id,
                None if ctx.task_ids.len() == 1 => ctx.task_ids[0].clone(),
                None => {
                    return Err(CliError::usage(
                        "Which task? Pass a task id, or set MAESTRO_TASK_IDS to exactly one task.",
                    ));
                }
            };
            let t = c.get_task(&id).await.map_err(e)?;
            emit(ctx.json, &t, || show(&t));
        }
        TaskCommand::Create {
            title,
            title_flag,
            desc,
            priority,
            parent,
        } => {
            let title = title.or(title_flag).filter(|t| !t.trim().is_empty());
            let Some(title) = title else {
                return Err(CliError::usage(
                    "A task title is required: maestro task create <title> (or --title <title>).",
                ));
            };
            let project = ctx.project()?;
            let req = CreateTask {
                project_id: Some(project.to_owned()),
                title: Some(title),
                description: Some(desc.unwrap_or_default()),
                priority: Some(priority),
                parent_id: parent,
                ..Default::default()
            };
            let t = c.create_task(&req).await.map_err(e)?;
            emit(ctx.json, &t, || {
                kv("ID", &t.id);
                kv("Title", &t.title);
                if let Some(p) = &t.parent_id {
                    kv("Parent", p);
                }
            });
        }
        TaskCommand::Edit {
            id,
            title,
            desc,
            priority,
        } => {
            if title.is_none() && desc.is_none() && priority.is_none() {
                return Err(CliError::usage(
                    "Nothing to edit: pass --title, --desc or --priority.",
                ));
            }
            let req = UpdateTask {
                title,
                description: desc,
                priority,
                ..Default::default()
            };
            let t = c.update_task(&id, &req).await.map_err(e)?;
            emit(ctx.json, &t, || {
                say!("Task {} updated.", t.id);
                show(&t);
            });
        }
        TaskCommand::Update {
            id,
            status,
            priority,
            title,
        } => {
            if status.is_none() && priority.is_none() && title.is_none() {
                return Err(CliError::usage(
                    "Nothing to update: pass --status, --priority or --title.",
                ));
            }
            let req = UpdateTask {
                status: status.clone(),
                priority,
                title,
                ..Default::default()
            };
            let t = c.update_task(&id, &req).await.map_err(e)?;
            if let Some(s) = &status {
                note_status_change(ctx, c, &id, &format!("Status changed to {s}")).await;
            }
            emit(ctx.json, &t, || say!("Task {} updated.", t.id));
        }
        TaskCommand::Complete { id } => {
            let req = UpdateTask {
                status: Some("completed".into()),
                ..Default::default()
            };
            let t = c.update_task(&id, &req).await.map_err(e)?;
            note_status_change(ctx, c, &id, "Status changed to completed").await;
            emit(ctx.json, &t, || say!("Task {} completed.", t.id));
        }
        TaskCommand::Block { id, reason } => {
            let req = UpdateTask {
                status: Some("blocked".into()),
                ..Default::default()
            };
            let t = c.update_task(&id, &req).await.map_err(e)?;
            let note = format!("Status changed to blocked: {reason}");
            note_status_change(ctx, c, &id, &note).await;
            emit(ctx.json, &t, || {
                say!("Task {} marked as blocked.", t.id);
                kv("Reason", &reason);
            });
        }
        TaskCommand::Delete { id, cascade } => {
            // The server deletes subtasks with their parent; count them first to say so.
            let children = if cascade {
                descendants(c, &id).await.map_err(e)?.len()
            } else {
                0
            };
            c.delete_task(&id).await.map_err(e)?;
            let data = json!({ "taskId": id, "deleted": true, "cascade": cascade, "childrenDeleted": children });
            emit(ctx.json, &data, || {
                if cascade {
                    let s = if children == 1 { "" } else { "s" };
                    say!("Task {id} deleted ({children} subtask{s} also removed).");
                } else {
                    say!("Task {id} deleted.");
                }
            });
        }
        TaskCommand::Children { task_id, recursive } => {
            let children = if recursive {
                descendants(c, &task_id).await.map_err(e)?
            } else {
                c.task_children(&task_id).await.map_err(e)?
            };
            emit(ctx.json, &children, || {
                if children.is_empty() {
                    say!("No child tasks found for {task_id}.");
                    return;
                }
                say!("Child tasks of {task_id} ({}):", children.len());
                if recursive {
                    print_forest(&build_forest(&children, None, None));
                } else {
                    for t in &children {
                        say!("  [{}] {} ({})", t.id, t.title, t.status);
                    }
                }
            });
        }
        TaskCommand::Tree {
            root,
            depth,
            status,
        } => {
            let (tasks, roots) = match &root {
                Some(root_id) => {
                    let root = c.get_task(root_id).await.map_err(e)?;
                    let q = TaskQuery {
                        project_id: Some(root.project_id.clone()),
                        ..Default::default()
                    };
                    (c.list_tasks(&q).await.map_err(e)?, Some(vec![root.id]))
                }
                None => {
                    let q = TaskQuery {
                        project_id: Some(ctx.project()?.to_owned()),
                        ..Default::default()
                    };
                    (c.list_tasks(&q).await.map_err(e)?, None)
                }
            };
            let mut forest = build_forest(&tasks, roots.as_deref(), depth);
            if let Some(s) = &status {
                forest.retain(|n| n["status"] == s.as_str());
            }
            emit(ctx.json, &forest, || {
                if forest.is_empty() {
                    say!("No tasks found.");
                } else {
                    let scope = root.clone().or(ctx.project_id.clone()).unwrap_or_default();
                    say!("Task tree ({scope}):");
                    print_forest(&forest);
                }
            });
        }
        TaskCommand::Report(r) => report(ctx, c, r).await?,
        TaskCommand::Docs(TaskDocs::Add {
            task_id,
            title,
            file,
            content,
        }) => {
            let session = ctx.session()?;
            let content = match content {
                Some(c) => c,
                None => read_doc(&file)?,
            };
            let req = AddDoc {
                title: Some(title),
                file_path: Some(file),
                content: Some(content),
                task_id: Some(task_id.clone()),
            };
            let s = c.add_session_doc(session, &req).await.map_err(e)?;
            let doc = s.docs.last().cloned();
            emit(ctx.json, &doc, || {
                if let Some(d) = &doc {
                    kv("Doc ID", &d.id);
                    kv("Title", &d.title);
                    kv("File", &d.file_path);
                }
                kv("Task", &task_id);
            });
        }
        TaskCommand::Docs(TaskDocs::List { task_id }) => {
            let docs = c.task_docs(&task_id).await.map_err(e)?;
            emit(ctx.json, &docs, || {
                if docs.is_empty() {
                    say!("No docs found for this task.");
                    return;
                }
                let rows: Vec<_> = docs
                    .iter()
                    .map(|d| {
                        vec![
                            d.doc.id.clone(),
                            d.doc.title.clone(),
                            d.doc.file_path.clone(),
                            d.session_id.clone(),
                            fmt_time(d.doc.added_at),
                        ]
                    })
                    .collect();
                table(&["ID", "Title", "File Path", "Session", "Added At"], &rows);
            });
        }
    }
    Ok(())
}

/// Reads a doc's content from its file.
pub fn read_doc(path: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::failed("file_error", format!("Cannot read {path}: {e}"))
            .with_hint("Pass the content with --content, or fix the --file path.")
    })
}

/// `task report …`: the session's own status on a task (session-mode PATCH) plus a
/// timeline entry.
async fn report(ctx: &Context, c: &Client, r: TaskReport) -> CmdResult {
    let session = ctx.session()?;
    let (task_id, message, session_status, kind) = match r {
        TaskReport::Progress { task_id, message } => (task_id, message, "working", "progress"),
        TaskReport::Complete { task_id, summary } => {
            (task_id, summary, "completed", "task_completed")
        }
        TaskReport::Blocked { task_id, reason } => (task_id, reason, "blocked", "task_blocked"),
        TaskReport::Error {
            task_id,
            description,
        } => (task_id, description, "failed", "error"),
    };
    let patch = UpdateTask {
        update_source: Some("session".into()),
        session_id: Some(session.to_owned()),
        session_status: Some(session_status.into()),
        ..Default::default()
    };
    c.update_task(&task_id, &patch)
        .await
        .map_err(|e| ctx.err(e))?;
    let entry = AppendTimeline {
        message: Some(message),
        kind: Some(kind.into()),
        task_id: Some(task_id.clone()),
        ..Default::default()
    };
    c.append_timeline(session, &entry)
        .await
        .map_err(|e| ctx.err(e))?;
    let data = json!({ "taskId": task_id, "sessionStatus": session_status, "sessionId": session });
    emit(ctx.json, &data, || {
        say!("Reported {session_status} on task {task_id}.");
    });
    Ok(())
}

/// Notes a status change in the current session's timeline, when there is a session. A
/// failure here does not fail the command: the task itself was updated.
async fn note_status_change(ctx: &Context, c: &Client, task_id: &str, message: &str) {
    let Some(session) = ctx.session_id.as_deref() else {
        return;
    };
    let entry = AppendTimeline {
        message: Some(message.to_owned()),
        kind: Some("task_status_changed".into()),
        task_id: Some(task_id.to_owned()),
        ..Default::default()
    };
    if let Err(err) = c.append_timeline(session, &entry).await {
        tracing::debug!(%err, "timeline note failed");
    }
}

/// Every descendant of `id`, parents before their children.
async fn descendants(c: &Client, id: &str) -> maestro_client::Result<Vec<Task>> {
    let mut out = Vec::new();
    let mut stack = vec![id.to_owned()];
    while let Some(parent) = stack.pop() {
        let children = c.task_children(&parent).await?;
        for child in children.iter().rev() {
            stack.push(child.id.clone());
        }
        out.extend(children);
    }
    Ok(out)
}

/// Nests `tasks` by `parentId`: each node is the task's JSON plus `children`. Roots are
/// `roots` when given, else the tasks whose parent is not in the list. `depth` 1 keeps the
/// roots only.
fn build_forest(tasks: &[Task], roots: Option<&[String]>, depth: Option<usize>) -> Vec<Value> {
    let ids: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&Task>> = HashMap::new();
    for t in tasks {
        if let Some(p) = t.parent_id.as_deref() {
            children.entry(p).or_default().push(t);
        }
    }
    fn node(t: &Task, children: &HashMap<&str, Vec<&Task>>, left: Option<usize>) -> Value {
        let mut v = serde_json::to_value(t).expect("tasks serialise");
        let kids: Vec<Value> = match left {
            Some(0) | Some(1) => Vec::new(),
            _ => children
                .get(t.id.as_str())
                .map(|ks| {
                    ks.iter()
                        .map(|k| node(k, children, left.map(|l| l - 1)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        v["children"] = Value::Array(kids);
        v
    }
    let root_tasks: Vec<&Task> = match roots {
        Some(r) => tasks.iter().filter(|t| r.contains(&t.id)).collect(),
        None => tasks
            .iter()
            .filter(|t| t.parent_id.as_deref().is_none_or(|p| !ids.contains(p)))
            .collect(),
    };
    root_tasks
        .into_iter()
        .map(|t| node(t, &children, depth))
        .collect()
}

fn print_forest(forest: &[Value]) {
    fn walk(nodes: &[Value], prefix: &str) {
        for (i, n) in nodes.iter().enumerate() {
            let last = i + 1 == nodes.len();
            let branch = if prefix.is_empty() {
                ""
            } else if last {
                "└─ "
            } else {
                "├─ "
            };
            say!(
                "{prefix}{branch}[{}] {} ({}, {})",
                n["id"].as_str().unwrap_or_default(),
                n["title"].as_str().unwrap_or_default(),
                n["status"].as_str().unwrap_or_default(),
                n["priority"].as_str().unwrap_or_default(),
            );
            if let Some(kids) = n["children"].as_array() {
                let next = if prefix.is_empty() {
                    "  ".to_owned()
                } else if last {
                    format!("{prefix}   ")
                } else {
                    format!("{prefix}│  ")
                };
                walk(kids, &next);
            }
        }
    }
    walk(forest, "");
}

fn show(t: &Task) {
    kv("ID", &t.id);
    kv("Title", &t.title);
    kv("Status", &t.status);
    match t.task_session_statuses.len() {
        0 => {}
        1 => {
            let (sid, st) = t.task_session_statuses.iter().next().expect("one entry");
            kv("Session Status", format!("{st} ({sid})"));
        }
        _ => {
            kv("Session Statuses", "");
            for (sid, st) in &t.task_session_statuses {
                say!("  {sid}: {st}");
            }
        }
    }
    kv("Priority", &t.priority);
    if let Some(p) = &t.parent_id {
        kv("Parent", p);
    }
    kv("Description", &t.description);
}
