//! `maestro import`: converts an upstream `maestro-server` data directory into the store.
//!
//! Reads the layout of upstream's `DATA_DIR` (projects, tasks — current and legacy layout —,
//! sessions, mail, orderings, custom team members and built-in overrides), applies upstream's
//! own load-time migrations (`sessionStatus` → `taskSessionStatuses`, `taskId` → `taskIds`,
//! team-member tasks dropped, missing session fields filled), and writes everything with the
//! upstream ids. Provider API keys found in session `env` are dropped, never imported.
//!
//! Importing is idempotent: records are keyed by their upstream ids, so a second run replaces
//! them with the same content. A file that cannot be read or parsed is reported and skipped;
//! it never stops the import. No events are emitted: an import is a bulk load, not activity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maestro_protocol::ids::is_valid_id;
use maestro_protocol::{
    DEFAULT_MEMBER_KINDS, MailMessage, Ordering, Project, Session, Task, TeamMember,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::domain::Domain;
use crate::domain::team_members::default_member_id;
use crate::error::Result;
use crate::ports::{Collection, ReaderExt, TxnExt, transact};

/// Provider credentials that upstream copied into session environments.
const PROVIDER_KEYS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
];

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// Records written per kind (`projects`, `tasks`, …).
    pub imported: BTreeMap<String, usize>,
    /// Files that were skipped, with the reason.
    pub skipped: Vec<SkippedFile>,
    /// Records dropped on purpose (upstream deleted them at load time too).
    pub migrated_away: usize,
}

/// A file the import could not use.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: String,
}

impl ImportReport {
    fn count(&mut self, kind: &str) {
        *self.imported.entry(kind.to_owned()).or_default() += 1;
    }

    fn skip(&mut self, path: &Path, reason: impl Into<String>) {
        self.skipped.push(SkippedFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        });
    }
}

/// One record ready to write.
enum Record {
    Project(Project),
    Task(Task),
    Session(Session),
    Mail(MailMessage),
    Ordering(Ordering),
    Member(TeamMember),
}

/// Imports `dir` (an upstream `DATA_DIR`) into the store behind `domain`.
pub async fn import_upstream(domain: &Domain, dir: &Path) -> Result<ImportReport> {
    let dir = dir.to_path_buf();
    let (records, mut report) = tokio::task::spawn_blocking(move || read_all(&dir))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    // Write in batches: one transaction each, so a huge directory does not build one giant
    // transaction, and every batch is durable before the next.
    let mut batch = Vec::new();
    for record in records {
        batch.push(record);
        if batch.len() == 500 {
            write_batch(domain, std::mem::take(&mut batch), &mut report).await?;
        }
    }
    write_batch(domain, batch, &mut report).await?;
    Ok(report)
}

async fn write_batch(domain: &Domain, batch: Vec<Record>, report: &mut ImportReport) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let batch = std::sync::Arc::new(batch);
    let records = batch.clone();
    transact(&*domain.store, move |tx| {
        for r in records.iter() {
            match r {
                Record::Project(p) => tx.put(Collection::Projects, &p.id, None, p),
                Record::Task(t) => tx.put(Collection::Tasks, &t.id, Some(&t.project_id), t),
                Record::Session(s) => tx.put(Collection::Sessions, &s.id, Some(&s.project_id), s),
                Record::Mail(m) => {
                    let mut m = m.clone();
                    // Keep the seq of an earlier import; give new mail the next one.
                    m.seq = match tx.get::<MailMessage>(Collection::Mail, &m.id)? {
                        Some(existing) => existing.seq,
                        None => tx.next_counter(&format!("mail:{}", m.project_id))?,
                    };
                    tx.put(Collection::Mail, &m.id, Some(&m.project_id), &m);
                }
                Record::Ordering(o) => {
                    let key = format!("{}:{}", o.entity_type, o.project_id);
                    tx.put(Collection::Orderings, &key, Some(&o.project_id), o);
                }
                Record::Member(m) => tx.put(Collection::TeamMembers, &m.id, Some(&m.project_id), m),
            }
        }
        Ok(())
    })
    .await?;
    for r in batch.iter() {
        report.count(match r {
            Record::Project(_) => "projects",
            Record::Task(_) => "tasks",
            Record::Session(_) => "sessions",
            Record::Mail(_) => "mail",
            Record::Ordering(_) => "orderings",
            Record::Member(_) => "teamMembers",
        });
    }
    Ok(())
}

/// Reads every file; returns the records in dependency and creation order.
fn read_all(dir: &Path) -> (Vec<Record>, ImportReport) {
    let mut report = ImportReport::default();
    let mut projects: Vec<Project> = Vec::new();
    for (path, v) in json_files(&dir.join("projects"), &mut report) {
        if let Some(p) = convert::<Project>(&path, normalize_project(v), &mut report) {
            projects.push(p);
        }
    }
    projects.sort_by_key(|p| p.created_at);

    // Tasks: `tasks/<projectId>/<taskId>.json`, plus the legacy flat `tasks/<taskId>.json`.
    // A task found in both places keeps the newer copy.
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    let tasks_dir = dir.join("tasks");
    let mut task_files = json_files(&tasks_dir, &mut report);
    for sub in subdirs(&tasks_dir) {
        task_files.extend(json_files(&sub, &mut report));
    }
    for (path, v) in task_files {
        if v.get("taskType").and_then(Value::as_str) == Some("team-member") {
            report.migrated_away += 1;
            continue;
        }
        if let Some(t) = convert::<Task>(&path, normalize_task(v), &mut report) {
            match tasks.get(&t.id) {
                Some(existing) if existing.updated_at >= t.updated_at => {}
                _ => {
                    tasks.insert(t.id.clone(), t);
                }
            }
        }
    }
    let mut tasks: Vec<Task> = tasks.into_values().collect();
    tasks.sort_by_key(|t| t.created_at);

    let mut sessions = Vec::new();
    for (path, v) in json_files(&dir.join("sessions"), &mut report) {
        if let Some(s) = convert::<Session>(&path, normalize_session(v), &mut report) {
            sessions.push(s);
        }
    }
    sessions.sort_by_key(|s: &Session| s.started_at);

    let mut mail = Vec::new();
    for (path, v) in json_files(&dir.join("mail"), &mut report) {
        if let Some(m) = convert::<MailMessage>(&path, normalize_mail(v), &mut report) {
            mail.push(m);
        }
    }
    mail.sort_by_key(|m: &MailMessage| m.created_at);

    let mut orderings = Vec::new();
    for kind in ["task", "session"] {
        for (path, mut v) in json_files(&dir.join("ordering").join(kind), &mut report) {
            if let Some(o) = v.as_object_mut() {
                o.entry("entityType").or_insert(json!(kind));
                o.entry("updatedAt").or_insert(json!(0));
            }
            if let Some(o) = convert::<Ordering>(&path, Ok(v), &mut report) {
                orderings.push(o);
            }
        }
    }

    let mut members = Vec::new();
    let members_dir = dir.join("team-members");
    for sub in subdirs(&members_dir) {
        let project_id = sub
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let project = projects.iter().find(|p| p.id == project_id).cloned();
        for (path, v) in json_files(&sub, &mut report) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".override.json") {
                let Some(project) = &project else {
                    report.skip(&path, "override for a project that is not being imported");
                    continue;
                };
                match merge_override(project, name, v) {
                    Ok(m) => members.push(m),
                    Err(e) => report.skip(&path, e),
                }
            } else if let Some(m) =
                convert::<TeamMember>(&path, normalize_member(v, &project_id), &mut report)
            {
                members.push(m);
            }
        }
    }

    let mut records: Vec<Record> = Vec::new();
    records.extend(projects.into_iter().map(Record::Project));
    records.extend(tasks.into_iter().map(Record::Task));
    records.extend(sessions.into_iter().map(Record::Session));
    records.extend(mail.into_iter().map(Record::Mail));
    records.extend(orderings.into_iter().map(Record::Ordering));
    records.extend(members.into_iter().map(Record::Member));
    (records, report)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// The parsed `*.json` files directly in `dir` (a missing directory has none).
fn json_files(dir: &Path, report: &mut ImportReport) -> Vec<(PathBuf, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        match std::fs::read(&path) {
            Err(e) => report.skip(&path, format!("cannot read: {e}")),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v.is_object() => out.push((path, v)),
                Ok(_) => report.skip(&path, "not a JSON object"),
                Err(e) => report.skip(&path, format!("invalid JSON: {e}")),
            },
        }
    }
    out
}

fn convert<T: DeserializeOwned + HasId>(
    path: &Path,
    v: Result<Value, String>,
    report: &mut ImportReport,
) -> Option<T> {
    let v = match v {
        Ok(v) => v,
        Err(e) => {
            report.skip(path, e);
            return None;
        }
    };
    match serde_json::from_value::<T>(v) {
        Ok(t) if is_valid_id(t.id()) => Some(t),
        Ok(t) => {
            report.skip(path, format!("invalid id {:?}", t.id()));
            None
        }
        Err(e) => {
            report.skip(path, format!("unexpected shape: {e}"));
            None
        }
    }
}

trait HasId {
    fn id(&self) -> &str;
}
macro_rules! has_id {
    ($($t:ty),*) => {$(impl HasId for $t { fn id(&self) -> &str { &self.id } })*};
}
has_id!(Project, Task, Session, MailMessage, TeamMember);
impl HasId for Ordering {
    fn id(&self) -> &str {
        &self.project_id
    }
}

fn obj(v: Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err("not a JSON object".into()),
    }
}

fn normalize_project(v: Value) -> Result<Value, String> {
    let mut m = obj(v)?;
    let created = m.get("createdAt").cloned().unwrap_or(json!(0));
    m.entry("updatedAt").or_insert(created);
    Ok(Value::Object(m))
}

fn normalize_task(v: Value) -> Result<Value, String> {
    let mut m = obj(v)?;
    m.entry("status").or_insert(json!("todo"));
    m.entry("priority").or_insert(json!("medium"));
    let created = m.get("createdAt").cloned().unwrap_or(json!(0));
    m.entry("updatedAt").or_insert(created);
    // Upstream's legacy single `sessionStatus` belongs to the first linked session.
    if let Some(status) = m.remove("sessionStatus")
        && let Some(first) = m
            .get("sessionIds")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_owned)
    {
        let map = m.entry("taskSessionStatuses").or_insert_with(|| json!({}));
        if let Some(map) = map.as_object_mut() {
            map.entry(first).or_insert(status);
        }
    }
    Ok(Value::Object(m))
}

fn normalize_session(v: Value) -> Result<Value, String> {
    let mut m = obj(v)?;
    let id = m
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !m.contains_key("taskIds") {
        let ids = match m.remove("taskId") {
            Some(Value::String(t)) => json!([t]),
            _ => json!([]),
        };
        m.insert("taskIds".into(), ids);
    }
    m.remove("strategy");
    m.entry("name")
        .or_insert_with(|| json!(format!("Session {id}")));
    m.entry("status").or_insert(json!("idle"));
    let started = m.get("startedAt").cloned().unwrap_or(json!(0));
    m.entry("startedAt").or_insert(started.clone());
    m.entry("lastActivity").or_insert(started);
    if let Some(env) = m.get_mut("env").and_then(Value::as_object_mut) {
        for key in PROVIDER_KEYS {
            env.remove(*key);
        }
        // Non-string values cannot be environment variables.
        env.retain(|_, v| v.is_string());
    }
    Ok(Value::Object(m))
}

fn normalize_mail(v: Value) -> Result<Value, String> {
    let mut m = obj(v)?;
    m.entry("toSessionId").or_insert(Value::Null);
    m.entry("replyToMailId").or_insert(Value::Null);
    m.entry("body").or_insert(json!({}));
    m.insert("seq".into(), json!(0));
    Ok(Value::Object(m))
}

fn normalize_member(v: Value, project_id: &str) -> Result<Value, String> {
    let mut m = obj(v)?;
    m.entry("projectId").or_insert(json!(project_id));
    m.insert("isDefault".into(), json!(false));
    m.entry("status").or_insert(json!("active"));
    m.entry("identity").or_insert(json!(""));
    m.remove("strategy");
    let now = json!(crate::util::iso8601(crate::util::now_ms()));
    let created = m.get("createdAt").cloned().unwrap_or(now);
    m.entry("createdAt").or_insert(created.clone());
    m.entry("updatedAt").or_insert(created);
    Ok(Value::Object(m))
}

/// A built-in with upstream's partial override file merged on top.
fn merge_override(project: &Project, file_name: &str, v: Value) -> Result<TeamMember, String> {
    let id = file_name.trim_end_matches(".override.json");
    let kind = DEFAULT_MEMBER_KINDS
        .iter()
        .find(|k| default_member_id(&project.id, k) == id)
        .ok_or_else(|| format!("{id} is not a built-in member of {}", project.id))?;
    let base = crate::domain::team_members::builtin_for_import(project, kind);
    let mut merged = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    let patch = obj(v)?;
    if let Some(target) = merged.as_object_mut() {
        for (k, val) in patch {
            if matches!(k.as_str(), "id" | "projectId" | "isDefault" | "strategy") {
                continue;
            }
            target.insert(k, val);
        }
    }
    serde_json::from_value(merged).map_err(|e| format!("unexpected shape: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_task_status_moves_to_first_session() {
        let t = normalize_task(json!({
            "id": "task_1", "projectId": "p", "title": "t", "createdAt": 5,
            "sessionIds": ["s1", "s2"], "sessionStatus": "working"
        }))
        .unwrap();
        assert_eq!(t["taskSessionStatuses"], json!({"s1": "working"}));
        assert_eq!(t["updatedAt"], 5);
        assert!(t.get("sessionStatus").is_none());
    }

    #[test]
    fn legacy_session_fields_and_keys() {
        let s = normalize_session(json!({
            "id": "sess_1", "projectId": "p", "taskId": "task_1", "strategy": "x",
            "startedAt": 7, "env": {"ANTHROPIC_API_KEY": "sk", "MAESTRO_MODE": "execute"}
        }))
        .unwrap();
        assert_eq!(s["taskIds"], json!(["task_1"]));
        assert_eq!(s["name"], "Session sess_1");
        assert!(s.get("strategy").is_none());
        assert_eq!(s["env"], json!({"MAESTRO_MODE": "execute"}));
        let typed: Session = serde_json::from_value(s).unwrap();
        assert_eq!(typed.status, "idle");
    }
}
